"""Distance estimators on distributions with known distances."""

from __future__ import annotations

import math

import pytest
import torch

from bayesdl.priors.functional import (
    GaussianW2,
    LipschitzCritic,
    SlicedWasserstein,
    gaussian_w2,
    random_directions,
    sliced_wasserstein,
)


def test_gaussian_w2_closed_forms():
    d = torch.float64
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    w = gaussian_w2(
        torch.tensor([1.0], dtype=d),
        torch.tensor([[4.0]], dtype=d),
        torch.tensor([-1.0], dtype=d),
        torch.tensor([[1.0]], dtype=d),
        squared=True,
    )
    assert w.item() == pytest.approx(4.0 + 1.0, abs=1e-12)
    # commuting (diagonal) covariances: sum of per-coordinate terms
    s1, s2 = torch.tensor([1.0, 9.0, 0.25], dtype=d), torch.tensor([4.0, 1.0, 0.25], dtype=d)
    w = gaussian_w2(
        torch.zeros(3, dtype=d), s1.diag(), torch.ones(3, dtype=d), s2.diag(), squared=True
    )
    expected = 3.0 + (s1.sqrt() - s2.sqrt()).square().sum().item()
    assert w.item() == pytest.approx(expected, abs=1e-10)
    # rotation invariance: rotating both Gaussians leaves W2 unchanged (float64 round-off)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=d))
    w_rot = gaussian_w2(
        torch.zeros(3, dtype=d),
        q @ s1.diag() @ q.T,
        q @ torch.ones(3, dtype=d),
        q @ s2.diag() @ q.T,
        squared=True,
    )
    assert w_rot.item() == pytest.approx(expected, abs=1e-9)


def test_sliced_estimator_is_unbiased_for_shifts():
    """For b = b' + δ with b' an independent copy of a's law, sorted matching gives exactly
    E SW2²(a, b) = E SW2²(a, b') + mean_θ (θ·δ)²: the estimator's finite-sample bias cancels
    in the difference, which we compare with the closed form over Monte-Carlo replicates."""
    dim, n, reps = 4, 200, 200
    cov_root = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0], [0.0, 0.3, 0.7, 0.0], [0.2, 0.0, 0.0, 1.2]],
        dtype=torch.float64,
    )
    delta = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    theta = random_directions(32, dim, dtype=torch.float64)
    diffs = []
    for _ in range(reps):
        a = torch.randn(n, dim, dtype=torch.float64) @ cov_root.T
        b = torch.randn(n, dim, dtype=torch.float64) @ cov_root.T
        diffs.append(
            (
                sliced_wasserstein(a, b + delta, directions=theta)
                - sliced_wasserstein(a, b, directions=theta)
            ).item()
        )
    diffs = torch.tensor(diffs)
    # closed form of the population shift term: the W2^2 between the projected Gaussians
    # N(θ·m, θᵀΣθ) and N(θ·(m+δ), θᵀΣθ), averaged over the same directions
    sigma = cov_root @ cov_root.T
    proj_var = torch.einsum("li,ij,lj->l", theta, sigma, theta)
    zero = torch.zeros(1, dtype=torch.float64)
    closed = torch.stack(
        [
            gaussian_w2(
                zero, v.reshape(1, 1), (t @ delta).reshape(1), v.reshape(1, 1), squared=True
            )
            for t, v in zip(theta, proj_var, strict=True)
        ]
    ).mean()
    se = diffs.std() / math.sqrt(reps)
    assert abs(diffs.mean() - closed) < 4 * se  # 4 Monte-Carlo standard errors


def test_sliced_estimator_bounded_by_the_gaussian_closed_form():
    """Different covariances: E SW2² ≥ the population value (Jensen: W2² is jointly convex and
    the empirical measures average to the true ones) and it approaches it as n grows."""
    dim = 3
    theta = random_directions(16, dim, dtype=torch.float64)
    s1 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    s2 = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    pop = (
        torch.stack(
            [
                gaussian_w2(
                    torch.zeros(1, dtype=torch.float64),
                    (t.square() * s1).sum().reshape(1, 1),
                    torch.zeros(1, dtype=torch.float64),
                    (t.square() * s2).sum().reshape(1, 1),
                    squared=True,
                )
                for t in theta
            ]
        )
        .mean()
        .item()
    )
    n, reps = 2000, 50
    est = torch.tensor(
        [
            sliced_wasserstein(
                torch.randn(n, dim, dtype=torch.float64) * s1.sqrt(),
                torch.randn(n, dim, dtype=torch.float64) * s2.sqrt(),
                directions=theta,
            ).item()
            for _ in range(reps)
        ]
    )
    se = est.std().item() / math.sqrt(reps)
    assert est.mean().item() > pop - 4 * se
    # the excess is the finite-sample bias, O(log n / n) per unit variance for 1-D Gaussians;
    # 2 s1.max()/n * log(n) is a generous cap on it
    assert est.mean().item() < pop + 2 * s1.max().item() * math.log(n) / n + 4 * se


def test_critic_on_shifted_gaussians():
    """W1(N(0,1), N(δ,1)) = δ. The estimate on fresh samples is an expectation of a critic
    whose Lipschitz constant L we measure, so estimate ≤ L δ up to sampling error; a trained
    critic should also recover most of δ (optimisation slack, not a bound: 0.8 δ)."""
    torch.manual_seed(1)
    delta, n = 2.0, 256
    est = LipschitzCritic(hidden=(32, 32), num_steps=150, lr=0.08, threshold=0.0, penalty_type="lp")
    a = torch.randn(n, 1, 1)
    b = torch.randn(n, 1, 1) + delta
    est.fit_critic(a[..., 0], b[..., 0])
    critic = est.critic
    grid = torch.linspace(-4, 6, 400).unsqueeze(-1).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(grid).sum(), grid)
    lip = g.abs().max().item()
    a2, b2 = torch.randn(4 * n, 1), torch.randn(4 * n, 1) + delta
    with torch.no_grad():
        fa, fb = critic(a2)[:, 0], critic(b2)[:, 0]
    value = (fb.mean() - fa.mean()).abs().item()
    se = math.sqrt((fa.var() + fb.var()).item() / (4 * n))
    assert value < lip * delta + 4 * se
    assert value > 0.8 * delta


@pytest.mark.slow
def test_critic_two_sided_penalty_in_many_dims():
    # in M >= 2 dims the two-sided penalty has no sign barrier: estimate ≈ |δ| = 1.5 · √M
    torch.manual_seed(0)
    m = 4
    a = torch.randn(256, m, 1)
    b = torch.randn(256, m, 1) + 1.5
    value = LipschitzCritic(num_steps=300, lr=0.05, threshold=0.0)(b, a).item()
    assert 0.8 * 1.5 * math.sqrt(m) < value < 1.2 * 1.5 * math.sqrt(m)


def test_estimators_are_differentiable_and_sum_outputs():
    a = torch.randn(64, 5, 2, requires_grad=True)
    b = torch.randn(64, 5, 2)
    for est in (SlicedWasserstein(num_projections=8), GaussianW2(), LipschitzCritic(num_steps=3)):
        value = est(a, b)
        (g,) = torch.autograd.grad(value, a)
        assert value.shape == () and torch.isfinite(g).all() and g.abs().sum() > 0


def test_estimator_shape_errors():
    a = torch.randn(16, 5, 1)
    with pytest.raises(ValueError, match="same shape"):
        SlicedWasserstein()(a, torch.randn(16, 4, 1))
    with pytest.raises(ValueError, match=r"\[S, M, K\]"):
        GaussianW2()(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="built for 2 output"):
        LipschitzCritic(num_outputs=2, num_steps=1)(a, a)
    with pytest.raises(ValueError, match="10 points"):
        SlicedWasserstein(num_points=10)(a, a)
    with pytest.raises(ValueError, match="penalty_type"):
        LipschitzCritic(penalty_type="clip")

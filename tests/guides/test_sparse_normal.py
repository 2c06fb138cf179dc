"""SparseNormal: exact zeros off the active set, density, moments, closed-form KL (exact and MC)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from torch.distributions import kl_divergence

from bayesdl.guides import SparseNormal
from bayesdl.guides.sparse_normal import scatter_active

#: family-wise false-alarm rate of each Monte-Carlo test (Bonferroni over its comparisons)
ALPHA = 1e-4


def _z(num_comparisons: int) -> float:
    """Two-sided normal quantile for a family-wise error ALPHA over ``num_comparisons``."""
    return float(stats.norm.isf(ALPHA / (2 * num_comparisons)))


def _sparse(device, shape=(6, 5), s=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    index = torch.randperm(n, generator=g)[:s]
    loc = torch.randn(s, generator=g, dtype=torch.float64)
    scale = 0.2 + torch.rand(s, generator=g, dtype=torch.float64)
    return SparseNormal(loc.to(device), scale.to(device), index.to(device), torch.Size(shape))


def test_dense_views_and_mask(device):
    q = _sparse(device)
    mask = q.active_mask()
    assert mask.sum() == q.num_active == 9
    assert torch.equal(q.loc.reshape(-1)[q.index], q.active_loc)
    assert torch.equal(q.scale.reshape(-1)[q.index], q.active_scale)
    assert (q.loc[~mask] == 0).all() and (q.scale[~mask] == 0).all()
    assert q.batch_shape == torch.Size([6, 5])


def test_samples_exactly_zero_off_the_active_set_and_moments(device):
    """Inactive entries are exactly 0 in every draw; active ones have the stated mean and
    variance. Bounds: the sample mean's error is sd / sqrt(N); the sample variance's error has
    sd sqrt(2) var / sqrt(N) (Gaussian fourth moment); Bonferroni over 2 s comparisons."""
    q = _sparse(device)
    n = 40_000
    w = q.rsample((n,))
    mask = q.active_mask()
    assert (w[:, ~mask] == 0).all()
    a = w.reshape(n, -1)[:, q.index]
    z = _z(2 * q.num_active)
    sd = q.active_scale
    assert ((a.mean(0) - q.active_loc).abs() < z * sd / math.sqrt(n)).all()
    assert ((a.var(0) - sd**2).abs() < z * math.sqrt(2.0) * sd**2 / math.sqrt(n)).all()


def test_log_prob_is_normal_on_active_and_counting_measure_off(device):
    q = _sparse(device)
    w = q.sample((3,))
    lp = q.log_prob(w)
    ref = torch.distributions.Normal(q.active_loc, q.active_scale).log_prob(
        w.reshape(3, -1)[:, q.index]
    )
    torch.testing.assert_close(lp.reshape(3, -1)[:, q.index], ref, rtol=1e-12, atol=1e-12)
    assert (lp[:, ~q.active_mask()] == 0).all()
    bad = w.clone()
    off = (~q.active_mask()).reshape(-1).nonzero()[0, 0]
    bad.reshape(3, -1)[:, off] = 0.5
    assert torch.isinf(q.log_prob(bad).reshape(3, -1)[:, off]).all()


@pytest.mark.parametrize("per_entry_prior", [False, True])
def test_kl_equals_dense_normal_kl_on_active_and_zero_off(device, per_entry_prior):
    """Exact: elementwise KL of the active entries equals the Normal-Normal KL of torch."""
    q = _sparse(device)
    if per_entry_prior:
        g = torch.Generator().manual_seed(3)
        p_loc = torch.randn(q.param_shape, generator=g, dtype=torch.float64).to(device)
        p_scale = (0.5 + torch.rand(q.param_shape, generator=g, dtype=torch.float64)).to(device)
    else:
        p_loc = torch.zeros((), dtype=torch.float64, device=device)
        p_scale = torch.full((), 0.7, dtype=torch.float64, device=device)
    p = dist.Normal(p_loc, p_scale).expand(q.param_shape)
    kl = kl_divergence(q, p)
    assert kl.shape == q.param_shape
    ref = kl_divergence(
        torch.distributions.Normal(q.active_loc, q.active_scale),
        torch.distributions.Normal(
            p_loc.expand(q.param_shape).reshape(-1)[q.index],
            p_scale.expand(q.param_shape).reshape(-1)[q.index],
        ),
    )
    torch.testing.assert_close(kl.reshape(-1)[q.index], ref, rtol=1e-12, atol=1e-14)
    assert (kl[~q.active_mask()] == 0).all()
    # as sites are sampled: Independent over the whole tensor
    total = kl_divergence(q.to_event(2), p.to_event(2))
    torch.testing.assert_close(total, ref.sum(), rtol=1e-12, atol=1e-14)


def test_kl_matches_monte_carlo(device):
    """sum KL = E_q[log q(w_A) - log p(w_A)] over the active entries A. The MC estimate's error
    is sd(log-ratio) / sqrt(N), with the sample sd; z from ALPHA."""
    q = _sparse(device)
    p = dist.Normal(torch.zeros((), dtype=torch.float64, device=device), 0.8).expand(q.param_shape)
    n = 50_000
    w = q.rsample((n,)).reshape(n, -1)[:, q.index]
    log_q = torch.distributions.Normal(q.active_loc, q.active_scale).log_prob(w).sum(-1)
    log_p = torch.distributions.Normal(0.0, 0.8).log_prob(w).sum(-1)
    ratio = log_q - log_p
    est, se = ratio.mean(), ratio.std() / math.sqrt(n)
    exact = kl_divergence(q, p).sum()
    assert (est - exact).abs() < _z(1) * se


def test_kl_and_views_survive_particle_expansion(device):
    q = _sparse(device)
    p = dist.Normal(torch.zeros((), dtype=torch.float64, device=device), 0.8).expand(q.param_shape)
    qe = q.expand(torch.Size([4, 1]) + q.param_shape)
    pe = p.expand(torch.Size([4, 1]) + q.param_shape)
    assert isinstance(qe, SparseNormal) and qe.num_active == q.num_active
    kl = kl_divergence(qe, pe)
    assert kl.shape == (4, 1, 6, 5)
    torch.testing.assert_close(kl.sum(), 4 * kl_divergence(q, p).sum(), rtol=1e-12, atol=0)
    # a prior that differs across particles takes the dense, masked path: same values
    p_var = dist.Normal(torch.zeros(4, 1, 6, 5, dtype=torch.float64, device=device), 0.8).expand(
        torch.Size([4, 1, 6, 5])
    )
    torch.testing.assert_close(kl_divergence(qe, p_var), kl, rtol=1e-12, atol=1e-14)


def test_entropy_sums_active_normal_entropies(device):
    q = _sparse(device)
    ref = torch.distributions.Normal(q.active_loc, q.active_scale).entropy()
    h = q.entropy()
    torch.testing.assert_close(h.reshape(-1)[q.index], ref, rtol=1e-12, atol=1e-14)
    assert (h[~q.active_mask()] == 0).all()


def test_gradients_reach_active_parameters_through_dense_views(device):
    loc = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    scale = torch.rand(4, dtype=torch.float64, device=device).add(0.1).requires_grad_()
    index = torch.tensor([0, 3, 5, 7], device=device)
    q = SparseNormal(loc, scale, index, torch.Size([2, 4]))
    weights = torch.arange(8.0, dtype=torch.float64, device=device).view(2, 4)
    (q.loc * weights).sum().backward()
    torch.testing.assert_close(loc.grad, weights.reshape(-1)[index])


def test_scatter_active_places_values(device):
    out = scatter_active(
        torch.tensor([1.0, 2.0], device=device), torch.tensor([3, 0], device=device), (2, 2)
    )
    assert out.tolist() == [[2.0, 0.0], [0.0, 1.0]]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="active_loc and active_scale"):
        SparseNormal(torch.zeros(3), torch.ones(2), torch.arange(3), torch.Size([4]))
    with pytest.raises(ValueError, match="index"):
        SparseNormal(torch.zeros(3), torch.ones(3), torch.arange(2), torch.Size([4]))
    with pytest.raises(ValueError, match="index"):
        SparseNormal(torch.zeros(3), torch.ones(3), torch.arange(3.0), torch.Size([4]))

"""Matérn kernels: dense formulas, exact state-space discretisation, sums, validation, contracts.

Tolerances: float64 round-off (entries are O(1); 1e-12 absolute leaves a few hundred ulps for
the matrix exponential and products), unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesdl.gp import MaternKernel, SumKernel

NUS = (0.5, 1.5, 2.5)
f64 = torch.float64


def _drift(nu: float, lengthscale: torch.Tensor) -> torch.Tensor:
    """Companion matrix F of (s + λ)^d, built independently of the package (reference)."""
    d = int(nu + 0.5)
    lam = math.sqrt(2 * nu) / lengthscale
    F = torch.zeros(lengthscale.shape + (d, d), dtype=f64)
    for i in range(d - 1):
        F[..., i, i + 1] = 1
    for j in range(d):
        F[..., d - 1, j] = -math.comb(d, j) * lam ** (d - j)
    return F


@pytest.mark.parametrize("nu", NUS)
def test_dense_form_matches_textbook_matern(nu):
    ls, var = torch.tensor([0.4, 2.0], dtype=f64), torch.tensor([1.5, 0.3], dtype=f64)
    k = MaternKernel(nu, lengthscale=ls, variance=var)
    t1 = torch.linspace(0, 3, 7, dtype=f64)
    t2 = torch.linspace(-1, 2, 5, dtype=f64)
    K = k(t1, t2)
    assert K.shape == (2, 7, 5) and K.dtype == f64
    r = (t1[:, None] - t2[None, :]).abs()
    for i in range(2):
        z = math.sqrt(2 * nu) * r / ls[i]
        poly = {0.5: 1.0, 1.5: 1 + z, 2.5: 1 + z + z**2 / 3}[nu]
        torch.testing.assert_close(K[i], var[i] * poly * torch.exp(-z), rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(
    nu=st.sampled_from(NUS),
    ls=st.floats(0.1, 5.0),
    var=st.floats(0.1, 5.0),
    dt=st.lists(st.floats(1e-3, 4.0), min_size=1, max_size=6),
)
def test_transition_is_the_exact_discretisation(nu, ls, var, dt):
    """A = expm(F dt) and Q = P_inf - A P_inf A^T; P_inf solves F P + P F^T + L Qc L^T = 0 with
    only the last diagonal entry of L Qc L^T non-zero; H A P_inf H^T = k(dt)."""
    # float64 hyperparameters (Python floats would be stored in the default float32)
    k = MaternKernel(
        nu, lengthscale=torch.tensor(ls, dtype=f64), variance=torch.tensor(var, dtype=f64)
    )
    dt = torch.tensor(dt, dtype=f64)
    A, Q = k.transition(dt)
    d = k.state_dim
    assert A.shape == Q.shape == (1, len(dt), d, d)
    F = _drift(nu, torch.tensor([ls], dtype=f64))
    torch.testing.assert_close(A[0], torch.matrix_exp(F * dt[:, None, None]), rtol=1e-9, atol=1e-12)
    P = k.stationary_covariance(f64).detach()
    torch.testing.assert_close(Q, P - A @ P @ A.mT, rtol=1e-9, atol=1e-12)
    lyap = F @ P + P @ F.mT
    off = lyap.clone()
    off[..., -1, -1] = 0
    scale = P.abs().max() * F.abs().max()
    assert off.abs().max() <= 1e-12 * scale
    assert lyap[..., -1, -1] < 0  # = -L Qc L^T (white-noise intensity is positive)
    H = k.observation_vector(f64)
    cov = torch.einsum("i,lnij,ljk,k->ln", H, A, P, H)
    t = torch.cat([torch.zeros(1, dtype=f64), dt])
    torch.testing.assert_close(cov[0], k(t[:1], dt)[0, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nu", NUS)
def test_q_is_positive_semidefinite_and_small_steps_are_continuous(nu):
    k = MaternKernel(
        nu, lengthscale=torch.tensor(0.7, dtype=f64), variance=torch.tensor(2.0, dtype=f64)
    )
    dt = torch.logspace(-4, 1, 30, dtype=f64)
    A, Q = k.transition(dt)
    assert torch.linalg.eigvalsh(Q).min() >= -1e-12
    # dt -> 0: A -> I, Q -> 0 (Q ~ q dt, q the white-noise intensity ~ 1e4 here, dt = 1e-12)
    A0, Q0 = k.transition(torch.tensor([1e-12], dtype=f64))
    torch.testing.assert_close(A0[0, 0], torch.eye(k.state_dim, dtype=f64), rtol=0, atol=1e-9)
    assert Q0.abs().max() < 1e-10 * k.stationary_covariance(f64).abs().max()


def test_per_channel_grids_and_batched_steps_broadcast():
    k = MaternKernel(1.5, lengthscale=torch.tensor([0.5, 1.0, 2.0]))
    dt = torch.rand(3, 4, dtype=f64) + 0.1
    A, Q = k.transition(dt)
    assert A.shape == (3, 4, 2, 2)
    for ch in range(3):
        single = MaternKernel(1.5, lengthscale=k.lengthscale[ch].detach())
        torch.testing.assert_close(A[ch], single.transition(dt[ch])[0][0], rtol=1e-13, atol=1e-15)
    A, _ = k.transition(torch.rand(5, 3, 4, dtype=f64))
    assert A.shape == (5, 3, 4, 2, 2)


def test_sum_kernel_is_block_diagonal_and_adds_covariances():
    k1 = MaternKernel(0.5, lengthscale=torch.tensor([3.0, 1.0]), variance=0.5)
    k2 = MaternKernel(2.5, lengthscale=0.3)
    k = k1 + k2
    assert isinstance(k, SumKernel) and k.state_dim == 4 and k.num_channels == 2
    t = torch.linspace(0, 2, 6, dtype=f64)
    torch.testing.assert_close(k(t, t), k1(t, t) + k2(t, t))
    A, Q = k.transition(t.diff())
    A1, Q1 = k1.transition(t.diff())
    A2, Q2 = k2.transition(t.diff())
    torch.testing.assert_close(A[..., :1, :1], A1)
    torch.testing.assert_close(A[..., 1:, 1:], A2.expand(2, -1, -1, -1))
    assert A[..., :1, 1:].abs().max() == 0 and Q[..., 1:, :1].abs().max() == 0
    torch.testing.assert_close(k.observation_vector(f64), torch.tensor([1.0, 1, 0, 0], dtype=f64))
    P = k.stationary_covariance(f64)
    torch.testing.assert_close((P[:, 0, 0] + P[:, 1, 1] + 2 * P[:, 0, 1]), k(t[:1], t[:1])[:, 0, 0])
    # nesting flattens
    assert len(SumKernel([k, k2]).kernels) == 3


def test_hyperparameters_are_learnable_log_parameters():
    k = MaternKernel(1.5, lengthscale=torch.tensor([0.5, 2.0]), variance=3.0)
    names = dict(k.named_parameters())
    assert set(names) == {"log_lengthscale", "log_variance"}
    assert k.num_channels == 2 and k.variance.shape == (2,)
    torch.testing.assert_close(k.lengthscale, torch.tensor([0.5, 2.0]))
    t = torch.linspace(0, 1, 4, dtype=f64)
    k(t, t).sum().backward()
    assert k.log_lengthscale.grad is not None and k.log_variance.grad.abs().sum() > 0
    k2 = MaternKernel(1.5, lengthscale=torch.ones(2))
    k2.load_state_dict(k.state_dict())
    torch.testing.assert_close(k2.lengthscale, k.lengthscale)


def test_dtype_follows_time_stamps(device):
    k = MaternKernel(2.5).to(device)  # float32 parameters
    for dtype in (torch.float32, f64):
        t = torch.linspace(0, 1, 5, dtype=dtype, device=device)
        A, Q = k.transition(t.diff())
        assert k(t, t).dtype == A.dtype == Q.dtype == dtype
        assert A.device == t.device


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nu": 1.0}, "nu must be one of"),
        ({"nu": 3.5}, "nu must be one of"),
        ({"lengthscale": 0.0}, "lengthscale must be > 0"),
        ({"lengthscale": torch.tensor([1.0, -1.0])}, "lengthscale must be > 0"),
        ({"variance": -2.0}, "variance must be > 0"),
        ({"variance": float("nan")}, "variance contains"),
        ({"lengthscale": torch.ones(2), "variance": torch.ones(3)}, "same number of channels"),
        ({"lengthscale": torch.ones(2, 2)}, "lengthscale must be a scalar or have shape"),
    ],
)
def test_bad_hyperparameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaternKernel(**kwargs)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="nu must be"):
        MaternKernel("1.5")
    with pytest.raises(TypeError, match="lengthscale must be"):
        MaternKernel(1.5, lengthscale="long")
    with pytest.raises(TypeError, match=r"kernels\[1\] must be"):
        SumKernel([MaternKernel(), "rbf"])
    with pytest.raises(ValueError, match="share the number of channels"):
        SumKernel(
            [MaternKernel(lengthscale=torch.ones(2)), MaternKernel(lengthscale=torch.ones(3))]
        )

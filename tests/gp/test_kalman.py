"""Kalman filter / RTS smoother / FFBS against dense Gaussian algebra, in both forms.

All exactness checks run in float64 on problems whose dense matrices are well conditioned
(observation noise >= 0.05 against O(1) prior variances, so cond(K + R) <~ 1e3 * T), where
float64 round-off of either path is <~ 1e-12 relative; the issue's bound is 1e-8.
"""

from __future__ import annotations

import math

import pyro.distributions as pdist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesdl.gp import (
    FilterResult,
    MaternKernel,
    ffbs_sample,
    kalman_filter,
    kalman_log_marginal,
    rts_smoother,
    sample_linear_gaussian,
)
from tests.gp._dense import dense_log_marginal, dense_posterior, state_space

f64 = torch.float64
METHODS = ("parallel", "sequential")
REL = 1e-8  # the bound; observed errors are ~1e-13


@st.composite
def problems(draw, max_t: int = 12, batch: int = 2):
    """A random Matérn(-sum) kernel with L = 2 channels, irregular grid, data, noise and mask."""
    nu = draw(st.sampled_from((0.5, 1.5, 2.5)))
    ls = torch.tensor(draw(st.lists(st.floats(0.2, 3.0), min_size=2, max_size=2)), dtype=f64)
    var = torch.tensor(draw(st.lists(st.floats(0.2, 3.0), min_size=2, max_size=2)), dtype=f64)
    kernel = MaternKernel(nu, lengthscale=ls, variance=var)
    if draw(st.booleans()):
        kernel = kernel + MaternKernel(0.5, lengthscale=torch.tensor(2.0, dtype=f64),
                                       variance=torch.tensor(0.3, dtype=f64))  # fmt: skip
    T = draw(st.integers(1, max_t))
    dt = draw(st.lists(st.floats(0.01, 2.0), min_size=T - 1, max_size=T - 1))
    times = torch.cat([torch.zeros(1, dtype=f64), torch.tensor(dt, dtype=f64).cumsum(0)])
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    y = 2 * torch.randn(batch, 2, T, generator=g, dtype=f64)
    r = 0.05 + torch.rand(batch, 2, T, generator=g, dtype=f64)
    mask = torch.rand(batch, 2, T, generator=g) > draw(st.sampled_from((0.0, 0.3, 0.7)))
    return kernel, times, y, r, mask


def _inputs(kernel, times):
    A, Q, H, m0, P0 = state_space(kernel, times)
    return A.detach(), Q.detach(), H, m0, P0.detach()


@settings(max_examples=40, deadline=None)
@given(problems())
def test_log_marginal_equals_dense_mvn_with_irregular_grid_and_missing(problem):
    kernel, times, y, r, mask = problem
    A, Q, H, m0, P0 = _inputs(kernel, times)
    ref = dense_log_marginal(kernel(times, times).detach(), y, r, mask)
    y_nan = torch.where(mask, y, torch.nan)  # missing entries may hold anything
    for method in METHODS:
        out = kalman_filter(A, Q, H, m0, P0, y_nan, r, mask, method=method)
        red = kalman_log_marginal(A, Q, H, m0, P0, y_nan, r, mask, method=method, chunk_size=3)
        scale = ref.abs().clamp_min(1.0)
        assert ((out.log_marginal - ref).abs() / scale).max() <= REL
        assert ((red - ref).abs() / scale).max() <= REL


@settings(max_examples=40, deadline=None)
@given(problems())
def test_smoothed_moments_equal_dense_posterior_and_forms_agree(problem):
    kernel, times, y, r, mask = problem
    A, Q, H, m0, P0 = _inputs(kernel, times)
    mu, Sigma = dense_posterior(kernel(times, times).detach(), y, r, mask)
    results = {}
    for method in METHODS:
        filt = kalman_filter(A, Q, H, m0, P0, y, r, mask, method=method)
        sm = rts_smoother(A, Q, filt, method=method)
        f_mean = sm.means @ H
        f_var = torch.einsum("i,...ij,j->...", H, sm.covs, H)
        torch.testing.assert_close(f_mean, mu, rtol=REL, atol=REL)
        torch.testing.assert_close(f_var, Sigma.diagonal(dim1=-2, dim2=-1), rtol=REL, atol=REL)
        # lag-one cross-covariance Cov(f_t, f_{t+1}) = H G_t Cov(x_{t+1}) H^T
        if times.numel() > 1:
            cross = torch.einsum("i,...tij,...tjk,k->...t", H, sm.gains, sm.covs[..., 1:, :, :], H)
            ref = Sigma.diagonal(offset=1, dim1=-2, dim2=-1)
            torch.testing.assert_close(cross, ref, rtol=REL, atol=REL)
        results[method] = (filt, sm)
    (fp, sp), (fs, ss) = results["parallel"], results["sequential"]
    for a, b in [
        (fp.means, fs.means),
        (fp.covs, fs.covs),
        (sp.means, ss.means),
        (sp.covs, ss.covs),
    ]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_equal_dense_path(method):
    """d log p(y) / d(log lengthscale, log variance, y, r) agree with autograd through the
    dense Cholesky log-density (same float64 graph inputs)."""
    torch.manual_seed(1)
    T = 9
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.1, 0)
    mask = torch.rand(2, T) > 0.3
    grads = {}
    for path in ("kalman", "dense"):
        kernel = MaternKernel(1.5, lengthscale=torch.tensor([0.7, 1.8], dtype=f64),
                              variance=torch.tensor([1.2, 0.4], dtype=f64))  # fmt: skip
        torch.manual_seed(2)
        y = torch.randn(2, T, dtype=f64, requires_grad=True)
        r = (0.1 + torch.rand(2, T, dtype=f64)).requires_grad_()
        if path == "kalman":
            A, Q, H, m0, P0 = state_space(kernel, times)
            ll = kalman_log_marginal(A, Q, H, m0, P0, y, r, mask, method=method, chunk_size=4)
        else:
            ll = dense_log_marginal(kernel(times, times), y, r, mask)
        ll.sum().backward()
        grads[path] = [kernel.log_lengthscale.grad, kernel.log_variance.grad, y.grad, r.grad]
    for a, b in zip(grads["kalman"], grads["dense"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_chunked_reduction_matches_unchunked_with_gradients():
    torch.manual_seed(3)
    T = 50
    kernel = MaternKernel(2.5, lengthscale=torch.tensor([3.0, 7.0], dtype=f64))
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.2, 0)
    y = torch.randn(2, T, dtype=f64, requires_grad=True)
    out = []
    for chunk in (None, 7, 1):
        A, Q, H, m0, P0 = state_space(kernel, times)
        ll = kalman_log_marginal(A, Q, H, m0, P0, y, torch.tensor(0.3, dtype=f64), chunk_size=chunk)
        (gy,) = torch.autograd.grad(ll.sum(), y)
        out.append((ll.detach(), gy))
    for ll, gy in out[1:]:
        torch.testing.assert_close(ll, out[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(gy, out[0][1], rtol=1e-10, atol=1e-12)


def test_agrees_with_pyro_gaussian_hmm():
    """Pyro's GaussianHMM (state before the first step = stationary, observation matrix H^T)
    gives the same log-likelihood: any first transition keeps the stationary law."""
    torch.manual_seed(4)
    L, T = 3, 40
    kernel = MaternKernel(1.5, lengthscale=torch.tensor([0.5, 2.0, 8.0], dtype=f64))
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.05, 0)
    y = torch.randn(L, T, dtype=f64)
    r = 0.05 + torch.rand(T, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    A_all, Q_all = kernel.transition(torch.cat([torch.ones(1, dtype=f64), times.diff()]))
    hmm = pdist.GaussianHMM(
        pdist.MultivariateNormal(torch.zeros(L, 2, dtype=f64), P0),
        A_all.detach().mT,
        pdist.MultivariateNormal(torch.zeros(2, dtype=f64), Q_all.detach()),
        H.unsqueeze(-1),
        pdist.Normal(torch.zeros(T, 1, dtype=f64), r.sqrt().unsqueeze(-1)).to_event(1),
    )
    ref = hmm.log_prob(y.unsqueeze(-1))
    for method in METHODS:
        ours = kalman_log_marginal(A, Q, H, m0, P0, y, r, method=method)
        torch.testing.assert_close(ours, ref, rtol=1e-11, atol=0)


def test_batch_dims_broadcast_and_public_layout():
    kernel = MaternKernel(2.5, lengthscale=torch.tensor([1.0, 2.0], dtype=f64))
    times = torch.linspace(0, 3, 6, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)  # [2, 5, 3, 3]
    y = torch.randn(4, 2, 6, dtype=f64)
    r = torch.full((6,), 0.2, dtype=f64)
    filt = kalman_filter(A, Q, H, m0, P0, y, r)
    assert filt.log_marginal.shape == (4, 2)
    assert filt.means.shape == (4, 2, 6, 3) and filt.covs.shape == (4, 2, 6, 3, 3)
    sm = rts_smoother(A, Q, filt)
    assert sm.gains.shape == (4, 2, 5, 3, 3) and sm.cond_covs.shape == (4, 2, 6, 3, 3)
    draws = ffbs_sample(A, Q, filt, (7,), smoothed=sm)
    assert draws.shape == (7, 4, 2, 6, 3)
    # each batch entry alone gives the same numbers
    single = kalman_filter(A[1], Q[1], H, m0[1], P0[1], y[3, 1], r)
    torch.testing.assert_close(single.log_marginal, filt.log_marginal[3, 1])
    torch.testing.assert_close(single.covs, filt.covs[3, 1])


def test_single_time_point_and_all_missing():
    kernel = MaternKernel(1.5, lengthscale=torch.tensor(1.0, dtype=f64))
    times = torch.zeros(1, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    y, r = torch.tensor([[0.5]], dtype=f64), torch.tensor([[0.1]], dtype=f64)
    for method in METHODS:
        out = kalman_filter(A, Q, H, m0, P0, y, r, method=method)
        ref = torch.distributions.Normal(0.0, math.sqrt(1.1)).log_prob(torch.tensor(0.5))
        torch.testing.assert_close(out.log_marginal, ref.to(f64).reshape(1))
    times = torch.linspace(0, 1, 5, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    mask = torch.zeros(1, 5, dtype=torch.bool)
    y = torch.full((1, 5), float("nan"), dtype=f64)
    for method in METHODS:
        out = kalman_filter(A, Q, H, m0, P0, y, torch.ones(1, 5, dtype=f64), mask, method=method)
        assert out.log_marginal.item() == 0.0
        sm = rts_smoother(A, Q, out, method=method)
        torch.testing.assert_close(sm.covs, P0.expand(1, 5, 2, 2))  # the prior, stationary


def test_float32_path_is_stable_and_close_to_float64():
    """float32 (Joseph form, symmetrised covariances): finite, PSD and within 1e-4 relative of
    float64 on a moderate grid (float32 eps is 1.2e-7; the bound allows ~1e3 eps of growth)."""
    torch.manual_seed(5)
    T = 200
    kernel = MaternKernel(2.5, lengthscale=torch.tensor([0.5, 3.0], dtype=f64))
    times = torch.cumsum(torch.rand(T, dtype=f64) * 0.2 + 0.01, 0)
    y = torch.randn(2, T, dtype=f64)
    r = torch.tensor(0.1, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    args64 = (A, Q, H, m0, P0, y, r)
    args32 = tuple(a.float() for a in args64)
    for method in METHODS:
        f64_out = kalman_filter(*args64, method=method)
        f32_out = kalman_filter(*args32, method=method)
        assert f32_out.log_marginal.dtype == torch.float32
        rel = ((f32_out.log_marginal.double() - f64_out.log_marginal) / f64_out.log_marginal).abs()
        assert rel.max() < 1e-4
        assert torch.linalg.eigvalsh(f32_out.covs.double()).min() > -1e-5
        sm = rts_smoother(A.float(), Q.float(), f32_out, method=method)
        assert torch.isfinite(sm.covs).all()
    red = kalman_log_marginal(*args32)
    assert ((red.double() - f64_out.log_marginal) / f64_out.log_marginal).abs().max() < 1e-4


def _ffbs_z_scores(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """z-scores of sample means (sd sqrt(var / N)) and of sample variances (for Gaussian draws
    the sample variance has sd var * sqrt(2 / (N - 1)))."""
    n = draws.shape[0]
    var = cov.diagonal(dim1=-2, dim2=-1)
    z_mean = (draws.mean(0) - mean) / (var / n).sqrt()
    z_var = (draws.var(0) - var) / (var * math.sqrt(2 / (n - 1)))
    return z_mean, z_var


def _z_bound(num_tests: int, alpha: float = 1e-3) -> float:
    """Two-sided Bonferroni bound: P(any |z| > bound) <= alpha over num_tests z-scores."""
    return float(
        torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - alpha / (2 * num_tests)))
    )


@pytest.mark.parametrize("method", METHODS)
def test_ffbs_moments_within_mcse_of_smoothed_moments_small(method):
    torch.manual_seed(6)
    kernel = MaternKernel(1.5, lengthscale=torch.tensor([0.6], dtype=f64))
    times = torch.cumsum(torch.rand(6, dtype=f64) + 0.1, 0)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    y = torch.randn(1, 6, dtype=f64)
    mask = torch.tensor([[True, False, True, True, False, True]])
    filt = kalman_filter(A, Q, H, m0, P0, y, torch.tensor(0.2, dtype=f64), mask, method=method)
    sm = rts_smoother(A, Q, filt, method=method)
    g = torch.Generator().manual_seed(0)
    draws = ffbs_sample(A, Q, filt, (4000,), method=method, generator=g)
    z_mean, z_var = _ffbs_z_scores(draws, sm.means, sm.covs)
    bound = _z_bound(2 * z_mean.numel())
    assert z_mean.abs().max() < bound and z_var.abs().max() < bound


@pytest.mark.slow
@pytest.mark.parametrize("nu", (0.5, 1.5, 2.5))
def test_ffbs_joint_moments_within_mcse_slow(nu):
    """Joint check: every entry of the sample covariance of the whole path (all times and state
    coordinates) within its MCSE, sd(S_ij) = sqrt((Σ_ij^2 + Σ_ii Σ_jj) / N) for Gaussian draws."""
    torch.manual_seed(7)
    T, n = 15, 20000
    kernel = MaternKernel(nu, lengthscale=torch.tensor([1.0], dtype=f64))
    times = torch.cumsum(torch.rand(T, dtype=f64) * 0.5 + 0.05, 0)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    y = torch.randn(1, T, dtype=f64)
    mask = torch.rand(1, T) > 0.3
    filt = kalman_filter(A, Q, H, m0, P0, y, torch.tensor(0.1, dtype=f64), mask)
    mu, Sigma = dense_posterior(
        kernel(times, times).detach(), y, torch.tensor(0.1, dtype=f64), mask
    )
    g = torch.Generator().manual_seed(1)
    f = (ffbs_sample(A, Q, filt, (n,), generator=g) @ H)[:, 0]  # [n, T]
    S = torch.cov(f.T)
    sd = ((Sigma[0] ** 2 + Sigma[0].diagonal()[:, None] * Sigma[0].diagonal()[None, :]) / n).sqrt()
    bound = _z_bound(T * T + T)
    assert ((S - Sigma[0]) / sd).abs().max() < bound
    assert ((f.mean(0) - mu[0]) / (Sigma[0].diagonal() / n).sqrt()).abs().max() < bound


def test_prior_sampler_matches_stationary_covariance():
    torch.manual_seed(8)
    kernel = MaternKernel(2.5, lengthscale=torch.tensor([0.8], dtype=f64))
    times = torch.cumsum(torch.rand(5, dtype=f64) + 0.1, 0)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    n = 8000
    for method in METHODS:
        x = sample_linear_gaussian(A, Q, m0, P0, (n,), method=method)
        assert x.shape == (n, 1, 5, 3)
        f = (x @ H)[:, 0]
        K = kernel(times, times)[0].detach()
        sd = ((K**2 + K.diagonal()[:, None] * K.diagonal()[None, :]) / n).sqrt()
        assert ((torch.cov(f.T) - K) / sd).abs().max() < _z_bound(25)


def test_ffbs_is_reparameterised():
    kernel = MaternKernel(1.5, lengthscale=torch.tensor([1.0], dtype=f64))
    times = torch.linspace(0, 2, 5, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    y = torch.randn(1, 5, dtype=f64, requires_grad=True)
    filt = kalman_filter(A, Q, H, m0, P0, y, torch.tensor(0.1, dtype=f64))
    x = ffbs_sample(A, Q, filt, (3,))
    (g,) = torch.autograd.grad(x.sum(), y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# --------------------------------------------------------------------------- bad input
def _ok():
    kernel = MaternKernel(1.5, lengthscale=torch.tensor(1.0, dtype=f64))
    times = torch.linspace(0, 1, 4, dtype=f64)
    A, Q, H, m0, P0 = _inputs(kernel, times)
    return [A[0], Q[0], H, m0[0], P0[0], torch.zeros(4, dtype=f64), torch.ones(4, dtype=f64)]


@pytest.mark.parametrize(
    "index, value, exc, match",
    [
        (0, torch.zeros(3, 3, 3, dtype=f64), ValueError, "A must have shape"),
        (1, torch.zeros(2, 2, 2, dtype=f64), ValueError, "Q must have shape"),
        (3, torch.zeros(3, dtype=f64), ValueError, "m0 must have shape"),
        (4, torch.zeros(2, dtype=f64), ValueError, "P0 must have shape"),
        (5, torch.zeros(4, dtype=torch.long), TypeError, "y must be a floating-point"),
        (6, torch.ones(5, dtype=f64), ValueError, "r must be broadcastable"),
        (6, [1.0] * 4, TypeError, "r must be a torch.Tensor"),
    ],
)
def test_bad_arguments_name_the_argument(index, value, exc, match):
    args = _ok()
    args[index] = value
    with pytest.raises(exc, match=match):
        kalman_filter(*args)


def test_bad_mask_and_method():
    args = _ok()
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        kalman_filter(*args, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        kalman_filter(*args, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        kalman_filter(*args, torch.ones(4))
    with pytest.raises(ValueError, match="method must be one of"):
        kalman_filter(*args, method="magic")
    with pytest.raises(ValueError, match="chunk_size must be"):
        kalman_log_marginal(*args, chunk_size=0)
    filt = kalman_filter(*args)
    with pytest.raises(ValueError, match="A must have shape"):
        rts_smoother(args[0][:2], args[1], filt)
    with pytest.raises(TypeError, match="filtered must be a FilterResult"):
        rts_smoother(args[0], args[1], tuple(filt))
    assert isinstance(filt, FilterResult)

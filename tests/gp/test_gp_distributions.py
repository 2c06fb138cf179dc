"""MarkovGP and GP: same numbers through Kalman and dense paths, posterior KL exactness, Pyro use.

Tolerances: float64 round-off on well-conditioned problems (pseudo-variances >= 0.05; noiseless
densities on grids with steps >= 0.1 lengthscale), <~ 1e-12 relative observed; 1e-8 asserted
(the issue's bound) unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from bayesdl.gp import GP, GPPosterior, MarkovGP, MaternKernel
from tests.gp._dense import dense_log_marginal, dense_posterior, gaussian_kl

f64 = torch.float64
REL = 1e-8


def _kernel(nu=1.5, ls=(0.7, 1.8), var=(1.2, 0.4)):
    return MaternKernel(
        nu, lengthscale=torch.tensor(ls, dtype=f64), variance=torch.tensor(var, dtype=f64)
    )


@st.composite
def posterior_problems(draw):
    nu = draw(st.sampled_from((0.5, 1.5, 2.5)))
    ls = draw(st.lists(st.floats(0.3, 3.0), min_size=2, max_size=2))
    var = draw(st.lists(st.floats(0.3, 2.0), min_size=2, max_size=2))
    kernel = MaternKernel(
        nu, lengthscale=torch.tensor(ls, dtype=f64), variance=torch.tensor(var, dtype=f64)
    )
    T = draw(st.integers(1, 10))
    dt = draw(st.lists(st.floats(0.02, 1.5), min_size=T - 1, max_size=T - 1))
    times = torch.cat([torch.zeros(1, dtype=f64), torch.tensor(dt, dtype=f64).cumsum(0)])
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    y = torch.randn(3, 2, T, generator=g, dtype=f64)
    v = 0.05 + 2 * torch.rand(3, 2, T, generator=g, dtype=f64)
    mask = torch.rand(3, 2, T, generator=g) > draw(st.sampled_from((0.0, 0.4)))
    method = draw(st.sampled_from(("parallel", "sequential")))
    return kernel, times, y, v, mask, method


@settings(max_examples=40, deadline=None)
@given(posterior_problems())
def test_posterior_kl_equals_closed_form_dense_kl(problem):
    """KL(q || p) = Σ_t E_q log N(ỹ_t | f_t, ṽ_t) − log Z equals the closed-form Gaussian KL
    between the dense posterior and prior — the Markovian GP-VAE's KL is exact."""
    kernel, times, y, v, mask, method = problem
    note(f"lengthscale={kernel.lengthscale.tolist()} variance={kernel.variance.tolist()}")
    markov = MarkovGP(kernel, times, method=method).posterior(y, v, mask)
    dense = GP(kernel, times).posterior(y, v, mask)
    K = kernel(times, times).detach()
    mu, Sigma = dense_posterior(K, y, v, mask)
    ref_kl = gaussian_kl(mu, Sigma, K)
    for name, post in (("markov", markov), ("dense", dense)):
        note(name)
        assert isinstance(post, GPPosterior)
        scale = ref_kl.abs().clamp_min(1.0)
        assert ((post.kl_to_prior() - ref_kl).abs() / scale).max() <= REL
        torch.testing.assert_close(post.mean, mu, rtol=REL, atol=REL)
        torch.testing.assert_close(
            post.variance, Sigma.diagonal(dim1=-2, dim2=-1), rtol=REL, atol=REL
        )
        ref_z = dense_log_marginal(K, y, v, mask)
        assert ((post.log_normalizer - ref_z).abs() / ref_z.abs().clamp_min(1.0)).max() <= REL
    assert (markov.kl_to_prior() >= -1e-10).all()


@pytest.mark.parametrize("nu", (0.5, 1.5, 2.5))
@pytest.mark.parametrize("method", ("parallel", "sequential"))
def test_log_prob_of_paths_equals_dense(nu, method):
    torch.manual_seed(0)
    T = 25
    kernel = _kernel(nu, ls=(2.0, 5.0))
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.2, 0)  # steps >= 0.1 lengthscale
    dense = GP(kernel, times, jitter=0.0)
    f = dense.rsample((4,)).detach()
    lp = MarkovGP(kernel, times, method=method).log_prob(f)
    ref = torch.distributions.MultivariateNormal(
        torch.zeros(T, dtype=f64), kernel(times, times).detach()
    ).log_prob(f)
    assert lp.shape == (4, 2)
    assert ((lp - ref).abs() / ref.abs()).max() <= REL
    torch.testing.assert_close(dense.log_prob(f), ref, rtol=1e-10, atol=0)


def test_gradients_of_kl_and_log_normalizer_equal_dense_path():
    torch.manual_seed(1)
    T = 8
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.1, 0)
    mask = torch.rand(2, 2, T) > 0.3
    grads = {}
    for cls in (MarkovGP, GP):
        kernel = _kernel(2.5)
        torch.manual_seed(2)
        y = torch.randn(2, 2, T, dtype=f64, requires_grad=True)
        v = (0.1 + torch.rand(2, 2, T, dtype=f64)).requires_grad_()
        post = cls(kernel, times).posterior(y, v, mask)
        loss = post.kl_to_prior().sum() + post.log_normalizer.sum() + post.mean.square().sum()
        loss.backward()
        grads[cls] = [kernel.log_lengthscale.grad, kernel.log_variance.grad, y.grad, v.grad]
    for a, b in zip(grads[MarkovGP], grads[GP], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_posterior_draws_match_posterior_moments_and_are_differentiable():
    torch.manual_seed(3)
    T, n = 7, 6000
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.1, 0)
    y = torch.randn(2, T, dtype=f64, requires_grad=True)
    v = torch.full((2, T), 0.3, dtype=f64)
    mask = torch.rand(2, T) > 0.3
    for cls in (MarkovGP, GP):
        post = cls(_kernel(), times).posterior(y, v, mask)
        draws = post.rsample((n,))
        assert draws.shape == (n, 2, T)
        z = (draws.mean(0) - post.mean) / (post.variance / n).sqrt()
        # Bonferroni over 2 * T means at family-wise 1e-3: |z| < 4.0 (N(0,1) quantile 1 - 3.6e-5)
        assert z.abs().max() < 4.0
        (g,) = torch.autograd.grad(draws.sum(), y)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        assert post.sample((2,)).requires_grad is False


def test_prior_draws_have_the_kernel_covariance():
    torch.manual_seed(4)
    T, n = 6, 8000
    times = torch.cumsum(torch.rand(T, dtype=f64) + 0.1, 0)
    kernel = _kernel(2.5)
    K = kernel(times, times).detach()
    sd = (
        (
            K**2
            + K.diagonal(dim1=-2, dim2=-1)[..., :, None]
            * K.diagonal(dim1=-2, dim2=-1)[..., None, :]
        )
        / n
    ).sqrt()
    for dist in (MarkovGP(kernel, times), GP(kernel, times)):
        f = dist.rsample((n,)).detach()
        assert f.shape == (n, 2, T) and dist.batch_shape == (2,) and dist.event_shape == (T,)
        S = torch.stack([torch.cov(f[:, i].T) for i in range(2)])
        # Bonferroni over 2 * T * T entries at family-wise 1e-3: |z| < 4.6
        assert ((S - K) / sd).abs().max() < 4.6


def test_per_channel_time_grids():
    torch.manual_seed(5)
    times = torch.cumsum(torch.rand(2, 6, dtype=f64) + 0.1, -1)
    kernel = _kernel()
    f = torch.randn(3, 2, 6, dtype=f64)
    lp = MarkovGP(kernel, times).log_prob(f)
    for ch in range(2):
        single = MaternKernel(
            1.5, lengthscale=kernel.lengthscale[ch].detach(), variance=kernel.variance[ch].detach()
        )
        ref = MarkovGP(single, times[ch]).log_prob(f[:, ch : ch + 1])[:, 0]
        torch.testing.assert_close(lp[:, ch], ref)
    torch.testing.assert_close(GP(kernel, times, jitter=0.0).log_prob(f), lp, rtol=1e-10, atol=0)


def test_pyro_model_with_markov_gp_prior_traces_and_scores():
    times = torch.linspace(0, 5, 20, dtype=f64)
    kernel = _kernel()

    def model(obs):
        f = pyro.sample("f", MarkovGP(kernel, times).to_event(1))
        pyro.sample("y", pdist.Normal(f, 0.1).to_event(2), obs=obs)

    obs = torch.randn(2, 20, dtype=f64)
    tr = pyro.poutine.trace(model).get_trace(obs)
    tr.compute_log_prob()
    f = tr.nodes["f"]["value"]
    assert f.shape == (2, 20)
    torch.testing.assert_close(
        tr.nodes["f"]["log_prob"],
        GP(kernel, times, jitter=0.0).log_prob(f).sum(),
        rtol=1e-9,
        atol=0,
    )
    # a plate over a batch of sequences expands the distribution
    with pyro.plate("batch", 3, dim=-2):
        x = pyro.sample("g", MarkovGP(kernel, times))
    assert x.shape == (3, 2, 20)


def test_mean_variance_and_kl_is_zero_without_observations():
    times = torch.linspace(0, 1, 5, dtype=f64)
    kernel = _kernel(2.5)
    dist = MarkovGP(kernel, times)
    assert dist.mean.abs().max() == 0
    torch.testing.assert_close(dist.variance, GP(kernel, times).variance)
    post = dist.posterior(
        torch.randn(2, 5, dtype=f64),
        torch.ones(2, 5, dtype=f64),
        torch.zeros(2, 5, dtype=torch.bool),
    )
    torch.testing.assert_close(post.kl_to_prior(), torch.zeros(2, dtype=f64))
    torch.testing.assert_close(post.variance, dist.variance)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", (MarkovGP, GP))
def test_bad_input_raises_clear_errors(cls):
    kernel = _kernel()
    t = torch.linspace(0, 1, 5, dtype=f64)
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        cls(kernel, torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=f64))
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        cls(kernel, torch.tensor([0.0, 2.0, 1.0], dtype=f64))
    with pytest.raises(ValueError, match="times contains"):
        cls(kernel, torch.tensor([0.0, float("nan")], dtype=f64))
    with pytest.raises(ValueError, match="times must have shape"):
        cls(kernel, torch.zeros(2, 2, 2, dtype=f64))
    with pytest.raises(ValueError, match="times has 3 rows"):
        cls(kernel, torch.rand(3, 4, dtype=f64).cumsum(-1))
    with pytest.raises(TypeError, match="times must be a floating-point"):
        cls(kernel, torch.arange(4))
    with pytest.raises(TypeError, match="kernel must be a MaternKernel"):
        cls(lambda a, b: a, t)
    dist = cls(kernel, t)
    y, v = torch.zeros(2, 5, dtype=f64), torch.ones(2, 5, dtype=f64)
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        dist.posterior(y, v, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        dist.posterior(y, v, torch.ones(2, 5))
    with pytest.raises(ValueError, match="pseudo_obs must have shape"):
        dist.posterior(torch.zeros(2, 4, dtype=f64), v)
    with pytest.raises(ValueError, match="pseudo_var must be > 0"):
        cls(kernel, t, validate_args=True).posterior(y, torch.zeros(2, 5, dtype=f64))
    with pytest.raises(ValueError, match="nu must be one of"):
        cls(MaternKernel(1.0), t)


def test_markov_gp_bad_method_and_gp_bad_jitter():
    t = torch.linspace(0, 1, 5, dtype=f64)
    with pytest.raises(ValueError, match="method must be one of"):
        MarkovGP(_kernel(), t, method="fast")
    with pytest.raises(ValueError, match="jitter must be"):
        GP(_kernel(), t, jitter=-1.0)


def test_log_normalizer_is_a_proper_normaliser_by_quadrature():
    """One time point: Z = ∫ N(f | 0, σ²) N(ỹ | f, ṽ) df = N(ỹ | 0, σ² + ṽ), checked by
    Gauss-Hermite quadrature (150 nodes: the integrand is a Gaussian of width ~0.5 prior sd in
    the quadrature variable, so the rule converges to round-off; 40 nodes leave ~1e-8)."""
    t = torch.zeros(1, dtype=f64)
    kernel = _kernel(0.5, ls=(1.0, 1.0), var=(1.3, 1.3))
    y, v = torch.tensor([[0.7], [-1.1]], dtype=f64), torch.tensor([[0.4], [0.9]], dtype=f64)
    post = MarkovGP(kernel, t).posterior(y, v)  # y, v: [L = 2, T = 1]
    x, w = np.polynomial.hermite_e.hermegauss(150)
    f = torch.tensor(x, dtype=f64) * math.sqrt(1.3)
    lik = torch.exp(-0.5 * (y - f) ** 2 / v) / torch.sqrt(2 * math.pi * v)
    Z = (lik * torch.tensor(w, dtype=f64)).sum(-1) / math.sqrt(2 * math.pi)
    torch.testing.assert_close(post.log_normalizer, Z.log(), rtol=1e-12, atol=1e-12)


def test_runs_on_the_test_device_and_matches_cpu(device):
    """Everything follows the inputs' device (BAYESDL_DEVICE); numbers equal the CPU ones."""
    torch.manual_seed(9)
    times = torch.cumsum(torch.rand(12, dtype=f64) + 0.1, 0)
    y, v = torch.randn(3, 2, 12, dtype=f64), 0.1 + torch.rand(3, 2, 12, dtype=f64)
    mask = torch.rand(3, 2, 12) > 0.2
    ref = MarkovGP(_kernel(), times).posterior(y, v, mask)
    for cls in (MarkovGP, GP):
        dist = cls(_kernel().to(device), times.to(device))
        post = dist.posterior(y.to(device), v.to(device), mask.to(device))
        assert (
            post.mean.device.type == device.type and dist.rsample((2,)).device.type == device.type
        )
        torch.testing.assert_close(
            post.kl_to_prior().cpu(), ref.kl_to_prior(), rtol=1e-9, atol=1e-10
        )
        torch.testing.assert_close(post.variance.cpu(), ref.variance, rtol=1e-9, atol=1e-10)

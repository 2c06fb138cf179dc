"""Monte-Carlo helpers shared by the handler tests: networks, vectorised draws, exact one-layer
moments, and assertions whose bounds come from Monte-Carlo error (Bonferroni-corrected)."""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from scipy import stats
from torch import nn

from bayesdl.guides import MeanFieldGuide
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior

#: family-wise false-alarm rate of one statistical test invocation (Bonferroni inside)
ALPHA = 1e-4
#: particles for moment checks: default run / slow run (the slow one draws in chunks)
NUM_PARTICLES, NUM_PARTICLES_SLOW = 20_000, 400_000
#: gradient checks: independent runs x vectorised particles per run
GRAD_RUNS, GRAD_PARTICLES = 200, 16
GRAD_RUNS_SLOW, GRAD_PARTICLES_SLOW = 400, 64


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# --------------------------------------------------------------------------- critical values
def z_crit(num_comparisons: int, alpha: float = ALPHA) -> float:
    """Two-sided standard-normal quantile at Bonferroni level ``alpha / num_comparisons``."""
    return float(stats.norm.isf(alpha / (2 * num_comparisons)))


def t_crit(num_comparisons: int, df: int, alpha: float = ALPHA) -> float:
    """Two-sided Student-t quantile at Bonferroni level ``alpha / num_comparisons``."""
    return float(stats.t.isf(alpha / (2 * num_comparisons), df))


# --------------------------------------------------------------------------- networks
def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


def cnn() -> nn.Module:
    # conv with padding and stride 2 (8x8 -> 4x4), pooling, then a dense head mixing locations
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


def conv_head() -> nn.Module:
    """A single strided, padded conv whose every output location is a network output."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.Flatten())


def inputs(kind: str, batch: int) -> torch.Tensor:
    """Inputs for a network kind; images are positive, as pixel intensities are."""
    if kind in ("linear", "mlp"):
        return torch.randn(batch, 4)
    return torch.rand(batch, 2, 8, 8)


def make_bnn(
    net: nn.Module, *, dataset_size: int | None = None, noise: float = 1.0
) -> tuple[BNN, MeanFieldGuide]:
    """A BNN with all parameters random and a mean-field guide with random locs N(0, 1) and
    scales U(0.3, 0.5) (not tiny, so the weight noise matters)."""
    bnn = BNN(net, IIDPrior(dist.Normal(0.0, 1.0)), GaussianLikelihood(dataset_size, scale=noise))
    guide = MeanFieldGuide(bnn, init_scale=0.4)
    with torch.no_grad():
        for loc in guide.locs.values():
            loc.normal_()
        for raw in guide.raw_scales.values():
            scale = torch.empty_like(raw).uniform_(0.3, 0.5)
            raw.copy_(scale + torch.log(-torch.expm1(-scale)))  # softplus^-1
    return bnn, guide


def handler_context(handler):
    return contextlib.nullcontext() if handler is None else handler()


def draw(bnn, guide, x, num_particles: int, handler) -> torch.Tensor:
    """Network outputs ``[K, B, *out]`` for ``K`` guide particles in one vectorised call."""
    with torch.no_grad(), handler_context(handler), pyro.plate("p", num_particles, dim=-2):
        guide_trace = poutine.trace(guide).get_trace()
        return poutine.replay(bnn, trace=guide_trace)(x)


def draw_many(bnn, guide, x, num_particles: int, handler, per_call: int = 20_000) -> torch.Tensor:
    """``draw`` in independent chunks of at most ``per_call`` particles (bounds memory)."""
    chunks = []
    while num_particles > 0:
        k = min(per_call, num_particles)
        chunks.append(draw(bnn, guide, x, k, handler))
        num_particles -= k
    return torch.cat(chunks)


# --------------------------------------------------------------------------- exact targets
def one_layer_moments(layer: nn.Module, guide, x: torch.Tensor, prefix: str = ""):
    """Exact mean and variance ``[B, D]`` of a Linear / Conv2d layer with mean-field Gaussian
    weight ``N(mu, sigma^2)`` and bias ``N(mu_b, sigma_b^2)``: ``x mu + mu_b`` and
    ``x^2 sigma^2 + sigma_b^2`` (per output location for convolutions), flattened per example."""
    mu_w, sd_w = guide.loc(prefix + "weight"), guide.scale(prefix + "weight")
    mu_b, sd_b = guide.loc(prefix + "bias"), guide.scale(prefix + "bias")
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            mean, var = F.linear(x, mu_w, mu_b), F.linear(x * x, sd_w**2, sd_b**2)
        else:
            kw = dict(stride=layer.stride, padding=layer.padding)
            mean = F.conv2d(x, mu_w, mu_b, **kw)
            var = F.conv2d(x * x, sd_w**2, sd_b**2, **kw)
    return mean.flatten(1), var.flatten(1)


def assert_gaussian_moments(f: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """``f [K, *shape]``: iid draws of Gaussians with exact ``mean`` and ``var``.

    Particle mean ~ N(mean, var / K) exactly; (K - 1) s^2 / var ~ chi^2_{K-1} exactly. Family:
    2 * numel comparisons at ALPHA (Bonferroni)."""
    k, m = f.shape[0], 2 * mean.numel()
    z = z_crit(m)
    err = (f.mean(0) - mean).abs() / (var / k).sqrt()
    assert err.max() <= z, f"mean off by {err.max():.2f} standard errors (bound {z:.2f})"
    lo = stats.chi2.ppf(ALPHA / (2 * m), k - 1) / (k - 1)
    hi = stats.chi2.isf(ALPHA / (2 * m), k - 1) / (k - 1)
    ratio = f.var(0) / var
    assert lo <= ratio.min() and ratio.max() <= hi, (
        f"sample/exact variance in [{ratio.min():.4f}, {ratio.max():.4f}], "
        f"exact chi^2 bounds [{lo:.4f}, {hi:.4f}]"
    )


def _var_and_se(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample variance and its standard error ``sqrt((m4 - s^4) / K)`` (delta method)."""
    centred = f - f.mean(0)
    var = centred.pow(2).mean(0)
    m4 = centred.pow(4).mean(0)
    return var, ((m4 - var**2) / f.shape[0]).sqrt()


def assert_same_moments(fa: torch.Tensor, fb: torch.Tensor, *, check_var: bool = True) -> None:
    """Two independent samples ``[K, *shape]`` have equal per-output means (and variances).

    Two-sample z-tests (CLT); family: numel (x 2 with variances) comparisons at ALPHA."""
    k = fa.shape[0]
    m = fa[0].numel() * (2 if check_var else 1)
    z = z_crit(m)
    se = ((fa.var(0) + fb.var(0)) / k).sqrt()
    zm = ((fa.mean(0) - fb.mean(0)) / se).abs().max()
    assert zm <= z, f"means differ by {zm:.2f} standard errors (bound {z:.2f})"
    if check_var:
        va, sa = _var_and_se(fa)
        vb, sb = _var_and_se(fb)
        zv = ((va - vb) / (sa**2 + sb**2).sqrt()).abs().max()
        assert zv <= z, f"variances differ by {zv:.2f} standard errors (bound {z:.2f})"


# --------------------------------------------------------------------------- gradients
def elbo_gradients(bnn, guide, x, y, handler, num_runs: int, num_particles: int) -> torch.Tensor:
    """``[R, P]``: gradients of ``R`` independent ``K``-particle vectorised ELBO estimates
    w.r.t. every guide parameter (locs, then raw scales), flattened."""
    elbo = TraceMeanField_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
    )
    params = list(guide.parameters())
    rows = []
    for _ in range(num_runs):
        with pyro.settings.context(module_local_params=True), handler_context(handler):
            loss = elbo.differentiable_loss(bnn, guide, x, y)
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def assert_same_expected_gradient(ga: torch.Tensor, gb: torch.Tensor) -> None:
    """Per-coordinate Welch statistic of two ``[R, P]`` gradient samples, Student-t bound with
    the conservative ``R - 1`` degrees of freedom, Bonferroni over ``P`` coordinates."""
    r, p = ga.shape
    crit = t_crit(p, r - 1)
    se = ((ga.var(0) + gb.var(0)) / r).sqrt()
    assert bool((se > 0).all())
    z = ((ga.mean(0) - gb.mean(0)) / se).abs()
    worst = int(z.argmax())
    assert z[worst] <= crit, (
        f"expected gradients differ at coordinate {worst}: {ga[:, worst].mean():.4g} vs "
        f"{gb[:, worst].mean():.4g} ({z[worst]:.2f} standard errors, bound {crit:.2f})"
    )


def regression_problem(kind: str, batch: int = 32):
    """(bnn, guide, x, y) with dataset_size 10 * batch so the likelihood dominates the ELBO."""
    net = {"mlp": mlp, "cnn": cnn, "conv_head": conv_head}[kind]()
    x = inputs(kind, batch)
    bnn, guide = make_bnn(net, dataset_size=10 * batch, noise=0.5)
    with torch.no_grad():
        y = bnn.forward_with({}, x, unbatched={n: guide.loc(n) for n in bnn.site_names})
        y = y + 0.5 * torch.randn_like(y)
    return bnn, guide, x, y.squeeze(-1) if y.shape[-1] == 1 else y


def gradient_variance_ratio_test(handler, kind: str = "mlp") -> float:
    """Variance of the first layer's loc gradient (projected on a random unit direction) under
    ``handler`` divided by that under weight sampling, both from ``GRAD_RUNS`` runs; asserts a
    reduction with an F-test at level ALPHA and returns the ratio."""
    bnn, guide, x, y = regression_problem(kind, batch=64)
    first = bnn.site_names[0]
    n = guide.loc(first).numel()  # the first parameter of the guide is that loc
    u = torch.randn(n)
    u /= u.norm()
    plain = elbo_gradients(bnn, guide, x, y, None, GRAD_RUNS, GRAD_PARTICLES)[:, :n] @ u
    other = elbo_gradients(bnn, guide, x, y, handler, GRAD_RUNS, GRAD_PARTICLES)[:, :n] @ u
    ratio = float(other.var() / plain.var())
    # run averages of K particles are close to Gaussian, so the ratio of sample variances is
    # F(R-1, R-1) when the true variances are equal: reject "no reduction" at level ALPHA
    bound = float(stats.f.ppf(ALPHA, GRAD_RUNS - 1, GRAD_RUNS - 1))
    assert ratio < bound, f"gradient variance ratio {ratio:.3f} not below F bound {bound:.3f}"
    return ratio


def assert_rows_uncorrelated_but_for_bias(f, layer, guide, x, prefix: str = "") -> None:
    """Identical input rows ``x``: the outputs of examples 0 and 1 share only the bias draw, so
    their covariance across particles is exactly ``sigma_b^2`` per output (weight sampling
    would give the full variance ``x^2 sigma^2 + sigma_b^2``: identical rows).

    Bound: for outputs ``u, v`` with Gaussian marginals of variance ``s^2``, the sample
    covariance has ``Var <= E[u^2 v^2] / K <= sqrt(E u^4 E v^4) / K = 3 s^4 / K``
    (Cauchy-Schwarz, kurtosis 3; no joint Gaussianity needed, as flipout's pair is not
    jointly Gaussian); normal bound (CLT), Bonferroni over the outputs at ALPHA."""
    k = f.shape[0]
    _, var = one_layer_moments(layer, guide, x, prefix)
    _, bias_var = one_layer_moments(layer, guide, torch.zeros_like(x), prefix)
    u, v = f[:, 0].flatten(1), f[:, 1].flatten(1)
    cov = ((u - u.mean(0)) * (v - v.mean(0))).sum(0) / (k - 1)
    z = ((cov - bias_var[0]) / (3 / k) ** 0.5 / var[0]).abs().max()
    bound = z_crit(cov.numel())
    assert z <= bound, f"covariance between examples off by {z:.2f} bounds (bound {bound:.2f})"


def spatial_covariance(f: torch.Tensor, layer: nn.Conv2d, x: torch.Tensor, guide, prefix=""):
    """Sample and exact covariances between horizontally adjacent output locations of example
    0, each ``[C, H, W - 1]``: returns ``(sample, exact_weight_part, exact_bias_part, var)``
    with ``var [C, H, W]`` the sample variances.

    Under weight sampling the same kernel multiplies both patches, so the covariance is
    ``sum_k x_p[k] x_q[k] sigma_k^2 + sigma_b^2``; the bias part alone remains when the weight
    noise is independent per location."""
    k = f.shape[0]
    kw = dict(stride=layer.stride, padding=layer.padding)
    c, h, w = F.conv2d(x[:1], guide.loc(prefix + "weight").detach(), **kw).shape[1:]
    out = f[:, 0].reshape(k, c, h, w)
    centred = out - out.mean(0)
    sample = (centred[..., :-1] * centred[..., 1:]).sum(0) / (k - 1)
    patches = F.unfold(x[:1], layer.kernel_size, **kw)[0].reshape(-1, h, w)  # [C_in*kh*kw, H, W]
    prod = patches[..., :-1] * patches[..., 1:]
    var_w = guide.scale(prefix + "weight").detach().pow(2).flatten(1)  # [C, C_in*kh*kw]
    weight_part = torch.einsum("ck,khw->chw", var_w, prod)
    bias_part = guide.scale(prefix + "bias").detach().pow(2)[:, None, None].expand_as(weight_part)
    return sample, weight_part, bias_part, out.var(0)


def assert_covariance(sample, exact, var, num_particles: int) -> None:
    """Sample covariance of a bivariate Gaussian pair: ``Var(s_pq) = (s_p^2 s_q^2 + c^2)/(K-1)``
    exactly; normal bound (CLT, K in the thousands), Bonferroni over the pairs at ALPHA."""
    se = ((var[..., :-1] * var[..., 1:] + exact**2) / (num_particles - 1)).sqrt()
    z = ((sample - exact) / se).abs().max()
    bound = z_crit(exact.numel())
    assert z <= bound, f"covariances off by {z:.2f} standard errors (bound {bound:.2f})"


def assert_no_handler_left() -> None:
    assert _PYRO_STACK == [], "a Pyro messenger was left on the stack"
    assert torch._C._len_torch_function_stack() == 0, "a torch function mode leaked"

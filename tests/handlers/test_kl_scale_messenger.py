"""kl_scale: the ELBO's KL (latent) part is multiplied by the scale, the likelihood is not.

Exact-value tests: the guide is replayed from a fixed trace, so the ELBO is a deterministic
function of known weights and is compared with a hand-computed value,
``loss(beta) = -(N / B) sum_b log N(y_b | f_b, s^2) + beta * KL``, with the closed-form
``KL(N(m, q^2) || N(0, p^2)) = log(p / q) + (q^2 + m^2) / (2 p^2) - 1/2`` per weight.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from bayesdl.guides import MeanFieldGuide
from bayesdl.handlers import KLScaleMessenger, kl_scale
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior

PRIOR_SCALE, NOISE, N, B = 0.7, 0.3, 20, 5

# Rounding tolerance: Pyro and the hand computation each evaluate a few elementary operations
# per term (<= 8) and sum T terms in some order, so each is within (T + 8) * u * M of the exact
# value, where u = 2^-53 and M is the sum of the absolute values of all elementary parts
# (bounds the intermediate magnitudes, including the cancelling parts of each KL term). Their
# difference is within twice that.
U = 2.0**-53


def _tol(num_terms: int, magnitude: float) -> float:
    return 2 * (num_terms + 8) * U * magnitude


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _problem():
    net = torch.nn.Linear(3, 1)
    bnn = BNN(net, IIDPrior(dist.Normal(0.0, PRIOR_SCALE)), GaussianLikelihood(N, scale=NOISE))
    guide = MeanFieldGuide(bnn, init_scale=0.2)
    with torch.no_grad():
        for loc in guide.locs.values():
            loc.normal_()
        for raw in guide.raw_scales.values():
            raw.uniform_(-2.0, 0.0)
    x, y = torch.randn(B, 3), torch.randn(B)
    guide_trace = poutine.trace(guide).get_trace()
    return bnn, guide, guide_trace, x, y


def _hand_terms(bnn, guide, guide_trace, x, y):
    """(minus the scaled log likelihood, KL, magnitude of all parts, number of terms)."""
    w = {n: guide_trace.nodes[n]["value"].detach() for n in bnn.site_names}
    f = x @ w["weight"].T + w["bias"]  # [B, 1]
    resid = (y - f.squeeze(-1)) / NOISE
    ll_parts = -0.5 * resid**2 - math.log(NOISE) - 0.5 * math.log(2 * math.pi)
    nll = -(N / B) * ll_parts.sum()
    kl, magnitude, count = 0.0, float((N / B) * (0.5 * resid**2).sum() + N * 1.5), B
    for name in bnn.site_names:
        m, q = guide.loc(name).detach(), guide.scale(name).detach()
        parts = (
            math.log(PRIOR_SCALE) - q.log(),
            (q**2 + m**2) / (2 * PRIOR_SCALE**2),
            -0.5 * torch.ones_like(m),
        )
        kl = kl + sum(p.sum() for p in parts)
        magnitude += float(sum(p.abs().sum() for p in parts))
        count += m.numel()
    return float(nll), float(kl), magnitude, count


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_mean_field_elbo_kl_part_scales_exactly(beta):
    bnn, guide, guide_trace, x, y = _problem()
    replayed = poutine.replay(guide, trace=guide_trace)
    with kl_scale(scale=beta):
        loss = TraceMeanField_ELBO().differentiable_loss(bnn, replayed, x, y)
    nll, kl, magnitude, count = _hand_terms(bnn, guide, guide_trace, x, y)
    assert kl > 0
    assert abs(float(loss.detach()) - (nll + beta * kl)) <= _tol(count, (1 + beta) * magnitude)
    # and against the unscaled loss: the difference is (beta - 1) KL
    unscaled = TraceMeanField_ELBO().differentiable_loss(bnn, replayed, x, y)
    assert abs(float((loss - unscaled).detach()) - (beta - 1) * kl) <= _tol(
        count, (2 + beta) * magnitude
    )


def test_trace_elbo_scales_model_and_guide_log_densities():
    """With Monte-Carlo KL the latent part is ``log q(w) - log p(w)``: both the model's prior
    and the guide's density must carry the scale."""
    beta = 0.25
    bnn, guide, guide_trace, x, y = _problem()
    replayed = poutine.replay(guide, trace=guide_trace)
    with kl_scale(scale=beta):
        loss = Trace_ELBO().differentiable_loss(bnn, replayed, x, y)
    nll, _, magnitude, count = _hand_terms(bnn, guide, guide_trace, x, y)
    log_ratio, mag = 0.0, magnitude
    for name in bnn.site_names:
        w = guide_trace.nodes[name]["value"].detach()
        m, q = guide.loc(name).detach(), guide.scale(name).detach()
        log_q = -0.5 * ((w - m) / q) ** 2 - q.log() - 0.5 * math.log(2 * math.pi)
        log_p = -0.5 * (w / PRIOR_SCALE) ** 2 - math.log(PRIOR_SCALE) - 0.5 * math.log(2 * math.pi)
        log_ratio += float((log_q - log_p).sum())
        mag += float(log_q.abs().sum() + log_p.abs().sum())
        count += 2 * w.numel()
    assert abs(float(loss.detach()) - (nll + beta * log_ratio)) <= _tol(count, mag)


def test_only_latent_sites_are_scaled_and_scales_compose():
    """Latent sites get ``beta`` times their existing scale (here a subsampling scale of 2);
    the observed site keeps its minibatch scale ``N / B``."""

    def model():
        with pyro.plate("groups", 10, subsample_size=5):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", N, subsample=torch.arange(B)):
            pyro.sample("obs", dist.Normal(z.sum(), 1.0), obs=torch.zeros(B))

    with kl_scale(scale=0.3):
        trace = poutine.trace(model).get_trace()
    assert trace.nodes["z"]["scale"] == pytest.approx(0.3 * 2)
    assert trace.nodes["w"]["scale"] == pytest.approx(0.3)
    assert trace.nodes["obs"]["scale"] == pytest.approx(N / B)


def test_likelihood_hyper_latents_are_scaled():
    bnn = BNN(
        torch.nn.Linear(3, 1),
        IIDPrior(dist.Normal(0.0, 1.0)),
        GaussianLikelihood(N, scale_prior=dist.LogNormal(-1.0, 0.5)),
    )
    with kl_scale(scale=0.5):
        trace = poutine.trace(bnn).get_trace(torch.randn(B, 3), torch.randn(B))
    latent = [
        n
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    assert set(latent) == {"weight", "bias", "obs.scale"}
    assert all(trace.nodes[n]["scale"] == 0.5 for n in latent)


def test_decorator_and_scale_update_between_steps():
    bnn, guide, guide_trace, x, y = _problem()
    replayed = poutine.replay(guide, trace=guide_trace)
    elbo = TraceMeanField_ELBO()
    nll, kl, magnitude, count = _hand_terms(bnn, guide, guide_trace, x, y)
    messenger = kl_scale(scale=0.5)
    assert isinstance(messenger, KLScaleMessenger)
    step = messenger(elbo.differentiable_loss)
    for beta in (0.5, 0.01, 2.0):  # warm-up schedule: set the scale between steps
        messenger.scale = beta
        loss = step(bnn, replayed, x, y)
        assert abs(float(loss.detach()) - (nll + beta * kl)) <= _tol(count, (1 + beta) * magnitude)
    wrapped = kl_scale(elbo.differentiable_loss, scale=2.0)
    assert abs(float(wrapped(bnn, replayed, x, y).detach()) - (nll + 2 * kl)) <= _tol(
        count, 3 * magnitude
    )


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), -float("inf")])
def test_non_positive_scale_raises(scale):
    with pytest.raises(ValueError, match="scale"):
        kl_scale(scale=scale)
    with pytest.raises(ValueError, match="scale"):
        KLScaleMessenger(scale)


def test_non_number_scale_raises():
    with pytest.raises(TypeError, match="scale"):
        kl_scale(scale="0.5")

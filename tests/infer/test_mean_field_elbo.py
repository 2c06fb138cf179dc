"""MeanFieldELBO is TraceMeanField_ELBO's estimator, computed once per site and without syncs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from bayesdl.guides import MeanFieldGuide
from bayesdl.handlers import kl_scale, local_reparam
from bayesdl.infer import MeanFieldELBO
from bayesdl.infer.mean_field_elbo import normal_kl_sum
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior, LayerwiseNormalPrior, ScaleMixturePrior


def _problem(prior, likelihood):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    bnn = BNN(net.double(), prior, likelihood)
    guide = MeanFieldGuide(bnn, init_scale=0.3)
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, dtype=torch.float64)
    return bnn, guide, x, y


def _loss_and_grads(elbo, bnn, guide, x, y, handler=None):
    pyro.set_rng_seed(7)
    for p in guide.parameters():
        p.grad = None
    params = list(guide.parameters()) + list(bnn.parameters())
    with pyro.settings.context(module_local_params=True):
        if handler is None:
            loss = elbo.differentiable_loss(bnn, guide, x[:10], y[:10])
        else:
            with handler():
                loss = elbo.differentiable_loss(bnn, guide, x[:10], y[:10])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads


CASES = {
    "iid": (lambda: IIDPrior(dist.Normal(0.0, 1.0)), lambda: GaussianLikelihood(20, scale=0.5)),
    "layerwise": (
        lambda: LayerwiseNormalPrior("kaiming"),
        lambda: GaussianLikelihood(20, learn_scale=True),
    ),
    # a prior that depends on another latent, and a positive hyper-latent (Monte-Carlo KL)
    "scale_mixture": (
        lambda: ScaleMixturePrior(),
        lambda: GaussianLikelihood(20, scale_prior=dist.LogNormal(-1.0, 0.5)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("num_particles", [1, 8])
@pytest.mark.parametrize(
    "handler",
    [None, local_reparam, lambda: kl_scale(scale=0.3)],
    ids=["plain", "local", "kl_scale"],
)
def test_same_loss_and_gradients_as_trace_mean_field(case, num_particles, handler):
    """Same seed, same samples: the two losses differ only in the order of floating-point sums
    (float64, relative tolerance 1e-10)."""
    prior, likelihood = CASES[case]
    bnn, guide, x, y = _problem(prior(), likelihood())
    kwargs = dict(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )
    ours, ours_grads = _loss_and_grads(MeanFieldELBO(**kwargs), bnn, guide, x, y, handler)
    ref, ref_grads = _loss_and_grads(TraceMeanField_ELBO(**kwargs), bnn, guide, x, y, handler)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=0)
    for a, b in zip(ours_grads, ref_grads, strict=True):
        if b is None:
            assert a is None or torch.all(a == 0)
        else:
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_normal_kl_sum_matches_torch():
    q = dist.Normal(
        torch.randn(4, 5, dtype=torch.float64), torch.rand(4, 5, dtype=torch.float64) + 0.1
    )
    p = dist.Normal(
        torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    ).expand((4, 5))
    exact = torch.distributions.kl_divergence(q, p).sum()
    assert torch.allclose(normal_kl_sum(q.to_event(2), p.to_event(2)), exact, rtol=1e-12)
    # not a scalar prior: the special case declines
    p2 = dist.Normal(torch.zeros(4, 5, dtype=torch.float64), torch.ones(4, 5, dtype=torch.float64))
    assert normal_kl_sum(q, p2) is None


def test_fit_uses_mean_field_elbo_by_default_and_classic_svi_works():
    bnn, guide, x, y = _problem(IIDPrior(dist.Normal(0.0, 1.0)), GaussianLikelihood(20, scale=0.5))
    elbo = MeanFieldELBO()
    with pyro.settings.context(module_local_params=True):
        value = elbo.loss(bnn, guide, x, y)
    assert isinstance(value, float)

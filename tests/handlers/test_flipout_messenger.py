"""flipout: moments, spatial covariance and expected ELBO gradients equal weight sampling's.

Flipout perturbs all examples of a particle with one weight draw ``dW``, decorrelated by
random signs, ``(x * s_in) dW^T * s_out``; since ``s_out s_in dW`` has the law of ``dW``, each
example's joint output law (all units and all spatial locations) is exactly that of weight
sampling, for Linear and Conv2d layers alike, and so is the expected ELBO of any network.

The statistical design and the helpers are those of ``test_local_reparam_messenger.py``
(family-wise false-alarm rate ``ALPHA = 1e-4`` per test invocation, Bonferroni inside).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn

from bayesdl.guides import DeltaGuide
from bayesdl.handlers import FlipoutMessenger, flipout
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior
from tests.handlers._mc import (
    GRAD_PARTICLES,
    GRAD_PARTICLES_SLOW,
    GRAD_RUNS,
    GRAD_RUNS_SLOW,
    NUM_PARTICLES,
    NUM_PARTICLES_SLOW,
    assert_covariance,
    assert_gaussian_moments,
    assert_no_handler_left,
    assert_rows_uncorrelated_but_for_bias,
    assert_same_expected_gradient,
    assert_same_moments,
    cnn,
    draw,
    draw_many,
    elbo_gradients,
    gradient_variance_ratio_test,
    inputs,
    make_bnn,
    mlp,
    one_layer_moments,
    regression_problem,
    spatial_covariance,
)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _one_layer(kind: str):
    layer = nn.Linear(4, 3) if kind == "linear" else nn.Conv2d(2, 2, 3, padding=1, stride=2)
    net, prefix = (layer, "") if kind == "linear" else (nn.Sequential(layer, nn.Flatten()), "0.")
    x = torch.randn(6, 4) if kind == "linear" else torch.randn(3, 2, 7, 7)
    return layer, net, prefix, x


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_one_layer_moments_are_exact(kind):
    """Mean ``x mu + mu_b`` and variance ``x^2 sigma^2 + sigma_b^2`` of a Linear / strided,
    padded Conv2d output (exact Gaussian targets, exact sampling distributions)."""
    layer, net, prefix, x = _one_layer(kind)
    bnn, guide = make_bnn(net)
    f = draw(bnn, guide, x, NUM_PARTICLES, flipout)
    assert_gaussian_moments(f, *one_layer_moments(layer, guide, x, prefix))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_one_layer_moments_are_exact_many_particles(kind):
    layer, net, prefix, x = _one_layer(kind)
    bnn, guide = make_bnn(net)
    f = draw_many(bnn, guide, x, NUM_PARTICLES_SLOW, flipout)
    assert_gaussian_moments(f, *one_layer_moments(layer, guide, x, prefix))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_network_moments_match_weight_sampling(kind):
    bnn, guide = make_bnn(mlp() if kind == "mlp" else cnn())
    x = inputs(kind, 6 if kind == "mlp" else 3)
    plain = draw(bnn, guide, x, NUM_PARTICLES, None)
    flip = draw(bnn, guide, x, NUM_PARTICLES, flipout)
    assert_same_moments(plain, flip)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_network_moments_match_weight_sampling_many_particles(kind):
    bnn, guide = make_bnn(mlp() if kind == "mlp" else cnn())
    x = inputs(kind, 6 if kind == "mlp" else 3)
    plain = draw_many(bnn, guide, x, NUM_PARTICLES_SLOW, None)
    flip = draw_many(bnn, guide, x, NUM_PARTICLES_SLOW, flipout)
    assert_same_moments(plain, flip)


def test_conv_keeps_spatial_covariance():
    """Within one example the signs are per channel, not per location, so adjacent output
    locations covary exactly as under weight sampling: ``sum_k x_p x_q sigma_k^2 + sigma_b^2``."""
    layer = nn.Conv2d(2, 2, 3, padding=1, stride=2)
    bnn, guide = make_bnn(nn.Sequential(layer, nn.Flatten()))
    x = torch.rand(2, 2, 7, 7)
    f = draw(bnn, guide, x, NUM_PARTICLES, flipout)
    sample, weight_part, bias_part, var = spatial_covariance(f, layer, x, guide, "0.")
    assert_covariance(sample, weight_part + bias_part, var, NUM_PARTICLES)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_engages_examples_are_decorrelated(kind):
    """Identical input rows: weight sampling gives identical outputs within a particle;
    flipout's sign flips leave only the shared bias draw correlated. Fails if flipout falls
    back silently."""
    layer, net, prefix, x = _one_layer(kind)
    bnn, guide = make_bnn(net)
    x = x[:1].expand(4, *x.shape[1:])
    with torch.no_grad(), flipout():  # K = 1, no particle plate
        one = poutine.replay(bnn, trace=poutine.trace(guide).get_trace())(x)
    assert not (one == one[:1]).all()
    k = 4000
    assert_rows_uncorrelated_but_for_bias(draw(bnn, guide, x, k, flipout), layer, guide, x, prefix)


def test_one_weight_draw_per_particle_shared_by_examples():
    """With one input feature, example ``n``'s perturbation is ``s_out[n] s_in[n] x_n dW``:
    ``|f_n - x_n mu - b| / |x_n|`` is the same ``|dW|`` for every example of a particle (one
    draw per particle, only signs differ) and differs between particles (new draws)."""
    bnn, guide = make_bnn(nn.Linear(1, 3))
    x = torch.randn(5, 1)
    k = 4
    with torch.no_grad(), flipout(), pyro.plate("p", k, dim=-2):
        trace = poutine.trace(guide).get_trace()
        f = poutine.replay(bnn, trace=trace)(x)
        mean = x * guide.loc("weight").T + trace.nodes["bias"]["value"]  # [K, 1, 3] bias
    delta = (f - mean).abs() / x.abs()  # [K, B, 3]
    # |dW| recovered from every example agrees to rounding: a few ulps of |f| / |x|
    tol = 16 * torch.finfo(f.dtype).eps * (f.abs() + mean.abs()).max() / x.abs().min()
    assert (delta - delta[:, :1]).abs().max() <= tol
    assert (delta[1:, 0] - delta[:1, 0]).abs().min() > 1e3 * tol


def test_input_signs_vary_perturbation_magnitudes():
    """Identical rows, one output unit, two inputs: ``|dy_n| = |x1 s_n1 dW1 + x2 s_n2 dW2|``
    takes two different values as the input signs ``s_n`` vary across examples; with output
    signs only (or weight sampling) every example would get the same magnitude. With 8
    examples a particle shows one magnitude only if all sign patterns agree up to a global
    flip, probability 2^-7 per particle."""
    bnn, guide = make_bnn(nn.Linear(2, 1))
    x = torch.randn(1, 2).expand(8, 2)
    k = 20
    with torch.no_grad(), flipout(), pyro.plate("p", k, dim=-2):
        trace = poutine.trace(guide).get_trace()
        f = poutine.replay(bnn, trace=trace)(x)
        mean = x @ guide.loc("weight").T + trace.nodes["bias"]["value"]
    magnitude = (f - mean).abs().squeeze(-1)  # [K, B]
    spread = magnitude.max(1).values - magnitude.min(1).values
    # rounding of |dy| is a few ulps of |f| + |mean|; count particles clearly above it
    tol = 16 * torch.finfo(f.dtype).eps * (f.abs() + mean.abs()).max()
    # P(at most 10 of 20 particles show two magnitudes) < 1e-12 when input signs are used
    assert int((spread > 1e3 * tol).sum()) > k // 2


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_expected_elbo_gradient_matches_weight_sampling(kind):
    bnn, guide, x, y = regression_problem(kind)
    plain = elbo_gradients(bnn, guide, x, y, None, GRAD_RUNS, GRAD_PARTICLES)
    flip = elbo_gradients(bnn, guide, x, y, flipout, GRAD_RUNS, GRAD_PARTICLES)
    assert_same_expected_gradient(plain, flip)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn", "conv_head"])
def test_expected_elbo_gradient_matches_weight_sampling_many_runs(kind):
    bnn, guide, x, y = regression_problem(kind)
    plain = elbo_gradients(bnn, guide, x, y, None, GRAD_RUNS_SLOW, GRAD_PARTICLES_SLOW)
    flip = elbo_gradients(bnn, guide, x, y, flipout, GRAD_RUNS_SLOW, GRAD_PARTICLES_SLOW)
    assert_same_expected_gradient(plain, flip)


def test_reduces_gradient_variance_of_first_layer_loc():
    """Wen et al. (2018): decorrelating examples lowers the minibatch gradient variance."""
    gradient_variance_ratio_test(flipout)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_composes_with_vectorised_particles(kind):
    bnn, guide, x, y = regression_problem(kind, batch=5)
    shapes = []

    def model(x, y):
        f = bnn(x, y)
        shapes.append(f.shape)
        return f

    elbo = TraceMeanField_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    with pyro.settings.context(module_local_params=True), flipout():
        loss = elbo.differentiable_loss(model, guide, x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert shapes and all(s == (8, 5, 2) for s in shapes)
    for name, p in guide.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_model_only_wrapping_does_not_replace_guide_by_prior():
    """As for local_reparam: with only the model wrapped, outputs must follow the guide."""
    layer = nn.Linear(4, 3)
    bnn, guide = make_bnn(layer)
    with torch.no_grad():
        for loc in guide.locs.values():
            loc.add_(3.0)
    x = torch.randn(6, 4)
    with torch.no_grad(), pyro.plate("p", NUM_PARTICLES, dim=-2):
        guide_trace = poutine.trace(guide).get_trace()
        f = poutine.replay(flipout(bnn), trace=guide_trace)(x)
    assert_gaussian_moments(f, *one_layer_moments(layer, guide, x))


def _run_once(bnn, guide, x):
    with pyro.plate("p", 3, dim=-2):
        return poutine.replay(bnn, trace=poutine.trace(guide).get_trace())(x)


def test_context_and_decorator_leave_nothing_behind():
    bnn, guide = make_bnn(mlp())
    x = inputs("mlp", 4)
    wrapped = flipout(_run_once)
    assert not isinstance(wrapped, FlipoutMessenger)
    assert isinstance(flipout(), FlipoutMessenger)
    pyro.set_rng_seed(1)
    got = wrapped(bnn, guide, x)
    assert_no_handler_left()
    pyro.set_rng_seed(1)
    with flipout():
        expected = _run_once(bnn, guide, x)
    assert_no_handler_left()
    assert torch.equal(got, expected)
    # afterwards: plain weight sampling, outputs equal the sampled weights' forward
    x1 = x[:1].expand(4, 4)
    with pyro.plate("p", 3, dim=-2):
        trace = poutine.trace(guide).get_trace()
        after = poutine.replay(bnn, trace=trace)(x1)
    values = {n: trace.nodes[n]["value"] for n in bnn.site_names}
    assert torch.equal(after, bnn.forward_with(values, x1).squeeze(1))
    assert (after == after[:, :1]).all()


def test_delta_guide_falls_back_to_weight_sampling_exactly():
    bnn = BNN(cnn(), IIDPrior(dist.Normal(0.0, 1.0)), GaussianLikelihood(None))
    guide = DeltaGuide(bnn)
    x = inputs("cnn", 3)
    with flipout():
        trace = poutine.trace(guide).get_trace()
        f = poutine.replay(bnn, trace=trace)(x)
    values = {n: trace.nodes[n]["value"] for n in bnn.site_names}
    assert torch.equal(f, bnn.forward_with(values, x))

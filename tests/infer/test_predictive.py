"""predict: vectorised over samples, equal to a loop over samples, chunking, prior predictive."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch

from bayesdl.guides import MeanFieldGuide
from bayesdl.infer import predict, sample_posterior
from bayesdl.likelihoods import CategoricalLikelihood, GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior


def _bnn(out=1, lik=None):
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, out))
    return BNN(net, LayerwiseNormalPrior(), lik or GaussianLikelihood(30, scale=0.2))


def test_vectorised_prediction_equals_a_loop_over_samples():
    bnn = _bnn()
    guide = MeanFieldGuide(bnn, init_scale=0.3)
    x = torch.randn(30, 2)
    f, latents, _ = sample_posterior(bnn, guide, x, num_samples=25)
    assert f.shape == (25, 30, 1)
    for s in range(25):
        weights = {n: latents[n][s, 0] for n in bnn.site_names}
        single = bnn.forward_with(weights, x)
        assert torch.allclose(f[s], single, atol=1e-6, rtol=0)


def test_regression_prediction_summary():
    bnn = _bnn()
    guide = MeanFieldGuide(bnn, init_scale=0.3)
    p = predict(bnn, guide, torch.randn(30, 2), num_samples=40)
    assert p.mean.shape == p.variance.shape == (30,)
    assert p.num_samples == 40 and p.sample_means.shape == (40, 30)
    assert torch.all(p.variance >= 0.2**2)
    assert torch.allclose(p.std, p.variance.sqrt())


def test_chunked_prediction_reuses_the_same_weights():
    bnn = _bnn()
    guide = MeanFieldGuide(bnn, init_scale=0.3)
    x = torch.randn(30, 2)
    pyro.set_rng_seed(3)
    whole = predict(bnn, guide, x, num_samples=10)
    pyro.set_rng_seed(3)
    chunked = predict(bnn, guide, x, num_samples=10, batch_size=7)
    assert torch.allclose(whole.f_samples, chunked.f_samples, atol=1e-6, rtol=0)


def test_prior_predictive_without_guide():
    bnn = _bnn()
    p = predict(bnn, None, torch.randn(30, 2), num_samples=200)
    assert torch.all(p.epistemic_variance > 0)


def test_classification_prediction_and_local_reparam_agnostic():
    bnn = _bnn(out=3, lik=CategoricalLikelihood(30))
    guide = MeanFieldGuide(bnn)
    p = predict(bnn, guide, torch.randn(30, 2), num_samples=20)
    assert p.probs.shape == (30, 3) and p.variance is None
    assert torch.allclose(p.probs.sum(-1), torch.ones(30))
    with pytest.raises(AttributeError, match="regression"):
        _ = p.std


def test_predict_does_not_touch_param_store_or_record_grads():
    bnn = _bnn()
    guide = MeanFieldGuide(bnn)
    p = predict(bnn, guide, torch.randn(30, 2), num_samples=5)
    assert not p.f_samples.requires_grad and len(pyro.get_param_store()) == 0


def test_predict_bad_input():
    bnn = _bnn()
    with pytest.raises(ValueError, match="num_samples"):
        predict(bnn, None, torch.randn(3, 2), num_samples=0)
    with pytest.raises(TypeError, match="x must be"):
        predict(bnn, None, [[0.0, 1.0]])
    with pytest.raises(TypeError, match="bayesdl.nn.BNN"):
        predict(poutine.trace(bnn), None, torch.randn(3, 2))


def test_predict_at_more_inputs_than_training_points_and_learned_noise():
    bnn = _bnn(lik=GaussianLikelihood(8, learn_scale=True))
    guide = MeanFieldGuide(bnn)
    p = predict(bnn, guide, torch.randn(50, 2), num_samples=4)
    assert p.mean.shape == (50,)
    assert not p.variance.requires_grad and not p.aleatoric_variance.requires_grad

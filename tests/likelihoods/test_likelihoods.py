"""Likelihoods: minibatch scaling in the data plate, target checks, predictive summaries."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    PoissonLikelihood,
)


def _log_lik(lik, f, y):
    trace = pyro.poutine.trace(lik).get_trace(f, y)
    trace.compute_log_prob()
    return trace.log_prob_sum(), trace.nodes[lik.site_name]


@pytest.mark.parametrize(
    "lik, f, y",
    [
        (GaussianLikelihood(100, scale=0.5), torch.randn(10, 1), torch.randn(10)),
        (CategoricalLikelihood(100), torch.randn(10, 4), torch.randint(0, 4, (10,))),
        (BernoulliLikelihood(100), torch.randn(10, 1), torch.randint(0, 2, (10,)).float()),
        (PoissonLikelihood(100), torch.randn(10, 1), torch.randint(0, 5, (10,)).float()),
    ],
)
def test_minibatch_log_likelihood_is_scaled_by_n_over_b(lik, f, y):
    total, node = _log_lik(lik, f, y)
    unscaled = lik.distribution(f, {}).log_prob(y).sum()
    assert node["scale"] == pytest.approx(10.0)
    assert torch.allclose(total, 10.0 * unscaled)


def test_full_batch_is_not_scaled():
    lik = GaussianLikelihood(None, scale=1.0)
    total, node = _log_lik(lik, torch.zeros(7, 1), torch.zeros(7))
    assert node["scale"] == 1.0
    assert torch.allclose(total, dist.Normal(0.0, 1.0).log_prob(torch.zeros(7)).sum())


def test_gaussian_multi_output_and_particles():
    lik = GaussianLikelihood(20, scale=0.3)
    f = torch.randn(5, 20, 3)  # 5 particles, 20 points, 3 outputs
    d = lik.distribution(f, {})
    assert d.batch_shape == (5, 20) and d.event_shape == (3,)
    with pyro.plate("p", 5, dim=-2):
        y = lik(f)
    assert y.shape == (5, 20, 3)


def test_gaussian_noise_modes():
    learned = GaussianLikelihood(10, scale=0.7, learn_scale=True)
    assert [n for n, _ in learned.named_parameters()] == ["raw_scale"]
    assert torch.allclose(learned.noise_scale({}, torch.zeros(1)), torch.tensor(0.7))
    sampled = GaussianLikelihood(10, scale_prior=dist.HalfNormal(1.0))
    trace = pyro.poutine.trace(sampled.sample_latents).get_trace()
    assert "obs.scale" in trace.nodes
    fixed = GaussianLikelihood(10, scale=0.2)
    assert list(fixed.parameters()) == [] and "_fixed_scale" in fixed.state_dict()


def test_gaussian_summary_moments():
    """Law of total variance: mean of sample means; variance = var of means + E noise var."""
    lik = GaussianLikelihood(10, scale=0.5)
    f = torch.randn(200, 10, 1)
    p = lik.summarize(f, {})
    assert torch.allclose(p.mean, f[..., 0].mean(0))
    assert torch.allclose(p.epistemic_variance, f[..., 0].var(0, unbiased=False))
    assert torch.allclose(p.variance, p.epistemic_variance + 0.25)
    # a sampled noise scale enters per sample
    lik2 = GaussianLikelihood(10, scale_prior=dist.HalfNormal(1.0))
    scales = torch.rand(200, 1) + 0.1
    p2 = lik2.summarize(f, {"obs.scale": scales})
    assert torch.allclose(p2.aleatoric_variance, (scales**2).mean().expand(10))
    assert p2.sample_variances.shape == (200, 10)


def test_classification_summaries():
    f = torch.randn(50, 8, 3)
    p = CategoricalLikelihood(8).summarize(f, {})
    assert torch.allclose(p.probs, f.softmax(-1).mean(0))
    assert torch.allclose(p.probs.sum(-1), torch.ones(8))
    pb = BernoulliLikelihood(8).summarize(torch.randn(50, 8, 1), {})
    assert pb.probs.shape == (8, 2) and torch.allclose(pb.probs.sum(-1), torch.ones(8))
    rates = torch.randn(50, 8, 1)
    pp = PoissonLikelihood(8).summarize(rates, {})
    lam = rates[..., 0].exp()
    assert torch.allclose(pp.variance, lam.mean(0) + lam.var(0, unbiased=False))


@pytest.mark.parametrize(
    "lik, f, y, exc, match",
    [
        (GaussianLikelihood(10), torch.zeros(10, 1), torch.zeros(10, 2), ValueError, "shape"),
        (
            GaussianLikelihood(10),
            torch.zeros(10, 1),
            torch.zeros(10, dtype=torch.long),
            TypeError,
            "floating",
        ),
        (
            CategoricalLikelihood(10),
            torch.zeros(10, 3),
            torch.full((10,), 3),
            ValueError,
            r"\[0, 2\]",
        ),
        (
            CategoricalLikelihood(10),
            torch.zeros(10, 3),
            torch.zeros(10),
            TypeError,
            "integer class",
        ),
        (
            BernoulliLikelihood(10),
            torch.zeros(10, 1),
            torch.full((10,), 0.5),
            ValueError,
            "0 and 1",
        ),
        (PoissonLikelihood(10), torch.zeros(10, 1), -torch.ones(10), ValueError, "non-negative"),
        (PoissonLikelihood(10), torch.zeros(10, 1), torch.full((10,), 1.5), ValueError, "integer"),
        (
            GaussianLikelihood(10),
            torch.zeros(10, 1),
            torch.zeros(9),
            ValueError,
            "same number of rows",
        ),
        (GaussianLikelihood(4), torch.zeros(10, 1), torch.zeros(10), ValueError, "dataset_size=4"),
    ],
)
def test_bad_targets(lik, f, y, exc, match):
    with pytest.raises(exc, match=match):
        lik(f, y)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="scale must be > 0"):
        GaussianLikelihood(10, scale=-1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        GaussianLikelihood(10, scale=0.0)
    with pytest.raises(ValueError, match="dataset_size"):
        GaussianLikelihood(0)
    with pytest.raises(TypeError, match="dataset_size"):
        CategoricalLikelihood(10.5)
    with pytest.raises(ValueError, match="not both"):
        GaussianLikelihood(10, learn_scale=True, scale_prior=dist.HalfNormal(1.0))
    with pytest.raises(ValueError, match="scalar"):
        GaussianLikelihood(10, scale_prior=dist.HalfNormal(torch.ones(2)))

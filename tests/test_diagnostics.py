"""ArviZ export of guide samples and posterior predictive draws."""

from __future__ import annotations

import pytest
import torch

from bayesdl.diagnostics import to_inference_data
from bayesdl.guides import MeanFieldGuide
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import ScaleMixturePrior


def test_inference_data_groups_and_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    bnn = BNN(net, ScaleMixturePrior(), GaussianLikelihood(12))
    guide = MeanFieldGuide(bnn, init_scale=0.2)
    x, y = torch.randn(12, 2), torch.randn(12)
    idata = to_inference_data(bnn, guide, x, y, num_samples=30, num_chains=3)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "observed_data"}
    assert idata.posterior["0.weight"].shape == (3, 10, 4, 2)
    assert idata.posterior["2.variance"].shape == (3, 10)
    assert bool((idata.posterior["2.variance"] > 0).all())
    assert idata.posterior_predictive["obs"].shape == (3, 10, 12)
    assert idata.observed_data["obs"].shape == (12,)
    # the exported draws are the guide's: their mean is near the guide's mean
    # (30 draws, scale 0.2: standard error 0.2 / sqrt(30) ~ 0.037; 5 standard errors)
    mean = torch.as_tensor(idata.posterior["0.weight"].values).mean((0, 1))
    assert torch.allclose(mean, guide.loc("0.weight").detach(), atol=5 * 0.2 / 30**0.5)


def test_inference_data_bad_arguments():
    bnn = BNN(torch.nn.Linear(2, 1), ScaleMixturePrior(), GaussianLikelihood(4))
    guide = MeanFieldGuide(bnn)
    with pytest.raises(ValueError, match="divisible"):
        to_inference_data(bnn, guide, torch.randn(4, 2), num_samples=10, num_chains=3)

"""Weight priors: shapes, fan-in scales, the scale-mixture marginal, device moves, bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.priors import IIDPrior, LayerwiseNormalPrior, ScaleMixturePrior, WeightSite


def _site(shape, name="layer.weight"):
    return WeightSite(name, torch.zeros(shape), None)


def test_weight_site_fans():
    conv = _site((16, 3, 5, 5))
    assert conv.fan_in == 75 and conv.fan_out == 400 and conv.is_weight
    bias = _site((16,), "layer.bias")
    assert bias.fan_in == 1 and not bias.is_weight and bias.module_name == "layer"


@pytest.mark.parametrize(
    "method, expected",
    [
        ("radford", 2.0 / math.sqrt(100)),
        ("neal", 2.0 / math.sqrt(100)),
        ("xavier", 2.0 * math.sqrt(2.0 / (100 + 10))),
        ("kaiming", 2.0 * math.sqrt(2.0 / 100)),
    ],
)
def test_layerwise_scales(method, expected):
    prior = LayerwiseNormalPrior(method, weight_scale=2.0, bias_scale=0.5)
    site = _site((10, 100))
    d = prior.distribution(site)
    assert d.event_shape == (10, 100) and d.batch_shape == ()
    assert torch.allclose(d.base_dist.scale, torch.tensor(expected))
    assert prior.scale(_site((10,), "layer.bias")) == 0.5


def test_iid_prior_moves_to_parameter_device_and_dtype(device):
    prior = IIDPrior(dist.Laplace(0.0, 0.3))
    site = WeightSite("w", torch.zeros(4, 2, dtype=torch.float64, device=device), None)
    d = prior.distribution(site)
    value = d.sample()
    assert value.dtype == torch.float64 and value.device.type == device.type
    assert value.shape == (4, 2)
    # log-density is the sum of the scalar densities
    expected = dist.Laplace(0.0, 0.3).log_prob(value.cpu().float()).sum()
    assert torch.allclose(d.log_prob(value).cpu().float(), expected)


def test_scale_mixture_marginal_is_student_t():
    """Given v ~ InvGamma(a, b) and w | v ~ N(0, v s^2), w is Student-t(2a, 0, s sqrt(b/a)).

    We compare the MC variance of w (over S independent prior draws, one weight each, since
    weights in one draw share v) with the exact b s^2 / (a - 1) (a = 4). The standard error of
    the sample variance is sqrt((m4 - var^2) / S) with the Student-t kurtosis
    m4 = 3 var^2 (nu - 2) / (nu - 4) for nu = 2a = 8; z = 5.
    """
    a, b = 4.0, 2.0
    prior = ScaleMixturePrior(concentration=a, rate=b)
    net = torch.nn.Sequential(torch.nn.Linear(3, 25), torch.nn.Tanh(), torch.nn.Linear(25, 1))
    sites = [WeightSite(n, p, None) for n, p in net.named_parameters()]
    num = 40_000
    with pyro.plate("draws", num, dim=-1):
        values = prior.sample(sites)
    w = values["2.weight"][..., 0, 0]
    s2 = 1.0 / 25
    var = b * s2 / (a - 1)
    nu = 2 * a
    m4 = 3 * var**2 * (nu - 2) / (nu - 4)
    se = math.sqrt((m4 - var**2) / num)
    assert abs(float(w.var()) - var) < 5 * se
    # first-layer weights keep the base Normal prior: variance 1 / fan_in = 1 / 3
    w0 = values["0.weight"][..., 0, 0]
    assert abs(float(w0.var()) - 1 / 3) < 5 * math.sqrt(2 / num) / 3
    assert prior.variance_site(sites) == "2.variance"


def test_bad_prior_arguments():
    with pytest.raises(ValueError, match="method"):
        LayerwiseNormalPrior("glorot")
    with pytest.raises(ValueError, match="weight_scale"):
        LayerwiseNormalPrior(weight_scale=0.0)
    with pytest.raises(ValueError, match="bias_scale"):
        LayerwiseNormalPrior(bias_scale=-1.0)
    with pytest.raises(TypeError, match="pyro.distributions"):
        IIDPrior(torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="scalar"):
        IIDPrior(dist.Normal(torch.zeros(3), 1.0))
    with pytest.raises(ValueError, match="concentration"):
        ScaleMixturePrior(concentration=0.0)
    with pytest.raises(ValueError, match="rate"):
        ScaleMixturePrior(rate=-2.0)
    sites = [_site((2, 3), "a.weight")]
    with pytest.raises(ValueError, match="last_layer"):
        ScaleMixturePrior(last_layer="b").sample(sites)


def test_priors_are_modules_with_state():
    prior = LayerwiseNormalPrior()
    assert isinstance(prior, torch.nn.Module)
    assert "method='radford'" in repr(prior)

"""BNN: sites from any nn.Module, site_filter, Pyro interoperability, bad input."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from bayesdl.likelihoods import CategoricalLikelihood, GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior, LayerwiseNormalPrior


def _mlp(d=3, h=8, out=1):
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, out))


def test_sites_named_by_dotted_path_and_become_buffers():
    net = _mlp()
    bnn = BNN(net, LayerwiseNormalPrior(), GaussianLikelihood(10))
    assert bnn.site_names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(net.parameters()) == []  # all random: nothing left to point-estimate
    assert set(dict(net.named_buffers())) == set(bnn.site_names)
    trace = pyro.poutine.trace(bnn).get_trace(torch.randn(10, 3))
    sampled = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    assert sampled[:4] == bnn.site_names


def test_site_filter_keeps_unselected_parameters_deterministic():
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    bnn = BNN(
        net,
        LayerwiseNormalPrior(),
        GaussianLikelihood(10),
        site_filter=lambda name, module: not isinstance(module, torch.nn.LayerNorm),
    )
    assert bnn.site_names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert [n for n, _ in net.named_parameters()] == ["1.weight", "1.bias"]
    trace = pyro.poutine.trace(bnn).get_trace(torch.randn(10, 3))
    assert "1.weight" not in trace.nodes


def test_site_filter_selecting_nothing_raises():
    with pytest.raises(ValueError, match="selected no parameter"):
        BNN(_mlp(), LayerwiseNormalPrior(), GaussianLikelihood(10), site_filter=lambda n, m: False)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (("net", LayerwiseNormalPrior(), GaussianLikelihood(4)), TypeError, "net must be"),
        ((_mlp(), dist.Normal(0, 1), GaussianLikelihood(4)), TypeError, "prior must be"),
        ((_mlp(), LayerwiseNormalPrior(), "gauss"), TypeError, "likelihood must be"),
    ],
)
def test_constructor_type_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        BNN(*args)


def test_bad_inputs_raise_clear_errors():
    bnn = BNN(_mlp(), LayerwiseNormalPrior(), GaussianLikelihood(10))
    x, y = torch.randn(10, 3), torch.randn(10)
    x_nan = x.clone()
    x_nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        bnn(x_nan, y)
    y_inf = y.clone()
    y_inf[0] = float("inf")
    with pytest.raises(ValueError, match="y contains 1 non-finite"):
        bnn(x, y_inf)
    with pytest.raises(ValueError, match="same number of rows"):
        bnn(x, torch.randn(9))
    with pytest.raises(TypeError, match="dtype torch.float64"):
        bnn(x.double(), y)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bnn(x.tolist(), y)
    with pytest.raises(ValueError, match="dataset_size=5 is smaller"):
        BNN(_mlp(), LayerwiseNormalPrior(), GaussianLikelihood(5))(x, y)


def test_particle_plate_must_sit_left_of_the_data_plate():
    bnn = BNN(_mlp(), LayerwiseNormalPrior(), GaussianLikelihood(10))
    x = torch.randn(10, 3)
    with pyro.plate("particles", 7, dim=-2):
        assert bnn(x).shape == (7, 10, 1)
    with pytest.raises(ValueError):
        with pyro.plate("particles", 7, dim=-1):
            bnn(x)


def test_works_with_pyro_autoguide_and_vectorised_particles():
    """What Pyro cannot do for PyroModule BNNs (pyro issue 503): vectorised particles."""
    x, y = torch.randn(16, 3), torch.randn(16)
    bnn = BNN(_mlp(), LayerwiseNormalPrior(), GaussianLikelihood(16))
    with pyro.settings.context(module_local_params=True):
        guide = AutoNormal(bnn)
        elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
        loss = elbo.differentiable_loss(bnn, guide, x, y)
        loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in guide.parameters())


def test_pyro_predictive_parallel_and_classic_svi():
    x, y = torch.randn(16, 3), torch.randn(16)
    bnn = BNN(_mlp(), IIDPrior(dist.Normal(0.0, 1.0)), GaussianLikelihood(16, learn_scale=True))
    guide = AutoNormal(bnn)
    svi = SVI(bnn, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(3):
        svi.step(x, y)
    # the deterministic noise scale went to the global param store under the BNN's name
    assert "bnn$$$likelihood.raw_scale" in pyro.get_param_store()
    samples = Predictive(bnn, guide=guide, num_samples=50, parallel=True)(x)
    assert samples["obs"].shape == (50, 16)
    assert samples["0.weight"].shape[-2:] == (8, 3)


def test_classification_outputs_and_device(device):
    net = _mlp(d=4, out=3).to(device)
    bnn = BNN(net, LayerwiseNormalPrior("kaiming"), CategoricalLikelihood(20)).to(device)
    x = torch.randn(20, 4, device=device)
    y = torch.randint(0, 3, (20,), device=device)
    f = bnn(x, y)
    assert f.shape == (20, 3) and f.device.type == device.type


def test_batchnorm_in_training_mode_with_particles_gives_a_clear_error():
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    bnn = BNN(
        net,
        LayerwiseNormalPrior(),
        GaussianLikelihood(10),
        site_filter=lambda name, module: not isinstance(module, torch.nn.BatchNorm1d),
    )
    x = torch.randn(10, 3)
    assert bnn(x).shape == (10, 1)  # one particle: ordinary training-mode BatchNorm
    with pytest.raises(ValueError, match=r"BatchNorm layer '1' is in training mode"):
        with pyro.plate("particles", 4, dim=-2):
            bnn(x)
    net.eval()
    with pyro.plate("particles", 4, dim=-2):
        assert bnn(x).shape == (4, 10, 1)

"""BNNPotential (the untraced fast path) against ModelPotential (traced) on the same networks."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from bayesdl.infer.mcmc import BNNPotential, ModelPotential, potential_of
from bayesdl.likelihoods import CategoricalLikelihood, GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import HierarchicalGammaPrior, IIDPrior, LayerwiseNormalPrior
from bayesdl.priors.functional import scaled_mlp

PRIORS = {
    "iid_normal": lambda: IIDPrior(dist.Normal(0.3, 2.0)),  # scalar-Normal fast path
    # zero mean, one scale: the prior terms as a scalar times z (no noise-scale site)
    "iid_normal_zero_mean": lambda: IIDPrior(dist.Normal(0.0, 1.5)),
    "layerwise": lambda: LayerwiseNormalPrior("radford"),  # fast path, a scale per layer
    "iid_laplace": lambda: IIDPrior(dist.Laplace(0.0, 1.0)),  # generic log_prob path
}


def _bnn(prior, likelihood):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2 if likelihood == "cat" else 1))
    net = net.double()
    if likelihood == "cat":
        lik = CategoricalLikelihood(40)
        y = torch.randint(0, 2, (40,))
    elif likelihood == "gauss_fixed_scale":
        lik = GaussianLikelihood(40, scale=0.7)
        y = torch.randn(40, dtype=torch.float64)
    else:
        lik = GaussianLikelihood(40, scale_prior=dist.LogNormal(-1.0, 1.0))
        y = torch.randn(40, dtype=torch.float64)
    bnn = BNN(net, PRIORS[prior](), lik.double())
    return bnn, (torch.randn(40, 3, dtype=torch.float64), y)


@pytest.mark.parametrize("likelihood", ["cat", "gauss_scale_prior", "gauss_fixed_scale"])
@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("num_chains", [1, 3])
def test_bnn_potential_equals_model_potential(prior, likelihood, num_chains):
    bnn, data = _bnn(prior, likelihood)
    fast, traced = BNNPotential(bnn, data), ModelPotential(bnn, data)
    assert fast.site_names == traced.site_names and fast.dim == traced.dim
    assert isinstance(potential_of(bnn, data), BNNPotential)
    # the fast sum-of-squares prior path is the one under test for the Normal priors
    assert set(fast._scalar_normal) == (set() if prior == "iid_laplace" else set(bnn.site_names))
    uniform = prior == "iid_normal_zero_mean" and likelihood != "gauss_scale_prior"
    assert (fast._uniform_prec is not None) == uniform
    z = traced.initial(num_chains, "prior")
    batch = (data[0][:10], data[1][:10])  # a minibatch: the likelihood is scaled by 40 / 10
    for b in (None, batch):
        u_fast, g_fast = fast.value_and_grad(z, b)
        u_traced, g_traced = traced.value_and_grad(z, b)
        torch.testing.assert_close(u_fast, u_traced)
        torch.testing.assert_close(g_fast, g_traced)
        torch.testing.assert_close(fast(z, b), u_traced)  # the graph-free value path


@pytest.mark.parametrize("layer", ["linear", "scaled"])
@pytest.mark.parametrize("likelihood", ["cat", "gauss_scale_prior"])
@pytest.mark.parametrize("num_chains", [1, 3])
def test_hierarchical_prior_fast_path_equals_model_potential(likelihood, num_chains, layer):
    # weights N(0, c² / λ) given per-layer Gamma precision sites: BNNPotential writes the
    # conditional density out (the traced one would keep the initial λ); ScaledLinear layers
    # (x Wᵀ / √fan_in + b) take the batched-matmul MLP path too
    bnn, data = _bnn("iid_normal", likelihood)  # for its likelihood and data
    torch.manual_seed(0)
    out = 2 if likelihood == "cat" else 1
    if layer == "linear":
        net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, out))
    else:
        net = scaled_mlp((3, 8, out), "tanh")
    net = net.double()
    prior = HierarchicalGammaPrior(net, concentration=2.0, rate=0.5).double()
    bnn = BNN(net, prior, bnn.likelihood)
    fast, traced = BNNPotential(bnn, data), ModelPotential(bnn, data)
    assert isinstance(potential_of(bnn, data), BNNPotential)
    assert fast.site_names == traced.site_names
    assert set(fast._conditional) == set(bnn.site_names) and not fast._scalar_normal
    assert fast._mlp is not None
    z = traced.initial(num_chains, "prior")
    batch = (data[0][:10], data[1][:10])
    for b in (None, batch):
        u_fast, g_fast = fast.value_and_grad(z, b)
        u_traced, g_traced = traced.value_and_grad(z, b)
        torch.testing.assert_close(u_fast, u_traced)
        torch.testing.assert_close(g_fast, g_traced)


@pytest.mark.parametrize("cls", [BNNPotential, ModelPotential])
def test_module_init_starts_at_the_networks_weights(cls):
    """``initial(C, "module")``: every chain at the network's own weights (the values the BNN
    kept from the module), the noise scale at the prototype's value."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    weights = {name: p.detach().clone() for name, p in net.named_parameters()}
    noise = dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    bnn = BNN(net, IIDPrior(dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)),
              GaussianLikelihood(10, scale_prior=noise))  # fmt: skip
    x = torch.randn(10, 2, dtype=torch.float64)
    potential = cls(bnn, (x, torch.randn(10, dtype=torch.float64)))
    z = potential.initial(3, "module")
    assert z.shape == (3, potential.dim) and torch.equal(z[0], z[2])
    values = potential.unpack(z)
    for name, w in weights.items():
        torch.testing.assert_close(values[name], w.expand(3, *w.shape), rtol=0.0, atol=0.0)
    others = [s.name for s in potential.sites if s.name not in weights]
    assert others  # the noise scale
    for name in others:
        torch.testing.assert_close(values[name][0], potential._prototype[name])


def test_module_init_needs_a_bnn():
    def model(x):
        import pyro

        pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    potential = ModelPotential(model, (torch.zeros(1),))
    with pytest.raises(ValueError, match="'module' needs a bayesdl BNN model"):
        potential.initial(2, "module")


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SiLU])
@pytest.mark.parametrize("likelihood", ["cat", "gauss_scale_prior"])
@pytest.mark.parametrize("layer", ["linear", "linear_no_bias", "scaled"])
def test_written_out_backward_equals_autograd(activation, likelihood, layer):
    # one chain of a plain MLP with scalar-Normal priors: BNNPotential.value_and_grad writes
    # the network's backward pass out (addmm into the flat gradient); it must give the traced
    # potential's values and gradients, and those of its own autograd path
    torch.manual_seed(1)
    out = 3 if likelihood == "cat" else 1
    if layer == "scaled":
        net = scaled_mlp([4, 6, 5, out], activation=activation)
    else:
        bias = layer == "linear"
        net = nn.Sequential(
            nn.Linear(4, 6, bias=bias), activation(), nn.Linear(6, 5), activation(),
            nn.Linear(5, out, bias=bias),
        )  # fmt: skip
    net = net.double()
    if likelihood == "cat":
        lik, y = CategoricalLikelihood(30), torch.randint(0, 3, (30,))
    else:
        lik = GaussianLikelihood(30, scale_prior=dist.LogNormal(-1.0, 1.0))
        y = torch.randn(30, dtype=torch.float64)
    bnn = BNN(net, IIDPrior(dist.Normal(0.2, 1.5)), lik.double())
    data = (torch.randn(30, 4, dtype=torch.float64), y)
    fast, traced = BNNPotential(bnn, data), ModelPotential(bnn, data)
    assert fast._manual_backward
    graph = BNNPotential(bnn, data)
    graph._manual_backward = False  # the same potential through autograd
    z = traced.initial(1, "prior")
    for b in (None, (data[0][:10], data[1][:10])):
        u_fast, g_fast = fast.value_and_grad(z, b)
        for other in (traced, graph):
            u_ref, g_ref = other.value_and_grad(z, b)
            torch.testing.assert_close(u_fast, u_ref)
            torch.testing.assert_close(g_fast, g_ref)
    # several chains take the autograd path, and agree chain by chain
    zs = traced.initial(3, "prior")
    u3, g3 = fast.value_and_grad(zs)
    for i in range(3):
        u1, g1 = fast.value_and_grad(zs[i : i + 1])
        torch.testing.assert_close(u1, u3[i : i + 1])
        torch.testing.assert_close(g1, g3[i : i + 1])


def test_a_module_used_twice_leaves_the_mlp_fast_path():
    # one activation instance at two places: the layer walk must not drop its repeat
    torch.manual_seed(2)
    act = nn.Tanh()
    net = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 1)).double()
    lik = GaussianLikelihood(20, scale=0.5).double()
    bnn = BNN(net, IIDPrior(dist.Normal(0.0, 1.0)), lik)
    data = (torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64))
    fast, traced = BNNPotential(bnn, data), ModelPotential(bnn, data)
    assert fast._mlp is None and not fast._manual_backward
    for c in (1, 2):
        z = traced.initial(c, "prior")
        u_fast, g_fast = fast.value_and_grad(z)
        u_ref, g_ref = traced.value_and_grad(z)
        torch.testing.assert_close(u_fast, u_ref)
        torch.testing.assert_close(g_fast, g_ref)

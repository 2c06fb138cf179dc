"""SparseMeanFieldGuide: compact storage from step 1, exact zeros, gradients on active entries
only, density 1 == dense MFVI, the LRT forward, arguments, save/load."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

from bayesdl.guides import MeanFieldGuide, SparseMeanFieldGuide, SparseNormal
from bayesdl.handlers import local_reparam
from bayesdl.infer import MeanFieldELBO, fit
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior


def _mlp_bnn(device, n=32, dtype=torch.float64):
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    return BNN(net, LayerwiseNormalPrior(), CategoricalLikelihood(n)).to(device, dtype)


def _cnn_bnn(device, n=16):
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )
    return BNN(net, LayerwiseNormalPrior(), CategoricalLikelihood(n)).to(device, torch.float64)


def _data(device, n=32, d=4, c=3):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, c, (n,), generator=g).to(device)
    return x, y


def test_storage_is_compact_from_the_start(device):
    """Only floor(density * n) means and scales are stored per sparse layer."""
    bnn = _cnn_bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.1)
    assert guide.sparse_site_names == ["2.weight", "5.weight"]  # first conv kept dense
    for name in guide.sparse_site_names:
        n = guide.num_entries(name)
        s = math.floor(0.1 * n)
        assert guide.num_active(name) == s
        assert guide.active_loc(name).shape == (s,)
        assert guide.active_raw_scale(name).shape == (s,)
        idx = guide.active_indices(name)
        assert idx.unique().numel() == s and 0 <= idx.min() and idx.max() < n
    dense = MeanFieldGuide(_cnn_bnn(device))
    n_dense = sum(p.numel() for p in dense.parameters())
    sparse_entries = sum(guide.num_entries(n) for n in guide.sparse_site_names)
    active = sum(guide.num_active(n) for n in guide.sparse_site_names)
    assert guide.num_parameters() == n_dense - 2 * (sparse_entries - active)
    assert guide.density("0.weight") == 1.0 and not guide.is_sparse("0.weight")


def test_samples_and_dense_views_are_exactly_zero_off_the_active_set(device):
    bnn = _cnn_bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.2, init_loc="sparse_fan_in")
    tr = poutine.trace(guide).get_trace()
    for name in guide.sparse_site_names:
        mask = guide.mask(name)
        assert mask.sum() == guide.num_active(name)
        assert (tr.nodes[name]["value"][~mask] == 0).all()
        assert (tr.nodes[name]["value"][mask] != 0).all()
        assert (guide.loc(name)[~mask] == 0).all() and (guide.scale(name)[~mask] == 0).all()
        fn = tr.nodes[name]["fn"].base_dist
        assert isinstance(fn, SparseNormal)
    # sparse_fan_in: U(-b, b) with the fan-in the sparse layer has
    b = 1.0 / math.sqrt(0.2 * 4 * 9)
    assert guide.active_loc("2.weight").abs().max() <= b


def test_gradients_reach_active_entries_only(device):
    """d loss / d mu of the stored means is the dense mean's (likelihood) gradient at the active
    positions (the chain rule through the scatter) plus the KL's mu / s_p^2 (prior N(0, s_p^2),
    s_p = 1 / sqrt(fan_in)); after an optimiser step every inactive entry of the dense mean and
    scale is still exactly 0."""
    bnn = _mlp_bnn(device)
    x, y = _data(device)
    guide = SparseMeanFieldGuide(bnn, density=0.25)
    guide.retain_dense_grad = True
    elbo = MeanFieldELBO()
    with pyro.settings.context(module_local_params=True), local_reparam():
        loss = elbo.differentiable_loss(bnn, guide, x, y)
    loss.backward()
    for name in guide.sparse_site_names:
        dense_grad = guide.dense_loc_grad(name)
        idx = guide.active_indices(name)
        fan_in = guide.num_entries(name) // dense_grad.shape[0]
        kl_grad = guide.active_loc(name).detach() * fan_in
        torch.testing.assert_close(
            guide.active_loc(name).grad, dense_grad.reshape(-1)[idx] + kl_grad
        )
        # the dense gradient is also defined off the active set (what addition uses)
        assert (dense_grad[~guide.mask(name)] != 0).any()
    opt = torch.optim.SGD(guide.parameters(), lr=0.1)
    opt.step()
    for name in guide.sparse_site_names:
        mask = guide.mask(name)
        assert (guide.loc(name)[~mask] == 0).all() and (guide.scale(name)[~mask] == 0).all()


def test_dense_loc_grad_needs_retain_flag(device):
    guide = SparseMeanFieldGuide(_mlp_bnn(device), density=0.5)
    with pytest.raises(RuntimeError, match="retain_dense_grad"):
        guide.dense_loc_grad("2.weight")
    with pytest.raises(KeyError, match="not a sparse site"):
        guide.dense_loc_grad("0.weight")


def test_density_one_without_updates_reproduces_dense_mfvi(device):
    """Same seed, same data order: the sparse guide at density 1 takes the same steps as
    MeanFieldGuide. Only the KL's summation order differs (elementwise vs the four-pass
    formula), a float64 rounding of ~1e-16 relative per step, so 1e-9 is a wide bound after
    30 Adam steps."""
    x, y = _data(device)
    runs = []
    for cls in (MeanFieldGuide, SparseMeanFieldGuide):
        pyro.set_rng_seed(0)
        bnn = _mlp_bnn(device)
        kwargs = {"density": 1.0} if cls is SparseMeanFieldGuide else {}
        guide = cls(bnn, init_scale=0.05, **kwargs)
        res = fit(bnn, guide, (x, y), num_steps=30, batch_size=8, reparam="local", seed=1)
        runs.append((res.losses, {n: (guide.loc(n), guide.scale(n)) for n in guide.site_names}))
    (l_dense, p_dense), (l_sparse, p_sparse) = runs
    torch.testing.assert_close(torch.tensor(l_sparse), torch.tensor(l_dense), rtol=1e-9, atol=0)
    for name, (loc, scale) in p_dense.items():
        torch.testing.assert_close(p_sparse[name][0], loc, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(p_sparse[name][1], scale, rtol=1e-9, atol=1e-12)


def test_kl_term_counts_active_entries_only(device):
    """The ELBO's KL of a sparse site is the sum over active entries of the Normal KL."""
    bnn = _mlp_bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.3)
    with poutine.trace() as tr_g:
        guide()
    with poutine.trace() as tr_m, poutine.replay(trace=tr_g.trace):
        bnn.sample_latents()
    name = "2.weight"
    q, p = tr_g.trace.nodes[name]["fn"], tr_m.trace.nodes[name]["fn"]
    idx = guide.active_indices(name)
    p_scale = p.base_dist.scale.reshape(-1)[idx]
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(guide.active_loc(name), guide.scale(name).reshape(-1)[idx]),
        torch.distributions.Normal(torch.zeros_like(p_scale), p_scale),
    ).sum()
    torch.testing.assert_close(torch.distributions.kl_divergence(q, p), ref)


def test_vectorised_particles_and_local_reparam_engage(device):
    """Sparse sites arrive with a particle dimension under vectorised particles and the
    local-reparameterisation handler uses their (zero-padded) Gaussian parameters."""
    bnn = _cnn_bnn(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 6, 6, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 5, (16,), generator=g).to(device)
    guide = SparseMeanFieldGuide(bnn, density=0.3)
    res = fit(bnn, guide, (x, y), num_steps=3, num_particles=4, reparam="local", seed=0)
    assert all(math.isfinite(v) for v in res.losses)
    handler = local_reparam()
    elbo = MeanFieldELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    with pyro.settings.context(module_local_params=True), handler:
        elbo.differentiable_loss(bnn, guide, x, y)
    assert handler.num_engaged == handler.num_forward == 1


def test_replace_active_moves_slots(device):
    guide = SparseMeanFieldGuide(_mlp_bnn(device), density=0.25)
    name = "2.weight"
    idx = guide.active_indices(name).clone()
    inactive = (~guide.mask(name)).reshape(-1).nonzero().squeeze(1)[:2]
    guide.replace_active(name, torch.tensor([0, 5], device=device), inactive, raw_scale=-3.0)
    new = guide.active_indices(name)
    assert new[0] == inactive[0] and new[5] == inactive[1]
    assert torch.equal(new[1:5], idx[1:5]) and guide.num_active(name) == idx.numel()
    assert guide.active_loc(name)[[0, 5]].eq(0).all()
    assert guide.active_raw_scale(name)[[0, 5]].eq(-3.0).all()


def test_state_dict_round_trip_restores_the_active_set(device):
    pyro.set_rng_seed(0)
    a = SparseMeanFieldGuide(_mlp_bnn(device), density=0.25)
    pyro.set_rng_seed(1)
    b = SparseMeanFieldGuide(_mlp_bnn(device), density=0.25)
    assert not torch.equal(a.active_indices("2.weight"), b.active_indices("2.weight"))
    b.load_state_dict(a.state_dict())
    for name in a.sparse_site_names:
        assert torch.equal(a.active_indices(name), b.active_indices(name))
        assert torch.equal(a.loc(name), b.loc(name)) and torch.equal(a.scale(name), b.scale(name))


def test_density_per_site_and_dense_sites(device):
    bnn = _mlp_bnn(device)
    guide = SparseMeanFieldGuide(bnn, density={"2.weight": 0.5}, first_layer_dense=False)
    assert guide.sparse_site_names == ["2.weight"]
    guide = SparseMeanFieldGuide(
        bnn, density=0.5, first_layer_dense=False, dense_sites=["4.weight"]
    )
    assert guide.sparse_site_names == ["0.weight", "2.weight"]


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_out_of_range_raises(density):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        SparseMeanFieldGuide(_mlp_bnn("cpu"), density=density)


def test_bad_arguments_raise():
    bnn = _mlp_bnn("cpu")
    with pytest.raises(TypeError, match="density"):
        SparseMeanFieldGuide(bnn, density="0.1")
    with pytest.raises(TypeError, match="density"):
        SparseMeanFieldGuide(bnn, density=True)
    with pytest.raises(ValueError, match=r"density\['2.weight'\]"):
        SparseMeanFieldGuide(bnn, density={"2.weight": 2.0})
    with pytest.raises(ValueError, match="density names"):
        SparseMeanFieldGuide(bnn, density={"9.weight": 0.5})
    with pytest.raises(ValueError, match="leaves no active entry"):
        SparseMeanFieldGuide(bnn, density=0.001)
    with pytest.raises(ValueError, match="dense_sites"):
        SparseMeanFieldGuide(bnn, dense_sites=["0.bias"])
    with pytest.raises(TypeError, match="dense_sites"):
        SparseMeanFieldGuide(bnn, dense_sites="2.weight")
    with pytest.raises(TypeError, match="first_layer_dense"):
        SparseMeanFieldGuide(bnn, first_layer_dense=1)
    with pytest.raises(ValueError, match="init_loc"):
        SparseMeanFieldGuide(bnn, init_loc="zeros")

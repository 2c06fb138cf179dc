"""SubspaceScheduler (SSVI): mask invariants after every update, removal by score, addition by
dense gradient, optimiser state, the drop schedule, the tempered KL, bad input; accounting."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayesdl.guides import SparseMeanFieldGuide
from bayesdl.handlers import local_reparam
from bayesdl.infer import MeanFieldELBO, SubspaceScheduler, fit, tempered_kl_warmup
from bayesdl.infer.accounting import layer_costs, model_size, training_flops
from bayesdl.infer.removal_scores import REMOVAL_SCORES, removal_score
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior


def _bnn(device, n=48):
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )
    return BNN(net, LayerwiseNormalPrior(), CategoricalLikelihood(n)).to(device)


def _data(device, n=48):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 1, 6, 6, generator=g).to(device)
    y = torch.randint(0, 3, (n,), generator=g).to(device)
    return x, y


class _Checker:
    """A fit callback run after the scheduler: checks every mask invariant after each update."""

    def __init__(self, guide, sched):
        self.guide, self.sched = guide, sched
        self.counts = {n: guide.num_active(n) for n in guide.sparse_site_names}
        self.before = {n: guide.active_indices(n).clone() for n in guide.sparse_site_names}
        self.num_checked = 0

    def __call__(self, state):
        g = self.guide
        for name in g.sparse_site_names:
            idx = g.active_indices(name)
            n = g.num_entries(name)
            # exact active count, distinct positions in range
            assert idx.numel() == self.counts[name]
            assert idx.unique().numel() == idx.numel() and idx.min() >= 0 and idx.max() < n
            # inactive means and variances exactly zero
            mask = g.mask(name)
            assert (g.loc(name)[~mask] == 0).all() and (g.scale(name)[~mask] == 0).all()
            moved = (idx != self.before[name]).nonzero().squeeze(1)
            if moved.numel():
                assert self.sched.history and self.sched.history[-1]["step"] == state.step
                # new entries start at mu = 0; optimiser state zero at moved slots
                assert (g.active_loc(name)[moved] == 0).all()
                for p in (g.active_loc(name), g.active_raw_scale(name)):
                    for v in state.optimizer.state[p].values():
                        if v.shape == p.shape:
                            assert (v[moved] == 0).all()
                self.num_checked += 1
            self.before[name] = idx.clone()


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_mask_invariants_after_every_update(device, optim):
    x, y = _data(device)
    bnn = _bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.2).to(device)
    sched = SubspaceScheduler(guide, 40, update_every=5, drop_fraction=0.5)
    check = _Checker(guide, sched)
    make = (
        None
        if optim == "adam"
        else (lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4))
    )
    fit(bnn, guide, (x, y), num_steps=40, batch_size=16, reparam="local", optim=make,
        callbacks=[sched, check], seed=0)  # fmt: skip
    assert [h["step"] for h in sched.history] == [5, 10, 15, 20, 25]
    assert all(sum(h["moved"].values()) > 0 for h in sched.history)
    assert check.num_checked >= 5


def test_removal_by_score_and_addition_by_dense_gradient(device):
    """One update by hand: the dropped slots are exactly those with the lowest scores, the
    added positions those with the largest |dL/dM| among positions not kept, new rho = the
    mean rho of the kept entries."""
    x, y = _data(device)
    bnn = _bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.3).to(device)
    sched = SubspaceScheduler(guide, end_step=100, update_every=10, removal_score="snr")
    with pyro.settings.context(module_local_params=True), local_reparam():
        MeanFieldELBO().differentiable_loss(bnn, guide, x, y).backward()
    step = 30
    zeta = sched.drop_fraction_at(step)
    expected = {}
    for name in guide.sparse_site_names:
        loc = guide.active_loc(name).detach().clone()
        raw = guide.active_raw_scale(name).detach().clone()
        idx = guide.active_indices(name).clone()
        grad = guide.dense_loc_grad(name).reshape(-1).abs().clone()
        k = math.floor(zeta * idx.numel())
        scores = removal_score("snr", loc, F.softplus(raw))
        drop = scores.argsort()[:k]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[drop] = False
        grad[idx[keep]] = -1.0  # kept positions are not candidates
        expected[name] = (idx[keep], grad, raw[keep].mean(), k)
    moved = sched.update(step)
    for name, (kept, grad, mean_raw, k) in expected.items():
        assert moved[name] == k > 0
        idx = guide.active_indices(name)
        assert torch.isin(kept, idx).all() and idx.numel() == kept.numel() + k
        new_slots = ~torch.isin(idx, kept)
        grown = idx[new_slots]
        # the k largest |dL/dM| among candidates (ties, e.g. dead units' zeros, either way)
        others = grad.clone()
        others[grown] = -1.0
        assert grad[grown].min() >= others.max()
        assert (guide.active_loc(name)[new_slots] == 0).all()
        torch.testing.assert_close(
            guide.active_raw_scale(name)[new_slots], mean_raw.expand(int(new_slots.sum()))
        )
    # the dense gradients are consumed by the update
    with pytest.raises(RuntimeError, match="no dense gradient"):
        sched.update(step + 10)


@pytest.mark.parametrize("score", sorted(REMOVAL_SCORES))
def test_every_removal_score_is_selectable(device, score):
    x, y = _data(device)
    bnn = _bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.2).to(device)
    sched = SubspaceScheduler(guide, 6, update_every=2, end_step=6, removal_score=score)
    fit(bnn, guide, (x, y), num_steps=6, batch_size=16, reparam="local", callbacks=[sched], seed=0)
    assert len(sched.history) == 2 and all(sum(h["moved"].values()) > 0 for h in sched.history)


def test_grow_scale_small(device):
    x, y = _data(device)
    bnn = _bnn(device)
    guide = SparseMeanFieldGuide(bnn, density=0.2).to(device)
    idx0 = guide.active_indices("5.weight").clone()
    sched = SubspaceScheduler(guide, 4, update_every=2, end_step=3, grow_scale="small")
    fit(bnn, guide, (x, y), num_steps=2, batch_size=16, reparam="local", callbacks=[sched], seed=0)
    moved = guide.active_indices("5.weight") != idx0
    assert moved.any()
    torch.testing.assert_close(
        F.softplus(guide.active_raw_scale("5.weight")[moved]),
        torch.full((int(moved.sum()),), 1e-6, device=device),
    )


def test_drop_fraction_schedule():
    guide = SparseMeanFieldGuide(_bnn("cpu"), density=0.2)
    sched = SubspaceScheduler(guide, 400, update_every=100, drop_fraction=0.3)
    assert sched.end_step == 300
    assert sched.drop_fraction_at(0) == pytest.approx(0.3, abs=1e-15)
    assert sched.drop_fraction_at(150) == pytest.approx(0.15, abs=1e-15)
    assert sched.drop_fraction_at(300) == 0.0 and sched.drop_fraction_at(1000) == 0.0
    assert [t for t in range(500) if sched.is_update_step(t)] == [100, 200]


def test_tempered_kl_warmup():
    w = tempered_kl_warmup(100, kl_scale=0.01, warmup_fraction=0.5)
    assert w(0) == pytest.approx(0.01 / 50) and w(49) == pytest.approx(0.01)
    assert w(99) == pytest.approx(0.01)
    assert tempered_kl_warmup(10, kl_scale=0.5, warmup_fraction=0.0)(0) == 0.5
    with pytest.raises(ValueError, match="kl_scale"):
        tempered_kl_warmup(10, kl_scale=0.0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        tempered_kl_warmup(10, warmup_fraction=1.5)


def test_bad_arguments_raise():
    guide = SparseMeanFieldGuide(_bnn("cpu"), density=0.2)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="update_every"):
            SubspaceScheduler(guide, 100, update_every=bad)
    with pytest.raises(TypeError, match="update_every"):
        SubspaceScheduler(guide, 100, update_every=2.5)
    with pytest.raises(ValueError, match="removal_score must be one of"):
        SubspaceScheduler(guide, 100, removal_score="magnitude")
    with pytest.raises(ValueError, match="drop_fraction"):
        SubspaceScheduler(guide, 100, drop_fraction=1.5)
    with pytest.raises(ValueError, match="end_fraction"):
        SubspaceScheduler(guide, 100, end_fraction=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        SubspaceScheduler(guide)
    with pytest.raises(ValueError, match="grow_scale"):
        SubspaceScheduler(guide, 100, grow_scale="large")
    with pytest.raises(TypeError, match="SparseMeanFieldGuide"):
        SubspaceScheduler(object(), 100)


def test_layer_costs_and_training_flops_by_hand():
    """Counts for conv(1->4, 3x3, pad 1) on 6x6 (36 positions), conv(4->6, 3x3) on 6x6 (16),
    linear(96->16), linear(16->3); 2 FLOPs per multiply-add, 2 paths per Gaussian weight."""
    layers = layer_costs(_bnn("cpu"), torch.zeros(1, 1, 6, 6))
    assert [(c.name, c.num_entries, c.positions) for c in layers] == [
        ("0.weight", 36, 36),
        ("2.weight", 216, 16),
        ("5.weight", 1536, 1),
        ("7.weight", 48, 1),
    ]
    per_ex = [36 * 36, 216 * 16, 1536, 48]  # multiply-adds per example and path
    f = training_flops(layers, num_steps=3, batch_size=5)
    assert f.forward == 3 * 5 * 2 * 2 * sum(per_ex)
    assert f.backward == 3 * 5 * 2 * 2 * (per_ex[0] + 2 * sum(per_ex[1:]))
    assert f.update == 0
    s = training_flops(layers, num_steps=3, batch_size=5, active={"2.weight": 21}, num_updates=2)
    assert s.forward == 3 * 5 * 2 * 2 * (per_ex[0] + 21 * 16 + sum(per_ex[2:]))
    assert s.update == 2 * 5 * 2 * 216 * 16
    with pytest.raises(ValueError, match="active"):
        training_flops(layers, num_steps=1, batch_size=1, active={"9.weight": 1})


def test_model_size_counts_active_entries():
    bnn = _bnn("cpu")
    guide = SparseMeanFieldGuide(bnn, density=0.1)
    size = model_size(guide)
    active = sum(guide.num_active(n) for n in guide.site_names)
    assert size.num_random == active and size.num_parameters == 2 * active
    index_bytes = 8 * sum(guide.num_active(n) for n in guide.sparse_site_names)
    assert size.num_bytes == 4 * 2 * active + index_bytes


def test_compare_runs_ssvi_sparse():
    """``bayesdl compare`` knows ``ssvi``; its fitted guide is sparse and was updated."""
    from bayesdl.compare import available_methods, compare

    assert "ssvi" in available_methods()
    result = compare("toy1d", ["ssvi"], smoke=True, progress=False)
    out = result.outputs["ssvi"]
    guide = out.fitted["guide"]
    assert isinstance(guide, SparseMeanFieldGuide) and guide.sparse_site_names
    assert all(guide.density(n) < 0.2 for n in guide.sparse_site_names)
    assert out.info["num_updates"] == len(out.fitted["scheduler"].history) > 0
    assert math.isfinite(result.rows[0]["nll"])


@pytest.mark.parametrize(
    "module",
    [
        "bayesdl.guides.sparse_normal",
        "bayesdl.guides.sparse_mean_field_guide",
        "bayesdl.infer.ssvi",
        "bayesdl.infer.removal_scores",
        "bayesdl.infer.accounting",
    ],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0

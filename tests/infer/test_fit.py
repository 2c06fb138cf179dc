"""The fit loop: resume after a crash, non-finite losses, checkpoints, schedules, bad input."""

from __future__ import annotations

import os

import pyro
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bayesdl.guides import MeanFieldGuide
from bayesdl.infer import NonFiniteLossError, fit, kl_warmup, load_checkpoint
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior


class _Killed(Exception):
    pass


def _build(n=32, learn_scale=True):
    torch.manual_seed(0)  # same initial network (and so the same guide means) on every build
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    bnn = BNN(net, LayerwiseNormalPrior(), GaussianLikelihood(n, learn_scale=learn_scale))
    return bnn, MeanFieldGuide(bnn, init_scale=0.05)


def _data(n=32):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=g)
    return x, torch.sin(x[:, 0]) + 0.1 * torch.randn(n, generator=g)


def _state(bnn, guide):
    return {
        **{f"m.{k}": v.clone() for k, v in bnn.state_dict().items()},
        **{f"g.{k}": v.clone() for k, v in guide.state_dict().items()},
    }


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    data = _data()
    kwargs = dict(num_steps=40, batch_size=8, num_particles=2, seed=0, checkpoint_every=10)
    bnn, guide = _build()
    full = fit(bnn, guide, data, checkpoint=tmp_path / "a.pt", **kwargs)
    expected = _state(bnn, guide)

    def kill(state):
        if state.step == 25:
            raise _Killed

    bnn, guide = _build()
    with pytest.raises(_Killed):
        fit(bnn, guide, data, checkpoint=tmp_path / "b.pt", callbacks=[kill], **kwargs)
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 20

    bnn, guide = _build()  # fresh objects: everything comes from the checkpoint
    resumed = fit(bnn, guide, data, checkpoint=tmp_path / "b.pt", resume=True, **kwargs)
    assert resumed.resumed_from == 20 and resumed.num_steps == 40
    got = _state(bnn, guide)
    assert got.keys() == expected.keys()
    for k in got:
        assert torch.equal(got[k], expected[k]), k
    assert resumed.losses == full.losses
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_non_finite_likelihood_is_named():
    x, y = _data()
    y = y.clone()
    y[3] = 1e30  # finite, but its squared residual overflows float32
    bnn, guide = _build(learn_scale=False)
    with pytest.raises(NonFiniteLossError, match=r"log-likelihood \(data term\) of site 'obs'"):
        fit(bnn, guide, (x, y), num_steps=5)


def test_non_finite_parameter_keeps_last_good_checkpoint(tmp_path):
    bnn, guide = _build()

    def poison(state):
        if state.step == 5:
            with torch.no_grad():
                guide.locs["0__weight"][0, 0] = float("nan")

    with pytest.raises(NonFiniteLossError, match="guide parameter 'locs.0__weight'") as info:
        fit(
            bnn,
            guide,
            _data(),
            num_steps=20,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=2,
            callbacks=[poison],
        )
    assert "last good checkpoint" in str(info.value)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 4
    assert all(bool(torch.isfinite(v).all()) for v in state["guide"].values())


def test_kl_weight_schedule_and_callbacks_stop():
    bnn, guide = _build()
    seen = []

    def watch(state):
        seen.append(state.step)
        return state.step == 7

    result = fit(bnn, guide, _data(), num_steps=50, kl_weight=kl_warmup(10), callbacks=[watch])
    assert result.num_steps == 7 and seen == list(range(1, 8))
    assert len(result.losses) == 7


def test_kl_weight_changes_the_loss_by_the_kl():
    """With a Delta-free mean-field guide the ELBO is -E log lik + KL; kl_weight=0.5 must lower
    the loss of the same first step (same seed) by KL/2 exactly (closed-form KL)."""
    from pyro.infer import TraceMeanField_ELBO

    x, y = _data()
    bnn, guide = _build(learn_scale=False)
    opt = lambda params: torch.optim.SGD(params, lr=0.0)  # noqa: E731 - frozen parameters
    full = fit(bnn, guide, (x, y), num_steps=1, seed=1, optim=opt).losses[0]
    half = fit(bnn, guide, (x, y), num_steps=1, seed=1, optim=opt, kl_weight=0.5).losses[0]
    kl = sum(
        torch.distributions.kl_divergence(
            guide.get_posterior(s.name), bnn.prior.distribution(s)
        ).item()
        for s in bnn.sites
    )
    assert half == pytest.approx(full - 0.5 * kl, rel=1e-5)
    assert isinstance(TraceMeanField_ELBO(), object)


def test_dataloader_input_and_epochs():
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    bnn, guide = _build()
    result = fit(bnn, guide, loader, num_epochs=3)
    assert result.num_steps == 12


def test_fit_leaves_the_global_param_store_empty():
    bnn, guide = _build()
    fit(bnn, guide, _data(), num_steps=3)
    assert len(pyro.get_param_store()) == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(num_steps=0), ValueError, "num_steps"),
        (dict(num_steps=5, num_epochs=5), ValueError, "not both"),
        (dict(batch_size=-3), ValueError, "batch_size"),
        (dict(reparam="lrt"), ValueError, "reparam"),
        (dict(resume=True), ValueError, "checkpoint"),
        (dict(kl_weight=-1.0), ValueError, "scale"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    bnn, guide = _build()
    with pytest.raises(exc, match=match):
        fit(bnn, guide, _data(), **kwargs)


def test_bad_data():
    bnn, guide = _build()
    x, y = _data()
    with pytest.raises(ValueError, match="share their first dimension"):
        fit(bnn, guide, (x, y[:-1]), num_steps=1)
    x_nan = x.clone()
    x_nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"data\[0\] contains 1 non-finite"):
        fit(bnn, guide, (x_nan, y), num_steps=1)
    with pytest.raises(ValueError, match="does not match the 16 training points"):
        fit(bnn, guide, (x[:16], y[:16]), num_steps=1)
    bnn2 = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(None))
    with pytest.raises(ValueError, match="dataset_size=None"):
        fit(bnn2, MeanFieldGuide(bnn2), (x, y), num_steps=1, batch_size=8)


def test_reparam_that_engages_nothing_warns():
    from pyro.infer.autoguide import AutoNormal

    bnn, _ = _build()
    with pytest.warns(UserWarning, match="found no nn.Linear/nn.Conv2d weight"):
        fit(bnn, AutoNormal(bnn), _data(), num_steps=2, reparam="local")


def test_autoguide_built_outside_module_local_mode_fits_and_predicts():
    from pyro.infer.autoguide import AutoNormal

    from bayesdl.infer import predict

    bnn, _ = _build()
    guide = AutoNormal(bnn)  # built with module-local parameters off (the Pyro default)
    result = fit(bnn, guide, _data(), num_steps=20)
    assert result.num_steps == 20 and len(pyro.get_param_store()) == 0
    assert any(n.startswith("locs.") for n in guide.state_dict())
    assert predict(bnn, guide, _data()[0], num_samples=5).mean.shape == (32,)

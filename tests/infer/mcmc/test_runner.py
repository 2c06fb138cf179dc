"""The runner: settings checks, checkpoints, exact resume after SIGKILL, stores, results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.infer.checkpoint import load_checkpoint
from bayesdl.infer.mcmc import (
    SGHMC,
    SGLD,
    AdaptiveSGHMC,
    FunctionPotential,
    NonFiniteSampleError,
    sample,
)
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior
from tests.infer.mcmc import _kill_target
from tests.infer.mcmc._targets import ConjugateRegression

ROOT = Path(__file__).resolve().parents[3]
GAUSS = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)


class _FullBatchSGLD(SGLD):
    """Stands in for HMC/NUTS (a kernel that needs the full-data potential)."""

    full_batch = True


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": -3}, "num_samples"),
        ({"num_samples": 10, "warmup": -1}, "warmup"),
        ({"num_samples": 10, "thin": 0}, "thin"),
        ({"num_samples": 10, "num_chains": 0}, "num_chains"),
        ({"num_samples": 10, "chain_method": "parallel"}, "chain_method"),
        ({"num_samples": 10, "resume": True}, "checkpoint"),
        ({"num_samples": 10, "store": "gpu-ish"}, "store"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sample(GAUSS, SGLD(step_size=0.1), **kwargs)


def test_num_samples_must_be_an_int():
    with pytest.raises(TypeError, match="num_samples"):
        sample(GAUSS, SGLD(step_size=0.1), num_samples=2.5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGLD(step_size=0.0), "step_size"),
        (lambda: SGLD(step_size=-1e-3), "step_size"),
        (lambda: SGHMC(step_size=float("nan")), "step_size"),
        (lambda: SGHMC(step_size=1e-3, friction=0.0), "friction"),
        (lambda: SGHMC(step_size=1e-3, friction=1.5), "friction"),
        (lambda: SGHMC(step_size=1e-3, friction=0.1, noise_estimate=0.2), "noise_estimate"),
        (lambda: SGHMC(step_size=0.5, friction=3.0, parameterization="hamiltonian"), "<= 1"),
        (lambda: SGHMC(step_size=1e-3, parameterization="leapfrog"), "parameterization"),
        (lambda: SGLD(step_size=1e-3, temperature=0.0), "temperature"),
        (lambda: SGLD(step_size=1e-3, rms_decay=1.0), "rms_decay"),
    ],
)
def test_bad_kernel_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_step_size_schedule_is_caught_when_used():
    with pytest.raises(ValueError, match="step_size"):
        sample(GAUSS, SGLD(step_size=lambda k: -1.0), num_samples=3)


def test_kernel_type_checked():
    with pytest.raises(TypeError, match="kernel"):
        sample(GAUSS, pyro.infer.mcmc.NUTS(lambda: None), num_samples=3)


def test_full_batch_kernel_refuses_minibatches():
    target = ConjugateRegression.make(n=100)
    with pytest.raises(ValueError, match="full-data potential.*batch_size=10"):
        sample(
            target.potential(),
            _FullBatchSGLD(step_size=1e-3),
            (target.x, target.y),
            num_samples=3,
            batch_size=10,
        )


def test_full_batch_kernel_refuses_a_subsampled_model():
    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 1000, subsample=torch.arange(x.shape[0])):
            pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    with pytest.raises(ValueError, match="subsamples its data plate"):
        sample(
            model, _FullBatchSGLD(step_size=1e-3), (torch.randn(10), torch.randn(10)), num_samples=3
        )


def test_batch_size_checks():
    target = ConjugateRegression.make(n=100)
    with pytest.raises(ValueError, match="exceeds"):
        sample(
            target.potential(),
            SGLD(step_size=1e-3),
            (target.x, target.y),
            num_samples=3,
            batch_size=101,
        )
    with pytest.raises(ValueError, match="leading size"):
        sample(
            target.potential(),
            SGLD(step_size=1e-3),
            (target.x, target.y[:50]),
            num_samples=3,
            batch_size=10,
        )


def test_non_finite_positions_stop_the_run(tmp_path):
    ckpt = tmp_path / "run.pt"
    with pytest.raises(NonFiniteSampleError, match="step size"):
        # a step of 10 on a quartic potential explodes within a few steps
        sample(
            FunctionPotential(lambda z: (z**4).sum(-1), dim=2),
            SGLD(step_size=10.0),
            num_samples=200,
            checkpoint=ckpt,
            checkpoint_every=50,
            init=torch.ones(2),
        )


# ------------------------------------------------------------------ thinning and stats
def test_thinning_keeps_every_thin_th_iteration():
    def run(thin, n):
        return sample(
            GAUSS, SGLD(step_size=0.1), num_samples=n, warmup=3, thin=thin, num_chains=2, seed=4
        )

    dense, thinned = run(1, 12), run(3, 4)
    torch.testing.assert_close(thinned.z, dense.z[:, 2::3])
    assert thinned.sample_stats["potential_energy"].shape == (2, 4)


# ------------------------------------------------------------------ checkpoints
class _Crash(Exception):
    pass


def _crashing(potential, after):
    calls = {"n": 0}
    fn = potential.fn

    def wrapped(z, batch):
        calls["n"] += 1
        if calls["n"] > after:
            raise _Crash
        return fn(z, batch)

    potential.fn = wrapped
    return potential


RESUMED_KERNELS = {
    "sghmc": lambda: SGHMC(step_size=1e-4),
    # compiled update, counter-based noise, a donated five-tensor state
    "adaptive_sghmc_compiled": lambda: AdaptiveSGHMC(step_size=1e-3, compile=True),
}


@pytest.mark.parametrize("kernel", sorted(RESUMED_KERNELS))
@pytest.mark.parametrize("store", ["device", "disk"])
@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, store, chain_method, kernel):
    make = RESUMED_KERNELS[kernel]
    target = ConjugateRegression.make(n=200)
    kwargs = dict(
        num_samples=40,
        warmup=10,
        thin=2,
        num_chains=2,
        batch_size=50,
        seed=2,
        chain_method=chain_method,
        checkpoint_every=7,
    )
    full = sample(target.potential(), make(), (target.x, target.y), **kwargs)
    where = (lambda name: tmp_path / name) if store == "disk" else (lambda name: "device")
    ckpt = tmp_path / "run.pt"
    with pytest.raises(_Crash):
        sample(
            _crashing(target.potential(), 60),
            make(),
            (target.x, target.y),
            checkpoint=ckpt,
            store=where("a.npy"),
            **kwargs,
        )
    assert ckpt.exists()
    resumed = sample(
        target.potential(),
        make(),
        (target.x, target.y),
        checkpoint=ckpt,
        resume=True,
        store=where("a.npy"),
        **kwargs,
    )
    assert resumed.resumed_from is not None and resumed.resumed_from > 0
    assert torch.equal(resumed.z.cpu(), full.z.cpu())
    for key in full.sample_stats:
        assert torch.equal(resumed.sample_stats[key], full.sample_stats[key])


def test_resume_refuses_a_different_run(tmp_path):
    ckpt = tmp_path / "run.pt"
    sample(GAUSS, SGLD(step_size=0.1), num_samples=30, checkpoint=ckpt, checkpoint_every=10)
    with pytest.raises(ValueError, match="different run"):
        sample(GAUSS, SGLD(step_size=0.1), num_samples=31, checkpoint=ckpt, resume=True)


def test_sigkill_mid_run_then_resume(tmp_path):
    """A subprocess samples with checkpoints and a memory-mapped store; it is SIGKILLed once a
    checkpoint exists; resuming completes the run with no kept draw lost or duplicated: the
    draws equal those of an uninterrupted run with the same seed."""
    ckpt, store = tmp_path / "run.pt", tmp_path / "draws.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BAYESDL_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.infer.mcmc._kill_target", str(ckpt), str(store)],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and load_checkpoint(ckpt)["iteration"] >= 150:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    total = _kill_target.WARMUP + _kill_target.NUM_SAMPLES * _kill_target.THIN
    done = load_checkpoint(ckpt)["iteration"]
    assert 0 < done < total  # killed mid-way
    resumed = _kill_target.run(ckpt, store, resume=True)
    full = _kill_target.run(None, "cpu")
    assert resumed.resumed_from == done
    assert torch.equal(resumed.z.cpu(), full.z.cpu())


# ------------------------------------------------------------------ results
def _small_bnn(n=40):
    torch.manual_seed(0)
    x = torch.randn(n, 2)
    y = x.sum(-1) + 0.1 * torch.randn(n)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    like = GaussianLikelihood(n, scale_prior=dist.LogNormal(-1.0, 0.5))
    return BNN(net, IIDPrior(dist.Normal(0.0, 1.0)), like), x, y


def test_bnn_result_samples_predict_and_arviz():
    bnn, x, y = _small_bnn()
    result = sample(
        bnn,
        SGHMC(step_size=1e-3, friction=0.2),
        (x, y),
        num_samples=30,
        warmup=20,
        num_chains=2,
        batch_size=20,
        seed=0,
    )
    samples = result.samples
    assert samples["0.weight"].shape == (2, 30, 8, 2)
    assert bool((samples["obs.scale"] > 0).all())
    flat = result.get_samples()
    assert flat["2.bias"].shape == (60, 1)
    pred = result.predict(x[:5])
    assert pred.mean.shape == (5,) and bool((pred.variance > 0).all())
    idata = result.to_inference_data(x=x, y=y)
    assert set(idata.groups()) >= {
        "posterior",
        "sample_stats",
        "posterior_predictive",
        "observed_data",
    }
    assert idata.posterior["0.weight"].shape == (2, 30, 8, 2)
    assert idata.posterior_predictive["obs"].shape == (2, 30, 40)
    # lp is minus the potential energy
    torch.testing.assert_close(
        torch.as_tensor(idata.sample_stats["lp"].values),
        -result.sample_stats["potential_energy"],
    )
    table = result.summary(["2.bias"])
    assert set(table["2.bias"]) == {"mean", "sd", "r_hat", "ess_bulk", "ess_tail"}
    diag = result.diagnostics()
    assert diag["max_r_hat"] > 0.9 and diag["min_ess_bulk"] > 0


def test_summary_matches_arviz_on_known_draws():
    import arviz as az

    z = torch.randn(4, 500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = sample(GAUSS, SGLD(step_size=0.1), num_samples=500, num_chains=4)
    result.z = z
    result._samples = None
    table = result.summary()["z"]
    ds = az.convert_to_dataset({"x": z.numpy()})
    assert table["ess_bulk"] == pytest.approx(az.ess(ds, method="bulk")["x"].values)
    assert table["r_hat"] == pytest.approx(az.rhat(ds)["x"].values)
    # independent N(0,1) draws: R-hat near 1 and bulk ESS near the 2000 draws
    assert abs(table["r_hat"] - 1).max() < 0.01 and (table["ess_bulk"] > 1500).all()

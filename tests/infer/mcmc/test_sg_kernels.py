"""SGHMC, adaptive SGHMC and SGLD against exact answers.

* Conjugate Bayesian linear regression (N = 1000, d = 3, minibatches of 250): posterior means
  within the Monte-Carlo standard-error bound ``4·sd/√ESS`` and marginal variances within
  [0.8, 1.25] of the exact posterior (the issue's band). The step sizes keep the bias from the
  ignored minibatch-gradient noise small: for SGHMC the excess temperature is about
  ``η·Var[∇Ũ] / (2α)`` = 2e-5 · 4e3 / 0.4 = 0.2 %, for SGLD ``ε·Var[∇Ũ] / 4`` = 2 %.
* Chen et al.'s double well with injected gradient noise (see ``test_double_well``).
* Vectorised chains equal sequential chains; Gibbs blocks; Pyro's ``MCMC`` runs the kernels.
"""

from __future__ import annotations

import math
import pickle
import shutil

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.infer.mcmc import (
    SGHMC,
    SGLD,
    AdaptiveSGHMC,
    ChainRNG,
    FunctionPotential,
    ModelPotential,
    cyclical_step_size,
    sample,
)
from tests.infer.mcmc._targets import ConjugateRegression, assert_moments, ess

KERNELS = {
    "sghmc": lambda: SGHMC(step_size=2e-5, friction=0.2),
    "sghmc_hamiltonian": lambda: SGHMC(
        step_size=math.sqrt(2e-5), friction=0.2 / math.sqrt(2e-5), parameterization="hamiltonian"
    ),
    # the compiled update with its counter-based noise (tests/infer/mcmc/test_counter_rng.py)
    "sghmc_compiled": lambda: SGHMC(step_size=2e-5, friction=0.2, compile=True),
    "adaptive_sghmc": lambda: AdaptiveSGHMC(step_size=0.01, mdecay=0.1),
    "adaptive_sghmc_compiled": lambda: AdaptiveSGHMC(step_size=0.01, mdecay=0.1, compile=True),
    "sgld": lambda: SGLD(step_size=2e-5),
    "sgld_compiled": lambda: SGLD(step_size=2e-5, compile=True),
    "psgld": lambda: SGLD(step_size=2e-3, preconditioned=True),
    "psgld_compiled": lambda: SGLD(step_size=2e-3, preconditioned=True, compile=True),
}
# Preconditioned dynamics move at a terminal speed of about lr²/mdecay (adaptive SGHMC) or
# ε/2 (pSGLD), 1e-3 per step here,
# whatever the gradient's size, so from the uniform(-2, 2) start they need ~2000
# steps to reach the posterior: they get a longer warm-up.
WARMUP = {name: 3000 for name in KERNELS if name.startswith(("adaptive_sghmc", "psgld"))}


def _run_regression(name: str, scale: int):
    target = ConjugateRegression.make()
    draws = 2000 * scale
    result = sample(
        target.potential(),
        KERNELS[name](),
        (target.x, target.y),
        num_samples=draws,
        warmup=WARMUP.get(name, 1000),
        thin=5,
        num_chains=16,
        batch_size=250,
        seed=1,
    )
    return target, result


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_conjugate_regression_minibatch(name):
    target, result = _run_regression(name, scale=1)
    assert_moments(result, target.mean, target.cov)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_conjugate_regression_minibatch_long(name):
    target, result = _run_regression(name, scale=5)
    assert_moments(result, target.mean, target.cov)


# ------------------------------------------------------------------ double well
def _double_well_exact(grid: np.ndarray) -> np.ndarray:
    """CDF of p(θ) ∝ exp(2θ² − θ⁴) on ``grid`` by trapezoidal quadrature (grid spacing 1e-4 on
    [-3, 3]; the mass outside is below 1e-15)."""
    fine = np.linspace(-3.0, 3.0, 60001)
    dens = np.exp(2 * fine**2 - fine**4)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(fine))])
    cdf /= cdf[-1]
    return np.interp(grid, fine, cdf)


def _noisy_double_well() -> FunctionPotential:
    """U(θ) = −2θ² + θ⁴ whose gradient carries N(0, 4) noise (Chen et al., Sec. 5.1): the noise
    enters through a term ``θ·ξ`` with ``ξ ~ N(0, 4)`` drawn per call, whose value averages to 0
    and whose gradient is ``ξ``."""

    def u(z, batch):
        xi = 2.0 * torch.randn_like(z)
        return (-2 * z**2 + z**4 + z * xi.detach()).sum(-1)

    return FunctionPotential(u, 1, takes_batch=True)


def _ks_distance(draws: torch.Tensor) -> float:
    x = np.sort(draws.reshape(-1).numpy())
    n = len(x)
    cdf = _double_well_exact(x)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def test_double_well():
    """SGHMC with friction (ε = 0.1, C = 3, B̂ = ½·ε·V = 0.2 for the noise variance V = 4, as in
    Chen et al.) matches the exact density; without the friction that absorbs the injected
    gradient noise it does not.

    Threshold: the 1 % critical value of the Kolmogorov distribution, 1.63/√n, with ``n`` the
    effective sample size (min bulk ESS over chains pooled) in place of the number of independent
    draws, plus 0.01 for the O(ε) discretisation bias of the ε = 0.1 integrator (measured at
    about 0.004 with exact gradients and 20× the draws, so 0.01 leaves margin).
    """
    pyro.set_rng_seed(0)
    kernel = SGHMC(
        step_size=0.1,
        friction=3.0,
        noise_estimate=0.2,
        parameterization="hamiltonian",
        mass=1.0,
    )
    result = sample(
        _noisy_double_well(), kernel, num_samples=4000, warmup=500, thin=5, num_chains=16, seed=0
    )
    n_eff = float(ess(result.z).min())
    threshold = 1.63 / math.sqrt(n_eff) + 0.01
    distance = _ks_distance(result.z)
    assert distance < threshold, f"KS distance {distance:.4f} >= {threshold:.4f} (ESS {n_eff:.0f})"

    # the same dynamics with negligible friction heat up: the test has power
    naive = SGHMC(step_size=0.1, friction=0.01, parameterization="hamiltonian")
    hot = sample(
        _noisy_double_well(), naive, num_samples=4000, warmup=500, thin=5, num_chains=16, seed=0
    )
    assert _ks_distance(hot.z) > threshold


# ------------------------------------------------------------------ chains and RNG
@pytest.mark.parametrize(
    "name",
    ["sghmc", "sghmc_compiled", "adaptive_sghmc", "adaptive_sghmc_compiled", "psgld"]
    + ["psgld_compiled"],
)
def test_vectorized_equals_sequential(name):
    target = ConjugateRegression.make(n=200)
    kwargs = dict(num_samples=50, warmup=20, num_chains=3, batch_size=50, seed=3)
    vec = sample(target.potential(), KERNELS[name](), (target.x, target.y), **kwargs)
    seq = sample(
        target.potential(),
        KERNELS[name](),
        (target.x, target.y),
        chain_method="sequential",
        **kwargs,
    )
    # float64, same random numbers; only the batched vs single-row matmul may differ in the
    # last bits
    torch.testing.assert_close(vec.z, seq.z, rtol=1e-9, atol=1e-12)


def test_same_seed_same_draws_and_different_seed_differs():
    target = ConjugateRegression.make(n=200)

    def run(seed):
        return sample(
            target.potential(),
            SGLD(step_size=1e-4),
            (target.x, target.y),
            num_samples=20,
            num_chains=2,
            batch_size=50,
            seed=seed,
        ).z

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_chain_rng_subset_matches():
    both = ChainRNG.from_seed(5, 3).normal((4,), dtype=torch.float64)
    alone = ChainRNG.from_seed(5, 3).subset([2]).normal((4,), dtype=torch.float64)
    assert torch.equal(both[2], alone[0])


# ------------------------------------------------------------------ model potentials
def _linear_model(x, y):
    # written to broadcast over leading chain dims: w arrives as [3] or [C, 1, 3]
    w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", 1000, subsample=torch.arange(x.shape[0])):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def test_model_potential_equals_hand_written_minibatch_potential():
    target = ConjugateRegression.make()
    hand = target.potential()
    model = ModelPotential(_linear_model, (target.x, target.y))
    z = torch.randn(4, 3, dtype=torch.float64)
    batch = (target.x[:250], target.y[:250])
    # the log-normaliser of the Normal likelihood is the only difference: N/B · B · log √(2π)
    # plus d · log √(2π) for the prior
    const = (1000 + 3) * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(model(z, batch), hand(z, batch) + const)
    _, g_model = model.value_and_grad(z, batch)
    _, g_hand = hand.value_and_grad(z, batch)
    torch.testing.assert_close(g_model, g_hand)


def test_sghmc_on_a_pyro_model_with_a_subsampled_plate():
    target = ConjugateRegression.make()
    result = sample(
        _linear_model,
        SGHMC(step_size=2e-5, friction=0.2),
        (target.x, target.y),
        num_samples=600,
        warmup=300,
        thin=5,
        num_chains=8,
        batch_size=250,
        seed=0,
    )
    assert set(result.samples) == {"w"} and result.samples["w"].shape == (8, 600, 3)
    assert_moments(result.samples["w"], target.mean, target.cov)


# ------------------------------------------------------------------ Gibbs blocks
def test_gibbs_block_keeps_the_joint():
    """τ ~ Gamma(a, b), w | τ ~ N(0, 1/τ) in 20 dims, no data: SGLD moves w, a conjugate Gibbs
    step draws τ | w ~ Gamma(a + d/2, b + |w|²/2). The τ-marginal must stay Gamma(a, b)
    (mean a/b = 2): MCSE bound with z = 4."""
    a, b, d = 4.0, 2.0, 20

    def model():
        tau = pyro.sample("tau", dist.Gamma(torch.tensor(a), torch.tensor(b)))
        pyro.sample("w", dist.Normal(torch.zeros(d), tau.unsqueeze(-1).rsqrt()).to_event(1))

    def gibbs(values, rng):
        w = values["w"]
        rate = b + 0.5 * (w**2).sum(-1)
        gamma = torch.distributions.Gamma(torch.full_like(rate, a + d / 2), rate)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.uniform((1,), dtype=torch.float64)[0, 0] * 2**31))
            return {"tau": gamma.sample()}

    # ε = 0.05: the Euler bias of the w-variance is ε·τ/4 ≈ 2.5 %, which moves E[τ] by about
    # 1 % (0.02), a tenth of the MCSE bound below
    kernel = SGLD(step_size=0.05, gibbs_fn=gibbs, gibbs_sites=["tau"], gibbs_every=1)
    result = sample(model, kernel, num_samples=2000, warmup=200, thin=2, num_chains=16, seed=0)
    tau = result.samples["tau"]
    n_eff = float(ess(tau).min())
    sd = math.sqrt(a) / b
    assert n_eff > 200
    assert abs(float(tau.mean()) - a / b) < 4 * sd / math.sqrt(n_eff)


def test_gibbs_validation():
    with pytest.raises(ValueError, match="gibbs_sites"):
        SGLD(step_size=0.1, gibbs_fn=lambda v, r: {})
    with pytest.raises(ValueError, match="gibbs_fn"):
        SGLD(step_size=0.1, gibbs_sites=["a"])
    with pytest.raises(ValueError, match="gibbs_every"):
        SGLD(step_size=0.1, gibbs_fn=lambda v, r: {}, gibbs_sites=["a"], gibbs_every=0)


# ------------------------------------------------------------------ schedules
def test_cyclical_step_size_schedule():
    s = cyclical_step_size(0.2, num_steps=100, num_cycles=2)
    assert s(0) == pytest.approx(0.2) and s(50) == pytest.approx(0.2)
    assert s(25) == pytest.approx(0.1) and s(49) < 0.001
    target = ConjugateRegression.make(n=200)
    result = sample(
        target.potential(),
        SGLD(step_size=cyclical_step_size(1e-4, num_steps=40, num_cycles=2)),
        (target.x, target.y),
        num_samples=40,
        batch_size=50,
    )
    # cycle length 20: iteration 25 is 5 steps into the second cycle
    expected = 1e-4 / 2 * (math.cos(math.pi * 5 / 20) + 1)
    assert float(result.sample_stats["step_size"][0, 25]) == pytest.approx(expected)


# ------------------------------------------------------------------ Pyro's MCMC
@pytest.mark.parametrize(
    "kernel_fn",
    [
        lambda m: SGLD(m, step_size=1e-3),
        lambda m: SGHMC(m, step_size=1e-3, friction=0.3),
        lambda m: AdaptiveSGHMC(m, step_size=0.05),
    ],
)
def test_pyro_mcmc_runs_sg_kernels(kernel_fn):
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    y = torch.randn(50) + 3.0
    mcmc = pyro.infer.MCMC(
        kernel_fn(model), num_samples=300, warmup_steps=300, disable_progbar=True
    )
    mcmc.run(y)
    samples = mcmc.get_samples()
    assert samples["mu"].shape == (300,) and bool((samples["sigma"] > 0).all())
    # the posterior of mu is near the sample mean (sd ≈ 1/√50 ≈ 0.14)
    assert abs(float(samples["mu"][100:].mean()) - float(y.mean())) < 0.5


# ------------------------------------------------------------------ compiled update, donation
DONATING = {
    "sghmc": lambda **kw: SGHMC(step_size=0.05, friction=0.3, **kw),
    "adaptive_sghmc": lambda **kw: AdaptiveSGHMC(step_size=0.05, mdecay=0.3, **kw),
    "psgld": lambda **kw: SGLD(step_size=0.05, preconditioned=True, **kw),
    "sgld": lambda **kw: SGLD(step_size=0.05, **kw),
}


def _sg_steps(kernel, *, donate, num_steps=5, chains=3, num_warmup=3):
    """``num_steps`` steps (the first ``num_warmup`` adapting) on a 4-d Gaussian (float64):
    the initial state object, a copy of it taken before stepping, and the final state."""
    u = FunctionPotential(lambda z: 0.5 * (z**2 * torch.arange(1.0, 5.0)).sum(-1), dim=4)
    rng = ChainRNG.from_seed(2, chains)
    z0 = torch.ones(chains, 4, dtype=torch.float64)
    state = kernel.init_state(z0, u, rng, num_warmup=num_warmup)
    first = type(state)(*(t.clone() for t in state))
    kept = state
    for t in range(num_steps):
        state, _ = kernel.step(
            state, u, rng, None, iteration=t, num_warmup=num_warmup, donate=donate
        )
    return kept, first, state


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("name", sorted(DONATING))
def test_donated_state_equals_a_fresh_one(name, compile):
    make = lambda: DONATING[name](compile=compile)  # noqa: E731
    kept, first, fresh = _sg_steps(make(), donate=False)
    # without donation the input state is untouched
    for a, b in zip(kept, first, strict=True):
        assert torch.equal(a, b)
    kept, _, donated = _sg_steps(make(), donate=True)
    if compile or name == "sghmc":  # these write the result into the first state's tensors
        assert donated.z.data_ptr() == kept.z.data_ptr()
    # same float64 expressions (eager: identical; compiled: the same fused kernel, in place)
    for a, b in zip(donated, fresh, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DONATING))
def test_compiled_equals_its_eager_fallback(name, monkeypatch):
    _, _, compiled = _sg_steps(DONATING[name](compile=True), donate=True)

    monkeypatch.setattr(shutil, "which", lambda name: None)
    kernel = DONATING[name](compile="auto")
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        _, _, eager = _sg_steps(kernel, donate=True)
    assert kernel.compile_time_s == 0.0
    # float64 round-off of fused vs unfused log / sin / cos over 5 steps
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DONATING))
def test_compiled_kernel_pickles_and_checks_compile(name):
    kernel = DONATING[name](compile=True)
    _sg_steps(kernel, donate=False, num_steps=1)
    assert kernel.compile_time_s >= 0.0
    again = pickle.loads(pickle.dumps(kernel))
    assert again.compile is True and again._fused_steps == {}
    with pytest.raises(ValueError, match="compile must be False, True or 'auto'"):
        DONATING[name](compile="yes")

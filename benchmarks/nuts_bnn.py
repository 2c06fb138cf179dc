"""NUTS on a small Bayesian neural network: bayesdl vs Pyro vs NumPyro, one process.

Task (issue 3): a regression BNN with ``N = 500`` points of ``8`` inputs, one hidden layer of
``50`` tanh units and one output; every weight and bias has a ``Normal(0, 1)`` prior, the noise
standard deviation a ``LogNormal(0, 1)`` prior (``D = 502`` latents). The data are synthetic
(inputs ``N(0, 1)``, targets from a fixed random tanh teacher network plus noise of sd 0.1),
made with a fixed seed, so nothing is downloaded. Every sampler runs NUTS with a diagonal mass
matrix, ``max_tree_depth = 8``, target acceptance 0.8, initial values uniform on ``(-2, 2)``
in unconstrained space, ``--warmup`` warm-up and ``--samples`` kept iterations (300 + 300).

Samplers:

* ``bayesdl``: :class:`bayesdl.infer.mcmc.NUTS` through :func:`bayesdl.infer.mcmc.sample` on a
  :class:`~bayesdl.infer.mcmc.FunctionPotential` (the model's log density written as one flat
  torch function of ``z [C, 502]``, gradients by autograd), for 1 chain and for 8 chains
  vectorised on one device (``chain_method="vectorized"``).
* ``bayesdl_compiled``: the same with ``NUTS(..., compile=True)``: each leaf's leapfrog step,
  potential forward and backward pass (``torch.func.grad_and_value``) and bookkeeping compiled
  into one graph by ``torch.compile`` (inductor). Its wall time includes compilation (as
  NumPyro's includes JIT); ``compile_s`` is the compilation part, and ``*_excluding_compile``
  fields give the sampling-only rates.
* ``bayesdl_bnn`` / ``bayesdl_bnn_compiled``: the same sampler on the library's own model path,
  ``sample(BNN(net, IIDPrior(Normal(0, 1)), GaussianLikelihood(N, scale_prior=LogNormal(0, 1))),
  NUTS(...), (x, y))`` (a :class:`~bayesdl.infer.mcmc.BNNPotential`), 1 chain (full mode only;
  compiled when compiled rows run, eager too with ``--bnn-eager``).
* ``pyro``: ``pyro.infer.NUTS(model)`` + ``pyro.infer.MCMC`` on the same model written with
  ``pyro.sample`` statements, 1 chain. Pyro is far too slow to run 600 iterations here, so it
  runs ``--pyro-warmup`` + ``--pyro-samples`` iterations (10 + 10 by default), its time per
  gradient evaluation (model calls, counted) is measured, and its wall time for the full run is
  **extrapolated** as that time times the number of gradient evaluations bayesdl's 1-chain run
  needed. Its output line says so (``"extrapolated": true``).
* ``numpyro``: ``numpyro.infer.NUTS`` + ``MCMC`` (JAX, jit-compiled), 1 chain and 8 chains with
  ``chain_method="vectorized"``; its wall time includes JAX compilation (what a user waits for;
  ``compile_s`` estimates the compile part from a second, already-compiled run). Skipped
  (ratios ``null``) when NumPyro is not importable (``pip install .[bench]``).

Reported per run: wall time (s), gradient evaluations per second (leapfrog steps plus step-size
search evaluations, over all chains), and ESS/s = min over 20 test inputs of the bulk ESS
(ArviZ, all chains) of the predictive mean ``f(x_test)``, divided by the wall time; also
the adapted step size (mean over chains) and the mean acceptance statistic, for bayesdl and
NumPyro alike, since at 300 warm-up iterations they vary from chain to chain and explain much of
the ESS differences.
Summary (last line): ``speedup_vs_pyro`` = Pyro's extrapolated wall / bayesdl's wall (1 chain),
``ess_per_s_ratio_vs_numpyro`` = bayesdl ESS/s / NumPyro ESS/s (1 chain; ``..._8chains`` for 8),
``chains8_over_chains1_time`` = bayesdl wall with 8 vectorised chains / with 1 chain. These use
the compiled rows when they ran (``summary_rows`` says which; ``--compile both``, the default);
the same ratios for the eager rows carry an ``_eager`` suffix. One chain's minimum ESS over 300
draws is a noisy number (on one 2-core AVX2 machine the per-seed ratio was 0.13, 0.35, 2.77,
3.63 and 1.13 for seeds 0-4, the first including a cold compile), so ``--seeds K`` reruns
the 1-chain bayesdl and NumPyro rows for sampler seeds ``--seed`` ... ``--seed + K - 1`` (same
data) and adds ``ess_per_s_ratio_vs_numpyro_median_over_seeds`` and
``ess_per_s_ratio_vs_numpyro_of_means_over_seeds`` (bayesdl's mean ESS/s over the seeds /
NumPyro's: a steadier figure than the median of per-seed ratios).

Compilation: inductor keeps compiled kernels in an on-disk cache, so a second run of this
script compiles much faster than the first on a machine (one core of a 2-core AVX2 machine,
the 1-chain run's sub-tree loop: ~2.6 s instead of ~27 s, most of the difference being the
C++ compiler and inductor's code generation); ``--cold-cache`` compiles into a fresh cache
directory to measure the first run. NumPyro's JIT has no such cache here (JAX's persistent cache is off by default).

Trees: compiled bayesdl NUTS builds each trajectory as one compiled call on CPU (a
``while_loop`` over the doublings around one over a sub-tree's leaves) and in calls of a
four-leaf block elsewhere; ``--nuts-subtree tree|loop|blocks`` forces one (``loop``: one
``while_loop`` call per sub-tree, the CPU path before the whole-tree loop).

Threads: ``torch.set_num_threads(--threads)`` (default 1) and, for NumPyro, XLA's CPU
intra-op parallelism is switched off when ``--threads 1`` so every sampler uses one core.

Usage::

    python benchmarks/nuts_bnn.py                       # full run (minutes)
    python benchmarks/nuts_bnn.py --quick --device cpu  # smoke run (~1 min, most of it
                                                        # compilation), numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

N_TRAIN, N_IN, N_HIDDEN, N_TEST = 500, 8, 50, 20
PRIOR_SCALE, NOISE_LOC, NOISE_SCALE = 1.0, 0.0, 1.0
SPLIT = [N_IN * N_HIDDEN, N_HIDDEN, N_HIDDEN, 1, 1]
DIM = sum(SPLIT)


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic regression data from a random tanh teacher net (float32 numpy arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN + N_TEST, N_IN))
    w1 = rng.standard_normal((N_IN, 10)) / math.sqrt(N_IN)
    w2 = rng.standard_normal(10)
    f = np.tanh(x @ w1) @ w2
    y = f + 0.1 * rng.standard_normal(len(f))
    return {
        "x": x[:N_TRAIN].astype(np.float32),
        "y": y[:N_TRAIN].astype(np.float32),
        "x_test": x[N_TRAIN:].astype(np.float32),
    }


def min_ess(f_test: np.ndarray) -> float:
    """Minimum over test inputs of the bulk ESS of predictive means ``[C, S, N_TEST]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ess = az.ess(az.convert_to_dataset({"f": np.asarray(f_test, dtype=np.float64)}))
    return float(ess["f"].values.min())


# ---------------------------------------------------------------------------------- bayesdl
def torch_potential(x: torch.Tensor, y: torch.Tensor):
    """``U(z)`` for chains ``z [C, 502]`` = (W1 [8, 50] row-major, b1, w2, b2, log sigma).

    The hidden layer is computed hidden-major, ``[C, 50, N] = W1ᵀ Xᵀ``, not ``[C, N, 50]``:
    the same numbers, but inductor vectorises a fused kernel along its last axis, and 500 is 31
    full AVX-512 vectors where 50 is three plus a masked one (the reduction over the hidden
    units then also runs across rows instead of within each). Measured on one core of an
    AVX-512 CPU: the fused ``tanh`` kernel 34 -> 19 us, a compiled NUTS leaf ~13% faster; on an
    AVX2 CPU (8-wide vectors) both layouts took the same time per leaf (141 vs 143 us). (XLA
    picks layouts itself, so NumPyro's model keeps the natural ``x @ w1``.)
    """
    from bayesdl.infer.mcmc import FunctionPotential

    n = x.shape[0]
    xt = x.t().contiguous()  # [8, N]

    def u(z: torch.Tensor) -> torch.Tensor:
        c = z.shape[0]
        w1, b1, w2, b2, log_s = z.split(SPLIT, -1)
        w1t = w1.view(c, N_IN, N_HIDDEN).transpose(1, 2)  # [C, 50, 8]
        h = torch.tanh(torch.matmul(w1t, xt) + b1.unsqueeze(-1))  # [C, 50, N]
        f = torch.matmul(w2.unsqueeze(1), h).squeeze(1) + b2  # [C, N]
        r = y - f
        ls = log_s.squeeze(-1)
        # Gaussian likelihood; Normal(0, 1) weights; LogNormal(0, 1) noise sd with the
        # log-Jacobian of sigma = exp(log_s) (constants dropped)
        nll = 0.5 * (r * r).sum(-1) * torch.exp(-2.0 * ls) + n * ls
        weights = z[:, :-1]
        return nll + 0.5 * (weights * weights).sum(-1) + 0.5 * ls * ls

    return FunctionPotential(u, DIM)


def torch_predict(z: torch.Tensor, x_test: torch.Tensor) -> torch.Tensor:
    """Predictive means ``[C, S, N_TEST]`` for draws ``z [C, S, 502]``."""
    c, s, _ = z.shape
    w1, b1, w2, b2, _ = z.reshape(c * s, DIM).split(SPLIT, -1)
    h = torch.tanh(torch.matmul(x_test, w1.view(c * s, N_IN, N_HIDDEN)) + b1.unsqueeze(1))
    f = torch.matmul(h, w2.unsqueeze(-1)).squeeze(-1) + b2
    return f.reshape(c, s, -1)


def _count_compiled_gradients(kernel: Any, count: list[int]) -> None:
    """With ``compile=True`` the leapfrog steps bypass ``potential.value_and_grad``: count the
    chain-gradients of the kernel's compiled step function instead (rows of ``z``)."""
    from bayesdl.infer.mcmc import NUTS

    inner = kernel._step_function
    real_leaves: dict[int, int] = {}  # the kernel's cached `real [K]` rows -> their count

    def step_function(potential: Any, device: Any, build: Any, **kw: Any) -> Any:
        fn = inner(potential, device, build, **kw)
        builder = getattr(build, "__func__", build)
        whole_tree = builder is NUTS._tree_builder
        whole_subtree = builder is NUTS._subtree_builder

        def counted(*args: Any) -> Any:
            out = fn(*args)
            if whole_tree:
                # (..., leaves): the loops ran a leaf for all C chains while any chain built
                leaves = int(out[5])
            elif whole_subtree:
                # (batch, z [C, D], ..., num_steps [C] (args[14]), ...) -> (..., num_steps
                # (out[7]), ...): the loop ran a leaf for all C chains while any chain built,
                # i.e. as many leaves as the chain that built longest (one sync per sub-tree)
                leaves = int((out[7] - args[14]).max())
            else:
                # (batch, z [C, D], ..., real [K], ...): K leaves of C chains per call, of
                # which the `real` ones count (a sub-tree of 1 or 2 leaves runs as a padded
                # block of 4); the rows are cached tensors: one sync per distinct row
                real = args[16]
                key = real.data_ptr()
                if key not in real_leaves:
                    real_leaves[key] = int(real.sum())
                leaves = real_leaves[key]
            # chains: args[1] is `ends [4, C, D]` (whole-tree loop) or `z [C, D]`
            count[0] += leaves * args[1].shape[-2]
            return out

        return counted

    kernel._step_function = step_function


def _count_gradients(potential: Any) -> list[int]:
    """Make ``potential`` count the chain-gradients it computes (rows of ``z``, host ints)."""
    count = [0]
    inner = potential.value_and_grad

    def counted(z: torch.Tensor, batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        count[0] += z.shape[0]
        return inner(z, batch)

    potential.value_and_grad = counted
    return count


def run_bayesdl(
    data: dict[str, np.ndarray],
    *,
    num_chains: int,
    warmup: int,
    samples: int,
    depth: int,
    device: torch.device,
    seed: int,
    bnn_model: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    from bayesdl.infer.mcmc import NUTS, BNNPotential, sample

    x = torch.as_tensor(data["x"], device=device)
    y = torch.as_tensor(data["y"], device=device)
    x_test = torch.as_tensor(data["x_test"], device=device)
    if bnn_model:
        import pyro.distributions as dist

        from bayesdl.likelihoods import GaussianLikelihood
        from bayesdl.nn import BNN
        from bayesdl.priors import IIDPrior

        net = torch.nn.Sequential(
            torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.Tanh(), torch.nn.Linear(N_HIDDEN, 1)
        ).to(device)
        noise = dist.LogNormal(torch.tensor(NOISE_LOC, device=device), NOISE_SCALE)
        bnn = BNN(
            net,
            IIDPrior(dist.Normal(0.0, PRIOR_SCALE)),
            GaussianLikelihood(N_TRAIN, scale_prior=noise),
        )
        potential = BNNPotential(bnn, (x, y))
    else:
        potential = torch_potential(x, y)
    count = _count_gradients(potential)
    kernel = NUTS(max_tree_depth=depth, target_accept_prob=0.8, compile=compile)
    if compile:
        _count_compiled_gradients(kernel, count)
    sync(device)
    t0 = time.perf_counter()
    result = sample(
        potential,
        kernel,
        num_samples=samples,
        warmup=warmup,
        num_chains=num_chains,
        seed=seed,
        progress=False,
    )
    sync(device)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        if bnn_model:
            draws = potential.unpack(result.z.reshape(-1, potential.dim))
            weights = {k: v for k, v in draws.items() if k in bnn.site_names}
            f = bnn.forward_with(weights, x_test).reshape(num_chains, samples, -1)
        else:
            f = torch_predict(result.z, x_test)
    stats = result.sample_stats
    ess = min_ess(f.cpu().numpy())
    compile_s = kernel.compile_time_s
    return {
        "compiled": compile,
        "wall_s": wall,
        "compile_s": compile_s,
        "wall_s_excluding_compile": wall - compile_s,
        "grad_evals": count[0],
        "grad_evals_per_s": count[0] / wall,
        "grad_evals_per_s_excluding_compile": count[0] / (wall - compile_s),
        "mean_num_steps": float(stats["num_steps"].double().mean()),
        "mean_tree_depth": float(stats["tree_depth"].double().mean()),
        "divergences": int(stats["diverging"].sum()),
        "step_size": float(stats["step_size"].double().mean()),
        "accept_prob": float(stats["accept_prob"].double().mean()),
        "min_ess": ess,
        "ess_per_s": ess / wall,
        "ess_per_s_excluding_compile": ess / (wall - compile_s),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- pyro
def run_pyro(
    data: dict[str, np.ndarray], *, warmup: int, samples: int, depth: int, seed: int
) -> dict[str, Any]:
    import pyro
    from pyro.infer import MCMC
    from pyro.infer import NUTS as PyroNUTS

    x = torch.as_tensor(data["x"])
    y = torch.as_tensor(data["y"])
    model, calls = pyro_model()
    pyro.set_rng_seed(seed)
    kernel = PyroNUTS(model, max_tree_depth=depth, target_accept_prob=0.8)
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    t0 = time.perf_counter()
    mcmc.run(x, y)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "grad_evals": calls[0], "s_per_grad": wall / max(calls[0], 1)}


def pyro_model() -> tuple[Any, list[int]]:
    """The BNN as a Pyro model ``model(x, y)``, and a one-item list counting its calls."""
    import pyro
    import pyro.distributions as dist

    calls = [0]

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        calls[0] += 1
        w1 = pyro.sample("w1", dist.Normal(0.0, PRIOR_SCALE).expand([N_IN, N_HIDDEN]).to_event(2))
        b1 = pyro.sample("b1", dist.Normal(0.0, PRIOR_SCALE).expand([N_HIDDEN]).to_event(1))
        w2 = pyro.sample("w2", dist.Normal(0.0, PRIOR_SCALE).expand([N_HIDDEN]).to_event(1))
        b2 = pyro.sample("b2", dist.Normal(0.0, PRIOR_SCALE))
        sigma = pyro.sample("sigma", dist.LogNormal(NOISE_LOC, NOISE_SCALE))
        f = torch.tanh(x @ w1 + b1) @ w2 + b2
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(f, sigma), obs=y)

    return model, calls


# ---------------------------------------------------------------------------------- numpyro
def run_numpyro(
    data: dict[str, np.ndarray],
    *,
    num_chains: int,
    warmup: int,
    samples: int,
    depth: int,
    seed: int,
) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, NUTS

    x = jnp.asarray(data["x"])
    y = jnp.asarray(data["y"])
    x_test = jnp.asarray(data["x_test"])

    def model(x, y=None):
        w1 = numpyro.sample("w1", ndist.Normal(0.0, PRIOR_SCALE).expand([N_IN, N_HIDDEN]))
        b1 = numpyro.sample("b1", ndist.Normal(0.0, PRIOR_SCALE).expand([N_HIDDEN]))
        w2 = numpyro.sample("w2", ndist.Normal(0.0, PRIOR_SCALE).expand([N_HIDDEN]))
        b2 = numpyro.sample("b2", ndist.Normal(0.0, PRIOR_SCALE))
        sigma = numpyro.sample("sigma", ndist.LogNormal(NOISE_LOC, NOISE_SCALE))
        f = jnp.tanh(x @ w1 + b1) @ w2 + b2
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", ndist.Normal(f, sigma), obs=y)

    kernel = NUTS(model, max_tree_depth=depth, target_accept_prob=0.8)
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    fields = ("num_steps", "diverging", "accept_prob")
    t0 = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(seed), x, y, extra_fields=fields, collect_warmup=True)
    warm_steps = np.asarray(mcmc.get_extra_fields()["num_steps"]).sum()
    mcmc.run(mcmc.post_warmup_state.rng_key, x, y, extra_fields=fields)
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    wall = time.perf_counter() - t0
    h = jnp.tanh(jnp.einsum("ni,csih->csnh", x_test, draws["w1"]) + draws["b1"][:, :, None])
    f = jnp.einsum("csnh,csh->csn", h, draws["w2"]) + draws["b2"][:, :, None]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    # the adapted step size of each chain (as the bayesdl rows report theirs)
    step_size = float(np.asarray(mcmc.last_state.adapt_state.step_size).mean())
    grads = int(warm_steps + np.asarray(extra["num_steps"]).sum())
    ess = min_ess(np.asarray(f))
    # the sampling phase again, now compiled: its rate estimates a compile-free wall time
    t1 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed + 1), x, y, extra_fields=fields)
    jax.block_until_ready(mcmc.get_samples())
    rate = np.asarray(mcmc.get_extra_fields()["num_steps"]).sum() / (time.perf_counter() - t1)
    wall_warm = grads / rate
    return {
        "wall_s": wall,
        "wall_s_excluding_compile_est": wall_warm,
        "ess_per_s_excluding_compile_est": ess / wall_warm,
        "grad_evals": grads,
        "grad_evals_per_s": grads / wall,
        "grad_evals_per_s_compiled": float(rate),
        "mean_num_steps": float(np.asarray(extra["num_steps"]).mean()),
        "divergences": int(np.asarray(extra["diverging"]).sum()),
        "step_size": step_size,
        "accept_prob": float(np.asarray(extra["accept_prob"]).mean()),
        "min_ess": ess,
        "ess_per_s": ess / wall,
        "wall_includes_jit_compile": True,
    }


def numpyro_available() -> bool:
    try:
        import numpyro  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, meaningless numbers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--pyro-warmup", type=int, default=10)
    parser.add_argument("--pyro-samples", type=int, default=10)
    parser.add_argument("--no-numpyro", action="store_true", help="skip NumPyro")
    parser.add_argument("--numpyro", action="store_true", help="run NumPyro in --quick mode too")
    parser.add_argument(
        "--no-bnn-model", action="store_true", help="skip the bayesdl BNN-model (BNNPotential) run"
    )
    parser.add_argument(
        "--compile",
        choices=("both", "eager", "compiled"),
        default="both",
        help="bayesdl rows without and/or with NUTS(compile=True) (torch.compile)",
    )
    parser.add_argument(
        "--bnn-eager",
        action="store_true",
        help="also run the BNN-model row eagerly when compiled rows run (slow)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run the 1-chain bayesdl and NumPyro rows for this many sampler seeds "
        "(--seed, --seed+1, ...; same data) and report the median ESS/s ratio over them",
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="compile into a fresh, empty inductor cache (what a first run on a machine "
        "pays); by default inductor reuses its on-disk cache from earlier runs",
    )
    parser.add_argument(
        "--nuts-subtree",
        choices=["auto", "tree", "loop", "blocks"],
        default="auto",
        help="how compiled bayesdl NUTS builds its trees: the whole trajectory in one "
        "while_loop call ('tree', the CPU default, 'auto'), one while_loop call per sub-tree "
        "('loop') or calls of a four-leaf block (the default on other devices)",
    )
    args = parser.parse_args()
    if args.nuts_subtree != "auto":
        from bayesdl.infer.mcmc import NUTS

        NUTS._subtree_loop = args.nuts_subtree != "blocks"
        NUTS._whole_tree = args.nuts_subtree == "tree"
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.cold_cache:
        import tempfile

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_cold_")
    if args.quick:
        args.warmup, args.samples, args.depth = 40, 40, 5
        args.pyro_warmup, args.pyro_samples = 2, 2
    if args.threads == 1:
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = make_data(args.seed)
    common = {"warmup": args.warmup, "samples": args.samples, "depth": args.depth}

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    env = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": args.threads,
        "inductor_cache": "cold" if args.cold_cache else "default (on-disk, may be warm)",
        "nuts_subtree": args.nuts_subtree,
        "machine": platform.processor() or platform.machine(),
        **common,
    }
    emit({"config": env})
    runs: dict[str, dict[str, Any]] = {}
    modes = {"eager": [False], "compiled": [True], "both": [False, True]}[args.compile]
    for compiled in modes:
        impl = "bayesdl_compiled" if compiled else "bayesdl"
        for c in (1, 8):
            row = run_bayesdl(
                data, num_chains=c, device=device, seed=args.seed, compile=compiled, **common
            )
            runs[f"{impl}_{c}"] = row
            emit({"impl": impl, "chains": c, **row})
    if not (args.quick or args.no_bnn_model):
        bnn_modes = modes if args.bnn_eager else modes[-1:]
        for compiled in bnn_modes:
            impl = "bayesdl_bnn_compiled" if compiled else "bayesdl_bnn"
            row = run_bayesdl(
                data,
                num_chains=1,
                device=device,
                seed=args.seed,
                bnn_model=True,
                compile=compiled,
                **common,
            )
            runs[f"{impl}_1"] = row
            emit({"impl": impl, "chains": 1, **row})
    pyro_row = run_pyro(
        data,
        warmup=args.pyro_warmup,
        samples=args.pyro_samples,
        depth=args.depth,
        seed=args.seed,
    )
    # the summary's headline ratios use the compiled rows when they ran (their wall times
    # include compilation, as NumPyro's include JIT); the eager ones get an "_eager" suffix
    best = "bayesdl_compiled" if True in modes else "bayesdl"
    b1, b8 = runs[f"{best}_1"], runs[f"{best}_8"]
    pyro_wall = pyro_row["s_per_grad"] * b1["grad_evals"]
    emit(
        {
            "impl": "pyro",
            "chains": 1,
            "iterations_run": args.pyro_warmup + args.pyro_samples,
            **pyro_row,
            "extrapolated": True,
            "wall_s_extrapolated": pyro_wall,
            "note": (
                f"Pyro ran {args.pyro_warmup}+{args.pyro_samples} iterations only; its full-run "
                "wall is its measured seconds per gradient evaluation times the gradient "
                "evaluations of bayesdl's 1-chain run"
            ),
        }
    )
    summary: dict[str, Any] = {
        "speedup_vs_pyro": pyro_wall / b1["wall_s"],
        "grad_evals_per_s_ratio_vs_pyro": b1["grad_evals_per_s"] * pyro_row["s_per_grad"],
        "chains8_over_chains1_time": b8["wall_s"] / b1["wall_s"],
        "ess_per_s_ratio_vs_numpyro": None,
        "ess_per_s_ratio_vs_numpyro_8chains": None,
        "bayesdl_wall_s_1chain": b1["wall_s"],
        "bayesdl_wall_s_8chains": b8["wall_s"],
        "summary_rows": best,
        "pyro_extrapolated": True,
    }
    if best == "bayesdl_compiled":
        summary["bayesdl_compile_s_1chain"] = b1["compile_s"]
        summary["bayesdl_compile_s_8chains"] = b8["compile_s"]
        summary["chains8_over_chains1_time_excluding_compile"] = (
            b8["wall_s_excluding_compile"] / b1["wall_s_excluding_compile"]
        )
    if "bayesdl_1" in runs and best != "bayesdl":
        e1, e8 = runs["bayesdl_1"], runs["bayesdl_8"]
        summary["speedup_vs_pyro_eager"] = pyro_row["s_per_grad"] * e1["grad_evals"] / e1["wall_s"]
        summary["chains8_over_chains1_time_eager"] = e8["wall_s"] / e1["wall_s"]
        summary["compiled_speedup_1chain"] = e1["wall_s"] / b1["wall_s"]
    if args.quick and not args.numpyro:
        summary["numpyro"] = "skipped in --quick mode (JAX compilation alone takes ~20 s)"
    elif args.no_numpyro:
        summary["numpyro"] = "skipped (--no-numpyro)"
    elif not numpyro_available():
        summary["numpyro"] = "skipped: not importable (pip install .[bench])"
    else:
        for c in (1, 8):
            row = run_numpyro(data, num_chains=c, seed=args.seed, **common)
            runs[f"numpyro_{c}"] = row
            emit({"impl": "numpyro", "chains": c, **row})
        n1, n8 = runs["numpyro_1"], runs["numpyro_8"]
        summary["ess_per_s_ratio_vs_numpyro"] = b1["ess_per_s"] / n1["ess_per_s"]
        summary["ess_per_s_ratio_vs_numpyro_8chains"] = b8["ess_per_s"] / n8["ess_per_s"]
        # both sides without compilation (an eager row has none to leave out)
        summary["ess_per_s_ratio_vs_numpyro_excluding_compile"] = (
            b1.get("ess_per_s_excluding_compile", b1["ess_per_s"])
            / n1["ess_per_s_excluding_compile_est"]
        )
        summary["wall_ratio_vs_numpyro"] = b1["wall_s"] / n1["wall_s"]
        if "bayesdl_1" in runs and best != "bayesdl":
            summary["ess_per_s_ratio_vs_numpyro_eager"] = (
                runs["bayesdl_1"]["ess_per_s"] / n1["ess_per_s"]
            )
        summary["numpyro_wall_s_1chain"] = n1["wall_s"]
        summary["numpyro_wall_s_8chains"] = n8["wall_s"]
        if args.seeds > 1:
            # the 1-chain ratio is noisy (module docstring): also its median over sampler
            # seeds, each seed's ratio from its own pair of runs
            seeds = list(range(args.seed, args.seed + args.seeds))
            ratios = [summary["ess_per_s_ratio_vs_numpyro"]]
            rates = [(b1["ess_per_s"], n1["ess_per_s"])]
            for seed in seeds[1:]:
                b = run_bayesdl(
                    data, num_chains=1, device=device, seed=seed,
                    compile=best == "bayesdl_compiled", **common,
                )  # fmt: skip
                emit({"impl": best, "chains": 1, "seed": seed, **b})
                n = run_numpyro(data, num_chains=1, seed=seed, **common)
                emit({"impl": "numpyro", "chains": 1, "seed": seed, **n})
                ratios.append(b["ess_per_s"] / n["ess_per_s"])
                rates.append((b["ess_per_s"], n["ess_per_s"]))
            summary["ess_per_s_ratio_vs_numpyro_per_seed"] = ratios
            summary["ess_per_s_ratio_vs_numpyro_median_over_seeds"] = float(np.median(ratios))
            # the mean ESS/s of each library over the seeds, then their ratio: each seed's
            # ratio divides one noisy ESS by another, so its median still swings several-fold
            # between sets of seeds where the ratio of means (over the same runs) moves less
            mean_b, mean_n = np.mean(rates, axis=0)
            summary["ess_per_s_ratio_vs_numpyro_of_means_over_seeds"] = float(mean_b / mean_n)
            summary["seeds"] = seeds
    emit(summary)


if __name__ == "__main__":
    sys.exit(main())

"""HMC leapfrog throughput on the BNN of ``nuts_bnn.py``: eager vs compiled, per step vs loop.

The network, data and potential are those of ``benchmarks/nuts_bnn.py`` (500 x 8 inputs, 50
tanh units, ``Normal(0, 1)`` weights, ``LogNormal(0, 1)`` noise, ``D = 502``). Every row runs
:class:`bayesdl.infer.mcmc.HMC` with a fixed step size (``--step-size``, no adaptation) and
``--num-steps`` leapfrog steps per iteration for ``--iterations`` iterations (a chain stops
at a divergence; rows report the steps taken and the divergences, none at the default step),
so every row computes the same number of gradients and only the speed per step differs:

* ``eager``: ``HMC(compile=False)``, each leapfrog step in eager PyTorch (autograd);
* ``per_step``: ``HMC(compile=True)`` with each leapfrog step one compiled call (the path on
  accelerators, and the CPU fallback when the loop cannot compile);
* ``loop``: ``HMC(compile=True)`` with each trajectory one compiled ``while_loop`` call (the
  default on CPU);
* ``pyro``: ``pyro.infer.HMC`` (same step size and number of steps, no adaptation) on the same
  model written with ``pyro.sample``, 1 chain, ``--pyro-iterations`` iterations, timed as
  the difference between a run of ``1 + --pyro-iterations`` iterations and one of 1
  (leaving out ``MCMC``'s set-up).

for 1 chain and for 8 chains vectorised on one device (bayesdl rows). Compilation is kept out
of the timings: each compiled kernel first runs 2 untimed iterations (which compile its graph;
``compile_s`` reports that time), then the timed run uses the same kernel. Reported per row:
``us_per_step`` (wall time / leapfrog steps taken per chain; one step moves all chains) and
``us_per_chain_step`` (/ chains). NumPyro is not run: its HMC on this network spends most of a
short run's time outside the leapfrog steps (JIT and set-up, ~1.6 s per ``MCMC.run`` here),
which a per-step comparison cannot separate out; ``nuts_bnn.py`` compares with NumPyro.

Summary (the last line, one JSON object): ``loop_speedup_vs_per_step`` (1 chain; ``..._8chains``),
``loop_speedup_vs_eager`` (likewise) and ``speedup_vs_pyro`` (Pyro's time per step / the
loop's, 1 chain).

Threads: ``torch.set_num_threads(--threads)`` (default 1).

Usage::

    python benchmarks/hmc_bnn.py                       # full run (~2 min after compiling)
    python benchmarks/hmc_bnn.py --quick --device cpu  # smoke run, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nuts_bnn import make_data, pyro_model, torch_potential  # noqa: E402

ROWS = {"eager": (False, None), "per_step": (True, False), "loop": (True, True)}


def _run(
    potential: Any, kernel: Any, *, iterations: int, num_chains: int, seed: int
) -> tuple[float, Any]:
    """Seconds for ``iterations`` HMC iterations of ``kernel`` (device synchronised), and
    the run's result."""
    from bayesdl.infer.mcmc import sample

    t0 = time.perf_counter()
    result = sample(
        potential,
        kernel,
        num_samples=iterations,
        warmup=0,
        num_chains=num_chains,
        seed=seed,
        progress=False,
    )
    float(result.z.sum())  # waits for the device
    return time.perf_counter() - t0, result


def run_bayesdl(
    data: dict[str, Any],
    row: str,
    *,
    num_chains: int,
    device: torch.device,
    iterations: int,
    num_steps: int,
    step_size: float,
    seed: int,
) -> dict[str, Any]:
    from bayesdl.infer.mcmc import HMC

    compiled, loop = ROWS[row]
    x = torch.as_tensor(data["x"], device=device)
    y = torch.as_tensor(data["y"], device=device)
    potential = torch_potential(x, y)
    kernel = HMC(
        step_size=step_size,
        num_steps=num_steps,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        compile=compiled,
    )
    if loop is not None:
        kernel._trajectory_loop = loop  # force the path (the class default is "auto")
    compile_s = 0.0
    if compiled:
        _run(potential, kernel, iterations=2, num_chains=num_chains, seed=seed)
        compile_s = kernel.compile_time_s
        used = kernel._compiled[2]
        if (used is HMC._trajectory_builder) != loop:
            raise RuntimeError(f"row {row!r} did not run its path (built {used.__name__})")
    wall, result = _run(potential, kernel, iterations=iterations, num_chains=num_chains, seed=seed)
    # the leapfrog steps the chains took (a chain stops at a divergence), per chain
    stats = result.sample_stats
    steps = float(stats["num_steps"].sum()) / num_chains
    return {
        "wall_s": round(wall, 3),
        "compile_s": round(compile_s, 2),
        "leapfrog_steps_per_chain": steps,
        "divergences": int(stats["diverging"].sum()),
        "us_per_step": round(1e6 * wall / steps, 1),
        "us_per_chain_step": round(1e6 * wall / (steps * num_chains), 1),
    }


def run_pyro(
    data: dict[str, Any], *, iterations: int, num_steps: int, step_size: float, seed: int
) -> dict[str, Any]:
    import pyro
    from pyro.infer import HMC as PyroHMC
    from pyro.infer import MCMC

    x = torch.as_tensor(data["x"])
    y = torch.as_tensor(data["y"])
    model, calls = pyro_model()

    def run(n: int) -> float:
        pyro.set_rng_seed(seed)
        kernel = PyroHMC(
            model,
            step_size=step_size,
            num_steps=num_steps,
            adapt_step_size=False,
            adapt_mass_matrix=False,
        )
        mcmc = MCMC(kernel, num_samples=n, warmup_steps=0, disable_progbar=True)
        t0 = time.perf_counter()
        mcmc.run(x, y)
        return time.perf_counter() - t0

    # MCMC's set-up (tracing the model, initial values) is left out: the difference of a
    # 1-iteration run and a (1 + iterations)-iteration run is the time of the iterations
    short = run(1)
    before = calls[0]
    wall = run(1 + iterations) - short
    steps = iterations * num_steps
    return {
        "wall_s": round(wall, 3),
        "setup_and_first_iteration_s": round(short, 3),
        "model_calls_in_long_run": calls[0] - before,
        "us_per_step": round(1e6 * wall / steps, 1),
        "us_per_chain_step": round(1e6 * wall / steps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, meaningless numbers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--step-size", type=float, default=1e-3)
    parser.add_argument("--pyro-iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("iterations", "num_steps", "pyro_iterations", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.step_size > 0:
        parser.error(f"--step-size must be > 0, got {args.step_size}")
    if args.quick:
        args.iterations, args.num_steps, args.pyro_iterations = 2, 10, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = make_data(args.seed)
    common = {"iterations": args.iterations, "num_steps": args.num_steps}

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    emit(
        {
            "config": {
                "torch": torch.__version__,
                "device": str(device),
                "threads": args.threads,
                "step_size": args.step_size,
                "machine": platform.processor() or platform.machine(),
                **common,
            }
        }
    )
    rows: dict[str, dict[str, Any]] = {}
    for c in (1, 8):
        for row in ROWS:
            out = run_bayesdl(
                data, row, num_chains=c, device=device, step_size=args.step_size,
                seed=args.seed, **common,
            )  # fmt: skip
            rows[f"{row}_{c}"] = out
            emit({"impl": f"bayesdl_{row}", "chains": c, **out})
    pyro_row = run_pyro(
        data,
        iterations=args.pyro_iterations,
        num_steps=args.num_steps,
        step_size=args.step_size,
        seed=args.seed,
    )
    emit({"impl": "pyro", "chains": 1, **pyro_row})

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round(a["us_per_step"] / b["us_per_step"], 2)

    summary = {
        "loop_speedup_vs_per_step": ratio(rows["per_step_1"], rows["loop_1"]),
        "loop_speedup_vs_per_step_8chains": ratio(rows["per_step_8"], rows["loop_8"]),
        "loop_speedup_vs_eager": ratio(rows["eager_1"], rows["loop_1"]),
        "loop_speedup_vs_eager_8chains": ratio(rows["eager_8"], rows["loop_8"]),
        "speedup_vs_pyro": ratio(pyro_row, rows["loop_1"]),
    }
    emit(summary)


if __name__ == "__main__":
    main()

"""Log-likelihood + gradient of L = 16 Matérn-3/2 GPs vs sequence length T, one process.

Task (issue 7): ``L = 16`` independent Matérn-3/2 channels (lengthscales spread over 5..50,
variance 1), an irregular time grid (steps uniform on [0.5, 1.5]), observations ``y [16, T]``
drawn once from ``N(0, 1)`` and Gaussian noise of variance 0.1, float64. One *step* is the log
marginal likelihood ``Σ_l log p(y_l)`` plus its gradient with respect to the kernel's log
lengthscales, log variances and ``y`` (``backward()``), starting from the hyperparameters (the
state-space matrices are rebuilt inside the step, as in training).

Implementations (rows):

* ``bayesdl_parallel``: :func:`bayesdl.gp.kalman_log_marginal` (associative-scan reduction,
  ``O(log T)`` depth; time cut into 32768-step chunks under activation checkpointing on CPU so
  memory stays bounded; the default, ``chunk_size="auto"``, which is 2^20 steps on CUDA);
* ``bayesdl_sequential``: the same with ``method="sequential"`` (a Python loop over ``T``,
  vectorised over channels). Skipped for ``T > --max-sequential`` (default 1e4): the loop costs
  tens of microseconds per time step; the row then says ``"skipped"`` and why;
* ``pyro_gaussian_hmm``: ``pyro.distributions.GaussianHMM(...).log_prob`` with the same
  matrices (Pyro's parallel-scan Gaussian contraction; the state before the first step is the
  stationary law). Skipped for ``T > --max-pyro`` (default 1e5 on CPU: it holds ~40 GB at 1e6);
* ``dense``: ``MultivariateNormal(0, K + 0.1 I).log_prob`` with the ``[16, T, T]`` Cholesky,
  only for ``T <= --max-dense`` (default 4000).

Every row also reports ``rel_diff_vs_parallel``, the relative difference of its log-likelihood
from ``bayesdl_parallel``'s (all four compute the same number).

Timing (``benchmarks/_timing.py``): per T, the rows run interleaved in rotating order,
``--repeats`` blocks of one step each after ``--warmup`` untimed steps (fewer at large T, see
``_plan``); median and quartiles in ms. Summary (last line): ``t1e6_over_t1e5`` =
bayesdl_parallel's median time at the largest T / at the second largest (T = 1e6 / 1e5 in the
full run; linear scaling gives 10, the target is <= 12); ``speedup_vs_gaussianhmm_t1e5`` =
median over repeats of the paired ratio pyro / bayesdl_parallel at T = 1e5 (target >= 1 on CPU);
``--quick`` computes both from its tiny sizes (smoke test only, numbers meaningless).

Usage::

    python benchmarks/gp_scaling.py                         # full run: T = 1e3 .. 1e6 (long)
    python benchmarks/gp_scaling.py --sizes 1000,100000     # chosen sizes
    python benchmarks/gp_scaling.py --quick --device cpu    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyro.distributions as pdist
import torch
from _timing import device_sync, interleaved_times, paired_ratio, summarize_ms

from bayesdl.gp import MaternKernel, kalman_log_marginal

L = 16
NOISE = 0.1
F64 = torch.float64


def make_problem(T: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    times = torch.cumsum(0.5 + torch.rand(T, generator=g, dtype=F64), 0).to(device)
    y = torch.randn(L, T, generator=g, dtype=F64).to(device).requires_grad_()
    kernel = MaternKernel(
        1.5,
        lengthscale=torch.linspace(5.0, 50.0, L, dtype=F64),
        variance=torch.ones(L, dtype=F64),
    ).to(device)
    return kernel, times, y


def bayesdl_step(kernel, times, y, method: str, chunk_size: int | str | None):
    A, Q = kernel.transition(times.diff())
    P0 = kernel.stationary_covariance(F64)
    H = kernel.observation_vector(F64)
    m0 = P0.new_zeros(L, P0.shape[-1])
    r = torch.tensor(NOISE, dtype=F64, device=y.device)
    ll = kalman_log_marginal(A, Q, H, m0, P0, y, r, method=method, chunk_size=chunk_size).sum()
    ll.backward()
    return ll.detach()


def pyro_step(kernel, times, y):
    # the first transition maps the stationary law onto itself whatever its step (here 1.0)
    dt = torch.cat([torch.ones(1, dtype=F64, device=times.device), times.diff()])
    A, Q = kernel.transition(dt)
    P0 = kernel.stationary_covariance(F64)
    d = P0.shape[-1]
    H = kernel.observation_vector(F64).unsqueeze(-1)  # [d, 1]
    hmm = pdist.GaussianHMM(
        pdist.MultivariateNormal(P0.new_zeros(L, d), P0),
        A.transpose(-1, -2),
        pdist.MultivariateNormal(P0.new_zeros(d), Q),
        H,
        pdist.Normal(P0.new_zeros(1), NOISE**0.5).to_event(1),
    )
    ll = hmm.log_prob(y.unsqueeze(-1)).sum()
    ll.backward()
    return ll.detach()


def dense_step(kernel, times, y):
    K = kernel(times, times)
    eye = torch.eye(K.shape[-1], dtype=F64, device=K.device)
    mvn = torch.distributions.MultivariateNormal(torch.zeros_like(y), K + NOISE * eye)
    ll = mvn.log_prob(y).sum()
    ll.backward()
    return ll.detach()


def _plan(T: int, quick: bool) -> tuple[int, int]:
    """(warmup, repeats) for a size: fewer repeats where one step takes many seconds."""
    if quick:
        return 1, 2
    if T >= 500_000:
        return 0, 2
    if T >= 50_000:
        return 1, 3
    return 2, 5


def run_size(T: int, args, device: torch.device, max_pyro: int, chunk: int | str | None, sync):
    """Time every implementation at one sequence length; JSON rows and per-repeat seconds."""
    kernel, times, y = make_problem(T, device, args.seed)
    steps = {
        "bayesdl_parallel": lambda: bayesdl_step(kernel, times, y, "parallel", chunk),
        "bayesdl_sequential": lambda: bayesdl_step(kernel, times, y, "sequential", None),
        "pyro_gaussian_hmm": lambda: pyro_step(kernel, times, y),
        "dense": lambda: dense_step(kernel, times, y),
    }
    skipped = {}
    if T > args.max_sequential:
        skipped["bayesdl_sequential"] = (
            f"T > --max-sequential {args.max_sequential}: a Python loop over T time steps"
        )
    if T > max_pyro:
        skipped["pyro_gaussian_hmm"] = f"T > --max-pyro {max_pyro}: memory"
    if T > args.max_dense:
        skipped["dense"] = f"T > --max-dense {args.max_dense}: O(T^3) time, O(L T^2) memory"
    values: dict[str, float] = {}

    def runner(name: str):
        def run(n: int) -> float:
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                kernel.zero_grad(set_to_none=True)
                y.grad = None
                values[name] = float(steps[name]())
            sync()
            return time.perf_counter() - t0

        return run

    runners = {name: runner(name) for name in steps if name not in skipped}
    warmup, repeats = _plan(T, args.quick)
    times_s = interleaved_times(runners, steps=1, repeats=repeats, warmup=warmup)
    ref = values["bayesdl_parallel"]
    rows = []
    for name in steps:
        row = {"T": T, "impl": name, "L": L, "device": str(device), "threads": args.threads}
        if name in skipped:
            row["skipped"] = skipped[name]
        else:
            row.update(summarize_ms(times_s[name]))
            row["log_lik"] = values[name]
            row["rel_diff_vs_parallel"] = abs(values[name] - ref) / abs(ref)
        rows.append(row)
    return rows, times_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, meaningless numbers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default=None, help="comma-separated T values")
    parser.add_argument("--max-sequential", type=int, default=10_000)
    parser.add_argument("--max-pyro", type=int, default=None)
    parser.add_argument("--max-dense", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    else:
        sizes = [32, 256] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    max_pyro = args.max_pyro or (100_000 if device.type == "cpu" else 1_000_000)
    chunk = "auto"
    sync = device_sync(device)

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    medians: dict[int, dict[str, list[float]]] = {}
    for T in sizes:
        rows, medians[T] = run_size(T, args, device, max_pyro, chunk, sync)
        for row in rows:
            emit(row)

    big, small = sizes[-1], sizes[-2] if len(sizes) > 1 else sizes[-1]
    par = {T: sorted(medians[T]["bayesdl_parallel"])[len(medians[T]["bayesdl_parallel"]) // 2]
           for T in medians}  # fmt: skip
    hmm_t = (
        100_000
        if 100_000 in medians
        else max((T for T in medians if "pyro_gaussian_hmm" in medians[T]), default=None)
    )
    speedup = None
    if hmm_t is not None and "pyro_gaussian_hmm" in medians[hmm_t]:
        speedup = paired_ratio(
            medians[hmm_t]["pyro_gaussian_hmm"], medians[hmm_t]["bayesdl_parallel"]
        )[0]
    summary = {
        "summary": True,
        "t1e6_over_t1e5": round(par[big] / par[small], 3),
        "t1e6_over_t1e5_sizes": [small, big],
        "speedup_vs_gaussianhmm_t1e5": None if speedup is None else round(speedup, 3),
        "speedup_vs_gaussianhmm_T": hmm_t,
        "targets": {"t1e6_over_t1e5": "<= 12", "speedup_vs_gaussianhmm_t1e5": ">= 1 (CPU)"},
        "quick": args.quick,
        "device": str(device),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    emit(summary)


if __name__ == "__main__":
    main()

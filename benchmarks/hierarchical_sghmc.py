"""SG-MCMC with a hierarchical prior: bayesdl's untraced potential against the traced one.

Task: the functional-prior UCI network (13 inputs, one hidden layer of 100 tanh units in the
scaled parameterisation, :func:`~bayesdl.priors.functional.scaled_mlp`), a
:class:`~bayesdl.priors.HierarchicalGammaPrior` (a Gamma precision per weight tensor, every
weight ``N(0, c² / λ)`` given its precision), a Gaussian likelihood with noise variance 0.1 on
``N = 455`` synthetic points (Boston's training size; inputs and targets ``N(0, 1)``: only the
cost is measured). Sampler: :class:`~bayesdl.infer.mcmc.AdaptiveSGHMC` (step size 0.01,
``mdecay`` 0.05) with the prior's conjugate Gibbs update of the precisions every 100 steps,
4 vectorised chains, minibatches of 32, through :func:`~bayesdl.infer.mcmc.sample`.

Rows (one process, the same seeds):

* ``bnn_potential``: ``sample(bnn, ...)``, which picks :class:`~bayesdl.infer.mcmc.BNNPotential`:
  the network as batched matmuls over chains, the prior's conditional Normal densities written
  out (``HierarchicalGammaPrior.conditional_normal_sites``), no Pyro trace per step.
* ``model_potential``: ``sample(ModelPotential(bnn, data), ...)``: the same density by tracing
  the Pyro model at every step (what any Pyro model gets).

Both rows draw the same samples up to round-off (checked: the largest difference of the kept
draws is printed). Output: one JSON line per row (seconds, steps per second), then a summary
line with ``speedup`` (traced time / untraced time).

Usage::

    python benchmarks/hierarchical_sghmc.py                       # 2000 steps per row
    python benchmarks/hierarchical_sghmc.py --quick --device cpu  # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from bayesdl.infer.mcmc import AdaptiveSGHMC, ModelPotential, sample
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import HierarchicalGammaPrior
from bayesdl.priors.functional import scaled_mlp

N, D_IN, HIDDEN = 455, 13, 100


def run(kind: str, x: torch.Tensor, y: torch.Tensor, *, warmup: int, draws: int, thin: int):
    torch.manual_seed(0)
    net = scaled_mlp((D_IN, HIDDEN, 1), "tanh").to(x)
    prior = HierarchicalGammaPrior(net).to(x.device)
    bnn = BNN(net, prior, GaussianLikelihood(N, scale=0.1**0.5)).to(x.device)
    model = bnn if kind == "bnn_potential" else ModelPotential(bnn, (x, y))
    kernel = AdaptiveSGHMC(step_size=0.01, mdecay=0.05, **prior.gibbs_kwargs(100))
    t0 = time.perf_counter()
    result = sample(model, kernel, (x, y), num_samples=draws, warmup=warmup, thin=thin,
                    num_chains=4, batch_size=32, seed=0, progress=False)  # fmt: skip
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (few steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, draws, thin = (20, 2, 5) if args.quick else (1000, 20, 50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=g).to(device)
    y = torch.randn(N, generator=g).to(device)
    common = {"device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.machine(),
              "steps": warmup + draws * thin, "quick": args.quick}  # fmt: skip
    seconds, samples = {}, {}
    for kind in ("bnn_potential", "model_potential"):
        seconds[kind], result = run(kind, x, y, warmup=warmup, draws=draws, thin=thin)
        samples[kind] = result.samples
        print(json.dumps({"impl": kind, "seconds": round(seconds[kind], 3),
                          "steps_per_s": round(common["steps"] / seconds[kind], 1), **common}),
              flush=True)  # fmt: skip
    diff = max(
        float((samples["bnn_potential"][k] - samples["model_potential"][k]).abs().max())
        for k in samples["bnn_potential"]
    )
    print(json.dumps({"summary": True,
                      "speedup": round(seconds["model_potential"] / seconds["bnn_potential"], 3),
                      "max_abs_draw_difference": diff, **common}))  # fmt: skip


if __name__ == "__main__":
    main()

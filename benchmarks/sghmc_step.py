"""Time per SGHMC step on an MLP 784-1200-1200-10 against one SGD-with-momentum step.

Task: an MLP 784-1200-1200-10 (ReLU; 2,395,210 weights and biases), a ``N(0, 1)`` prior on
each, a Categorical likelihood over ``N = 60000`` points seen in minibatches of ``B = 128``
(log-likelihood scaled by ``N / B``). Inputs and labels are synthetic random tensors: only the
cost of a step is measured.

Implementations (one process, interleaved block by block, same thread count):

* ``sgd``: the competitor. ``torch.optim.SGD(lr, momentum=0.9)`` on the plain ``nn.Module``,
  loss ``N/B * sum CE + sum w**2 / 2`` (the same potential as the samplers): zero_grad,
  forward, backward, step.
* ``bayesdl``: ``bayesdl.infer.mcmc.SGHMC(step_size=lr, friction=0.1)`` (SGD-with-momentum
  form) on ``BNNPotential(BNN(net, IIDPrior(Normal(0, 1)), CategoricalLikelihood(N)))``, one
  chain, through the functional ``kernel.step(state, potential, rng, batch, ...,
  donate=True)`` (the new state written into the old one's tensors, as
  ``bayesdl.infer.mcmc.sample`` does): the flat position vector, the potential and its
  gradient, the Gaussian noise and the update.
* ``bayesdl_compiled``: the same with ``SGHMC(..., compile=True)``: the update after the
  gradient (counter-based noise, momentum, position) is one compiled kernel (compile time is
  spent in the warm-up steps, before timing).
* ``sgd_fused``: ``torch.optim.SGD(..., fused=True)`` (torch's single-kernel optimizer step),
  a second competitor; reported beside the default one.
* ``sgd_cached``: the ``sgd`` step under the same caching CPU allocator as the bayesdl rows
  (below), to show how much of the difference is the allocator.
* ``naive``: a hand-written SGHMC in the style of per-parameter optimisers: the SGD step above
  plus, for every parameter tensor, a momentum buffer and ``torch.randn_like`` noise added in a
  Python loop (for reference; not a headline ratio).

On CPU the bayesdl rows run as ``sample`` runs its loop: under
``bayesdl.infer.mcmc._cpu_cache.caching_cpu_allocator`` (entered once per timed block, with
one untimed step first, so the block sees the steady state of a long run; the cache is
process-wide, so it is left before the next row's block). ``BAYESDL_CPU_CACHE=0`` turns it off.

Output: one JSON line per implementation with median ms/step and quartiles, then a summary
line with ``ratio_vs_sgd`` (bayesdl_compiled / sgd, median of per-repeat paired ratios, with
quartiles), ``eager_ratio_vs_sgd`` (bayesdl / sgd), ``ratio_vs_sgd_fused`` (bayesdl_compiled /
sgd_fused), ``ratio_vs_sgd_cached`` (bayesdl_compiled / sgd_cached: the same allocator on both
sides) and ``naive_ratio_vs_sgd``. ``--no-compile`` leaves the compiled row out (then
``ratio_vs_sgd`` is the eager one).

Usage::

    python benchmarks/sghmc_step.py                     # full run
    python benchmarks/sghmc_step.py --quick --device cpu  # smoke run (seconds)
    python benchmarks/sghmc_step.py --device cuda
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _timing import device_sync, interleaved_times, paired_ratio, step_runner, summarize_ms
from torch import nn

from bayesdl.infer.mcmc import SGHMC, BNNPotential, ChainRNG
from bayesdl.infer.mcmc._cpu_cache import caching_cpu_allocator
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior

SIZES = (784, 1200, 1200, 10)
QUICK_SIZES = (784, 100, 100, 10)
N = 60000
B = 128
LR = 1e-6  # an SGD-form step size of the order used for SGHMC on MNIST-sized data
FRICTION = 0.1  # 1 - momentum


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def potential_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(net(x), y, reduction="sum") * (N / x.shape[0])
    return ce + 0.5 * sum((p * p).sum() for p in net.parameters())


def make_sgd(sizes, batches, device, *, fused=False):
    torch.manual_seed(0)
    net = mlp(sizes).to(device)
    extra = {"fused": True} if fused else {}
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=1 - FRICTION, **extra)
    it = itertools.cycle(batches)

    def step():
        x, y = next(it)
        opt.zero_grad(set_to_none=True)
        potential_loss(net, x, y).backward()
        opt.step()

    return step


def make_naive(sizes, batches, device):
    torch.manual_seed(0)
    net = mlp(sizes).to(device)
    params = list(net.parameters())
    momenta = [torch.zeros_like(p) for p in params]
    sd = math.sqrt(2 * FRICTION * LR)
    it = itertools.cycle(batches)

    def step():
        x, y = next(it)
        for p in params:
            p.grad = None
        potential_loss(net, x, y).backward()
        with torch.no_grad():
            for p, v in zip(params, momenta, strict=True):
                v.mul_(1 - FRICTION).add_(p.grad, alpha=-LR).add_(torch.randn_like(p), alpha=sd)
                p.add_(v)

    return step


def make_bayesdl(sizes, batches, device, *, compile=False):
    torch.manual_seed(0)
    net = mlp(sizes).to(device)
    x0, y0 = batches[0]
    bnn = BNN(net, IIDPrior(dist.Normal(0.0, 1.0)), CategoricalLikelihood(N)).to(device)
    potential = BNNPotential(bnn, (x0, y0))
    kernel = SGHMC(step_size=LR, friction=FRICTION, compile=compile)
    rng = ChainRNG.from_seed(0, 1, device=device)
    # the chain starts where SGD does, at the network's initial weights (a prior draw,
    # N(0, 1) per weight without fan-in scaling, makes the logits huge and the chain diverge
    # within ~100 steps)
    z0 = potential.initial(1, "module")
    box = {"state": kernel.init_state(z0, potential, rng, num_warmup=0), "t": 0}
    it = itertools.cycle(batches)

    def step():
        box["state"], _ = kernel.step(
            box["state"], potential, rng, next(it), iteration=box["t"], num_warmup=0, donate=True
        )
        box["t"] += 1

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on a small MLP")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved blocks")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--no-compile", action="store_true", help="leave out SGHMC(compile=True)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else SIZES
    steps = args.steps or (3 if args.quick else (50 if device.type == "cuda" else 10))
    repeats = args.repeats or (3 if args.quick else 9)
    warmup = 2 if args.quick else (20 if device.type == "cuda" else 3)
    g = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(B, sizes[0], generator=g).to(device),
            torch.randint(0, sizes[-1], (B,), generator=g).to(device),
        )
        for _ in range(16)
    ]
    makers = {
        "sgd": make_sgd,
        "sgd_fused": functools.partial(make_sgd, fused=True),
        "bayesdl": make_bayesdl,
        "naive": make_naive,
    }
    if not args.no_compile:
        makers["bayesdl_compiled"] = functools.partial(make_bayesdl, compile=True)
    sync = device_sync(device)
    if device.type == "cpu":
        makers["sgd_cached"] = make_sgd
    runners = {}
    for name, make in makers.items():
        cached = device.type == "cpu" and (name.startswith("bayesdl") or name == "sgd_cached")
        extra = {"context": caching_cpu_allocator, "untimed": 1} if cached else {}
        runners[name] = step_runner(make(sizes, batches, device), sync, **extra)
    times = interleaved_times(runners, steps=steps, repeats=repeats, warmup=warmup)
    common = {
        "sizes": list(sizes),
        "batch_size": B,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "quick": args.quick,
    }
    for name, t in times.items():
        print(json.dumps({"impl": name, **summarize_ms(t), **common}))
    headline = "bayesdl" if args.no_compile else "bayesdl_compiled"
    r, q1, q3 = paired_ratio(times[headline], times["sgd"])
    re, _, _ = paired_ratio(times["bayesdl"], times["sgd"])
    rf, _, _ = paired_ratio(times[headline], times["sgd_fused"])
    rn, _, _ = paired_ratio(times["naive"], times["sgd"])
    cached = {}
    if "sgd_cached" in times:
        rc, _, _ = paired_ratio(times[headline], times["sgd_cached"])
        cached = {"ratio_vs_sgd_cached": round(rc, 3)}
    summary = {
        "summary": True,
        "headline": headline,
        "ratio_vs_sgd": round(r, 3),
        "ratio_vs_sgd_q1": round(q1, 3),
        "ratio_vs_sgd_q3": round(q3, 3),
        "eager_ratio_vs_sgd": round(re, 3),
        "ratio_vs_sgd_fused": round(rf, 3),
        "naive_ratio_vs_sgd": round(rn, 3),
        **cached,
        "target_ratio_vs_sgd": 1.15,
        **common,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

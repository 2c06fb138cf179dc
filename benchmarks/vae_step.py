"""Time per training step of a 784-400-20 VAE: bayesdl vs hand-written PyTorch vs Pyro.

Task: a Bernoulli VAE on 28 x 28 binary images (binarised Fashion-MNIST when the Debian
package is installed, random binary images otherwise; only the cost of a step is measured).
Encoder 784-400 (ReLU) -> 2 x 20 (location, softplus scale); decoder 20-400 (ReLU) -> 784
logits. A data set of ``N = 60000`` points seen in minibatches of ``B`` (128 and 1024), the
log-likelihood scaled by ``N / B``, ``K`` reparameterised samples per point, one Adam step
(lr 1e-3). ``K = 1`` is the ELBO, ``K = 50`` the IWAE bound (log-sum-exp per point, then
``N / B``).

Implementations (all in this process, same initial weights, interleaved block by block):

* ``torch``: hand-written step: encode, ``z = loc + scale * eps`` with ``eps [K, B, 20]``,
  one decoder call on ``[K, B, 20]``, BCE-with-logits, Gaussian log-densities, mean over
  ``K`` (K = 1) or ``logsumexp_k - log K`` (K = 50), ``-(N / B) * sum``, Adam.
* ``bayesdl``: ``bayesdl.vae.VAE`` (same nets) with ``LocalELBO(1)`` (K = 1) or ``IWAE(50)``:
  ``loss = objective.differentiable_loss(vae, vae.guide, x)``, zero_grad, backward, Adam.
* ``bayesdl_fit``: the same through ``bayesdl.infer.fit`` (its loop: batching, loss checks),
  timed between the callbacks of its first and last step.
* ``pyro``: a Pyro-style VAE (``pyro.module`` + ``pyro.plate("data", N, subsample_size=B)``
  + ``pyro.sample``) with ``pyro.infer.SVI`` + ``pyro.optim.Adam`` and ``Trace_ELBO`` (K = 1)
  or ``RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True)`` (K = 50; note that
  with a subsampled plate Pyro puts ``N / B`` inside the log-sum-exp, so its value is not
  the IWAE bound -- only its cost is compared here).

On CPU, subnormal floats are flushed to zero for all implementations (``torch.
set_flush_denormal``; ``--keep-denormals`` to keep them): a training IWAE produces more and
more of them, and they made the K = 50 step of the hand-written and bayesdl runs up to 3x
slower on an x86 CPU, an artefact of the trajectory rather than of the implementation.

Output: one JSON line per (implementation, B, K) with the median ms per step and quartiles
over repeated blocks, then a final JSON line with ``ratio_vs_torch_k1`` and
``ratio_vs_torch_k50`` (bayesdl / torch, per-repeat paired ratios; the headline is the worst
over batch sizes) and the same against Pyro.

Usage::

    python benchmarks/vae_step.py            # full run
    python benchmarks/vae_step.py --quick    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _timing import cycle, device_sync, interleaved_times, paired_ratio, step_runner, summarize_ms
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from torch import Tensor, nn

from bayesdl.infer import IWAE, LocalELBO, fit
from bayesdl.vae import VAE, MLPDecoder, MLPEncoder

NUM_DATA = 60_000
INPUT_DIM, HIDDEN, LATENT = 784, 400, 20
LR = 1e-3
TARGET = 1.1
FULL_STEPS = {(128, 1): 40, (1024, 1): 8, (128, 50): 8, (1024, 50): 2}
Step = Callable[[], Tensor]


def make_nets(seed: int) -> tuple[MLPEncoder, MLPDecoder]:
    torch.manual_seed(seed)
    enc = MLPEncoder(INPUT_DIM, [HIDDEN], LATENT, activation=nn.ReLU)
    dec = MLPDecoder(LATENT, [HIDDEN], INPUT_DIM, activation=nn.ReLU)
    return enc, dec


def load_images(device: torch.device, seed: int) -> Tensor:
    """Binarised Fashion-MNIST training images ``[M, 784]`` (random ones if not installed)."""
    g = torch.Generator().manual_seed(seed)
    try:
        from bayesdl.data import load_fashion_mnist

        x, _ = load_fashion_mnist("train", flatten=True, limit=8192)
    except (FileNotFoundError, ImportError):
        x = torch.rand(8192, INPUT_DIM, generator=g)
    return (torch.rand(x.shape, generator=g) < x).float().to(device)


# --------------------------------------------------------------------------- hand-written torch
def torch_loss(enc: nn.Module, dec: nn.Module, x: Tensor, k: int) -> Tensor:
    """Negative ELBO (K = 1) or negative IWAE bound (K > 1), scaled by N / B."""
    b = x.shape[0]
    loc, raw = enc(x).chunk(2, dim=-1)
    scale = F.softplus(raw)
    eps = torch.randn((k,) + loc.shape, dtype=x.dtype, device=x.device)
    z = loc + scale * eps
    logits = dec(z)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    log_lik = log_lik.sum(-1)
    log_w = log_lik - 0.5 * z.square().sum(-1) + 0.5 * eps.square().sum(-1) + scale.log().sum(-1)
    per_point = log_w.mean(0) if k == 1 else torch.logsumexp(log_w, 0) - math.log(k)
    return -(NUM_DATA / b) * per_point.sum()


def torch_step(nets, k: int, batches) -> Step:
    enc, dec = copy.deepcopy(nets)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=LR)

    def step() -> Tensor:
        loss = torch_loss(enc, dec, next(batches), k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


# --------------------------------------------------------------------------- bayesdl
def bayesdl_objects(nets, k: int, num_data: int = NUM_DATA):
    enc, dec = copy.deepcopy(nets)
    vae = VAE(enc, dec, LATENT, "bernoulli", dataset_size=num_data)
    objective = LocalELBO(1) if k == 1 else IWAE(k)
    return vae, objective


def bayesdl_step(nets, k: int, batches) -> Step:
    vae, objective = bayesdl_objects(nets, k)
    opt = torch.optim.Adam(vae.parameters(), lr=LR)

    def step() -> Tensor:
        loss = objective.differentiable_loss(vae, vae.guide, next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def bayesdl_fit_runner(nets, k: int, x: Tensor, b: int, sync) -> Callable[[int], float]:
    # fit checks dataset_size against the data it is given (the images in memory)
    vae, objective = bayesdl_objects(nets, k, num_data=x.shape[0])

    def run(n: int) -> float:
        marks: list[float] = []

        def timer(state) -> None:
            if state.step in (1, n + 1):
                sync()
                marks.append(time.perf_counter())

        fit(vae, vae.guide, x, num_steps=n + 1, batch_size=b, loss=objective, lr=LR,
            callbacks=[timer], progress=False)  # fmt: skip
        return marks[-1] - marks[0]

    return run


# --------------------------------------------------------------------------- pyro
def pyro_step(nets, k: int, batches, tag: str) -> Step:
    enc, dec = copy.deepcopy(nets)

    def model(x: Tensor) -> None:
        pyro.module(f"{tag}.decoder", dec)
        with pyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
            zero = x.new_zeros(())
            z = pyro.sample("z", dist.Normal(zero, zero + 1).expand([LATENT]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        pyro.module(f"{tag}.encoder", enc)
        with pyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
            loc, raw = enc(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))

    if k == 1:
        elbo = Trace_ELBO()
    else:
        elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), elbo)

    def step() -> Tensor:
        return torch.tensor(svi.step(next(batches)))

    return step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="128,1024")
    p.add_argument("--particles", default="1,50")
    p.add_argument("--impls", default="torch,bayesdl,bayesdl_fit,pyro")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiplies the block sizes")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument(
        "--keep-denormals",
        action="store_true",
        help="on CPU, keep subnormal floats (default: flush them to zero, for every impl)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-validation", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: B=128, tiny blocks")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.repeats, args.warmup = "128", 2, 1
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.particles = [int(k) for k in args.particles.split(",")]
    args.impls = args.impls.split(",")
    known = {"torch", "bayesdl", "bayesdl_fit", "pyro"}
    if not set(args.impls) <= known or "torch" not in args.impls:
        p.error(f"--impls must include torch and be a subset of {sorted(known)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    # Subnormal floats (|x| < 1.2e-38, from exp() of very negative log-weights and logits)
    # are 10-100x slower on x86 CPUs. As an IWAE trains, more of them appear, and a step of
    # the K = 50 torch and bayesdl runs (same arithmetic, same trajectory) slowed from about
    # 330 to 1080 ms over a few steps on this machine, while Pyro's RenyiELBO (a different
    # objective, hence different weights) did not. Flushing them to zero removes this
    # artefact for every implementation alike.
    flush = device.type == "cpu" and not args.keep_denormals
    if flush:
        torch.set_flush_denormal(True)
    pyro.enable_validation(not args.no_validation)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sync = device_sync(device)
    nets = tuple(m.to(device) for m in make_nets(args.seed))
    images = load_images(device, args.seed)

    rows: dict[tuple[int, int], dict[str, dict]] = {}
    raw: dict[tuple[int, int], dict[str, list[float]]] = {}
    for b in args.batch_sizes:
        batches = [images[i * b : (i + 1) * b] for i in range(max(1, images.shape[0] // b))]
        for k in args.particles:
            runners: dict[str, Callable[[int], float]] = {}
            for impl in args.impls:
                if impl == "torch":
                    runners[impl] = step_runner(torch_step(nets, k, cycle(batches)), sync)
                elif impl == "bayesdl":
                    runners[impl] = step_runner(bayesdl_step(nets, k, cycle(batches)), sync)
                elif impl == "bayesdl_fit":
                    runners[impl] = bayesdl_fit_runner(nets, k, images, b, sync)
                else:
                    runners[impl] = step_runner(
                        pyro_step(nets, k, cycle(batches), f"pyro{b}_{k}"), sync
                    )
            steps = 2 if args.quick else max(1, round(FULL_STEPS.get((b, k), 4) * args.steps_scale))
            if device.type == "cuda" and not args.quick:
                steps *= 10
            times = interleaved_times(
                runners, steps=steps, repeats=args.repeats, warmup=args.warmup
            )
            raw[(b, k)] = times
            rows[(b, k)] = {}
            for impl, per_step in times.items():
                row = {"impl": impl, "B": b, "K": k, "device": device.type, **summarize_ms(per_step),
                       "steps": steps, "repeats": args.repeats}  # fmt: skip
                rows[(b, k)][impl] = row
                print(json.dumps(row), flush=True)

    def ratio(impl: str, other: str, b: int, k: int) -> dict[str, float] | None:
        t = raw.get((b, k), {})
        if impl not in t or other not in t:
            return None
        med, q1, q3 = paired_ratio(t[impl], t[other])
        return {
            "paired_median": round(med, 3),
            "paired_q1": round(q1, 3),
            "paired_q3": round(q3, 3),
        }

    detail: dict[str, dict] = {}
    head: dict[str, float | None] = {}
    for k in args.particles:
        for impl, other, name in (
            ("bayesdl", "torch", f"ratio_vs_torch_k{k}"),
            ("bayesdl_fit", "torch", f"fit_ratio_vs_torch_k{k}"),
            ("pyro", "torch", f"pyro_ratio_vs_torch_k{k}"),
            ("bayesdl", "pyro", f"ratio_vs_pyro_k{k}"),
        ):
            per_b = {str(b): ratio(impl, other, b, k) for b in args.batch_sizes}
            detail[name] = per_b
            meds = [v["paired_median"] for v in per_b.values() if v is not None]
            head[name] = max(meds) if meds else None
    summary = {
        "benchmark": "vae_step",
        **head,
        "headline": "worst (max) paired-median ratio over batch sizes",
        "meets_target": {
            f"ratio_vs_torch_k{k}": head.get(f"ratio_vs_torch_k{k}") is not None
            and head[f"ratio_vs_torch_k{k}"] <= TARGET
            for k in args.particles
        },
        "target": TARGET,
        "ratios_by_batch": detail,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": args.threads if device.type == "cpu" else None,
        "flush_denormal": flush,
        "cpu_count": os.cpu_count(),
        "validation": not args.no_validation,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "model": "784-400-20 Bernoulli VAE",
        "num_data": NUM_DATA,
        "quick": args.quick,
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()

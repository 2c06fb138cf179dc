"""Time per SVI step of a mean-field MLP BNN: bayesdl vs hand-written PyTorch vs Pyro.

Task: an MLP 784-400-400-10 (ReLU) with every weight and bias random (478,410 latents), a
``N(0, 1)`` prior on each, a Categorical likelihood over a dataset of ``N = 60000`` points
(Fashion-MNIST sized) seen in minibatches of ``B = 128`` (log-likelihood scaled by ``N / B``),
a fully factorised Normal posterior (``sigma = softplus(rho)``, initial means = the same
PyTorch-initialised net, initial ``sigma = 0.01``), ``K`` reparameterised weight draws, the
negative ELBO averaged over particles, and one Adam step (lr 1e-3). Inputs and labels are
synthetic (random); only the cost of a step is measured, not what is learned.

Implementations (all in this process, interleaved block by block):

* ``torch``: hand-written mean-field VI step, closed-form KL; for ``K > 1`` weights are sampled
  as ``[K, out, in]`` and evaluated with batched matmuls (one GEMM for the shared first layer).
* ``bayesdl``: ``BNN`` + ``MeanFieldGuide`` + ``TraceMeanField_ELBO(num_particles=K,
  vectorize_particles=K > 1, max_plate_nesting=1)`` (closed-form KL) under module-local params,
  ``torch.optim.Adam``; ``loss = elbo.differentiable_loss(...)``, zero_grad, backward, step.
* ``bayesdl_fit``: the same through ``bayesdl.infer.fit`` (its loop: batching, loss checks).
* ``bayesdl_local``: the bayesdl step under ``bayesdl.handlers.local_reparam()`` (different
  estimator: noise at layer outputs; reported separately, not in the headline ratios).
* ``pyro``: Pyro's standard route: ``to_pyro_module_`` + ``PyroSample`` priors, ``AutoNormal``,
  ``Trace_ELBO(num_particles=K, vectorize_particles=False)`` (Monte-Carlo KL; particles in a
  Python loop, since vectorised particles fail for ``nn.Linear`` PyroModules) driven by
  ``pyro.infer.SVI`` with ``pyro.optim.Adam`` and the global param store.
* ``pyro_meanfield``: the same with ``TraceMeanField_ELBO``. In Pyro 1.9 ``AutoNormal`` samples
  an auxiliary ``*_unconstrained`` site and a ``Delta`` at the model site, so no closed-form
  KL applies and this is still a Monte-Carlo KL estimate.

Output: one JSON line per (implementation, K, threads) with the median milliseconds per step
and quartiles over repeated blocks, then a final JSON line with ``ratio_vs_torch_k1``,
``ratio_vs_torch_k8``, ``ratio_vs_pyro_k8`` (bayesdl time / competitor time, same thread count).

Usage::

    python benchmarks/bnn_svi_step.py                 # full run
    python benchmarks/bnn_svi_step.py --quick         # smoke run (< 30 s on 2 CPU cores)
    python benchmarks/bnn_svi_step.py --threads 1,2 --no-validation
"""

from __future__ import annotations

import argparse
import copy
import json
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
from _timing import (
    cycle,
    device_sync,
    interleaved_times,
    paired_ratio,
    step_runner,
    summarize_ms,
)
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroSample
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

import bayesdl.infer
from bayesdl.guides import MeanFieldGuide
from bayesdl.handlers import local_reparam
from bayesdl.infer import fit
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior

SIZES = (784, 400, 400, 10)
NUM_DATA = 60_000
BATCH_SIZE = 128
INIT_SCALE = 1e-2
LR = 1e-3
TARGETS = {"ratio_vs_torch_k1": 1.3, "ratio_vs_pyro_k8": 0.5}
Step = Callable[[], Tensor]


def make_net(seed: int = 0) -> nn.Sequential:
    """The plain MLP 784-400-400-10 with PyTorch's default initialisation (seeded)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


# --------------------------------------------------------------------------- hand-written torch
class TorchMeanFieldMLP(nn.Module):
    """Hand-written mean-field VI for a Linear/ReLU MLP, vectorised over ``K`` particles.

    Args:
        net: the plain MLP (its parameters give the initial means).
        num_data: ``N`` (the minibatch log-likelihood is scaled by ``N / B``).
        num_particles: ``K``.
    """

    def __init__(self, net: nn.Sequential, num_data: int, num_particles: int):
        super().__init__()
        params = [p.detach().clone() for p in net.parameters()]  # W1, b1, W2, b2, W3, b3
        self.locs = nn.ParameterList([nn.Parameter(p) for p in params])
        self.raw_scales = nn.ParameterList(
            [nn.Parameter(_softplus_inverse(torch.full_like(p, INIT_SCALE))) for p in params]
        )
        self.num_data = num_data
        self.num_particles = num_particles

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Negative ELBO: closed-form KL to N(0, 1) minus the particle-averaged scaled log-lik.

        Args:
            x: inputs ``[B, 784]``; y: labels ``[B]``.
        """
        k, b = self.num_particles, x.shape[0]
        scales = [F.softplus(r) for r in self.raw_scales]
        h = x
        num_layers = len(self.locs) // 2
        for i in range(num_layers):
            w_loc, b_loc = self.locs[2 * i], self.locs[2 * i + 1]
            w_scale, b_scale = scales[2 * i], scales[2 * i + 1]
            n_out, n_in = w_loc.shape
            if k == 1:
                w = w_loc + w_scale * torch.randn_like(w_loc)
                bias = b_loc + b_scale * torch.randn_like(b_loc)
                h = F.linear(h, w, bias)  # [B, out]
            else:
                w = w_loc + w_scale * torch.randn((k, n_out, n_in), dtype=x.dtype, device=x.device)
                bias = b_loc + b_scale * torch.randn((k, n_out), dtype=x.dtype, device=x.device)
                if h.dim() == 2:  # shared input: one GEMM [B, in] x [in, K*out]
                    h = (h @ w.reshape(k * n_out, n_in).T).reshape(b, k, n_out).transpose(0, 1)
                    h = h + bias.unsqueeze(1)
                else:  # per-particle input [K, B, in]
                    h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))  # [K, B, out]
            if i < num_layers - 1:
                h = F.relu(h)
        log_p = torch.log_softmax(h, dim=-1)
        log_lik = log_p.gather(-1, y.expand(h.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        expected_log_lik = log_lik.sum(-1).mean() * (self.num_data / b)
        kl = sum(
            (0.5 * (s * s + m * m) - torch.log(s) - 0.5).sum()
            for m, s in zip(self.locs, scales, strict=True)
        )
        return kl - expected_log_lik


def torch_step(net: nn.Sequential, k: int, batches, device: torch.device) -> Step:
    model = TorchMeanFieldMLP(copy.deepcopy(net), NUM_DATA, k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step() -> Tensor:
        x, y = next(batches)
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


# --------------------------------------------------------------------------- bayesdl
def _normal_prior(device: torch.device) -> IIDPrior:
    # built on the device so that no per-step host-to-device copy of the prior happens
    return IIDPrior(dist.Normal(torch.zeros((), device=device), torch.ones((), device=device)))


def _bayesdl_loss_class() -> type:
    """bayesdl's own mean-field ELBO once it exists (proposed ``bayesdl.infer.MeanFieldELBO``),
    else Pyro's ``TraceMeanField_ELBO`` (what ``bayesdl.infer.fit`` uses by default today)."""
    return getattr(bayesdl.infer, "MeanFieldELBO", TraceMeanField_ELBO)


def bayesdl_objects(net: nn.Sequential, device: torch.device) -> tuple[BNN, MeanFieldGuide]:
    bnn = BNN(copy.deepcopy(net), _normal_prior(device), CategoricalLikelihood(NUM_DATA))
    bnn = bnn.to(device)
    guide = MeanFieldGuide(bnn, init_scale=INIT_SCALE).to(device)
    return bnn, guide


def bayesdl_step(
    net: nn.Sequential, k: int, batches, device: torch.device, *, local: bool = False
) -> Step:
    bnn, guide = bayesdl_objects(net, device)
    elbo = _bayesdl_loss_class()(num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1)
    opt = torch.optim.Adam(list(bnn.parameters()) + list(guide.parameters()), lr=LR)

    def step() -> Tensor:
        x, y = next(batches)
        with pyro.settings.context(module_local_params=True):
            if local:
                with local_reparam():
                    loss = elbo.differentiable_loss(bnn, guide, x, y)
            else:
                loss = elbo.differentiable_loss(bnn, guide, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def bayesdl_fit_runner(
    net: nn.Sequential, k: int, data: tuple[Tensor, Tensor], sync: Callable[[], None]
) -> tuple[Callable[[int], float], Callable[[], float]]:
    """A runner timing ``n`` steps of ``bayesdl.infer.fit`` from its 1st to its ``n+1``-th step
    (excluding fit's one-off set-up: data checks, guide trace, optimizer creation)."""
    bnn, guide = bayesdl_objects(net, data[0].device)

    def run(n: int) -> float:
        marks: list[float] = []

        def timer(state) -> None:
            if state.step == 1 or state.step == n + 1:
                sync()
                marks.append(time.perf_counter())

        fit(
            bnn,
            guide,
            data,
            num_steps=n + 1,
            batch_size=BATCH_SIZE,
            num_particles=k,
            lr=LR,
            callbacks=[timer],
            progress=False,
        )
        return marks[-1] - marks[0]

    def first_loss() -> float:
        return fit(
            bnn, guide, data, num_steps=1, batch_size=BATCH_SIZE, num_particles=k, lr=LR,
            progress=False,
        ).losses[0]  # fmt: skip

    return run, first_loss


# --------------------------------------------------------------------------- pyro
def pyro_step(
    net: nn.Sequential, k: int, batches, device: torch.device, *, mean_field: bool, tag: str
) -> Step:
    """Pyro's standard route: PyroModule + PyroSample priors + AutoNormal + SVI (param store)."""
    pnet = copy.deepcopy(net).to(device)
    init_values = {name: p.detach().clone() for name, p in pnet.named_parameters()}
    to_pyro_module_(pnet)
    zero, one = torch.zeros((), device=device), torch.ones((), device=device)
    for module in list(pnet.modules()):
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(
                module, name, PyroSample(dist.Normal(zero, one).expand(p.shape).to_event(p.dim()))
            )

    def model(x: Tensor, y: Tensor) -> Tensor:
        logits = pnet(x)  # weights are first read outside the data plate (pyro#3183)
        subsample = torch.arange(x.shape[0], device=x.device)
        with pyro.plate("data", NUM_DATA, subsample=subsample):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits

    guide = AutoNormal(model, init_loc_fn=init_to_value(values=init_values), init_scale=INIT_SCALE)
    guide._pyro_name = f"AutoNormal_{tag}"  # own names in the global param store
    loss_cls = TraceMeanField_ELBO if mean_field else Trace_ELBO
    loss = loss_cls(num_particles=k, vectorize_particles=False, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss=loss)

    def step() -> Tensor:
        x, y = next(batches)
        return torch.as_tensor(svi.step(x, y))

    return step


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=11, help="timed blocks per implementation")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation")
    p.add_argument(
        "--threads",
        default=None,
        help="comma-separated torch CPU thread counts (default: 1 and all cores on CPU, "
        "the current setting on CUDA)",
    )
    p.add_argument(
        "--particles", default="1,8", help="comma-separated K values (the ratios need 1 and 8)"
    )
    p.add_argument("--impls", default="torch,bayesdl,bayesdl_fit,bayesdl_local,pyro,pyro_meanfield")
    p.add_argument("--no-validation", action="store_true", help="pyro.enable_validation(False)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 block of 1 step, 1 thread")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device} requested but CUDA is not available")
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        p.error(
            f"need --steps >= 1, --repeats >= 1, --warmup >= 0; got {args.steps}, "
            f"{args.repeats}, {args.warmup}"
        )
    if args.quick:
        args.steps, args.repeats, args.warmup = 1, 1, 0  # numbers include first-call costs
        args.threads = args.threads or "1"
    if args.threads is None:
        if args.device.startswith("cuda"):
            args.threads = str(torch.get_num_threads())
        else:
            args.threads = ",".join(str(t) for t in sorted({1, os.cpu_count() or 1}))
    args.threads = [int(t) for t in args.threads.split(",")]
    args.particles = [int(k) for k in args.particles.split(",")]
    args.impls = args.impls.split(",")
    known = {"torch", "bayesdl", "bayesdl_fit", "bayesdl_local", "pyro", "pyro_meanfield"}
    if not set(args.impls) <= known:
        p.error(f"--impls must be a subset of {sorted(known)}, got {args.impls}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    pyro.enable_validation(not args.no_validation)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sync = device_sync(device)

    net = make_net(args.seed)
    num_latents = sum(p.numel() for p in net.parameters())
    g = torch.Generator().manual_seed(args.seed)
    x_all = torch.randn(NUM_DATA, SIZES[0], generator=g).to(device)
    y_all = torch.randint(0, SIZES[-1], (NUM_DATA,), generator=g).to(device)
    batches = [
        (x_all[i * BATCH_SIZE : (i + 1) * BATCH_SIZE], y_all[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])
        for i in range(16)
    ]

    runners: dict[str, Callable[[int], float]] = {}
    first_loss: dict[str, Callable[[], float]] = {}
    for k in args.particles:
        for impl in args.impls:
            key = f"{impl}|{k}"
            if impl == "bayesdl_fit":
                runners[key], first_loss[key] = bayesdl_fit_runner(net, k, (x_all, y_all), sync)
                continue
            if impl == "torch":
                step = torch_step(net, k, cycle(batches), device)
            elif impl in ("bayesdl", "bayesdl_local"):
                step = bayesdl_step(net, k, cycle(batches), device, local=impl == "bayesdl_local")
            else:
                step = pyro_step(
                    net, k, cycle(batches), device, mean_field=impl == "pyro_meanfield", tag=key
                )
            runners[key] = step_runner(step, sync)
            first_loss[key] = lambda step=step: float(step())

    # the loss at the shared initialisation: a check that all do the same math (MC noise aside)
    # (skipped in --quick mode to stay fast; there the timed step is the first one)
    init_loss = {key: None if args.quick else fn() for key, fn in first_loss.items()}

    results: dict[int, dict[str, dict]] = {}
    raw: dict[int, dict[str, list[float]]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = interleaved_times(
            runners, steps=args.steps, repeats=args.repeats, warmup=args.warmup
        )
        results[threads] = {}
        raw[threads] = times
        for key, per_step in times.items():
            impl, k = key.split("|")
            row = {
                "impl": impl,
                "K": int(k),
                "threads": threads,
                "device": device.type,
                **summarize_ms(per_step),
                "steps": args.steps,
                "repeats": args.repeats,
                "init_loss": None if init_loss[key] is None else round(init_loss[key], 1),
            }
            results[threads][key] = row
            print(json.dumps(row), flush=True)

    pairs = {
        "ratio_vs_torch_k1": ("bayesdl|1", "torch|1"),
        "ratio_vs_torch_k8": ("bayesdl|8", "torch|8"),
        "ratio_vs_pyro_k8": ("bayesdl|8", "pyro|8"),
        "ratio_vs_pyro_k1": ("bayesdl|1", "pyro|1"),
        "ratio_vs_pyro_meanfield_k8": ("bayesdl|8", "pyro_meanfield|8"),
        "fit_ratio_vs_torch_k1": ("bayesdl_fit|1", "torch|1"),
        "fit_ratio_vs_torch_k8": ("bayesdl_fit|8", "torch|8"),
        "local_ratio_vs_torch_k1": ("bayesdl_local|1", "torch|1"),
        "local_ratio_vs_torch_k8": ("bayesdl_local|8", "torch|8"),
    }

    def ratios(threads: int) -> dict[str, dict[str, float] | None]:
        """Per ratio: median and quartiles of per-repeat (paired) ratios, ratio of medians."""
        out: dict[str, dict[str, float] | None] = {}
        for name, (a, b) in pairs.items():
            if a not in raw[threads] or b not in raw[threads]:
                out[name] = None
                continue
            med, q1, q3 = paired_ratio(raw[threads][a], raw[threads][b])
            rows = results[threads]
            out[name] = {
                "paired_median": round(med, 3),
                "paired_q1": round(q1, 3),
                "paired_q3": round(q3, 3),
                "of_medians": round(rows[a]["ms_per_step"] / rows[b]["ms_per_step"], 3),
                "of_mins": round(rows[a]["min_ms"] / rows[b]["min_ms"], 3),
            }
        return out

    # headline thread count: where the hand-written torch baseline is fastest (its best setting)
    def torch_total(threads: int) -> float:
        rows = [r for key, r in results[threads].items() if key.startswith("torch|")]
        return sum(r["ms_per_step"] for r in rows) if rows else 0.0

    headline = min(args.threads, key=torch_total)
    fastest = {}
    for key in runners:
        fastest[key.replace("|", "_k")] = min(
            args.threads, key=lambda t, key=key: results[t][key]["ms_per_step"]
        )
    detail = {str(t): ratios(t) for t in args.threads}
    head = {
        name: None if value is None else value["paired_median"]
        for name, value in detail[str(headline)].items()
    }
    meets = {
        name: head[name] is not None and head[name] <= bound for name, bound in TARGETS.items()
    }
    summary = {
        "benchmark": "bnn_svi_step",
        **head,
        "meets_targets": meets,
        "threads": headline,
        "ratios_by_threads": detail,
        "fastest_threads": fastest,
        "targets": TARGETS,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "validation": not args.no_validation,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "model": "-".join(map(str, SIZES)),
        "num_latents": num_latents,
        "batch_size": BATCH_SIZE,
        "num_data": NUM_DATA,
        "data": "synthetic random inputs/labels",
        "bayesdl_loss": _bayesdl_loss_class().__name__,
        "pyro_route": "pyro.infer.SVI + pyro.optim.Adam (global param store), particles looped",
        "quick": args.quick,
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()

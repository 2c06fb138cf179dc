"""Test NLL (K = 5000 importance samples) of VAE and IWAE on binarised digits and Fashion-MNIST.

Reproduces the protocol of Burda et al. (2016, Table 1) at CPU scale: dynamically binarised
training images, a fixed binarisation of the test images, a tanh MLP VAE with a Bernoulli
decoder whose output bias starts at the logit of the mean training pixel, Adam (lr 1e-3,
eps 1e-4), and the test log-likelihood estimated with 5000 importance samples. Methods:

* ``vae_k1``: ELBO, 1 sample (``LocalELBO(1)``);
* ``vae_k5``: ELBO averaged over 5 samples (``LocalELBO(5)``, Burda's "VAE, k = 5");
* ``iwae_k5``, ``iwae_k50``: IWAE bound with 5 and 50 samples (``IWAE(k)``).

Each (method, seed) is trained twice from the same initial weights, seed and batches: with
bayesdl (``VAE`` + objective + ``bayesdl.infer.fit``, scored by
``bayesdl.vae.log_likelihood``) and with a hand-written PyTorch reference loop (its own loss,
optimiser loop and K = 5000 estimator). ``fit`` draws once before its first step (it runs
the guide on the first batch, which starts one pass of the loader and draws one latent
sample); the reference replays those two draws, so both runs see the same binarised batches
and the same noise, and differ only by floating-point round-off (checked: identical weights
after 3 epochs of ``vae_k1``, 5e-6 apart for ``iwae_k5``). Data sets:

* ``digits`` (mandatory): sklearn 8 x 8 digits, 1438 train / 359 test, net 64-100-100-20
  (hidden widths and latent size scaled down from Burda's 784-200-200-50), batch 20;
* ``fashion_mnist`` (reduced budget, stated in the output): 28 x 28, Burda's 784-200-200-50,
  a training subset, few epochs, a test subset; bayesdl only unless ``--fmnist-reference``.

Output: one JSON line per (data set, method, seed, implementation), then per data set a table
line, then a final JSON line with ``digits_nll`` (per method: mean and sd over seeds for
bayesdl and the reference), ``ordering_holds`` (IWAE-50 < IWAE-5 < VAE on mean NLL, as in
Burda et al. Table 1), ``matches_reference`` (per method: whether
``|mean_bayesdl - mean_ref| <= 3 * sqrt(sd_bayesdl^2 / S + sd_ref^2 / S)`` over ``S`` seeds,
i.e. the two implementations agree within seed noise, z = 3) and ``all_match_reference``.
``--quick`` numbers (2 epochs, K = 100) are a smoke test only.

Usage::

    python benchmarks/iwae_nll.py                               # digits, 3 seeds
    python benchmarks/iwae_nll.py --datasets digits,fashion_mnist
    python benchmarks/iwae_nll.py --quick                       # smoke run (< 1 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesdl.data import DynamicBinarization, load_binarized_images
from bayesdl.infer import IWAE, LocalELBO, fit
from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, active_units, log_likelihood

METHODS = {"vae_k1": ("elbo", 1), "vae_k5": ("elbo", 5), "iwae_k5": ("iwae", 5),
           "iwae_k50": ("iwae", 50)}  # fmt: skip
LR, ADAM_EPS = 1e-3, 1e-4


def make_nets(dim: int, hidden: list[int], latent: int, data_mean: Tensor, seed: int):
    torch.manual_seed(seed)
    enc = MLPEncoder(dim, hidden, latent, activation=nn.Tanh)
    dec = MLPDecoder(latent, hidden[::-1], dim, activation=nn.Tanh)
    dec.init_output_bias(data_mean)
    return enc, dec


def objective(method: str):
    kind, k = METHODS[method]
    return LocalELBO(k) if kind == "elbo" else IWAE(k)


# --------------------------------------------------------------------------- reference
def ref_log_w(enc: nn.Module, dec: nn.Module, x: Tensor, k: int) -> Tensor:
    """Hand-written ``log p(x, z_k) - log q(z_k | x)``, ``[K, B]``."""
    loc, raw = enc(x).chunk(2, dim=-1)
    scale = F.softplus(raw)
    eps = torch.randn((k,) + loc.shape, dtype=x.dtype, device=x.device)
    z = loc + scale * eps
    logits = dec(z)
    log_lik = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)
    return log_lik - 0.5 * z.square().sum(-1) + 0.5 * eps.square().sum(-1) + scale.log().sum(-1)


def ref_train(nets, method: str, loader: DynamicBinarization, epochs: int, seed: int):
    enc, dec = copy.deepcopy(nets)
    kind, k = METHODS[method]
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=LR, eps=ADAM_EPS)
    n = loader.dataset.n
    pyro.set_rng_seed(seed)
    # replay fit's set-up draws: a guide pass on the first batch of a fresh loader iterator
    with torch.no_grad():
        first = next(iter(loader))[0]
        torch.randn(first.shape[0], enc.latent_dim, dtype=first.dtype, device=first.device)
    for _ in range(epochs):
        for (x,) in loader:
            log_w = ref_log_w(enc, dec, x, k)
            per_point = log_w.mean(0) if kind == "elbo" else torch.logsumexp(log_w, 0) - math.log(k)
            loss = -(n / x.shape[0]) * per_point.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return enc, dec


@torch.no_grad()
def ref_log_likelihood(enc, dec, x: Tensor, num_samples: int, chunk: int = 500) -> Tensor:
    out = []
    for i in range(0, x.shape[0], 100):
        xb = x[i : i + 100]
        parts = [
            torch.logsumexp(ref_log_w(enc, dec, xb, min(chunk, num_samples - s)), 0)
            for s in range(0, num_samples, chunk)
        ]
        out.append(torch.logsumexp(torch.stack(parts), 0) - math.log(num_samples))
    return torch.cat(out)


# --------------------------------------------------------------------------- bayesdl
def bayesdl_train(nets, method: str, loader: DynamicBinarization, epochs: int, seed: int):
    enc, dec = copy.deepcopy(nets)
    vae = VAE(enc, dec, enc.latent_dim, "bernoulli", dataset_size=loader.dataset.n)
    fit(vae, vae.guide, loader, num_epochs=epochs, loss=objective(method), seed=seed,
        optim=lambda p: torch.optim.Adam(p, lr=LR, eps=ADAM_EPS), progress=False)  # fmt: skip
    return vae


def summarize(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 3), "sd": round(sd, 3), "n": len(values)}


def run_dataset(name: str, cfg: dict, args, log) -> dict:
    data = load_binarized_images(
        name, seed=0, limit_train=cfg.get("limit_train"), limit_test=cfg.get("limit_test")
    )
    device = torch.device(args.device)
    data.x_train, data.x_test = data.x_train.to(device), data.x_test.to(device)
    results: dict[str, dict[str, list[float]]] = {
        m: {"bayesdl": [], "reference": []} for m in args.methods
    }
    for seed in range(args.seeds):
        nets = make_nets(data.input_dim, cfg["hidden"], cfg["latent"], data.train_mean, seed)
        nets = tuple(net.to(device) for net in nets)
        for method in args.methods:
            impls = ["bayesdl"] + (["reference"] if cfg["reference"] else [])
            for impl in impls:
                loader = DynamicBinarization(data.x_train, cfg["batch_size"], seed=seed)
                t0 = time.perf_counter()
                if impl == "bayesdl":
                    vae = bayesdl_train(nets, method, loader, cfg["epochs"], seed)
                    train_s = time.perf_counter() - t0
                    pyro.set_rng_seed(10_000 + seed)
                    ll = log_likelihood(vae, data.x_test, num_samples=cfg["eval_k"])
                    extra = {"active_units": active_units(vae, data.x_test)[0]}
                else:
                    enc, dec = ref_train(nets, method, loader, cfg["epochs"], seed)
                    train_s = time.perf_counter() - t0
                    pyro.set_rng_seed(10_000 + seed)
                    ll = ref_log_likelihood(enc, dec, data.x_test, cfg["eval_k"])
                    extra = {}
                nll = -float(ll.mean())
                results[method][impl].append(nll)
                log({"dataset": name, "method": method, "seed": seed, "impl": impl,
                     "test_nll": round(nll, 3), "train_s": round(train_s, 1),
                     "eval_s": round(time.perf_counter() - t0 - train_s, 1), **extra})  # fmt: skip
    table = {m: {impl: summarize(v) for impl, v in r.items() if v} for m, r in results.items()}
    means = {m: table[m]["bayesdl"]["mean"] for m in table}
    ordering = None
    if {"vae_k1", "iwae_k5", "iwae_k50"} <= means.keys():
        ordering = means["iwae_k50"] < means["iwae_k5"] < means["vae_k1"]
    matches = None
    if cfg["reference"]:
        matches = {}
        for m, t in table.items():
            b, r = t["bayesdl"], t["reference"]
            noise = math.sqrt(b["sd"] ** 2 / b["n"] + r["sd"] ** 2 / r["n"])
            matches[m] = abs(b["mean"] - r["mean"]) <= 3 * noise + 1e-9
    out = {"dataset": name, "table": table, "ordering_holds": ordering,
           "matches_reference": matches, "config": cfg, "seeds": args.seeds}  # fmt: skip
    log(out)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--datasets", default="digits")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--digits-epochs", type=int, default=300)
    p.add_argument("--fmnist-epochs", type=int, default=10)
    p.add_argument("--fmnist-train", type=int, default=10_000)
    p.add_argument("--fmnist-test", type=int, default=500)
    p.add_argument("--fmnist-reference", action="store_true")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--flush-denormal",
        action="store_true",
        help="flush subnormal floats to zero on CPU (faster IWAE training on x86; the "
        "numbers then differ from a run without it by seed-level noise)",
    )
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    args.datasets = args.datasets.split(",")
    args.methods = args.methods.split(",")
    if not set(args.methods) <= METHODS.keys():
        p.error(f"--methods must be a subset of {sorted(METHODS)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    pyro.enable_validation(False)

    def log(row):
        print(json.dumps(row), flush=True)

    configs = {
        "digits": {"hidden": [100, 100], "latent": 20, "batch_size": 20,
                   "epochs": args.digits_epochs, "eval_k": args.eval_k, "reference": True},
        "fashion_mnist": {"hidden": [200, 200], "latent": 50, "batch_size": 100,
                          "epochs": args.fmnist_epochs, "eval_k": args.eval_k,
                          "limit_train": args.fmnist_train, "limit_test": args.fmnist_test,
                          "reference": args.fmnist_reference,
                          "reduced_budget": "training subset, few epochs, test subset"},
    }  # fmt: skip
    if args.quick:
        args.seeds = 2
        configs["digits"].update(epochs=2, eval_k=100)
        configs["fashion_mnist"].update(epochs=1, eval_k=50, limit_train=500, limit_test=50)
    t0 = time.perf_counter()
    per = {name: run_dataset(name, configs[name], args, log) for name in args.datasets}
    digits = per.get("digits")
    summary = {
        "benchmark": "iwae_nll",
        "digits_nll": digits["table"] if digits else None,
        "ordering_holds": digits["ordering_holds"] if digits else None,
        "matches_reference": digits["matches_reference"] if digits else None,
        "all_match_reference": all(digits["matches_reference"].values()) if digits else None,
        "fashion_mnist_nll": per["fashion_mnist"]["table"] if "fashion_mnist" in per else None,
        "fashion_mnist_ordering_holds": per["fashion_mnist"]["ordering_holds"]
        if "fashion_mnist" in per
        else None,
        "fashion_mnist_budget": configs["fashion_mnist"] if "fashion_mnist" in per else None,
        "published_mnist_nll_burda_table1": {
            "vae_k1": 86.76,
            "vae_k5": 86.47,
            "iwae_k5": 85.54,
            "iwae_k50": 84.78,
        },  # fmt: skip
        "seeds": args.seeds,
        "eval_k": configs["digits"]["eval_k"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "flush_denormal": args.flush_denormal,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "quick": args.quick,
    }
    log(summary)
    return summary


if __name__ == "__main__":
    main()

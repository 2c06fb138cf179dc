"""GP-matched functional prior vs fixed N(0, 1) prior on UCI Boston and Concrete, with SGHMC.

Protocol (issue 6; Tran et al., JMLR 2022, UCI regression): Boston (10 random 90/10 splits,
``split = 0..9`` of :func:`bayesdl.data.load_uci`) and Concrete (4 splits); inputs and targets
z-scored with training statistics; network 1 hidden layer of 100 tanh units in the scaled
(fan-in) parameterisation (:func:`bayesdl.priors.functional.scaled_mlp`); Gaussian likelihood
with noise variance 0.1 on the standardised targets.

Priors compared (both per-layer Gaussians on the stored, unit-scale weights):

* ``fixed``: ``N(0, 1)`` on every weight and bias (the "FG" prior; Neal-scaled effective weights);
* ``gp``: ``GaussianWeightPrior(per="layer")`` fitted by
  :func:`~bayesdl.priors.functional.fit_functional_prior` to a hierarchical GP: RBF-ARD kernel,
  every lengthscale ``~ LogNormal(log √(2D), 1)``, variance ``~ LogNormal(0.1, 1)``, hyper-
  parameters drawn afresh per function sample; measurement sets of 100 inputs (70 % training
  inputs, 30 % uniform in the box of training and test inputs); Lipschitz critic (λ = 10,
  Adagrad 0.02, re-initialised each iteration), RMSprop 0.05 on the prior, ``S = 128``.
  By default the prior is fitted once per data set, on split 0's inputs, and reused for every
  split (``--fit-per-split`` refits on each split's inputs).

Posterior: :class:`~bayesdl.infer.mcmc.AdaptiveSGHMC` (lr 0.01, mdecay 0.01), minibatch 32,
4 vectorised chains started at stored weights ``N(0, 1)`` and biases 0; ``--warmup`` burn-in
steps (preconditioner adapted), then ``--samples`` draws per chain, one every ``--thin`` steps.
The reference run used 2000 burn-in steps, one draw every 2000 steps, 40 draws per chain with
the first 10 dropped (84,000 steps per chain); the defaults here (2000 + 30 × 500 = 17,000
steps per chain) take about 4 minutes for Boston on one idle CPU core, and
``--warmup 22000 --samples 30 --thin 2000`` keeps the reference's 30 draws per chain at the same
steps (its 10 dropped draws counted as burn-in; 82,000 steps).

Metrics: test RMSE in original units of ``y`` from the predictive mean (average of the network
outputs), and test NLL (mean per point, original units) under the moment-matched Gaussian
(variance = sample variance of the outputs + noise variance), as in the reference code.

Output: one JSON line per prior fit, per (split, prior) and per data set, then the summary
line with ``boston_rmse_gp``, ``boston_rmse_fixed``, ``boston_wins_gp`` (splits where the GP
prior has the lower RMSE), ``concrete_rmse_gp``, ``concrete_rmse_fixed`` (means over splits)
and the timings.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import pyro
import pyro.contrib.gp as gp
import pyro.distributions as dist
import torch

from bayesdl import metrics
from bayesdl.data import load_uci
from bayesdl.infer.mcmc import AdaptiveSGHMC, sample
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors.functional import (
    DataMeasurement,
    GaussianWeightPrior,
    GPTarget,
    LipschitzCritic,
    fit_functional_prior,
    scaled_mlp,
)

NOISE_VAR = 0.1
HIDDEN = 100


def hierarchical_target(d: int, dtype: torch.dtype) -> GPTarget:
    """The note's hierarchical RBF-ARD target in ``d`` input dimensions."""
    ls0 = math.sqrt(2 * d)
    kernel = gp.kernels.RBF(d, variance=torch.tensor(1.0), lengthscale=torch.full((d,), ls0))
    hyper = {
        "lengthscale": dist.LogNormal(torch.full((d,), math.log(ls0)), 1.0),
        "variance": dist.LogNormal(torch.tensor(0.1), 1.0),
    }
    return GPTarget(kernel, hyperpriors=hyper)


def fit_prior(data, args) -> tuple[GaussianWeightPrior, dict]:
    torch.manual_seed(args.seed)
    net = scaled_mlp((data.input_dim, HIDDEN, 1), "tanh")
    measurement = DataMeasurement(data.x_train, num_points=100, x_extra=data.x_test)
    estimator = LipschitzCritic(num_steps=args.critic_steps, lr=0.02, threshold=0.1)
    t0 = time.perf_counter()
    prior = fit_functional_prior(
        net,
        hierarchical_target(data.input_dim, data.x_train.dtype),
        measurement,
        estimator=estimator,
        num_iters=args.prior_iters,
        num_samples=128,
        lr=0.05,
        seed=args.seed,
        progress=False,
    )
    elapsed = time.perf_counter() - t0
    h = prior.history
    info = {
        "prior_fit_time_s": round(elapsed, 2),
        "distance_first": round(h[0], 4),
        "distance_last10_mean": round(sum(h[-10:]) / len(h[-10:]), 4),
        "fitted_scales": {n: round(float(prior.scale(n)), 4) for n in prior.site_names},
    }
    return prior, info


def run_sghmc(data, prior_state: dict | None, args, seed: int) -> tuple[dict, float]:
    """Sample the posterior under the fixed prior (``prior_state=None``) or a fitted one."""
    pyro.set_rng_seed(seed)
    net = scaled_mlp((data.input_dim, HIDDEN, 1), "tanh").to(data.x_train.dtype)
    prior = GaussianWeightPrior(net, init_scale=1.0)
    if prior_state is not None:
        prior.load_state_dict(prior_state)
    prior.freeze()
    likelihood = GaussianLikelihood(data.num_train, scale=math.sqrt(NOISE_VAR))
    bnn = BNN(net, prior, likelihood.to(data.x_train.dtype))
    gen = torch.Generator().manual_seed(seed)
    init = {}
    for name, shape in bnn.param_shapes.items():
        if len(shape) >= 2:
            init[name] = torch.randn(args.chains, *shape, generator=gen, dtype=data.x_train.dtype)
        else:
            init[name] = torch.zeros(args.chains, *shape, dtype=data.x_train.dtype)
    t0 = time.perf_counter()
    result = sample(
        bnn,
        AdaptiveSGHMC(step_size=0.01, mdecay=0.01),
        (data.x_train, data.y_train),
        num_samples=args.samples,
        warmup=args.warmup,
        thin=args.thin,
        num_chains=args.chains,
        batch_size=32,
        init=init,
        seed=seed,
        progress=False,
    )
    elapsed = time.perf_counter() - t0
    pred = result.predict(data.x_test)
    mean = pred.mean * data.y_std + data.y_mean
    var = pred.variance * data.y_std**2
    y = data.y_test * data.y_std + data.y_mean
    scores = {
        "rmse": float(metrics.rmse(mean, y)),
        "nll": float(metrics.gaussian_nll(mean, var, y)),
    }
    return scores, elapsed


def mean_sd(values: list[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd


def run_dataset(name: str, num_splits: int, args) -> dict:
    rows = {"gp": [], "fixed": []}
    fit_time = 0.0
    sample_time = {"gp": 0.0, "fixed": 0.0}
    prior_state = None
    for split in range(num_splits):
        data = load_uci(name, split=split)
        if prior_state is None or args.fit_per_split:
            prior, info = fit_prior(data, args)
            prior_state = prior.state_dict()
            fit_time += info["prior_fit_time_s"]
            print(json.dumps({"dataset": name, "split": split, "prior_fit": info}), flush=True)
        for key, state in (("fixed", None), ("gp", prior_state)):
            scores, elapsed = run_sghmc(data, state, args, seed=args.seed + split)
            sample_time[key] += elapsed
            rows[key].append(scores)
            line = {"dataset": name, "split": split, "prior": key, **scores}
            line["sample_time_s"] = round(elapsed, 2)
            print(json.dumps(line), flush=True)
    wins = sum(g["rmse"] < f["rmse"] for g, f in zip(rows["gp"], rows["fixed"], strict=True))
    out = {"dataset": name, "num_splits": num_splits, "wins_gp": wins}
    for key in ("gp", "fixed"):
        for metric in ("rmse", "nll"):
            m, s = mean_sd([r[metric] for r in rows[key]])
            out[f"{metric}_{key}"] = round(m, 4)
            out[f"{metric}_{key}_sd"] = round(s, 4)
    out["prior_fit_time_s"] = round(fit_time, 2)
    out["sample_time_s_gp"] = round(sample_time["gp"], 2)
    out["sample_time_s_fixed"] = round(sample_time["fixed"], 2)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, meaningless numbers")
    parser.add_argument("--device", default="cpu", help="only cpu is supported by this script")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--datasets", default="boston,concrete", help="comma-separated subset of boston,concrete"
    )
    parser.add_argument("--boston-splits", type=int, default=10)
    parser.add_argument("--concrete-splits", type=int, default=4)
    parser.add_argument("--prior-iters", type=int, default=200)
    parser.add_argument("--critic-steps", type=int, default=50)
    parser.add_argument("--fit-per-split", action="store_true")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--thin", type=int, default=500)
    args = parser.parse_args()
    if args.device != "cpu":
        parser.error("this benchmark runs on cpu only (--device cpu)")
    if args.quick:
        args.boston_splits, args.concrete_splits = 1, 1
        args.prior_iters, args.critic_steps = 3, 3
        args.warmup, args.samples, args.thin = 20, 3, 5
    torch.set_num_threads(args.threads)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(datasets) - {"boston", "concrete"}
    if unknown or not datasets:
        parser.error(f"--datasets must name boston and/or concrete, got {args.datasets!r}")
    t0 = time.perf_counter()
    splits = {"boston": args.boston_splits, "concrete": args.concrete_splits}
    results = {name: run_dataset(name, splits[name], args) for name in datasets}
    empty = {k: None for k in ("rmse_gp", "rmse_fixed", "wins_gp", "nll_gp", "nll_fixed")}
    boston = results.get("boston", empty)
    concrete = results.get("concrete", empty)
    summary = {
        "boston_rmse_gp": boston["rmse_gp"],
        "boston_rmse_fixed": boston["rmse_fixed"],
        "boston_wins_gp": boston["wins_gp"],
        "boston_nll_gp": boston["nll_gp"],
        "boston_nll_fixed": boston["nll_fixed"],
        "concrete_rmse_gp": concrete["rmse_gp"],
        "concrete_rmse_fixed": concrete["rmse_fixed"],
        "concrete_wins_gp": concrete["wins_gp"],
        "concrete_nll_gp": concrete["nll_gp"],
        "concrete_nll_fixed": concrete["nll_fixed"],
        "settings": {
            "prior_iters": args.prior_iters,
            "critic_steps": args.critic_steps,
            "fit_per_split": args.fit_per_split,
            "warmup": args.warmup,
            "samples_per_chain": args.samples,
            "thin": args.thin,
            "chains": args.chains,
            "threads": args.threads,
        },
        "total_time_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

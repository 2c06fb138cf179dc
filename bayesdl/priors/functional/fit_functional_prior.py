"""Fit a weight prior so that the functions it induces match a Gaussian process (Wasserstein)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pyro
import torch
from torch import nn

from bayesdl._progress import progress_bar
from bayesdl._validation import check_positive, check_positive_int
from bayesdl.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesdl.priors._fittable import FittablePrior
from bayesdl.priors.functional.estimator import DistanceEstimator
from bayesdl.priors.functional.gaussian_weight_prior import GaussianWeightPrior
from bayesdl.priors.functional.gp_target import GPTarget
from bayesdl.priors.functional.lipschitz_critic import LipschitzCritic
from bayesdl.priors.functional.measurement import MeasurementSet
from bayesdl.priors.functional.sample_functions import network_output_dim, prior_functions

_CHECKPOINT_VERSION = 1


def _target_functions(target: GPTarget, x: torch.Tensor, num_samples: int, k: int) -> torch.Tensor:
    """``[S, M, K]`` target draws, each output an independent draw."""
    f = target.sample(x, num_samples * k)  # [S*K, M]
    return f.reshape(num_samples, k, -1).permute(0, 2, 1)


def fit_functional_prior(
    net: nn.Module,
    target: GPTarget,
    measurement: MeasurementSet,
    *,
    prior: FittablePrior | None = None,
    estimator: DistanceEstimator | None = None,
    num_iters: int = 200,
    num_samples: int = 128,
    lr: float = 0.05,
    seed: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
    progress: bool | None = None,
    plot: str | os.PathLike | None = None,
) -> FittablePrior:
    """Fit the hyperparameters ``ψ`` of a weight prior so ``p_nn(f; ψ)`` matches a GP target.

    Each of ``num_iters`` outer iterations (Tran et al. 2022, Algorithm 1):

    1. draw a measurement set ``X_M`` (``measurement.sample()``);
    2. draw ``S = num_samples`` target functions at ``X_M`` (each output independently);
    3. draw ``S`` weight sets from the prior, reparameterised, one independent set per function,
       and evaluate them in one batched forward pass (:func:`prior_functions`);
    4. estimate the distance (:class:`LipschitzCritic` by default: a fresh critic trained on a
       separate detached bag of ``S`` + ``S`` samples, as in the reference code);
    5. take one RMSprop step on ``ψ`` to reduce the estimate.

    Args:
        net: the plain network whose prior is fitted (its parameter values are not used); use
            :func:`scaled_mlp` for the scaled parameterisation of the paper.
        target: the :class:`GPTarget`.
        measurement: the :class:`MeasurementSet` generator (input dim = the network's).
        prior: the prior to fit, built for ``net`` (default
            ``GaussianWeightPrior(net, per="layer")``); fitted in place.
        estimator: a :class:`DistanceEstimator` (default ``LipschitzCritic()``).
        num_iters: outer iterations.
        num_samples: ``S``, function samples per side.
        lr: RMSprop learning rate of ``ψ``.
        seed: seed of the global RNGs (``pyro.set_rng_seed``) at the start; ``None`` keeps them.
        checkpoint: file for atomic checkpoints (``ψ``, optimiser, history, RNG state).
        checkpoint_every: iterations between checkpoints (and one at the end).
        resume: continue from ``checkpoint`` if it exists; on one device the result equals an
            uninterrupted run with the same seed.
        progress: progress bar (``None``: on a TTY unless ``BAYESDL_PROGRESS=0``).
        plot: write a PNG of target vs fitted-prior function samples there (1-D inputs only).

    Returns:
        the fitted prior, frozen (no gradients to ``ψ``), with ``prior.history`` the list of
        distance estimates, one per iteration.

    Raises:
        ValueError: input dimension of the measurement set different from the target's or the
            network's, an estimator built for another number of points or outputs, a
            checkpoint from another run, or a non-finite distance (the last checkpoint is kept).

    Example:
        >>> import torch, pyro.contrib.gp as gp
        >>> from bayesdl.priors.functional import (GPTarget, GridMeasurement, SlicedWasserstein,
        ...     fit_functional_prior, scaled_mlp)
        >>> net = scaled_mlp((1, 20, 1))
        >>> target = GPTarget(gp.kernels.RBF(1, lengthscale=torch.tensor(0.6)))
        >>> grid = GridMeasurement(torch.linspace(-3, 3, 30).unsqueeze(-1))
        >>> prior = fit_functional_prior(net, target, grid, estimator=SlicedWasserstein(),
        ...                              num_iters=3, num_samples=16, seed=0, progress=False)
        >>> len(prior.history)
        3

    References:
        B.-H. Tran, S. Rossi, D. Milios, M. Filippone, *All You Need is a Good Functional Prior
        for Bayesian Deep Learning*, JMLR 2022.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if not isinstance(target, GPTarget):
        raise TypeError(f"target must be a GPTarget, got {type(target).__name__}")
    if not isinstance(measurement, MeasurementSet):
        raise TypeError(f"measurement must be a MeasurementSet, got {type(measurement).__name__}")
    prior = GaussianWeightPrior(net) if prior is None else prior
    if not isinstance(prior, FittablePrior):
        raise TypeError(
            "prior must be a fittable prior (GaussianWeightPrior, HierarchicalGammaPrior), got "
            f"{type(prior).__name__}"
        )
    estimator = LipschitzCritic() if estimator is None else estimator
    if not isinstance(estimator, DistanceEstimator):
        raise TypeError(f"estimator must be a DistanceEstimator, got {type(estimator).__name__}")
    check_positive_int(num_iters, "num_iters")
    check_positive_int(num_samples, "num_samples")
    check_positive_int(checkpoint_every, "checkpoint_every")
    check_positive(lr, "lr")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")
    if measurement.input_dim != target.input_dim:
        raise ValueError(
            f"the measurement set has input dimension {measurement.input_dim} but the target's "
            f"kernel has input_dim {target.input_dim}"
        )
    missing = [n for n, _ in net.named_parameters() if n not in prior.site_names]
    unknown = [n for n in prior.site_names if n not in dict(net.named_parameters())]
    if unknown:
        raise ValueError(f"the prior covers parameters {unknown} that the network does not have")

    if seed is not None:
        pyro.set_rng_seed(seed)
    for p in prior.parameters():
        p.requires_grad_(True)
    x0 = measurement.sample()
    k = network_output_dim(net, prior, x0)
    estimator.check(int(x0.shape[0]), k)
    params = list(prior.parameters())
    opt = torch.optim.RMSprop(params, lr=lr)
    history: list[float] = []
    settings = {
        "num_samples": num_samples,
        "lr": float(lr),
        "prior": type(prior).__name__,
        "estimator": type(estimator).__name__,
        "sites": prior.site_names,
        "frozen_sites": missing,
    }
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        if state.get("version") != _CHECKPOINT_VERSION or state.get("settings") != settings:
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)!r} was written by a run with other settings "
                f"({state.get('settings')}); expected {settings}"
            )
        prior.load_state_dict(state["prior"])
        opt.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["iteration"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save(iteration: int) -> None:
        save_checkpoint(
            {
                "version": _CHECKPOINT_VERSION,
                "settings": settings,
                "iteration": iteration,
                "prior": prior.state_dict(),
                "optimizer": opt.state_dict(),
                "history": list(history),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            checkpoint,
        )

    uses_bag = isinstance(estimator, LipschitzCritic)
    x = x0
    with progress_bar(num_iters, desc="prior matching", progress=progress, initial=start) as bar:
        for it in range(start, num_iters):
            x = measurement.sample()
            with torch.no_grad():
                f_gp = _target_functions(target, x, num_samples, k)
                bag = None
                if uses_bag:
                    bag = (
                        prior_functions(net, prior, x, num_samples),
                        _target_functions(target, x, num_samples, k),
                    )
            f_nn = prior_functions(net, prior, x, num_samples)
            distance = estimator(f_nn, f_gp.to(f_nn), train=bag)
            value = float(distance.detach())
            if not math.isfinite(value):
                raise ValueError(
                    f"the distance estimate became non-finite ({value}) at iteration {it}; the "
                    "last checkpoint (if any) is kept. Lower lr or check the target's scale"
                )
            opt.zero_grad(set_to_none=True)
            distance.backward()
            opt.step()
            history.append(value)
            bar.update(1)
            bar.set_postfix(distance=f"{value:.4g}")
            done = it + 1
            if checkpoint is not None and (done % checkpoint_every == 0 or done == num_iters):
                save(done)
    prior.freeze()
    prior.history = history
    if plot is not None:
        if measurement.input_dim != 1:
            raise ValueError("plot= needs one-dimensional inputs")
        from bayesdl.priors.functional.plots import plot_function_samples

        xs = torch.sort(x, dim=0).values
        with torch.no_grad():
            f_gp = _target_functions(target, xs, 256, k)[..., 0]
            f_nn = prior_functions(net, prior, xs, 256)[..., 0]
        plot_function_samples(xs, {"target GP": f_gp, "fitted prior": f_nn}, path=plot)
    return prior


__all__ = ["fit_functional_prior"]

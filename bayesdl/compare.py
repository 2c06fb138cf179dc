"""Run several inference methods on one task and compare them: a table, a report folder, plots.

A *task* (:class:`Task`, built by :func:`load_task`) is a data set plus how to build a fresh
Bayesian network for it (net × prior × likelihood). A *method* is a callable registered under a
name with :func:`register_method`::

    fn(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput

It builds its own model with ``task.make_bnn()``, fits it, predicts on ``task.data.x_test``
and returns a :class:`MethodOutput` holding the test-set
:class:`~bayesdl.likelihoods.Prediction` and the fit / predict wall-clock times (seconds, from
``time.perf_counter``). Metrics, tables and plots are computed from that prediction alone, so a
method may use any inference machinery (SVI, SG-MCMC, NUTS, ...) as long as it returns one.
This module registers ``"map"`` (point estimate) and ``"mfvi"`` (mean-field VI).
It also registers ``"ssvi"`` (sparse subspace VI).

:func:`compare` runs the chosen methods, scores them (regression RMSE / NLL / 95 % coverage in
the original units of ``y``; classification accuracy / NLL / ECE / Brier) and, given ``out``,
writes a report folder (``report.md``, ``results.json`` and PNG figures). The ``bayesdl compare``
command (:mod:`bayesdl.cli`) is a thin wrapper around it.

Example:
    >>> from bayesdl.compare import available_methods, compare
    >>> "map" in available_methods() and "mfvi" in available_methods()
    True
    >>> result = compare("toy1d", ["map"], smoke=True, progress=False)
    >>> result.rows[0]["method"], sorted(result.rows[0])[:3]
    ('map', ['coverage_95', 'fit_time', 'method'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import numbers
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyro
import torch
from torch import Tensor, nn

from bayesdl import metrics
from bayesdl.data import (
    CLASSIFICATION_DATASETS,
    UCI_DATASETS,
    ClassificationData,
    RegressionData,
    load_classification,
    load_toy1d,
    load_uci,
)
from bayesdl.guides import DeltaGuide, MeanFieldGuide, SparseMeanFieldGuide
from bayesdl.infer import FitResult, SubspaceScheduler, fit, kl_warmup, predict, sample
from bayesdl.infer.mcmc import NUTS, SGLD, AdaptiveSGHMC
from bayesdl.likelihoods import CategoricalLikelihood, GaussianLikelihood, Likelihood, Prediction
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior, Prior

__all__ = [
    "CompareResult",
    "CompareSettings",
    "MethodFn",
    "MethodOutput",
    "PRIOR_NAMES",
    "TASK_KINDS",
    "Task",
    "available_methods",
    "available_tasks",
    "compare",
    "get_method",
    "load_task",
    "register_method",
    "with_prior",
    "write_report",
]

TASK_KINDS: tuple[str, ...] = ("regression", "classification")
"""The kinds of :class:`Task`."""

_TOY_TASKS: tuple[str, ...] = ("toy1d",)

# ============================================================================================
# tasks
# ============================================================================================


@dataclass(eq=False)
class Task:
    """A data set and how to build a fresh Bayesian network for it.

    Attributes:
        name: task name (``"toy1d"``, a UCI name, a classification name).
        kind: ``"regression"`` or ``"classification"``.
        data: a standardised :class:`~bayesdl.data.RegressionData` (inputs ``[N, D]``, targets
            ``[N]``) or :class:`~bayesdl.data.ClassificationData` (labels ``[N]`` long).
        net_fn: builds a fresh plain ``nn.Module`` mapping ``[B, D]`` to ``[B, 1]`` (regression)
            or ``[B, C]`` logits (classification). Its initial weights come from the global torch
            RNG, so seed before calling.
        prior_fn: builds the weight prior.
        likelihood_fn: builds a fresh likelihood whose ``dataset_size`` is the number of
            training points.
        description: one line for reports (network, likelihood, prior).

    Example:
        >>> task = load_task("toy1d")
        >>> task.kind, task.input_dim, task.data.x_train.shape
        ('regression', 1, torch.Size([64, 1]))
        >>> task.make_bnn().site_names[:2]
        ['0.weight', '0.bias']
    """

    name: str
    kind: str
    data: RegressionData | ClassificationData
    net_fn: Callable[[], nn.Module]
    prior_fn: Callable[[], Prior]
    likelihood_fn: Callable[[], Likelihood]
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {TASK_KINDS}, got {self.kind!r}")
        want = RegressionData if self.kind == "regression" else ClassificationData
        if not isinstance(self.data, want):
            raise TypeError(
                f"data of a {self.kind} task must be a {want.__name__}, "
                f"got {type(self.data).__name__}"
            )

    @property
    def num_train(self) -> int:
        """Number of training points ``N``."""
        return self.data.num_train

    @property
    def input_dim(self) -> int:
        """Number of input columns ``D``."""
        return self.data.input_dim

    @property
    def is_1d_regression(self) -> bool:
        """Whether this is a regression task with one input (predictive bands can be drawn)."""
        return self.kind == "regression" and self.input_dim == 1

    def make_bnn(self) -> BNN:
        """A fresh :class:`~bayesdl.nn.BNN` on the data's device and dtype."""
        x = self.data.x_train
        net = self.net_fn().to(device=x.device, dtype=x.dtype)
        likelihood = self.likelihood_fn().to(device=x.device, dtype=x.dtype)
        return BNN(net, self.prior_fn(), likelihood)


def available_tasks() -> tuple[str, ...]:
    """Names accepted by :func:`load_task`: the 1-D toy, the UCI sets, the classification sets."""
    return _TOY_TASKS + tuple(UCI_DATASETS) + tuple(CLASSIFICATION_DATASETS)


def _canonical_task(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"task must be a task name (str) or a Task, got {type(name).__name__}")
    key = name.strip().lower()
    names = available_tasks()
    for candidate in (key, key.replace("_", "-"), key.replace("-", "_")):
        if candidate in names:
            return candidate
    raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(names)}")


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _describe_mlp(sizes: Sequence[int], activation: str) -> str:
    return f"MLP {'→'.join(map(str, sizes))} ({activation})"


def load_task(
    name: str,
    *,
    split: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """Load a task by name.

    * ``"toy1d"``: the 1-D gap toy (:func:`~bayesdl.data.load_toy1d`, ``seed=split``);
      MLP 1→50→50→50→1 with tanh (the functional-prior paper's toy network); Gaussian
      likelihood with the noise fixed at the toy's true noise variance (``extra
      ["noise_variance"]`` = 0.1 in original units, divided by ``y_std**2`` for the
      standardised targets).
    * a UCI name (:data:`~bayesdl.data.UCI_DATASETS`): MLP D→50→1 with ReLU, Gaussian
      likelihood with a learned noise scale.
    * a classification name (:data:`~bayesdl.data.CLASSIFICATION_DATASETS`): MLP D→100→C
      with ReLU, categorical likelihood on the logits.

    Every task uses the prior ``LayerwiseNormalPrior("radford")`` (weights ``N(0, 1/fan_in)``,
    biases ``N(0, 1)``).

    Args:
        name: one of :func:`available_tasks` (case-insensitive).
        split: the train/test split (UCI, classification) or the data seed (toy1d), ``>= 0``.
        device: where the data (and so every model) live; default: where the loader puts them.
        dtype: floating dtype of the inputs (and regression targets).

    Returns:
        the :class:`Task`.

    Raises:
        ValueError: unknown ``name`` (the message lists the available tasks) or bad ``split``.
        ImportError: the optional package holding the data is not installed.
    """
    key = _canonical_task(name)
    if isinstance(split, bool) or not isinstance(split, numbers.Integral) or split < 0:
        raise ValueError(f"split must be a non-negative int, got {split!r}")
    prior_fn = lambda: LayerwiseNormalPrior("radford")  # noqa: E731
    prior_text = 'prior LayerwiseNormalPrior("radford")'
    if key == "toy1d":
        data = load_toy1d(seed=int(split), dtype=dtype)
        noise_var = float(data.extra["noise_variance"]) / float(data.y_std) ** 2
        sizes = (1, 50, 50, 50, 1)
        n = data.num_train

        def net_fn() -> nn.Module:
            return _mlp(sizes, nn.Tanh)

        def likelihood_fn() -> Likelihood:
            return GaussianLikelihood(n, scale=math.sqrt(noise_var))

        description = (
            f"{_describe_mlp(sizes, 'tanh')}; Gaussian likelihood with fixed noise variance "
            f"{data.extra['noise_variance']:g} (original units; {noise_var:.4g} standardised); "
            f"{prior_text}"
        )
        kind = "regression"
    elif key in UCI_DATASETS:
        data = load_uci(key, split=int(split), dtype=dtype)
        sizes = (data.input_dim, 50, 1)
        n = data.num_train

        def net_fn() -> nn.Module:
            return _mlp(sizes, nn.ReLU)

        def likelihood_fn() -> Likelihood:
            return GaussianLikelihood(n, learn_scale=True)

        description = (
            f"{_describe_mlp(sizes, 'ReLU')}; Gaussian likelihood with a learned noise scale; "
            f"{prior_text}"
        )
        kind = "regression"
    else:
        data = load_classification(key, split=int(split), dtype=dtype)
        sizes = (data.input_dim, 100, data.num_classes)
        n = data.num_train

        def net_fn() -> nn.Module:
            return _mlp(sizes, nn.ReLU)

        def likelihood_fn() -> Likelihood:
            return CategoricalLikelihood(n)

        description = f"{_describe_mlp(sizes, 'ReLU')}; categorical likelihood; {prior_text}"
        kind = "classification"
    if device is not None:
        data = data.to(device=device)
    return Task(key, kind, data, net_fn, prior_fn, likelihood_fn, description)


# --------------------------------------------------------------------------------- priors

#: names accepted by ``compare(..., prior=...)`` and ``bayesdl compare --prior``
PRIOR_NAMES: tuple[str, ...] = (
    "default",
    "fixed-gaussian",
    "fixed-hierarchical",
    "gp-matched",
    "gp-matched-hierarchical",
)
#: methods that can sample a hierarchical prior's precision sites (SG-MCMC with Gibbs steps,
#: or NUTS jointly)
_HIERARCHICAL_METHODS: tuple[str, ...] = ("sghmc", "sgld", "nuts")
_GP_FIT_ITERS = 200
_GP_FIT_CRITIC_STEPS = 50
_GP_FIT_SAMPLES = 128
_GIBBS_EVERY = 1000


def _gp_target_and_measurement(task: Task) -> tuple[Any, Any]:
    """The functional-prior paper's GP target and measurement sets for a task."""
    import pyro.contrib.gp as gp_

    from bayesdl.priors.functional import (
        DataMeasurement,
        GPTarget,
        GridMeasurement,
        MinibatchMeasurement,
    )

    data = task.data
    x = data.x_train
    d = task.input_dim
    if task.name == "toy1d":
        kernel = gp_.kernels.RBF(1, variance=torch.tensor(1.0), lengthscale=torch.tensor(0.6))
        grid = torch.linspace(-6, 6, 200, dtype=x.dtype, device=x.device).unsqueeze(-1)
        return GPTarget(kernel), GridMeasurement(grid)
    ls0 = math.sqrt(2 * d)
    kernel = gp_.kernels.RBF(d, lengthscale=torch.full((d,), ls0))
    if task.kind == "regression":
        var_prior = pyro.distributions.LogNormal(torch.tensor(0.1), 1.0)
        measurement = DataMeasurement(x, num_points=100, x_extra=data.x_test)
    else:
        var_prior = pyro.distributions.LogNormal(torch.tensor(math.log(8.0)), math.sqrt(0.3))
        measurement = MinibatchMeasurement(x, batch_size=min(256, data.num_train))
    hyper = {
        "lengthscale": pyro.distributions.LogNormal(torch.full((d,), math.log(ls0)), 1.0),
        "variance": var_prior,
    }
    return GPTarget(kernel, hyperpriors=hyper), measurement


def with_prior(task: Task, prior: str, *, smoke: bool = False, seed: int = 0) -> Task:
    """The task with its weight prior replaced by a named one.

    * ``"default"``: the task's own prior (unchanged);
    * ``"fixed-gaussian"``: ``LayerwiseNormalPrior("radford")`` — weights ``N(0, 1/fan_in)``,
      biases ``N(0, 1)`` (the fixed ``N(0, 1)`` prior of the scaled parameterisation);
    * ``"fixed-hierarchical"``: :class:`~bayesdl.priors.HierarchicalGammaPrior` with
      ``α = β = 1`` (a Gamma precision per parameter tensor);
    * ``"gp-matched"``: :class:`~bayesdl.priors.functional.GaussianWeightPrior` (one scale per
      parameter tensor) fitted by :func:`~bayesdl.priors.functional.fit_functional_prior` to
      the functional-prior paper's GP for the task (toy1d: RBF, lengthscale 0.6, on a 200-point
      grid on ``[-6, 6]``; UCI: hierarchical RBF-ARD on 100-point sets of 70 % training inputs;
      classification: hierarchical RBF-ARD on minibatches), 200 iterations with a 50-step
      Lipschitz critic (2 in smoke mode). The fit runs once, the first time the prior is
      needed (inside the first method's run);
    * ``"gp-matched-hierarchical"``: the hierarchical prior fitted the same way.

    Hierarchical priors add precision sites that only the samplers handle (``sghmc``, ``sgld``
    with Gibbs steps, ``nuts`` jointly).

    Example:
        >>> task = with_prior(load_task("toy1d"), "fixed-hierarchical")
        >>> type(task.make_bnn().prior).__name__
        'HierarchicalGammaPrior'
    """
    from bayesdl.priors import HierarchicalGammaPrior
    from bayesdl.priors.functional import (
        GaussianWeightPrior,
        LipschitzCritic,
        fit_functional_prior,
    )

    if prior not in PRIOR_NAMES:
        raise ValueError(f"unknown prior {prior!r}; available priors: {', '.join(PRIOR_NAMES)}")
    if prior == "default":
        return task
    x = task.data.x_train
    cache: list[Prior] = []

    def prior_fn() -> Prior:
        if cache:
            return cache[0]
        net = task.net_fn().to(device=x.device, dtype=x.dtype)
        if prior == "fixed-gaussian":
            built: Prior = LayerwiseNormalPrior("radford")
        elif prior == "fixed-hierarchical":
            built = HierarchicalGammaPrior(net).to(device=x.device).freeze()
        else:
            fittable = (
                HierarchicalGammaPrior(net)
                if prior == "gp-matched-hierarchical"
                else GaussianWeightPrior(net)
            ).to(device=x.device)
            target, measurement = _gp_target_and_measurement(task)
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                built = fit_functional_prior(
                    net,
                    target,
                    measurement,
                    prior=fittable,
                    estimator=LipschitzCritic(num_steps=2 if smoke else _GP_FIT_CRITIC_STEPS),
                    num_iters=2 if smoke else _GP_FIT_ITERS,
                    num_samples=16 if smoke else _GP_FIT_SAMPLES,
                    seed=seed,
                    progress=False,
                )
        cache.append(built)
        return built

    return dataclasses.replace(
        task, prior_fn=prior_fn, description=f"{task.description}; prior overridden: {prior}"
    )


def _gibbs_kwargs(task: Task) -> dict[str, Any]:
    """Gibbs-step keywords for an SG-MCMC kernel when the task's prior is hierarchical."""
    from bayesdl.priors import HierarchicalGammaPrior

    prior = task.prior_fn()
    if isinstance(prior, HierarchicalGammaPrior):
        return prior.gibbs_kwargs(every=_GIBBS_EVERY)
    return {}


# ============================================================================================
# methods
# ============================================================================================


@dataclass(frozen=True)
class CompareSettings:
    """The run budget every method receives (a method ignores what does not apply to it).

    Attributes:
        smoke: a tiny budget (a few steps, few predictive samples) for tests and CI.
        num_epochs: override the method's default training length with this many epochs.
        num_samples: override the number of posterior / predictive samples.
        progress: progress bars (``None``: on when stderr is a TTY and ``BAYESDL_PROGRESS``
            is not ``0``); pass it on to :func:`bayesdl.infer.fit`.
    """

    smoke: bool = False
    num_epochs: int | None = None
    num_samples: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        for argname in ("num_epochs", "num_samples"):
            value = getattr(self, argname)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0
            ):
                raise ValueError(f"{argname} must be a positive int or None, got {value!r}")


@dataclass(eq=False)
class MethodOutput:
    """What a method returns.

    Attributes:
        prediction: the posterior predictive on ``task.data.x_test`` (standardised units for
            regression; class probabilities for classification).
        fit_time: seconds spent fitting (``time.perf_counter``).
        predict_time: seconds spent predicting on the test set.
        fitted: optional fitted objects (e.g. ``{"bnn": ..., "guide": ...}``) for further use.
        info: optional JSON-friendly facts about the run (steps, learning rate, final loss),
            written to ``results.json``.
    """

    prediction: Prediction
    fit_time: float
    predict_time: float
    fitted: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[..., MethodOutput]
"""``fn(task, *, seed, settings) -> MethodOutput``."""

_METHODS: dict[str, MethodFn] = {}


def register_method(name: str, fn: MethodFn | None = None) -> Any:
    """Register an inference method under ``name``; usable as a decorator.

    The method is called as ``fn(task, *, seed, settings)`` with a :class:`Task`, an int seed
    and :class:`CompareSettings`, and returns a :class:`MethodOutput`.

    Args:
        name: a new, non-empty name without commas or whitespace.
        fn: the method; when omitted, returns a decorator that registers its argument.

    Returns:
        ``fn`` (or the decorator).

    Raises:
        ValueError: ``name`` is already registered or malformed.
        TypeError: ``fn`` is not callable.

    Example (a module that adds a method registers it at import time)::

        from bayesdl.compare import MethodOutput, register_method

        @register_method("sgld")
        def sgld(task, *, seed, settings):
            bnn = task.make_bnn()
            ...  # fit, time it, predict on task.data.x_test
            return MethodOutput(prediction, fit_time, predict_time)
    """
    if not isinstance(name, str) or not name or any(c.isspace() or c == "," for c in name):
        raise ValueError(f"name must be a non-empty string without commas or spaces, got {name!r}")

    def decorator(f: MethodFn) -> MethodFn:
        if not callable(f):
            raise TypeError(f"fn must be callable, got {type(f).__name__}")
        if name in _METHODS:
            raise ValueError(f"a method named {name!r} is already registered")
        _METHODS[name] = f
        return f

    return decorator if fn is None else decorator(fn)


def available_methods() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> MethodFn:
    """The method registered under ``name``.

    Raises:
        ValueError: no such method (the message lists the registered ones).
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; registered methods: {', '.join(available_methods())}"
        ) from None


# --------------------------------------------------------------------------------- budgets

#: datasets up to this size are fitted full-batch; larger ones in minibatches of _BATCH_SIZE
_FULL_BATCH_MAX = 1024
_BATCH_SIZE = 256
_SMOKE_STEPS = 5
_SMOKE_SAMPLES = 8


def _schedule(
    task: Task, settings: CompareSettings, *, num_steps: int
) -> tuple[dict[str, Any], int]:
    """``fit`` keywords for the training length and batch size, and the total step count."""
    n = task.num_train
    batch_size = None if n <= _FULL_BATCH_MAX else _BATCH_SIZE
    steps_per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    if settings.num_epochs is not None:
        kwargs: dict[str, Any] = {"num_epochs": settings.num_epochs}
        total = settings.num_epochs * steps_per_epoch
    else:
        total = _SMOKE_STEPS if settings.smoke else num_steps
        kwargs = {"num_steps": total}
    kwargs["batch_size"] = batch_size
    return kwargs, total


def _num_samples(settings: CompareSettings, default: int) -> int:
    if settings.num_samples is not None:
        return settings.num_samples
    return min(default, _SMOKE_SAMPLES) if settings.smoke else default


def _predict(bnn: BNN, guide: Any, x: Tensor, *, num_samples: int) -> Prediction:
    return predict(bnn, guide, x, num_samples=num_samples)


def _fit_info(result: FitResult, kwargs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    tail = result.losses[-10:]
    return {
        "num_steps": result.num_steps,
        "batch_size": kwargs.get("batch_size"),
        "final_loss": float(sum(tail) / len(tail)) if tail else float("nan"),
        **extra,
    }


#: default training lengths (optimisation steps); on the toy (64 points, full batch) MAP has
#: converged by ~1500 steps and MFVI's ELBO by ~2000 (see the report of the compare issue)
_MAP_STEPS = 2000
_MAP_LR = 1e-2
_MFVI_STEPS = 3000
_MFVI_LR = 1e-2
_MFVI_PARTICLES = 8
_MFVI_INIT_SCALE = 1e-3
_MFVI_WARMUP_FRACTION = 1 / 3
_MFVI_PREDICT_SAMPLES = 100


def _fit_and_predict(
    task: Task,
    bnn: BNN,
    guide: Any,
    *,
    seed: int,
    settings: CompareSettings,
    num_samples: int,
    fit_kwargs: dict[str, Any],
    info: dict[str, Any],
) -> MethodOutput:
    """Fit ``guide`` on the task's training data, predict on its test inputs, time both."""
    t0 = time.perf_counter()
    result = fit(
        bnn,
        guide,
        (task.data.x_train, task.data.y_train),
        seed=seed,
        progress=settings.progress,
        **fit_kwargs,
    )
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    prediction = _predict(bnn, guide, task.data.x_test, num_samples=num_samples)
    predict_time = time.perf_counter() - t0
    return MethodOutput(
        prediction,
        fit_time,
        predict_time,
        fitted={"bnn": bnn, "guide": guide, "fit_result": result},
        info=_fit_info(result, fit_kwargs, **info, num_samples=num_samples),
    )


@register_method("map")
def _map_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """MAP point estimate: a :class:`~bayesdl.guides.DeltaGuide` fitted with Adam.

    The prediction uses the single point estimate, so its variance is the likelihood noise only
    (no epistemic part).
    """
    pyro.set_rng_seed(seed)
    bnn = task.make_bnn()
    guide = DeltaGuide(bnn)
    kwargs, _ = _schedule(task, settings, num_steps=_MAP_STEPS)
    return _fit_and_predict(
        task,
        bnn,
        guide,
        seed=seed,
        settings=settings,
        num_samples=1,
        fit_kwargs={**kwargs, "lr": _MAP_LR},
        info={"lr": _MAP_LR, "optimizer": "Adam"},
    )


@register_method("mfvi")
def _mfvi_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """Mean-field Gaussian VI (Bayes by Backprop) with the local reparameterisation trick.

    :class:`~bayesdl.guides.MeanFieldGuide` with means at the network's initial weights and
    scales 1e-3, Adam, 8 vectorised particles, and a linear KL warm-up over the first third of
    the steps; predictions average 100 posterior samples.

    References:
        C. Blundell et al., *Weight Uncertainty in Neural Networks*, ICML 2015;
        D. P. Kingma, T. Salimans, M. Welling, *Variational Dropout and the Local
        Reparameterization Trick*, NeurIPS 2015.
    """
    pyro.set_rng_seed(seed)
    bnn = task.make_bnn()
    guide = MeanFieldGuide(bnn, init_scale=_MFVI_INIT_SCALE)
    kwargs, total = _schedule(task, settings, num_steps=_MFVI_STEPS)
    warmup = max(1, int(total * _MFVI_WARMUP_FRACTION))
    num_samples = _num_samples(settings, _MFVI_PREDICT_SAMPLES)
    return _fit_and_predict(
        task,
        bnn,
        guide,
        seed=seed,
        settings=settings,
        num_samples=num_samples,
        fit_kwargs={
            **kwargs,
            "lr": _MFVI_LR,
            "num_particles": _MFVI_PARTICLES,
            "reparam": "local",
            "kl_weight": kl_warmup(warmup),
        },
        info={
            "lr": _MFVI_LR,
            "optimizer": "Adam",
            "num_particles": _MFVI_PARTICLES,
            "init_scale": _MFVI_INIT_SCALE,
            "kl_warmup_steps": warmup,
            "reparam": "local",
        },
    )


#: SSVI: fraction of active weights per sparse layer (the paper's default), subspace updates
#: every Delta T steps (at most 100, the paper's value; at least 20 updates on short runs)
_SSVI_DENSITY = 0.1
_SSVI_UPDATE_EVERY = 100
_SSVI_MIN_UPDATES = 20


@register_method("ssvi")
def _ssvi_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """Sparse subspace VI: mean-field VI on 10 % of each layer's weights, moved by SSVI.

    :class:`~bayesdl.guides.SparseMeanFieldGuide` at density 0.1 (first layer dense; a layer
    too small for one active weight at 0.1 gets one), driven by a
    :class:`~bayesdl.infer.SubspaceScheduler` (removal by ``SNR_mean_abs``, addition by the
    dense mean gradient, cosine-decayed drop fraction 0.3 until 3/4 of training). Otherwise as
    ``mfvi``: Adam, 8 vectorised particles, local reparameterisation, KL warm-up over the first
    third, 100 predictive samples.

    References:
        J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse
        Subspace Variational Inference*, ICLR 2024.
    """
    pyro.set_rng_seed(seed)
    bnn = task.make_bnn()
    layers = [
        s
        for s in bnn.sites
        if s.is_weight
        and s.name.rpartition(".")[2] == "weight"
        and isinstance(s.module, (nn.Linear, nn.Conv2d))
    ]
    density = {s.name: max(_SSVI_DENSITY, 1.0 / s.param.numel()) for s in layers}
    guide = SparseMeanFieldGuide(bnn, density=density, init_scale=_MFVI_INIT_SCALE)
    kwargs, total = _schedule(task, settings, num_steps=_MFVI_STEPS)
    update_every = max(1, min(_SSVI_UPDATE_EVERY, total // _SSVI_MIN_UPDATES))
    scheduler = SubspaceScheduler(guide, total, update_every=update_every)
    warmup = max(1, int(total * _MFVI_WARMUP_FRACTION))
    num_samples = _num_samples(settings, _MFVI_PREDICT_SAMPLES)
    output = _fit_and_predict(
        task,
        bnn,
        guide,
        seed=seed,
        settings=settings,
        num_samples=num_samples,
        fit_kwargs={
            **kwargs,
            "lr": _MFVI_LR,
            "num_particles": _MFVI_PARTICLES,
            "reparam": "local",
            "kl_weight": kl_warmup(warmup),
            "callbacks": [scheduler],
        },
        info={
            "lr": _MFVI_LR,
            "optimizer": "Adam",
            "num_particles": _MFVI_PARTICLES,
            "init_scale": _MFVI_INIT_SCALE,
            "kl_warmup_steps": warmup,
            "reparam": "local",
            "density": _SSVI_DENSITY,
            "update_every": update_every,
        },
    )
    output.info["num_updates"] = len(scheduler.history)
    output.info["active_weights"] = sum(guide.num_active(n) for n in guide.site_names)
    output.fitted["scheduler"] = scheduler
    return output


# ------------------------------------------------------------------------------------ MCMC

#: prior on the Gaussian noise scale (standardised targets) when a task learns it by point
#: estimate: samplers infer it with the weights instead. Median 0.37, 95 % within [0.05, 2.6].
_MCMC_SCALE_PRIOR = (-1.0, 1.0)
_MCMC_CHAINS = 4
#: SG-MCMC budgets in steps (one minibatch each): warm-up (adaptation), then sampling, thinned
_SG_WARMUP = 2000
_SG_SAMPLE_STEPS = 4000
_SG_KEEP_PER_CHAIN = 50
_SGHMC_LR = 1e-2
_SGHMC_MDECAY = 0.05
_SGLD_LR = 1e-3
#: NUTS budget in iterations (full batch); depth 8 caps a trajectory at 255 leapfrog steps
_NUTS_WARMUP = 300
_NUTS_SAMPLES = 100
_NUTS_MAX_DEPTH = 8


def _mcmc_bnn(task: Task) -> BNN:
    """The task's network for sampling: a likelihood whose noise scale is learned by point
    estimate gets a ``LogNormal`` prior on it instead (the scale is a latent site)."""
    bnn = task.make_bnn()
    likelihood = bnn.likelihood
    if isinstance(likelihood, GaussianLikelihood) and likelihood.learn_scale:
        x = task.data.x_train
        loc, scale = _MCMC_SCALE_PRIOR
        prior = pyro.distributions.LogNormal(
            torch.tensor(loc, dtype=x.dtype, device=x.device),
            torch.tensor(scale, dtype=x.dtype, device=x.device),
        )
        likelihood = GaussianLikelihood(task.num_train, scale_prior=prior)
        # a fresh network: the BNN above has already turned its parameters into sites
        net = task.net_fn().to(device=x.device, dtype=x.dtype)
        bnn = BNN(net, task.prior_fn(), likelihood.to(device=x.device, dtype=x.dtype))
    return bnn


def _sg_budget(task: Task, settings: CompareSettings) -> dict[str, Any]:
    """``sample`` keywords for an SG-MCMC run: batch size, warm-up, kept samples, thinning."""
    n = task.num_train
    batch_size = None if n <= _FULL_BATCH_MAX else _BATCH_SIZE
    keep = _num_samples(settings, _SG_KEEP_PER_CHAIN * _MCMC_CHAINS)
    per_chain = max(1, math.ceil(keep / _MCMC_CHAINS))
    if settings.num_epochs is not None:
        steps_per_epoch = 1 if batch_size is None else n // batch_size
        total = settings.num_epochs * steps_per_epoch
        warmup = total // 3
        sample_steps = max(per_chain, total - warmup)
    elif settings.smoke:
        warmup, sample_steps = _SMOKE_STEPS, per_chain
    else:
        warmup, sample_steps = _SG_WARMUP, _SG_SAMPLE_STEPS
    thin = max(1, sample_steps // per_chain)
    return {
        "batch_size": batch_size,
        "warmup": warmup,
        "num_samples": per_chain,
        "thin": thin,
        "num_chains": _MCMC_CHAINS,
    }


def _sample_and_predict(
    task: Task,
    kernel: Any,
    *,
    seed: int,
    settings: CompareSettings,
    budget: dict[str, Any],
    info: dict[str, Any],
) -> MethodOutput:
    """Sample the task's network with ``kernel``, predict on its test inputs, time both."""
    pyro.set_rng_seed(seed)
    bnn = _mcmc_bnn(task)
    t0 = time.perf_counter()
    result = sample(
        bnn,
        kernel,
        (task.data.x_train, task.data.y_train),
        init="prior",
        seed=seed,
        progress=settings.progress,
        **budget,
    )
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    prediction = result.predict(task.data.x_test)
    predict_time = time.perf_counter() - t0
    stats = result.sample_stats
    facts: dict[str, Any] = {
        **info,
        **budget,
        "kernel": result.kernel_name,
        "num_draws": result.num_chains * result.num_samples,
        "num_divergences": int(result.num_divergences.sum()),
    }
    if "accept_prob" in stats:
        facts["mean_accept_prob"] = float(stats["accept_prob"].float().mean())
    if result.num_chains > 1 and result.num_samples > 3:
        diag = result.diagnostics()
        facts.update({k: float(v) for k, v in diag.items() if isinstance(v, (int, float))})
    return MethodOutput(
        prediction,
        fit_time,
        predict_time,
        fitted={"bnn": bnn, "result": result},
        info=facts,
    )


@register_method("sghmc")
def _sghmc_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """Adaptive SGHMC (Springenberg et al. 2016) on minibatches: 4 vectorised chains started
    from prior draws, the diagonal preconditioner adapted during 2000 warm-up steps, then 4000
    steps thinned to 50 draws per chain. Step size 1e-2, ``mdecay`` 0.05. Tasks whose noise
    scale is learned by point estimate get a ``LogNormal(-1, 1)`` prior on it instead.

    References:
        J. T. Springenberg, A. Klein, S. Falkner, F. Hutter, *Bayesian Optimization with
        Robust Bayesian Neural Networks*, NeurIPS 2016;
        T. Chen, E. B. Fox, C. Guestrin, *Stochastic Gradient Hamiltonian Monte Carlo*, ICML
        2014.
    """
    kernel = AdaptiveSGHMC(step_size=_SGHMC_LR, mdecay=_SGHMC_MDECAY, **_gibbs_kwargs(task))
    return _sample_and_predict(
        task,
        kernel,
        seed=seed,
        settings=settings,
        budget=_sg_budget(task, settings),
        info={"step_size": _SGHMC_LR, "mdecay": _SGHMC_MDECAY},
    )


@register_method("sgld")
def _sgld_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """Preconditioned SGLD (Li et al. 2016) on minibatches, with the RMSprop preconditioner
    adapted during warm-up and then frozen: 4 vectorised chains from prior draws, 2000 warm-up
    steps, 4000 sampling steps thinned to 50 draws per chain, step size 1e-3. Noise-scale prior
    as for ``sghmc``.

    References:
        M. Welling, Y. W. Teh, *Bayesian Learning via Stochastic Gradient Langevin Dynamics*,
        ICML 2011; C. Li, C. Chen, D. Carlson, L. Carin, *Preconditioned Stochastic Gradient
        Langevin Dynamics for Deep Neural Networks*, AAAI 2016.
    """
    kernel = SGLD(
        step_size=_SGLD_LR,
        preconditioned=True,
        adapt_preconditioner="warmup",
        **_gibbs_kwargs(task),
    )
    return _sample_and_predict(
        task,
        kernel,
        seed=seed,
        settings=settings,
        budget=_sg_budget(task, settings),
        info={"step_size": _SGLD_LR, "preconditioned": True},
    )


@register_method("nuts")
def _nuts_method(task: Task, *, seed: int, settings: CompareSettings) -> MethodOutput:
    """NUTS on the full data: 4 vectorised chains from prior draws, 300 warm-up iterations
    (dual-averaging step size, diagonal mass matrix), 100 draws per chain, maximum tree depth 8.
    Noise-scale prior as for ``sghmc``. Exact but expensive: each iteration costs up to 255
    full-data gradients, so use it on small data sets.

    References:
        M. D. Hoffman, A. Gelman, *The No-U-Turn Sampler*, JMLR 2014.
    """
    keep = _num_samples(settings, _NUTS_SAMPLES * _MCMC_CHAINS)
    per_chain = max(1, math.ceil(keep / _MCMC_CHAINS))
    warmup = _SMOKE_STEPS if settings.smoke else _NUTS_WARMUP
    depth = 3 if settings.smoke else _NUTS_MAX_DEPTH
    # full runs compile the leapfrog step (seconds of compilation, then several times fewer
    # Python dispatches per gradient); smoke runs are too short to repay it
    compile_mode = False if settings.smoke else "auto"
    return _sample_and_predict(
        task,
        NUTS(max_tree_depth=depth, compile=compile_mode),
        seed=seed,
        settings=settings,
        budget={"warmup": warmup, "num_samples": per_chain, "num_chains": _MCMC_CHAINS},
        info={"max_tree_depth": depth},
    )


# ============================================================================================
# metrics
# ============================================================================================

_REGRESSION_COLUMNS = ("rmse", "nll", "nll_mixture", "coverage_95")
_CLASSIFICATION_COLUMNS = ("accuracy", "nll", "ece", "brier")
_TIME_COLUMNS = ("fit_time", "predict_time")
_HEADERS = {
    "method": "method",
    "rmse": "RMSE",
    "nll": "NLL",
    "nll_mixture": "NLL (mixture)",
    "coverage_95": "95% cover",
    "accuracy": "accuracy",
    "ece": "ECE",
    "brier": "Brier",
    "fit_time": "fit [s]",
    "predict_time": "predict [s]",
}


def _check_prediction(name: str, task: Task, output: Any) -> Prediction:
    if not isinstance(output, MethodOutput):
        raise TypeError(f"method {name!r} must return a MethodOutput, got {type(output).__name__}")
    p = output.prediction
    if not isinstance(p, Prediction):
        raise TypeError(
            f"method {name!r} returned prediction of type {type(p).__name__}, not a Prediction"
        )
    m = task.data.num_test
    if task.kind == "regression":
        if p.variance is None or tuple(p.mean.shape) != (m,):
            raise ValueError(
                f"method {name!r} must predict a mean and variance of shape ({m},) for the "
                f"{m} test points, got mean {tuple(p.mean.shape)}"
            )
    elif p.probs is None or tuple(p.probs.shape) != (m, task.data.num_classes):
        raise ValueError(
            f"method {name!r} must predict class probabilities of shape "
            f"({m}, {task.data.num_classes}), got {None if p.probs is None else tuple(p.probs.shape)}"
        )
    return p


def _score(task: Task, p: Prediction) -> dict[str, float]:
    """Test metrics; regression ones in the original units of ``y``."""
    data = task.data
    if task.kind == "classification":
        return metrics.classification_metrics(p.probs, data.y_test)
    # y = y_std * z + y_mean: means map affinely and variances scale by y_std^2, which is the
    # same as rmse * y_std and nll + log(y_std) on the standardised scale
    s, mu = data.y_std.to(p.mean), data.y_mean.to(p.mean)
    y = data.y_test * s + mu
    kwargs = {}
    if p.sample_means is not None and p.sample_variances is not None:
        kwargs = {"samples_mean": p.sample_means * s + mu, "samples_var": p.sample_variances * s**2}
    out = metrics.regression_metrics(p.mean * s + mu, p.variance * s**2, y, **kwargs)
    out.setdefault("nll_mixture", float("nan"))
    return out


# ============================================================================================
# results and reports
# ============================================================================================


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if column in _TIME_COLUMNS:
        return f"{value:.2f}"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


@dataclass(eq=False)
class CompareResult:
    """The outcome of :func:`compare`.

    Attributes:
        task: the :class:`Task`.
        rows: one dict per method: ``"method"``, the metrics (``rmse``, ``nll``,
            ``nll_mixture``, ``coverage_95`` for regression, in the original units of ``y``;
            ``accuracy``, ``nll``, ``ece``, ``brier`` for classification), ``fit_time`` and
            ``predict_time`` in seconds.
        outputs: each method's :class:`MethodOutput` (predictions and fitted objects).
        settings: the :class:`CompareSettings` used.
        seed: the seed every method received.
        out: the report folder, when one was written.
        figures: paths of the figures written.
    """

    task: Task
    rows: list[dict[str, Any]]
    outputs: dict[str, MethodOutput]
    settings: CompareSettings
    seed: int
    out: Path | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """The table's columns, in order."""
        metric_cols = (
            _REGRESSION_COLUMNS if self.task.kind == "regression" else _CLASSIFICATION_COLUMNS
        )
        return ["method", *metric_cols, *_TIME_COLUMNS]

    def _cells(self) -> list[list[str]]:
        return [[_fmt(row.get(c), c) for c in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured markdown (numbers right-aligned)."""
        headers = [_HEADERS[c] for c in self.columns]
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(":---" if c == "method" else "---:" for c in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells()]
        return "\n".join(lines) + "\n"

    def format_table(self) -> str:
        """The table as fixed-width text."""
        headers = [_HEADERS[c] for c in self.columns]
        cells = self._cells()
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

        def line(values: list[str]) -> str:
            parts = [
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(values, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(headers), rule, *(line(r) for r in cells)]) + "\n"

    def print(self, file: TextIO | None = None) -> None:
        """Print a title line and the fixed-width table (to stdout by default)."""
        file = sys.stdout if file is None else file
        units = (
            " (regression metrics in original y units)" if self.task.kind == "regression" else ""
        )
        print(
            f"{self.task.name}: {self.task.kind}, {self.task.data.num_train} train / "
            f"{self.task.data.num_test} test points, seed {self.seed}{units}",
            file=file,
        )
        print(self.format_table(), end="", file=file)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary: task, settings, rows, per-method info, versions."""
        import bayesdl

        data = self.task.data
        return {
            "task": {
                "name": self.task.name,
                "kind": self.task.kind,
                "description": self.task.description,
                "num_train": data.num_train,
                "num_test": data.num_test,
                "input_dim": data.input_dim,
            },
            "seed": self.seed,
            "settings": dataclasses.asdict(self.settings),
            "columns": self.columns,
            "rows": [{k: _json_value(v) for k, v in row.items()} for row in self.rows],
            "methods": {
                name: {k: _json_value(v) for k, v in out.info.items()}
                for name, out in self.outputs.items()
            },
            "figures": [p.name for p in self.figures],
            "versions": {
                "bayesdl": bayesdl.__version__,
                "torch": torch.__version__,
                "pyro": pyro.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "device": str(data.x_train.device),
            "num_threads": torch.get_num_threads(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN / inf
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Tensor) and v.numel() == 1:
        return _json_value(float(v))
    return str(v)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    # a per-process name (not mkstemp, whose files are private): the report stays readable
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _report_markdown(result: CompareResult) -> str:
    task, data, s = result.task, result.task.data, result.settings
    lines = [
        f"# bayesdl compare: {task.name}",
        "",
        f"- task: `{task.name}` ({task.kind}), {data.num_train} training / {data.num_test} "
        f"test points, {data.input_dim} input dimension(s)"
        + (f", {data.num_classes} classes" if task.kind == "classification" else ""),
        f"- model: {task.description}",
        f"- methods: {', '.join('`' + r['method'] + '`' for r in result.rows)}; seed {result.seed}",
        f"- budget: {'smoke (a few steps)' if s.smoke else 'default'}"
        + (f", {s.num_epochs} epochs" if s.num_epochs else "")
        + (f", {s.num_samples} predictive samples" if s.num_samples else ""),
    ]
    if task.name == "toy1d":
        lo, hi = data.extra["gap"]
        lines.append(f"- the training inputs leave a gap at x ∈ [{lo:.2f}, {hi:.2f}]")
    lines += ["", "## Test metrics", ""]
    if task.kind == "regression":
        lines.append(
            "RMSE and NLL are in the original units of y. NLL is the Gaussian NLL of the "
            "moment-matched predictive; NLL (mixture) scores the mixture of the per-sample "
            "Gaussians; 95% cover is the fraction of test targets inside mean ± 1.96 std."
        )
    else:
        lines.append(
            "NLL is the mean negative log predictive probability of the true class; ECE uses 15 "
            "equal-width confidence bins; Brier is the mean squared error of the probabilities."
        )
    lines += ["Times are wall-clock seconds.", "", result.to_markdown().rstrip("\n")]
    for name, out in result.outputs.items():
        facts = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={_json_value(v)}"
            for k, v in out.info.items()
        )
        if facts:
            lines.append(f"\n- `{name}`: {facts}")
    if result.figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in result.figures]
    lines += ["", "Machine-readable results: [results.json](results.json)", ""]
    return "\n".join(lines)


def write_report(result: CompareResult, out: str | os.PathLike) -> Path:
    """Write the report folder: figures, ``results.json`` and, last, ``report.md``.

    Every file is written to a temporary name and renamed into place, and ``report.md`` is
    written only after everything else succeeded, so a crash never leaves a half-written or
    stale-but-new-looking report.

    Args:
        result: a :class:`CompareResult`.
        out: the folder (created if needed; files of the same names are replaced).

    Returns:
        the folder's path; ``result.out`` and ``result.figures`` are updated.
    """
    from bayesdl import _plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if result.task.is_1d_regression:
        figures.append(_plots.plot_predictive_bands(result.task, result.outputs, out / "bands.png"))
    if result.task.kind == "classification":
        figures.append(
            _plots.plot_reliability(result.task, result.outputs, out / "reliability.png")
        )
    result.figures = figures
    result.out = out
    _atomic_write_text(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    _atomic_write_text(out / "report.md", _report_markdown(result))
    return out


# ============================================================================================
# compare
# ============================================================================================


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _method_names(methods: str | Sequence[str] | None) -> list[str]:
    if methods is None:
        names = list(available_methods())
    elif isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    elif isinstance(methods, Sequence) and all(isinstance(m, str) for m in methods):
        names = list(methods)
    else:
        raise TypeError(f"methods must be a name, a list of names or None, got {methods!r}")
    if not names:
        raise ValueError("methods is empty; give at least one method name")
    duplicates = sorted({m for m in names if names.count(m) > 1})
    if duplicates:
        raise ValueError(f"methods lists {', '.join(map(repr, duplicates))} more than once")
    for name in names:
        get_method(name)  # raises for an unknown name, listing the registered ones
    return names


def compare(
    task: str | Task,
    methods: str | Sequence[str] | None = None,
    *,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    smoke: bool = False,
    num_epochs: int | None = None,
    num_samples: int | None = None,
    progress: bool | None = None,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    prior: str = "default",
) -> CompareResult:
    """Run several inference methods on one task and score them on its test set.

    Args:
        task: a task name (see :func:`available_tasks`; split 0) or a :class:`Task`.
        methods: method names (a list or a comma-separated string); default: every
            registered method, in registration order.
        seed: seed given to every method (``>= 0``); same seed, same numbers on one device.
        out: when given, write the report folder there (see :func:`write_report`).
        smoke: tiny budget for tests (a few steps per method).
        num_epochs: override every method's training length (epochs).
        num_samples: override the number of posterior / predictive samples.
        progress: progress bars in :func:`~bayesdl.infer.fit` (``None``: automatic, honouring
            ``BAYESDL_PROGRESS``).
        num_threads: run with this many torch CPU threads (restored afterwards); ``None``
            leaves the setting alone. Small networks run fastest on one thread.
        log: called with a one-line message before and after each method (e.g. ``print``).
        prior: the weight prior, one of :data:`PRIOR_NAMES` (see :func:`with_prior`);
            hierarchical priors need sampler methods (``sghmc``, ``sgld``, ``nuts``).

    Returns:
        a :class:`CompareResult`; ``result.print()`` shows the table.

    Raises:
        ValueError: unknown task or method names, duplicate methods, bad numbers.

    Example:
        >>> result = compare("toy1d", "map,mfvi", smoke=True, progress=False)
        >>> [row["method"] for row in result.rows]
        ['map', 'mfvi']
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if num_threads is not None and (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, numbers.Integral)
        or num_threads <= 0
    ):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path or None, got {type(out).__name__}")
    if log is not None and not callable(log):
        raise TypeError(f"log must be callable or None, got {type(log).__name__}")
    settings = CompareSettings(
        smoke=bool(smoke), num_epochs=num_epochs, num_samples=num_samples, progress=progress
    )
    names = _method_names(methods)
    if not isinstance(task, Task):
        task = load_task(task)
    seed = int(seed)
    if prior not in PRIOR_NAMES:
        raise ValueError(f"unknown prior {prior!r}; available priors: {', '.join(PRIOR_NAMES)}")
    if "hierarchical" in prior:
        bad = [n for n in names if n not in _HIERARCHICAL_METHODS]
        if bad:
            raise ValueError(
                f"prior {prior!r} has precision sites that only {_HIERARCHICAL_METHODS} sample; "
                f"drop the method(s) {bad}"
            )
    task = with_prior(task, prior, smoke=bool(smoke), seed=seed)
    rows: list[dict[str, Any]] = []
    outputs: dict[str, MethodOutput] = {}
    with _torch_threads(num_threads):
        for i, name in enumerate(names, 1):
            if log is not None:
                log(f"[{i}/{len(names)}] {name} on {task.name} ...")
            output = get_method(name)(task, seed=seed, settings=settings)
            prediction = _check_prediction(name, task, output)
            row: dict[str, Any] = {"method": name, **_score(task, prediction)}
            row["fit_time"] = float(output.fit_time)
            row["predict_time"] = float(output.predict_time)
            rows.append(row)
            outputs[name] = output
            if log is not None:
                log(
                    f"[{i}/{len(names)}] {name} done: fit {output.fit_time:.1f} s, "
                    f"predict {output.predict_time:.2f} s"
                )
    result = CompareResult(task, rows, outputs, settings, seed)
    if out is not None:
        write_report(result, out)
    return result

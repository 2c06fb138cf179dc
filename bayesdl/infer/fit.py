"""The SVI fit loop: minibatches, module-local parameters, checkpoints, progress, callbacks."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.util import get_rng_state, set_rng_state
from torch import Tensor, nn

from bayesdl._progress import progress_bar
from bayesdl._validation import check_finite, check_positive_int, check_tensor
from bayesdl.handlers.flipout_messenger import FlipoutMessenger
from bayesdl.handlers.kl_scale_messenger import KLScaleMessenger
from bayesdl.handlers.local_reparam_messenger import LocalReparamMessenger
from bayesdl.infer._module_local import prepare_module_local
from bayesdl.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesdl.infer.mean_field_elbo import MeanFieldELBO

_REPARAM = {"local": LocalReparamMessenger, "flipout": FlipoutMessenger}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the term(s) responsible."""


@dataclass
class FitState:
    """What a callback sees after each step.

    Attributes:
        step: number of optimisation steps taken so far (1 after the first step).
        epoch: current epoch (0-based).
        loss: this step's loss as a 0-dim tensor (on the model's device; no host sync).
        model, guide, optimizer: the objects being fitted.
    """

    step: int
    epoch: int
    loss: Tensor
    model: Any
    guide: Any
    optimizer: torch.optim.Optimizer


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        losses: the loss of every step taken (over all runs when resumed).
        num_steps: steps taken in total.
        elapsed: wall-clock seconds of this call.
        resumed_from: the step a resumed run started from (0 for a fresh run).
    """

    losses: list[float] = field(default_factory=list)
    num_steps: int = 0
    elapsed: float = 0.0
    resumed_from: int = 0


def kl_warmup(num_steps: int, *, start: float = 0.0) -> Callable[[int], float]:
    """A linear KL-annealing schedule from ``start`` to 1 over ``num_steps`` steps.

    Example:
        >>> from bayesdl.infer import kl_warmup
        >>> schedule = kl_warmup(100)
        >>> schedule(0), schedule(49), schedule(1000)
        (0.01, 0.5, 1.0)
    """
    check_positive_int(num_steps, "num_steps")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"start must be in [0, 1), got {start}")

    def schedule(step: int) -> float:
        return min(1.0, start + (1.0 - start) * (step + 1) / num_steps)

    return schedule


def _parameters(*objs: Any) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for obj in objs:
        if isinstance(obj, nn.Module):
            for p in obj.parameters():
                if p.requires_grad:
                    seen.setdefault(id(p), p)
    return list(seen.values())


def _state_dict(obj: Any) -> dict[str, Tensor] | None:
    return obj.state_dict() if isinstance(obj, nn.Module) else None


class _TensorBatches:
    """Seeded minibatches over in-memory tensors: the order of epoch ``e`` depends only on
    ``(seed, e)``, so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, tensors: Sequence[Tensor], batch_size: int | None, seed: int):
        self.tensors = tensors
        self.num_data = int(tensors[0].shape[0])
        self.batch_size = self.num_data if batch_size is None else min(batch_size, self.num_data)
        self.seed = seed
        self.steps_per_epoch = math.ceil(self.num_data / self.batch_size)
        self._epoch = -1
        self._perm: Tensor | None = None

    def batch(self, step: int) -> tuple[int, tuple[Tensor, ...]]:
        epoch, b = divmod(step, self.steps_per_epoch)
        if self.batch_size == self.num_data:
            return epoch, tuple(self.tensors)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_data, generator=g).to(self.tensors[0].device)
            self._epoch = epoch
        idx = self._perm[b * self.batch_size : (b + 1) * self.batch_size]
        return epoch, tuple(t[idx] for t in self.tensors)


class _LoaderBatches:
    """Batches from a ``DataLoader`` (or any re-iterable of tuples). A resumed run skips the
    batches already seen in the current epoch; their order is the loader's own."""

    def __init__(self, loader: Iterable):
        self.loader = loader
        try:
            self.steps_per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError("data must be a tuple of tensors or a sized DataLoader") from e
        if self.steps_per_epoch == 0:
            raise ValueError("data loader yields no batches")
        self._epoch = -1
        self._it = None
        self._next_b = 0

    def batch(self, step: int) -> tuple[int, tuple[Tensor, ...]]:
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch or b < self._next_b:
            self._it = iter(self.loader)
            self._epoch, self._next_b = epoch, 0
        while self._next_b < b:  # skip batches consumed before a resume
            next(self._it)
            self._next_b += 1
        item = next(self._it)
        self._next_b += 1
        return epoch, tuple(item) if isinstance(item, (tuple, list)) else (item,)

    @property
    def num_data(self) -> int | None:
        dataset = getattr(self.loader, "dataset", None)
        return len(dataset) if dataset is not None else None


def _check_dataset_size(model: Any, num_data: int | None, batched: bool) -> None:
    likelihood = getattr(model, "likelihood", None)
    size = getattr(likelihood, "dataset_size", None)
    if likelihood is None or num_data is None:
        return
    if size is None and batched:
        raise ValueError(
            f"the likelihood has dataset_size=None but the data ({num_data} points) is fed in "
            f"minibatches; pass dataset_size={num_data} to the likelihood so the minibatch "
            "log-likelihood is scaled by N/B"
        )
    if size is not None and size != num_data:
        raise ValueError(
            f"the likelihood's dataset_size={size} does not match the {num_data} training points"
        )


def _make_batches(data: Any, batch_size: int | None, seed: int) -> _TensorBatches | _LoaderBatches:
    if isinstance(data, Tensor):
        data = (data,)
    if isinstance(data, (tuple, list)):
        if not data:
            raise ValueError("data must hold at least one tensor")
        for i, t in enumerate(data):
            check_tensor(t, f"data[{i}]")
            check_finite(t, f"data[{i}]")
        n = data[0].shape[0]
        for i, t in enumerate(data):
            if t.dim() == 0 or t.shape[0] != n:
                raise ValueError(
                    f"data tensors must share their first dimension: data[0] has {n} rows, "
                    f"data[{i}] has shape {tuple(t.shape)}"
                )
        return _TensorBatches(tuple(data), batch_size, seed)
    if batch_size is not None:
        raise ValueError("batch_size applies to tensor data; a DataLoader sets its own")
    return _LoaderBatches(data)


def _diagnose(model: Any, guide: Any, args: tuple) -> list[str]:
    """Names of the non-finite terms of the loss at the current parameters."""
    problems = []
    for owner, obj in (("model", model), ("guide", guide)):
        if isinstance(obj, nn.Module):
            for name, p in obj.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    problems.append(f"{owner} parameter {name!r} is not finite")
    try:
        with torch.no_grad(), poutine.block():
            guide_tr = poutine.trace(guide).get_trace(*args)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    except Exception as e:  # the failure itself is the diagnosis
        return problems + [f"evaluating the model raised {type(e).__name__}: {e}"]
    for kind, tr in (("guide", guide_tr), ("model", model_tr)):
        for name, node in tr.nodes.items():
            if node["type"] != "sample":
                continue
            lp = node["fn"].log_prob(node["value"]).sum()
            if not bool(torch.isfinite(lp)):
                if kind == "guide":
                    term = "guide log-density (entropy term)"
                elif node["is_observed"]:
                    term = "log-likelihood (data term)"
                else:
                    term = "prior log-density (KL term)"
                problems.append(f"{term} of site {name!r} is {lp.item()}")
    return problems


def fit(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    num_epochs: int | None = None,
    num_steps: int | None = None,
    batch_size: int | None = None,
    loss: ELBO | None = None,
    num_particles: int = 1,
    optim: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    lr: float = 1e-2,
    kl_weight: float | Callable[[int], float] = 1.0,
    reparam: str | None = None,
    handlers: Sequence[Messenger] = (),
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int | None = None,
    sync_every: int = 50,
    progress: bool | None = None,
) -> FitResult:
    """Fit a guide (and the model's deterministic parameters) by stochastic variational inference.

    Runs with Pyro's module-local parameters: every fitted object is an ``nn.Module`` whose
    ``state_dict`` is its whole state, nothing goes to the global param store, and several
    models can be fitted side by side.

    Args:
        model: a Pyro model ``model(*batch)``, typically a :class:`~bayesdl.nn.BNN`.
        guide: a guide ``guide(*batch)``: a bayesdl guide or any Pyro autoguide.
        data: a tuple of tensors ``(x, y)`` (rows are data points) or a sized ``DataLoader``
            yielding such tuples.
        num_epochs: passes over the data (give this or ``num_steps``; default 100 epochs).
        num_steps: total optimisation steps.
        batch_size: minibatch size for tensor data (default: full batch).
        loss: a Pyro ELBO (default :class:`~bayesdl.infer.MeanFieldELBO`, i.e.
            ``TraceMeanField_ELBO`` done faster, with ``num_particles`` vectorised particles and
            the closed-form KL where available).
        num_particles: particles of the default loss.
        optim: ``params -> optimizer`` (default ``torch.optim.Adam(params, lr=lr)``).
        lr: learning rate of the default optimizer.
        kl_weight: weight of the KL term, a float (tempering) or ``step -> float`` (annealing,
            see :func:`kl_warmup`).
        reparam: ``"local"`` (local reparameterisation) or ``"flipout"`` for Gaussian Linear /
            Conv2d weights, or ``None``.
        handlers: extra Pyro messengers applied around guide and model at each step.
        callbacks: called with a :class:`FitState` after every step; returning ``True`` stops.
        checkpoint: file to write atomically every ``checkpoint_every`` steps and at the end.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` if it exists (same seed gives the same result as
            an uninterrupted run, for tensor data).
        seed: seeds Pyro/torch and the minibatch order.
        sync_every: on CUDA, steps between host syncs (loss check, progress update).
        progress: show a progress bar (default: on a TTY unless ``BAYESDL_PROGRESS=0``).

    Returns:
        a :class:`FitResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the message names the terms responsible and
            the last checkpoint on disk is left intact.

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import MeanFieldGuide
        >>> from bayesdl.infer import fit
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> x, y = torch.randn(64, 2), torch.randn(64)
        >>> bnn = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(64))
        >>> result = fit(bnn, MeanFieldGuide(bnn), (x, y), num_steps=5, batch_size=16)
        >>> len(result.losses)
        5
    """
    t0 = time.perf_counter()
    if num_epochs is not None and num_steps is not None:
        raise ValueError("give num_epochs or num_steps, not both")
    check_positive_int(num_epochs, "num_epochs", allow_none=True)
    check_positive_int(num_steps, "num_steps", allow_none=True)
    check_positive_int(batch_size, "batch_size", allow_none=True)
    check_positive_int(num_particles, "num_particles")
    check_positive_int(checkpoint_every, "checkpoint_every")
    check_positive_int(sync_every, "sync_every")
    if reparam is not None and reparam not in _REPARAM:
        raise ValueError(f"reparam must be None, 'local' or 'flipout', got {reparam!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if not callable(model) or not callable(guide):
        raise TypeError("model and guide must be callables (Pyro model and guide)")

    state = None
    if resume and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
    if seed is not None:
        pyro.set_rng_seed(seed)
    data_seed = (
        state["data_seed"]
        if state is not None
        else (seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
    )
    batches = _make_batches(data, batch_size, data_seed)
    _check_dataset_size(
        model, batches.num_data, batches.steps_per_epoch > 1 or batch_size is not None
    )
    total = num_steps if num_steps is not None else (num_epochs or 100) * batches.steps_per_epoch

    if loss is None:
        loss = MeanFieldELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )
    elif not isinstance(loss, ELBO):
        raise TypeError(f"loss must be a pyro.infer.ELBO, got {type(loss).__name__}")

    messengers: list[Messenger] = list(handlers)
    reparam_messenger = None
    if reparam is not None:
        reparam_messenger = _REPARAM[reparam]()
        messengers.append(reparam_messenger)
    kl_messenger = None
    if callable(kl_weight) or kl_weight != 1.0:
        kl_messenger = KLScaleMessenger(1.0 if callable(kl_weight) else kl_weight)
        messengers.append(kl_messenger)

    def loss_fn(*args: Tensor) -> Tensor:
        fn = loss.differentiable_loss
        for m in messengers:
            fn = m(fn)
        return fn(model, guide, *args)

    prepare_module_local(model, guide)
    with pyro.settings.context(module_local_params=True):
        start = 0 if state is None else int(state["step"])
        if state is None:
            # lazily-built guides (autoguides) create their parameters on the first call
            with torch.no_grad(), poutine.block():
                poutine.trace(guide).get_trace(*batches.batch(0)[1])
        params = _parameters(model, guide)
        if not params:
            raise ValueError("model and guide have no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=lr) if optim is None else optim(params)
        history = torch.full((total,), float("nan"))
        if state is not None:
            if isinstance(model, nn.Module) and state["model"] is not None:
                model.load_state_dict(state["model"])
            if isinstance(guide, nn.Module) and state["guide"] is not None:
                guide.load_state_dict(state["guide"])
            optimizer.load_state_dict(state["optim"])
            n = min(len(state["losses"]), total)
            history[:n] = torch.as_tensor(state["losses"][:n])
            set_rng_state(state["rng"])

        def write_checkpoint(step: int, args: tuple) -> None:
            # never overwrite the last good checkpoint with non-finite parameters
            if not all(bool(torch.isfinite(p).all()) for p in params):
                raise NonFiniteLossError(
                    f"parameters became non-finite by step {step}: "
                    + "; ".join(_diagnose(model, guide, args))
                    + f"; the last good checkpoint is {os.fspath(checkpoint)!r}"
                )
            save_checkpoint(
                {
                    "step": step,
                    "data_seed": data_seed,
                    "model": _state_dict(model),
                    "guide": _state_dict(guide),
                    "optim": optimizer.state_dict(),
                    "rng": get_rng_state(),
                    "losses": history[:step].tolist(),
                },
                checkpoint,
            )

        device_losses: list[Tensor] = []
        checked = start
        bar = progress_bar(total, desc="fit", progress=progress, initial=start)

        def flush(step: int, args: tuple) -> None:
            """Move pending losses to the host and stop on a non-finite one."""
            nonlocal checked, device_losses
            if not device_losses:
                return
            values = torch.stack(device_losses).detach().to("cpu", torch.float64)
            history[checked:step] = values.to(history.dtype)
            device_losses = []
            bad = (~torch.isfinite(values)).nonzero()
            if len(bad):
                at = checked + int(bad[0]) + 1
                problems = _diagnose(model, guide, args) or ["no single term; check the loss"]
                where = (
                    f"; the last good checkpoint is {os.fspath(checkpoint)!r}"
                    if checkpoint is not None and os.path.exists(checkpoint)
                    else ""
                )
                raise NonFiniteLossError(
                    f"the loss became {values[int(bad[0])].item()} at step {at}: "
                    + "; ".join(problems)
                    + where
                )
            checked = step
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{values[-1].item():.4g}")

        step = start
        try:
            while step < total:
                epoch, args = batches.batch(step)
                if kl_messenger is not None and callable(kl_weight):
                    kl_messenger.scale = float(kl_weight(step))
                try:
                    value = loss_fn(*args)
                except ValueError as e:
                    # distribution validation rejects NaN parameters before the loss exists
                    if all(bool(torch.isfinite(p).all()) for p in params):
                        raise
                    raise NonFiniteLossError(
                        f"parameters became non-finite before step {step + 1}: "
                        + "; ".join(_diagnose(model, guide, args))
                        + (
                            f"; the last good checkpoint is {os.fspath(checkpoint)!r}"
                            if checkpoint is not None and os.path.exists(checkpoint)
                            else ""
                        )
                    ) from e
                device_losses.append(value.detach())
                on_cpu = value.device.type == "cpu"
                if on_cpu or (step + 1 - checked) >= sync_every:
                    if not bool(torch.isfinite(value)):
                        flush(step + 1, args)
                if step == start and reparam_messenger is not None:
                    if reparam_messenger.num_engaged == 0:
                        warnings.warn(
                            f"reparam={reparam!r} found no nn.Linear/nn.Conv2d weight with a "
                            "Normal guide distribution (autoguides such as AutoNormal sample "
                            "through auxiliary sites); weights are sampled as usual",
                            UserWarning,
                            stacklevel=2,
                        )
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                step += 1
                if on_cpu or step - checked >= sync_every:
                    flush(step, args)
                stop = False
                for cb in callbacks:
                    stop = (
                        bool(cb(FitState(step, epoch, value.detach(), model, guide, optimizer)))
                        or stop
                    )
                if checkpoint is not None and (
                    step % checkpoint_every == 0 or step == total or stop
                ):
                    flush(step, args)
                    write_checkpoint(step, args)
                if stop:
                    break
            flush(step, args if step > start else ())
        finally:
            bar.close()
    return FitResult(
        losses=history[:step].tolist(),
        num_steps=step,
        elapsed=time.perf_counter() - t0,
        resumed_from=start,
    )

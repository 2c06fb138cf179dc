"""Sparse subspace variational inference: the schedule that moves each layer's active subspace.

SSVI trains a :class:`~bayesdl.guides.SparseMeanFieldGuide` with ordinary SVI steps and, every
``update_every`` steps until ``end_step``, swaps part of each sparse layer's active set:

1. drop the ``floor(zeta_t * s_l)`` active entries with the lowest removal score
   (:mod:`bayesdl.infer.removal_scores`), where ``zeta_t = alpha / 2 * (1 + cos(pi t / T_end))``
   decays from ``alpha`` (``drop_fraction``) to 0;
2. activate as many entries, among those not kept, with the largest ``|dL/dM|``: the gradient
   of the loss with respect to the *dense* mean ``M`` (inactive entries included), which the
   backward pass of the training step computes anyway and the guide keeps
   (``guide.retain_dense_grad``);
3. start the new entries at ``mu = 0`` and ``rho`` = the layer's mean ``rho`` over the kept
   entries (``grow_scale="mean"``) or ``softplus^-1(1e-6)`` (``"small"``);
4. zero the optimiser's per-entry state (Adam's moments, SGD's momentum) of the moved slots.

With :func:`bayesdl.infer.fit` the scheduler is a callback (``fit(..., callbacks=[sched])``):
it runs after the optimiser step of every step ``t`` with ``t % update_every == 0`` and
``t < end_step``, using that step's dense gradient. (In the authors' code the mask update
replaces that step's optimiser update; here it follows it.)

References:
    J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse Subspace
    Variational Inference*, ICLR 2024; U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen,
    *Rigging the Lottery: Making All Tickets Winners* (RigL), ICML 2020.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bayesdl._validation import check_positive_int
from bayesdl.guides.sparse_mean_field_guide import SparseMeanFieldGuide
from bayesdl.infer.removal_scores import RemovalScoreFn, get_removal_score
from bayesdl.infer.removal_scores import removal_score as _score

__all__ = ["SubspaceScheduler", "tempered_kl_warmup"]

_GROW_SCALES = ("mean", "small")
_SMALL_SCALE = 1e-6


def _check_fraction(value: Any, name: str, *, low_open: bool, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = (0.0 < v if low_open else 0.0 <= v) and v <= high
    if not ok or math.isnan(v):
        interval = f"(0, {high}]" if low_open else f"[0, {high}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


class SubspaceScheduler:
    """The alternating subspace update of SSVI, as a :func:`~bayesdl.infer.fit` callback.

    Args:
        guide: the :class:`~bayesdl.guides.SparseMeanFieldGuide` being fitted. The scheduler
            switches on its ``retain_dense_grad``.
        num_steps: total training steps ``T`` (``end_step`` defaults to a fraction of it).
        update_every: ``Delta T``, steps between subspace updates (``> 0``; 100 in the paper).
        end_step: last step ``T_end`` (exclusive) at which updates happen; default
            ``floor(end_fraction * num_steps)``.
        end_fraction: ``T_end / T`` when ``end_step`` is not given (0.75 in the paper).
        drop_fraction: ``alpha``, the fraction of active entries swapped at the first update,
            in ``[0, 1]`` (0.3 in the paper).
        removal_score: a name of :data:`~bayesdl.infer.removal_scores.REMOVAL_SCORES` or a
            callable ``(loc, scale) -> score`` (larger = keep); default ``"SNR_mean_abs"``.
        grow_scale: initial ``sigma`` of new entries: ``"mean"`` (the layer's mean ``rho`` over
            kept entries) or ``"small"`` (``1e-6``).

    Attributes:
        history: one dict per update: ``step``, ``drop_fraction`` and ``moved`` (entries moved
            per site).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import SparseMeanFieldGuide
        >>> from bayesdl.infer import SubspaceScheduler, fit
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import CategoricalLikelihood
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(),
        ...                           torch.nn.Linear(32, 3))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> bnn = BNN(net, LayerwiseNormalPrior(), CategoricalLikelihood(64))
        >>> guide = SparseMeanFieldGuide(bnn, density=0.25)
        >>> sched = SubspaceScheduler(guide, num_steps=40, update_every=10)
        >>> _ = fit(bnn, guide, (x, y), num_steps=40, batch_size=16, reparam="local",
        ...         callbacks=[sched], progress=False)
        >>> [h["step"] for h in sched.history], guide.num_active("2.weight")
        ([10, 20], 24)

    References:
        J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse
        Subspace Variational Inference*, ICLR 2024.
    """

    def __init__(
        self,
        guide: SparseMeanFieldGuide,
        num_steps: int | None = None,
        *,
        update_every: int = 100,
        end_step: int | None = None,
        end_fraction: float = 0.75,
        drop_fraction: float = 0.3,
        removal_score: str | RemovalScoreFn = "SNR_mean_abs",
        grow_scale: str = "mean",
    ):
        if not isinstance(guide, SparseMeanFieldGuide):
            raise TypeError(
                f"guide must be a bayesdl.guides.SparseMeanFieldGuide, got {type(guide).__name__}"
            )
        if isinstance(update_every, bool) or not isinstance(update_every, numbers.Integral):
            raise TypeError(
                f"update_every (Delta T) must be a positive int, got {type(update_every).__name__}"
            )
        if update_every <= 0:
            raise ValueError(f"update_every (Delta T) must be a positive int, got {update_every}")
        check_positive_int(num_steps, "num_steps", allow_none=True)
        check_positive_int(end_step, "end_step", allow_none=True)
        end_fraction = _check_fraction(end_fraction, "end_fraction", low_open=True)
        drop_fraction = _check_fraction(drop_fraction, "drop_fraction", low_open=False)
        if end_step is None:
            if num_steps is None:
                raise ValueError("give num_steps (total training steps) or end_step")
            end_step = max(1, math.floor(end_fraction * num_steps))
        if grow_scale not in _GROW_SCALES:
            raise ValueError(f"grow_scale must be one of {_GROW_SCALES}, got {grow_scale!r}")
        self.guide = guide
        self.update_every = int(update_every)
        self.end_step = int(end_step)
        self.drop_fraction = drop_fraction
        self.score_fn: RemovalScoreFn = get_removal_score(removal_score)
        self.removal_score = removal_score
        self.grow_scale = grow_scale
        self.history: list[dict[str, Any]] = []
        # the dense means (and their gradients) are kept on the steps before an update; on
        # from the first step seen, so that a resumed fit also finds them
        guide.retain_dense_grad = True

    # ------------------------------------------------------------------ schedule
    def drop_fraction_at(self, step: int) -> float:
        """``zeta_t = alpha / 2 * (1 + cos(pi t / T_end))`` (0 from ``T_end`` on)."""
        if step >= self.end_step:
            return 0.0
        return 0.5 * self.drop_fraction * (1.0 + math.cos(math.pi * step / self.end_step))

    def is_update_step(self, step: int) -> bool:
        """Whether the subspace is updated after training step ``step`` (1-based count)."""
        return step > 0 and step % self.update_every == 0 and step < self.end_step

    def __call__(self, state: Any) -> None:
        """The :func:`~bayesdl.infer.fit` callback: update after the due steps."""
        if self.is_update_step(state.step):
            self.update(state.step, state.optimizer)
        self.guide.retain_dense_grad = self.is_update_step(state.step + 1)

    # ------------------------------------------------------------------ the update
    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Drop and regrow ``floor(zeta_step * s_l)`` entries of every sparse site.

        Args:
            step: the training step (sets the drop fraction).
            optimizer: whose per-entry state of the moved slots is zeroed (``None``: none).

        Returns:
            the number of entries moved per site.

        Raises:
            RuntimeError: the guide holds no dense gradient (no backward since the last one).
        """
        zeta = self.drop_fraction_at(step)
        moved: dict[str, int] = {}
        guide = self.guide
        for name in guide.sparse_site_names:
            s, n = guide.num_active(name), guide.num_entries(name)
            num_drop = 0 if s == n else math.floor(zeta * s)
            grad = guide.dense_loc_grad(name).reshape(-1)
            moved[name] = num_drop
            if num_drop == 0:
                continue
            loc = guide.active_loc(name)
            raw = guide.active_raw_scale(name)
            scores = _score(self.score_fn, loc, F.softplus(raw))
            # the lowest scores go; ties broken by slot order (topk is deterministic)
            drop = torch.topk(scores, num_drop, largest=False).indices
            keep = torch.ones(s, dtype=torch.bool, device=loc.device)
            keep[drop] = False
            index = guide.active_indices(name)
            grow_score = grad.abs().to(torch.float64)
            grow_score[index[keep]] = -math.inf
            new = torch.topk(grow_score, num_drop).indices
            if self.grow_scale == "mean":
                new_raw = raw[keep].mean()
            else:
                new_raw = raw.new_tensor(_SMALL_SCALE).expm1().log()
            guide.replace_active(name, drop, new, raw_scale=new_raw)
            if optimizer is not None:
                _zero_state(optimizer, (loc, raw), drop)
        guide.clear_dense_grads()
        self.history.append({"step": int(step), "drop_fraction": zeta, "moved": moved})
        return moved


def _zero_state(optimizer: torch.optim.Optimizer, params: tuple[Tensor, ...], slots: Tensor):
    """Zero every per-entry state tensor (same shape as its parameter) at ``slots``."""
    for p in params:
        state = optimizer.state.get(p)
        if not state:
            continue
        for value in state.values():
            if isinstance(value, Tensor) and value.shape == p.shape:
                value[slots] = 0


def tempered_kl_warmup(
    num_steps: int, *, kl_scale: float = 1.0, warmup_fraction: float = 0.5
) -> Callable[[int], float]:
    """SSVI's KL weight ``kappa * min(1, t / (warmup_fraction * T))`` for ``fit(kl_weight=...)``.

    A tempered ELBO (the KL multiplied by ``kl_scale = kappa``; 0.01 in the paper, with its
    very tight ``N(0, 0.005^2)`` prior) with a linear warm-up over the first
    ``warmup_fraction`` of the ``num_steps`` steps (half in the paper).

    Example:
        >>> from bayesdl.infer import tempered_kl_warmup
        >>> w = tempered_kl_warmup(100, kl_scale=0.1)
        >>> w(0), w(24), w(99)
        (0.002, 0.05, 0.1)
    """
    check_positive_int(num_steps, "num_steps")
    if isinstance(kl_scale, bool) or not isinstance(kl_scale, numbers.Real) or kl_scale <= 0:
        raise ValueError(f"kl_scale must be a positive number, got {kl_scale!r}")
    warmup_fraction = _check_fraction(warmup_fraction, "warmup_fraction", low_open=False)
    warm = warmup_fraction * num_steps
    kappa = float(kl_scale)

    def schedule(step: int) -> float:
        if warm <= 0:
            return kappa
        return kappa * min(1.0, (step + 1) / warm)

    return schedule

"""Shared plumbing of the VAE-family objectives: a Pyro ``ELBO`` over :class:`LocalTerms`."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import ELBO
from torch import Tensor

from bayesdl._validation import check_positive_int
from bayesdl.infer._local_terms import LocalTerms, local_terms
from bayesdl.infer.fit import NonFiniteLossError


class LocalObjective(ELBO):
    """Base class: a loss built from per-point log-densities of models with local latents.

    Subclasses implement :meth:`_loss` (the loss and its named terms from one
    :class:`LocalTerms`). This class gets the terms (the fast path of a
    :class:`~bayesdl.vae.VAE`, or Pyro traces otherwise), checks that the loss is finite
    (on CPU, where the check costs no device synchronisation; ``check_finite=True`` checks on
    any device) and names the term that is not, and provides Pyro's ``loss`` /
    ``loss_and_grads`` so :class:`pyro.infer.SVI` and :func:`bayesdl.infer.fit` can use it.
    """

    #: ask for closed-form KL terms
    _analytic_kl: bool = False
    #: evaluate log q with the guide's parameters held constant
    _detach_guide_params: bool = False

    def __init__(
        self,
        num_particles: int = 1,
        *,
        max_plate_nesting: int = 1,
        check_finite: bool | None = None,
    ):
        check_positive_int(num_particles, "num_particles")
        check_positive_int(max_plate_nesting, "max_plate_nesting")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.check_finite = check_finite
        # Pyro's ELBO counts the particle plate in max_plate_nesting; keep the user's value
        self.data_plate_nesting = max_plate_nesting

    def terms(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> LocalTerms:
        """The :class:`LocalTerms` of one minibatch (fast path or traced)."""
        return local_terms(
            model,
            guide,
            args,
            kwargs,
            self.num_particles,
            max_plate_nesting=self.data_plate_nesting,
            detach_guide_params=self._detach_guide_params,
            analytic_kl=self._analytic_kl,
        )

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any):
        raise NotImplementedError(
            f"{type(self).__name__} computes per-point terms itself; use differentiable_loss"
        )

    def _loss(self, terms: LocalTerms) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Tensor:
        """The loss as a differentiable 0-dim tensor (scaled to the whole data set).

        Raises:
            NonFiniteLossError: the loss is NaN or infinite; the message names the term.
        """
        loss, parts = self._loss(self.terms(model, guide, *args, **kwargs))
        check = loss.device.type == "cpu" if self.check_finite is None else self.check_finite
        if check and not bool(torch.isfinite(loss)):
            raise self._non_finite(loss, parts)
        return loss

    def _non_finite(self, loss: Tensor, parts: dict[str, Tensor]) -> NonFiniteLossError:
        bad = []
        for name, value in parts.items():
            finite = torch.isfinite(value.detach())
            if not bool(finite.all()):
                bad.append(f"the {name} term is non-finite ({int((~finite).sum())} value(s))")
        detail = "; ".join(bad) or "every term is finite but their combination is not"
        return NonFiniteLossError(f"the {type(self).__name__} loss is {loss.item()}: {detail}")

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The loss as a float (no gradient)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """Back-propagate the loss and return it as a float (:class:`pyro.infer.SVI` API)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


def particle_mean(t: Tensor) -> Tensor:
    """Mean over the particle dim of ``[K, B]`` (a ``[B]`` tensor is returned as is)."""
    return t.mean(0) if t.dim() == 2 else t

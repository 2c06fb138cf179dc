"""Effect handlers for Bayesian networks (one Messenger per file, lowercase factories here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from bayesdl.handlers.flipout_messenger import FlipoutMessenger
from bayesdl.handlers.kl_scale_messenger import KLScaleMessenger
from bayesdl.handlers.local_reparam_messenger import LocalReparamMessenger
from bayesdl.handlers.weight_noise_messenger import WeightNoiseMessenger

_F = TypeVar("_F", bound=Callable)


@overload
def local_reparam(fn: None = None, *, conv: str = "flipout") -> LocalReparamMessenger: ...
@overload
def local_reparam(fn: _F, *, conv: str = "flipout") -> _F: ...
def local_reparam(fn=None, *, conv="flipout"):
    """Local reparameterisation for Gaussian ``nn.Linear`` / ``nn.Conv2d`` weights of a BNN.

    Use as a context manager around guide and model, or wrap a callable that evaluates both.
    See :class:`LocalReparamMessenger` (``conv`` selects how convolutions are handled).
    """
    messenger = LocalReparamMessenger(conv=conv)
    return messenger if fn is None else messenger(fn)


@overload
def flipout(fn: None = None) -> FlipoutMessenger: ...
@overload
def flipout(fn: _F) -> _F: ...
def flipout(fn=None):
    """Flipout for Gaussian ``nn.Linear`` / ``nn.Conv2d`` weights of a BNN.

    See :class:`FlipoutMessenger`.
    """
    messenger = FlipoutMessenger()
    return messenger if fn is None else messenger(fn)


def kl_scale(fn=None, scale: float = 1.0):
    """Scale every latent site's log-density by ``scale`` (KL annealing / tempering).

    See :class:`KLScaleMessenger`.
    """
    messenger = KLScaleMessenger(scale)
    return messenger if fn is None else messenger(fn)


__all__ = [
    "FlipoutMessenger",
    "KLScaleMessenger",
    "LocalReparamMessenger",
    "WeightNoiseMessenger",
    "flipout",
    "kl_scale",
    "local_reparam",
]

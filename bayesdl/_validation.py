"""Argument checks shared by the package: each raises a ValueError/TypeError naming the argument."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor


def check_tensor(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> Tensor:
    """Check that ``value`` is a tensor with an allowed number of dimensions."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {tuple(value.shape)}"
            )
    return value


def check_finite(value: Tensor, name: str) -> Tensor:
    """Check that a floating tensor holds no NaN or infinity."""
    if value.is_floating_point() or value.is_complex():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite ({kind}) value(s); "
                "clean or impute the data first"
            )
    return value


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
    """Check that a number or tensor is positive (or non-negative with ``allow_zero``)."""
    if isinstance(value, Tensor):
        ok = bool((value >= 0).all()) if allow_zero else bool((value > 0).all())
        shown = f"a tensor with minimum {value.min().item():.4g}"
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = value >= 0 if allow_zero else value > 0
        shown = repr(value)
    else:
        raise TypeError(f"{name} must be a number or tensor, got {type(value).__name__}")
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {shown}")


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> None:
    """Check that ``value`` is a positive ``int`` (``None`` allowed with ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")

"""The 1-D "gap" regression toy of the functional-prior paper.

Training inputs are uniform on ``[-10, 10]`` except for a random gap covering 40 % of that
range; targets are one draw of a GP with an RBF kernel plus Gaussian noise, sampled *jointly*
at the training inputs and at a test grid on ``[-15, 15]``, so the test targets continue the
same function into the gap and beyond the data.

References:
    Tran, Rossi, Milios, Filippone. "All You Need is a Good Functional Prior for Bayesian Deep
    Learning." JMLR 23 (2022).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from bayesdl.data.splits import (
    RegressionData,
    _build_regression,
    _check_float_dtype,
    _check_non_negative_int,
)

__all__ = ["load_toy1d"]

_X_RANGE = (-10.0, 10.0)
_GAP_FRACTION = 0.4
_TEST_RANGE = (-15.0, 15.0)
_KERNEL_VARIANCE = 2.56  # amplitude 1.6
_KERNEL_LENGTHSCALE = 1.8
_NOISE_VARIANCE = 0.1


def _check_count(value: object, argname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname} must be at least {minimum}, got {value}")
    return int(value)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return lo + (hi - lo) * u


def _gap_inputs(num: int, generator: torch.Generator) -> tuple[Tensor, tuple[float, float]]:
    """``num`` inputs on ``_X_RANGE`` avoiding a random gap; returns ``(x [num], (lo, hi))``."""
    a, b = _X_RANGE
    width = _GAP_FRACTION * (b - a)
    gap_lo = float(_uniform(1, a, b - width, generator))
    gap_hi = gap_lo + width
    x = _uniform(num, a, b, generator)
    # Redraw the points inside the gap in the larger of the two remaining segments.
    seg = (a, gap_lo) if gap_lo - a >= b - gap_hi else (gap_hi, b)
    in_gap = (x >= gap_lo) & (x <= gap_hi)
    x[in_gap] = _uniform(int(in_gap.sum()), seg[0], seg[1], generator)
    return x, (gap_lo, gap_hi)


def _rbf(x: Tensor) -> Tensor:
    """RBF Gram matrix ``[n, n]`` of 1-D inputs ``[n]`` with the toy's hyper-parameters."""
    sq = (x[:, None] - x[None, :]).square()
    return _KERNEL_VARIANCE * torch.exp(-0.5 * sq / _KERNEL_LENGTHSCALE**2)


def _sample_gp(x: Tensor, generator: torch.Generator) -> Tensor:
    """One draw ``f [n]`` of the zero-mean RBF GP at ``x [n]`` (float64, jittered Cholesky)."""
    gram = _rbf(x)
    eye = torch.eye(x.shape[0], dtype=torch.float64)
    jitter = 1e-10 * _KERNEL_VARIANCE
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(gram + jitter * eye)
        if int(info) == 0:
            break
        jitter *= 10.0
    else:  # pragma: no cover - the Gram matrix of distinct-enough points is always fine
        raise RuntimeError("Cholesky of the toy GP covariance failed even with jitter 1e-3")
    z = torch.randn(x.shape[0], generator=generator, dtype=torch.float64)
    return chol @ z


def load_toy1d(
    *,
    seed: int = 0,
    num_train: int = 64,
    num_test: int = 100,
    dtype: torch.dtype = torch.float32,
) -> RegressionData:
    """The 1-D gap toy: GP draws at gapped training inputs and at a wide test grid.

    * ``num_train`` inputs ``x ~ U[-10, 10]``, except in a gap of width 8 (40 % of the range)
      whose start is uniform on ``[-10, 2]``; inputs falling in the gap are redrawn uniformly
      in the larger of the two remaining segments.
    * Test inputs: ``num_test`` evenly spaced points on ``[-15, 15]``.
    * Targets at train ∪ test inputs: ``y ~ N(0, K + 0.1 I)`` jointly, with ``K`` an RBF kernel
      of variance 2.56 (amplitude 1.6) and lengthscale 1.8, sampled in float64 through a
      jittered Cholesky factor.
    * ``x`` and ``y`` are z-scored with the *training* statistics.

    Randomness comes only from a :class:`torch.Generator` seeded with ``seed``; the global RNG
    is untouched, so the same seed always gives the same data set.

    Args:
        seed: Non-negative seed of the data set.
        num_train: Number of training points, at least 2.
        num_test: Number of grid points on ``[-15, 15]``, at least 2.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        A :class:`RegressionData` named ``"toy1d"`` with ``x_train [num_train, 1]``,
        ``y_train [num_train]``, ``x_test [num_test, 1]``, ``y_test [num_test]``; its
        ``extra`` holds ``{"gap": (lo, hi)}``, the gap in original ``x`` units, and
        ``"noise_variance"`` (0.1, original ``y`` units).

    Example:
        >>> data = load_toy1d(seed=1)
        >>> data.x_train.shape, data.x_test.shape
        (torch.Size([64, 1]), torch.Size([100, 1]))
        >>> lo, hi = data.extra["gap"]
        >>> round(hi - lo, 6)
        8.0
    """
    seed = _check_non_negative_int(seed, "seed")
    num_train = _check_count(num_train, "num_train", 2)
    num_test = _check_count(num_test, "num_test", 2)
    dtype = _check_float_dtype(dtype)

    generator = torch.Generator(device="cpu").manual_seed(seed)
    x_train, gap = _gap_inputs(num_train, generator)
    x_test = torch.linspace(*_TEST_RANGE, num_test, dtype=torch.float64)

    x_all = torch.cat([x_train, x_test])
    f_all = _sample_gp(x_all, generator)
    noise = torch.randn(x_all.shape[0], generator=generator, dtype=torch.float64)
    y_all = f_all + math.sqrt(_NOISE_VARIANCE) * noise

    return _build_regression(
        "toy1d",
        x_train[:, None],
        y_all[:num_train],
        x_test[:, None],
        y_all[num_train:],
        dtype,
        extra={"gap": gap, "noise_variance": _NOISE_VARIANCE},
    )

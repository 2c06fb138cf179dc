"""Containers for train/test data sets, seeded index splits and standardisation.

Every loader in :mod:`bayesdl.data` returns one of the two dataclasses defined here, so a
model or benchmark only has to know their fields:

* :class:`RegressionData` -- real inputs ``[N, D]``, real targets ``[N]``, both z-scored with
  statistics of the *training* part, plus those statistics to map predictions back.
* :class:`ClassificationData` -- real inputs ``[N, D]`` (z-scored the same way) and integer
  class labels ``[N]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ClassificationData",
    "RegressionData",
    "standardise",
    "train_test_split",
]


def _check_non_negative_int(value: Any, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be a non-negative int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{argname} must be a non-negative int, got {value}")
    return int(value)


def _check_fraction(value: Any, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argname} must be a float in (0, 1), got {type(value).__name__}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{argname} must be in (0, 1), got {value}")
    return float(value)


def _check_float_dtype(dtype: Any, argname: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{argname} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _move_extra(extra: dict[str, Any], device: Any, dtype: torch.dtype | None) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for key, value in extra.items():
        if isinstance(value, Tensor):
            value_dtype = dtype if value.is_floating_point() else None
            value = value.to(device=device, dtype=value_dtype, copy=True)
        moved[key] = value
    return moved


def _check_xy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> None:
    for argname, x in (("x_train", x_train), ("x_test", x_test)):
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"{argname} must be a 2-D tensor [N, D], got {_describe(x)}")
    for argname, y in (("y_train", y_train), ("y_test", y_test)):
        if not isinstance(y, Tensor) or y.dim() != 1:
            raise ValueError(f"{argname} must be a 1-D tensor [N], got {_describe(y)}")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"x_train and x_test must have the same number of columns, "
            f"got {x_train.shape[1]} and {x_test.shape[1]}"
        )
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(
            f"x_train and y_train must have the same length, "
            f"got {x_train.shape[0]} and {y_train.shape[0]}"
        )
    if x_test.shape[0] != y_test.shape[0]:
        raise ValueError(
            f"x_test and y_test must have the same length, "
            f"got {x_test.shape[0]} and {y_test.shape[0]}"
        )


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


@dataclass(eq=False)
class RegressionData:
    """A standardised regression data set with a train and a test part.

    Inputs and targets are z-scored with the statistics of the *training* part only; the test
    part uses the same statistics, so no information leaks from it. To map a prediction back to
    original units use ``y * y_std + y_mean`` (and ``x * x_std + x_mean`` for inputs).

    Attributes:
        name: Data set name, e.g. ``"concrete"``.
        x_train: Training inputs ``[N, D]``, standardised with the training statistics.
        y_train: Training targets ``[N]``, standardised with the training statistics.
        x_test: Test inputs ``[M, D]``, standardised with the *training* statistics.
        y_test: Test targets ``[M]``, standardised with the *training* statistics.
        x_mean: Per-column training mean of the inputs ``[D]`` (original units).
        x_std: Per-column training standard deviation ``[D]``; 1 for constant columns.
        y_mean: Training mean of the targets, a 0-dim tensor.
        y_std: Training standard deviation of the targets, a 0-dim tensor.
        extra: Loader-specific metadata (for example the gap of :func:`load_toy1d`, or the
            split indices of :func:`load_uci`). Tensors in it follow :meth:`to`.

    Instances compare by identity: tensor fields have no single truth value for ``==``.

    Example:
        >>> import torch
        >>> data = RegressionData(
        ...     "tiny", torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 2), torch.zeros(1),
        ...     torch.zeros(2), torch.ones(2), torch.tensor(0.0), torch.tensor(1.0))
        >>> data.num_train, data.num_test, data.input_dim
        (3, 1, 2)
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_xy(self.x_train, self.y_train, self.x_test, self.y_test)
        dim = self.x_train.shape[1]
        for argname in ("x_mean", "x_std"):
            value = getattr(self, argname)
            if not isinstance(value, Tensor) or tuple(value.shape) != (dim,):
                raise ValueError(f"{argname} must have shape ({dim},), got {_describe(value)}")
        for argname in ("y_mean", "y_std"):
            value = getattr(self, argname)
            if not isinstance(value, Tensor) or value.dim() != 0:
                raise ValueError(f"{argname} must be a 0-dim tensor, got {_describe(value)}")

    @property
    def num_train(self) -> int:
        """Number of training points ``N``."""
        return self.x_train.shape[0]

    @property
    def num_test(self) -> int:
        """Number of test points ``M``."""
        return self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        """Number of input columns ``D``."""
        return self.x_train.shape[1]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> RegressionData:
        """Return a copy with every tensor moved to ``device`` and cast to ``dtype``.

        Args:
            device: Target device; ``None`` keeps the current one.
            dtype: Target floating-point dtype; ``None`` keeps the current one.

        Returns:
            A new :class:`RegressionData`; the original is left untouched.

        Example:
            >>> import torch
            >>> data = RegressionData(
            ...     "tiny", torch.zeros(3, 1), torch.zeros(3), torch.zeros(1, 1), torch.zeros(1),
            ...     torch.zeros(1), torch.ones(1), torch.tensor(0.0), torch.tensor(1.0))
            >>> data.to(dtype=torch.float64).x_train.dtype
            torch.float64
        """
        if dtype is not None:
            _check_float_dtype(dtype)
        tensors = {
            f.name: getattr(self, f.name).to(device=device, dtype=dtype, copy=True)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, extra=_move_extra(self.extra, device, dtype), **tensors)


@dataclass(eq=False)
class ClassificationData:
    """A classification data set with standardised inputs and integer labels.

    Attributes:
        name: Data set name, e.g. ``"banana"``.
        x_train: Training inputs ``[N, D]``, floating point, standardised with training
            statistics.
        y_train: Training labels ``[N]``, ``torch.long`` in ``{0, ..., num_classes - 1}``.
        x_test: Test inputs ``[M, D]``, standardised with the *training* statistics.
        y_test: Test labels ``[M]``, ``torch.long``.
        num_classes: Number of classes ``C``.
        x_mean: Optional per-column training mean ``[D]`` used for the standardisation.
        x_std: Optional per-column training standard deviation ``[D]``.
        extra: Loader-specific metadata (the split indices of :func:`load_classification`).

    Instances compare by identity, as for :class:`RegressionData`.

    Example:
        >>> import torch
        >>> data = ClassificationData(
        ...     "tiny", torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]),
        ...     torch.zeros(2, 2), torch.tensor([1, 0]), num_classes=2)
        >>> data.num_train, data.num_test, data.input_dim
        (4, 2, 2)
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    x_mean: Tensor | None = None
    x_std: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_xy(self.x_train, self.y_train, self.x_test, self.y_test)
        for argname in ("y_train", "y_test"):
            labels = getattr(self, argname)
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(f"{argname} must hold integer labels, got dtype {labels.dtype}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, numbers.Integral):
            raise TypeError(f"num_classes must be an int, got {type(self.num_classes).__name__}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")

    @property
    def num_train(self) -> int:
        """Number of training points ``N``."""
        return self.x_train.shape[0]

    @property
    def num_test(self) -> int:
        """Number of test points ``M``."""
        return self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        """Number of input columns ``D``."""
        return self.x_train.shape[1]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ClassificationData:
        """Return a copy on ``device``, inputs cast to ``dtype``; labels stay ``torch.long``.

        Args:
            device: Target device; ``None`` keeps the current one.
            dtype: Target floating-point dtype for the inputs (and statistics); ``None`` keeps
                the current one.

        Returns:
            A new :class:`ClassificationData`; the original is left untouched.

        Example:
            >>> import torch
            >>> data = ClassificationData(
            ...     "tiny", torch.zeros(2, 1), torch.tensor([0, 1]),
            ...     torch.zeros(1, 1), torch.tensor([1]), num_classes=2)
            >>> data.to(dtype=torch.float64).x_train.dtype, data.y_train.dtype
            (torch.float64, torch.int64)
        """
        if dtype is not None:
            _check_float_dtype(dtype)

        def move(t: Tensor | None, cast: bool) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if cast else torch.long, copy=True)

        return dataclasses.replace(
            self,
            x_train=move(self.x_train, True),
            y_train=move(self.y_train, False),
            x_test=move(self.x_test, True),
            y_test=move(self.y_test, False),
            x_mean=move(self.x_mean, True),
            x_std=move(self.x_std, True),
            extra=_move_extra(self.extra, device, dtype),
        )


def _split_seed(seed: int, split: int) -> int:
    """A 63-bit generator seed derived from ``(seed, split)`` with a stable hash.

    Python's built-in ``hash`` is not used: it is salted per process for strings and is not
    guaranteed stable across versions, whereas BLAKE2b is.
    """
    digest = hashlib.blake2b(f"bayesdl.split:{seed}:{split}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def train_test_split(n: int, test_fraction: float, seed: int, split: int) -> tuple[Tensor, Tensor]:
    """Seeded random split of ``range(n)`` into train and test indices.

    The permutation comes from a :class:`torch.Generator` seeded with a stable hash of
    ``(seed, split)``, so a given ``(n, test_fraction, seed, split)`` always gives the same
    indices, in any process, and different ``split`` values give different permutations
    (the standard UCI protocol uses ``split = 0, ..., 19``). The global RNG is not touched.

    Args:
        n: Number of rows, at least 2.
        test_fraction: Fraction of rows in the test part, in ``(0, 1)``. The test size is
            ``round(test_fraction * n)``, clipped so that both parts have at least one row.
        seed: Non-negative base seed.
        split: Non-negative split index.

    Returns:
        ``(train_idx, test_idx)``: disjoint ``torch.long`` index tensors of shapes
        ``[n - m]`` and ``[m]``, each sorted increasingly, that together cover ``range(n)``.

    Example:
        >>> train_idx, test_idx = train_test_split(10, 0.2, seed=0, split=0)
        >>> train_idx.shape, test_idx.shape
        (torch.Size([8]), torch.Size([2]))
    """
    n = _check_non_negative_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be at least 2 to make a train/test split, got {n}")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_non_negative_int(seed, "seed")
    split = _check_non_negative_int(split, "split")

    num_test = min(max(round(test_fraction * n), 1), n - 1)
    generator = torch.Generator(device="cpu").manual_seed(_split_seed(seed, split))
    perm = torch.randperm(n, generator=generator)
    test_idx, _ = torch.sort(perm[:num_test])
    train_idx, _ = torch.sort(perm[num_test:])
    return train_idx, test_idx


def standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Z-score ``train`` and ``test`` with the mean and standard deviation of ``train``.

    Statistics are taken over the first dimension: per column for ``[N, D]`` inputs, a single
    scalar for ``[N]`` targets. The standard deviation is the population one (divisor ``N``);
    a (numerically) constant column gets standard deviation 1, so it maps to zeros instead of
    NaNs.

    Args:
        train: Training values ``[N, D]`` or ``[N]``, floating point.
        test: Test values ``[M, D]`` or ``[M]``, same trailing shape and dtype as ``train``.

    Returns:
        ``(train_z, test_z, mean, std)`` with ``mean`` and ``std`` of shape ``[D]`` (or 0-dim
        for 1-D inputs).

    Example:
        >>> import torch
        >>> train_z, test_z, mean, std = standardise(torch.tensor([1.0, 3.0]), torch.tensor([5.0]))
        >>> train_z, test_z, mean, std
        (tensor([-1.,  1.]), tensor([3.]), tensor(2.), tensor(1.))
    """
    if not isinstance(train, Tensor) or not train.is_floating_point():
        raise TypeError(f"train must be a floating-point tensor, got {_describe(train)}")
    if not isinstance(test, Tensor) or test.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"test must be a tensor with trailing shape {tuple(train.shape[1:])}, "
            f"got {_describe(test)}"
        )
    if train.dim() not in (1, 2) or train.shape[0] < 1:
        raise ValueError(f"train must be a non-empty 1-D or 2-D tensor, got {_describe(train)}")
    mean = train.mean(dim=0)
    std = train.std(dim=0, correction=0)
    # A constant column can come out with a std of a few ulps instead of exactly 0.
    tiny = 16 * torch.finfo(train.dtype).eps * mean.abs().clamp_min(1.0)
    std = torch.where(std > tiny, std, torch.ones_like(std))
    return (train - mean) / std, (test.to(train.dtype) - mean) / std, mean, std


def _build_regression(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    dtype: torch.dtype,
    extra: dict[str, Any] | None = None,
) -> RegressionData:
    """Standardise raw (ideally float64) arrays with train statistics, then cast to ``dtype``."""
    x_train_z, x_test_z, x_mean, x_std = standardise(x_train, x_test)
    y_train_z, y_test_z, y_mean, y_std = standardise(y_train, y_test)
    return RegressionData(
        name=name,
        x_train=x_train_z.to(dtype),
        y_train=y_train_z.to(dtype),
        x_test=x_test_z.to(dtype),
        y_test=y_test_z.to(dtype),
        x_mean=x_mean.to(dtype),
        x_std=x_std.to(dtype),
        y_mean=y_mean.to(dtype),
        y_std=y_std.to(dtype),
        extra={} if extra is None else dict(extra),
    )

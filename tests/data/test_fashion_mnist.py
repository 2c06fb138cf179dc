"""Tests for bayesdl.data.fashion_mnist.

The IDX parser is tested on tiny files written here; the real data tests skip when the
Debian package ``dataset-fashion-mnist`` is not installed.
"""

from __future__ import annotations

import gzip
import os

import pytest
import torch

from bayesdl.data import load_fashion_mnist
from bayesdl.data.fashion_mnist import DEFAULT_ROOT

HAVE_FILES = all(
    os.path.isfile(os.path.join(DEFAULT_ROOT, f"{stem}-ubyte.gz"))
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
)
needs_files = pytest.mark.skipif(
    not HAVE_FILES, reason="apt-get install dataset-fashion-mnist to run this test"
)


def _write_idx(path, values: torch.Tensor, *, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, values.dim()])
    header += b"".join(int(s).to_bytes(4, "big") for s in values.shape)
    payload = header + bytes(values.to(torch.uint8).flatten().tolist())
    opener = gzip.open if gz else open
    with opener(path, "wb") as handle:
        handle.write(payload)


@pytest.fixture
def tiny_root(tmp_path):
    """A fake root with 3 training and 2 test examples of known pixels."""
    images = torch.arange(3 * 28 * 28).remainder(256).reshape(3, 28, 28)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.tensor([4, 0, 9]))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", torch.full((2, 28, 28), 255), gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", torch.tensor([1, 2]), gz=False)
    return tmp_path, images


def test_parser_exact_values(tiny_root):
    root, raw = tiny_root
    images, labels = load_fashion_mnist("train", root=root, dtype=torch.float64)
    assert images.shape == (3, 1, 28, 28)
    torch.testing.assert_close(images[:, 0], raw.double() / 255.0)
    assert labels.dtype == torch.long and labels.tolist() == [4, 0, 9]


def test_flatten_limit_and_uncompressed_files(tiny_root):
    root, raw = tiny_root
    images, labels = load_fashion_mnist("train", root=str(root), flatten=True, limit=2)
    assert images.shape == (2, 784) and images.dtype == torch.float32
    torch.testing.assert_close(images, raw[:2].reshape(2, 784).float() / 255.0)
    assert labels.tolist() == [4, 0]
    test_images, test_labels = load_fashion_mnist("test", root=root, limit=10)
    assert test_images.shape == (2, 1, 28, 28) and (test_images == 1).all()
    assert test_labels.tolist() == [1, 2]
    assert load_fashion_mnist("test", root=root, limit=0)[0].shape == (0, 1, 28, 28)


def test_returns_fresh_tensors(tiny_root):
    root, _ = tiny_root
    images, labels = load_fashion_mnist("train", root=root)
    images.zero_()
    labels.zero_()
    again, again_labels = load_fashion_mnist("train", root=root)
    assert again.sum() > 0 and again_labels.tolist() == [4, 0, 9]


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path)


def test_corrupt_file_is_rejected(tmp_path):
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(5))
    with pytest.raises(ValueError, match="header says"):
        load_fashion_mnist(root=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "valid"}, ValueError, "split"),
        ({"limit": -1}, ValueError, "limit"),
        ({"limit": 2.5}, TypeError, "limit"),
        ({"flatten": 1}, TypeError, "flatten"),
        ({"dtype": torch.uint8}, TypeError, "dtype"),
    ],
)
def test_bad_arguments(tiny_root, kwargs, error, match):
    root, _ = tiny_root
    with pytest.raises(error, match=match):
        load_fashion_mnist(root=root, **kwargs)


@needs_files
def test_real_train_split():
    images, labels = load_fashion_mnist("train")
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (60000,) and labels.dtype == torch.long
    assert images.min() == 0.0 and images.max() == 1.0
    assert torch.bincount(labels, minlength=10).tolist() == [6000] * 10


@needs_files
def test_real_test_split(device):
    images, labels = load_fashion_mnist("test", flatten=True)
    assert images.shape == (10000, 784) and labels.shape == (10000,)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert torch.bincount(labels, minlength=10).tolist() == [1000] * 10
    # The first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt.
    assert labels[:5].tolist() == [9, 2, 1, 1, 6]
    first, first_labels = load_fashion_mnist("test", limit=5)
    torch.testing.assert_close(first.reshape(5, 784), images[:5])
    assert first.to(device).device.type == device.type

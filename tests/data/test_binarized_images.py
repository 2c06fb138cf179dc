"""Binarised images for VAEs: fixed test binarisation, dynamic training binarisation."""

from __future__ import annotations

import pytest
import torch

from bayesdl.data import DynamicBinarization, binarize, load_binarized_images
from tests.data.test_fashion_mnist import needs_files, tiny_root  # noqa: F401 (fixture)

Z = 3.5


def test_digits_split_and_fixed_test_binarisation():
    a = load_binarized_images("digits")
    b = load_binarized_images("digits")
    assert a.x_train.shape == (1438, 64) and a.x_test.shape == (359, 64)
    assert a.image_shape == (8, 8) and a.input_dim == 64 and a.num_test == 359
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert set(a.x_test.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(a.x_test, b.x_test)  # the same binary test set every time
    c = load_binarized_images("digits", seed=1)
    assert not torch.equal(a.x_test, c.x_test)
    assert a.y_train.dtype == torch.long and a.y_test.shape == (359,)
    small = load_binarized_images("digits", limit_train=10, limit_test=5, dtype=torch.float64)
    assert small.x_train.shape == (10, 64) and small.x_test.dtype == torch.float64
    torch.testing.assert_close(small.train_mean, small.x_train.mean(0))


def test_binarize_is_unbiased():
    """The mean of 4000 independent draws per pixel lies within 3.5 exact standard errors
    ``sqrt(p (1 - p) / 4000)`` of ``p`` (11 two-sided comparisons: family-wise false-alarm
    rate below 0.6%); at ``p = 0`` and ``1`` the standard error is 0 and the draw exact."""
    p = torch.linspace(0, 1, 11, dtype=torch.float64)
    reps = 4000
    draws = binarize(p.expand(reps, 11), torch.Generator().manual_seed(0))
    se = (p * (1 - p) / reps).sqrt()
    assert ((draws.mean(0) - p).abs() <= Z * se).all()  # exact at p = 0 and 1 (se = 0)


def test_dynamic_binarisation_epochs():
    x = torch.rand(10, 4)
    loader = DynamicBinarization(x, batch_size=4, seed=0)
    assert len(loader) == 3 and loader.dataset.n == 10
    first = [b[0] for b in loader]
    second = [b[0] for b in loader]
    assert [t.shape[0] for t in first] == [4, 4, 2]
    assert all(set(t.unique().tolist()) <= {0.0, 1.0} for t in first)
    assert not all(torch.equal(s, t) for s, t in zip(first, second, strict=True))
    again = [b[0] for b in DynamicBinarization(x, batch_size=4, seed=0)]
    assert all(torch.equal(s, t) for s, t in zip(first, again, strict=True))  # reproducible
    assert len(DynamicBinarization(x, batch_size=4, drop_last=True)) == 2


def test_dynamic_binarisation_is_unbiased_per_pixel():
    """As :func:`test_binarize_is_unbiased`, for 3000 epochs of the loader (each epoch a
    fresh draw): within 3.5 exact standard errors per pixel, exact at 0 and 1."""
    x = torch.tensor([[0.1, 0.5, 0.9, 0.0, 1.0]], dtype=torch.float64)
    loader = DynamicBinarization(x, batch_size=1, seed=3)
    reps = 3000
    draws = torch.cat([next(iter(loader))[0] for _ in range(reps)])
    se = (x * (1 - x) / reps).sqrt()
    assert ((draws.mean(0) - x).abs() <= Z * se).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        load_binarized_images("mnist")
    with pytest.raises(ValueError, match="limit_train"):
        load_binarized_images("digits", limit_train=0)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        DynamicBinarization(torch.rand(4, 2) + 1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DynamicBinarization(torch.rand(4, 2), batch_size=0)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        DynamicBinarization(torch.ones(4, 2, dtype=torch.long), batch_size=2)


def test_fashion_mnist_from_a_tiny_root(tiny_root):  # noqa: F811
    data = load_binarized_images("fashion_mnist", root=str(tiny_root[0]))
    assert data.x_train.shape == (3, 784) and data.x_test.shape == (2, 784)
    assert data.image_shape == (28, 28)
    assert set(data.x_test.unique().tolist()) <= {0.0, 1.0}


@needs_files
def test_fashion_mnist_official_split():
    data = load_binarized_images("fashion_mnist", limit_test=100)
    assert data.num_train == 60_000 and data.num_test == 100

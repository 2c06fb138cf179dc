"""Binarised image data for VAEs: sklearn digits (8 x 8) and Fashion-MNIST (28 x 28).

The protocol of Burda et al. (2016): training images are binarised *dynamically* (a fresh
``Bernoulli(pixel intensity)`` draw every time a batch is seen, :class:`DynamicBinarization`),
test images *once*, with a fixed seed, so every model is scored on the same binary test set.

==============  =====================  ==================================================
name            train / test           source
==============  =====================  ==================================================
digits          1,438 / 359, 8 x 8     scikit-learn ``load_digits`` (17 grey levels / 16),
                                       fixed seeded split (:func:`train_test_split`)
fashion_mnist   60,000 / 10,000, 28²   Debian ``dataset-fashion-mnist`` (``byte / 255``),
                                       the official split
==============  =====================  ==================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from bayesdl.data.classification import _import, _raw_table
from bayesdl.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from bayesdl.data.splits import _check_float_dtype, _check_non_negative_int, train_test_split

__all__ = [
    "BINARIZED_DATASETS",
    "BinarizedImages",
    "DynamicBinarization",
    "binarize",
    "load_binarized_images",
]

BINARIZED_DATASETS: tuple[str, ...] = ("digits", "fashion_mnist")
"""Names accepted by :func:`load_binarized_images`."""


@dataclass(eq=False)
class BinarizedImages:
    """Grey-level training images and a fixed binary test set.

    Attributes:
        name: data set name.
        x_train: training intensities ``[N, D]`` in ``[0, 1]`` (binarise them per batch with
            :class:`DynamicBinarization`).
        x_test: binary test images ``[M, D]`` (one fixed Bernoulli draw).
        y_train, y_test: class labels ``[N]``, ``[M]`` (``torch.long``).
        image_shape: ``(H, W)``.
        seed: seed of the fixed test binarisation.
    """

    name: str
    x_train: Tensor
    x_test: Tensor
    y_train: Tensor
    y_test: Tensor
    image_shape: tuple[int, int]
    seed: int

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def input_dim(self) -> int:
        return math.prod(self.image_shape)

    @property
    def train_mean(self) -> Tensor:
        """Mean training pixel ``[D]`` (Burda et al. initialise the decoder's bias with it)."""
        return self.x_train.mean(0)


def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One Bernoulli draw per pixel, ``x`` being the probabilities (same shape and dtype).

    Example:
        >>> import torch
        >>> binarize(torch.tensor([0.0, 1.0]))
        tensor([0., 1.])
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (u < x).to(x.dtype)


def load_binarized_images(
    name: str = "digits",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    limit_train: int | None = None,
    limit_test: int | None = None,
    dtype: torch.dtype = torch.float32,
    root: str = DEFAULT_ROOT,
) -> BinarizedImages:
    """Load a binarised-image benchmark for VAEs (offline).

    Args:
        name: ``"digits"`` or ``"fashion_mnist"``.
        seed: seed of the digits train/test split and of the fixed test binarisation.
        test_fraction: held-out fraction of the digits (Fashion-MNIST has its own split).
        limit_train, limit_test: keep only the first images of each part (``None``: all).
        dtype: floating dtype of the images.
        root: folder of the Fashion-MNIST IDX files.

    Returns:
        :class:`BinarizedImages` with flat ``[N, D]`` images.

    Raises:
        ValueError: unknown name or bad limits. ImportError / FileNotFoundError: the data's
        package (scikit-learn, or Debian ``dataset-fashion-mnist``) is missing.

    Example:
        >>> data = load_binarized_images("digits")
        >>> data.x_train.shape, data.x_test.shape, data.image_shape
        (torch.Size([1438, 64]), torch.Size([359, 64]), (8, 8))
    """
    if name not in BINARIZED_DATASETS:
        raise ValueError(f"name must be one of {BINARIZED_DATASETS}, got {name!r}")
    seed = _check_non_negative_int(seed, "seed")
    dtype = _check_float_dtype(dtype)
    for arg, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
        ):
            raise ValueError(f"{arg} must be a positive int or None, got {value!r}")
    if name == "digits":
        _import("digits")
        x, y = _raw_table("digits")
        train_idx, test_idx = train_test_split(x.shape[0], test_fraction, seed, 0)
        x = (x / 16.0).to(dtype)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        shape = (8, 8)
    else:
        x_train, y_train = load_fashion_mnist("train", flatten=True, dtype=dtype, root=root)
        x_test, y_test = load_fashion_mnist("test", flatten=True, dtype=dtype, root=root)
        shape = (28, 28)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    g = torch.Generator().manual_seed(1_000_003 * seed + 17)
    return BinarizedImages(
        name=name,
        x_train=x_train.contiguous(),
        x_test=binarize(x_test, g),
        y_train=y_train,
        y_test=y_test,
        image_shape=shape,
        seed=seed,
    )


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class DynamicBinarization:
    """Minibatches of freshly binarised images, for :func:`bayesdl.infer.fit` (``data=``).

    Each epoch shuffles the images and yields ``(binarize(x[idx]),)`` batches; the shuffle and
    the Bernoulli draws come from a generator seeded with ``(seed, epoch)``, so runs repeat
    exactly. Iterating it again starts the next epoch.

    Args:
        x: intensities ``[N, ...]`` in ``[0, 1]``.
        batch_size: images per batch (the last batch of an epoch may be smaller).
        seed: base seed.
        drop_last: drop the last, smaller batch of each epoch.

    Example:
        >>> import torch
        >>> loader = DynamicBinarization(torch.rand(10, 4), batch_size=4, seed=0)
        >>> len(loader), [b[0].shape[0] for b in loader]
        (3, [4, 4, 2])
    """

    def __init__(self, x: Tensor, batch_size: int, *, seed: int = 0, drop_last: bool = False):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise TypeError("x must be a floating tensor [N, ...] of pixel intensities")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"x must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        self.x = x
        self.batch_size = min(batch_size, x.shape[0])
        self.seed = _check_non_negative_int(seed, "seed")
        self.drop_last = bool(drop_last)
        self.dataset = _Sized(int(x.shape[0]))
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor]]:
        g = torch.Generator().manual_seed(1_000_003 * self.seed + self.epoch)
        self.epoch += 1
        perm = torch.randperm(self.x.shape[0], generator=g)
        for b in range(len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size].to(self.x.device)
            xb = self.x[idx]
            u = torch.rand(xb.shape, generator=g, dtype=xb.dtype).to(xb.device)
            yield ((u < xb).to(xb.dtype),)

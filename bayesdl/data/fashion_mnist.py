"""Fashion-MNIST from the IDX files of the Debian package ``dataset-fashion-mnist``.

``apt-get install dataset-fashion-mnist`` puts the four original gzipped IDX files in
``/usr/share/datasets/fashion-mnist``: 60,000 training and 10,000 test images of 28 x 28
grey pixels, 10 balanced classes (Xiao, Rasul, Vollgraf 2017, MIT licence, (c) Zalando SE).
"""

from __future__ import annotations

import functools
import gzip
import numbers
import os

import torch
from torch import Tensor

from bayesdl.data.splits import _check_float_dtype

__all__ = ["load_fashion_mnist"]

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


def _find(root: str, stem: str) -> str:
    for candidate in (stem + ".gz", stem):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root!r}; install it with "
        f"`apt-get install dataset-fashion-mnist` or pass root= pointing to the IDX files"
    )


def _read_idx(path: str, ndim: int) -> Tensor:
    """Read an unsigned-byte IDX file (optionally gzipped) into a ``torch.uint8`` tensor."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = bytearray(handle.read())
    header = 4 + 4 * ndim
    if len(data) < header or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    if data[3] != ndim:
        raise ValueError(f"{path} has {data[3]} dimensions, expected {ndim}")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = 1
    for size in shape:
        count *= size
    if len(data) != header + count:
        raise ValueError(f"{path} holds {len(data) - header} values, its header says {count}")
    return torch.frombuffer(data, dtype=torch.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _raw_split(root: str, split: str) -> tuple[Tensor, Tensor]:
    """``(images [N, 28, 28] uint8, labels [N] uint8)``, read once per process and root.

    Callers must not modify the returned tensors; :func:`load_fashion_mnist` converts them,
    which copies.
    """
    image_stem, label_stem = _FILES[split]
    images = _read_idx(_find(root, image_stem), ndim=3)
    labels = _read_idx(_find(root, label_stem), ndim=1)
    if images.shape[0] != labels.shape[0] or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"Fashion-MNIST {split} files in {root!r} disagree: images {tuple(images.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    return images, labels


def load_fashion_mnist(
    split: str = "train",
    *,
    flatten: bool = False,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
    root: str | os.PathLike[str] = DEFAULT_ROOT,
) -> tuple[Tensor, Tensor]:
    """Load the Fashion-MNIST training or test images and labels.

    Pixels are scaled to ``[0, 1]`` (``byte / 255``). The files are read once per process
    and root; each call returns fresh tensors.

    Args:
        split: ``"train"`` (60,000 images, 6,000 per class) or ``"test"`` (10,000).
        flatten: Return images as ``[N, 784]`` instead of ``[N, 1, 28, 28]``.
        limit: Keep only the first ``limit`` examples (all of them if ``limit`` is larger
            than the split); ``None`` keeps everything.
        dtype: Floating-point dtype of the images.
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.

    Returns:
        ``(images, labels)``: ``images`` of shape ``[N, 1, 28, 28]`` (or ``[N, 784]``) with
        values in ``[0, 1]``, and ``labels [N]`` of dtype ``torch.long`` in ``{0, ..., 9}``.

    Raises:
        ValueError: If ``split`` is not ``"train"``/``"test"`` or ``limit`` is negative.
        TypeError: If ``limit``, ``flatten`` or ``dtype`` has the wrong type.
        FileNotFoundError: If the IDX files are missing (``apt-get install
            dataset-fashion-mnist``).

    Example:
        >>> images, labels = load_fashion_mnist("test", limit=16)
        >>> images.shape, labels.shape
        (torch.Size([16, 1, 28, 28]), torch.Size([16]))
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {type(flatten).__name__}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
            raise TypeError(f"limit must be a non-negative int or None, got {type(limit).__name__}")
        if limit < 0:
            raise ValueError(f"limit must be a non-negative int or None, got {limit}")
    dtype = _check_float_dtype(dtype)

    images, labels = _raw_split(os.path.abspath(os.fspath(root)), split)
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    images = images.to(dtype).div_(255.0)
    images = images.reshape(-1, 28 * 28) if flatten else images.unsqueeze(1)
    return images, labels.long()

"""Maximum mean discrepancy: kernels and the unbiased U-statistic (pure tensor math).

Used by :class:`~bayesdl.infer.InfoVAE` (MMD between the aggregate posterior and the prior)
and by :func:`bayesdl.vae.evaluate.held_out_mmd`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MMD_KERNELS", "imq_kernel", "mmd_u", "rbf_kernel"]

MMD_KERNELS: tuple[str, ...] = ("imq", "rbf")
"""Kernel names accepted by :func:`mmd_u`."""


def _sq_dist(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``[n, m]``, summed over differences (no
    ``|x|^2 - 2xy + |y|^2`` cancellation at small distances) and without an ``[n, m, d]``
    intermediate."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square()


def rbf_kernel(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """Gaussian kernel ``k(x, y) = exp(-|x - y|^2 / scale)``.

    Args:
        x: ``[n, d]``; y: ``[m, d]``.
        scale: ``> 0`` (``2 sigma^2`` of the usual bandwidth ``sigma``).

    Returns:
        ``[n, m]``.

    Example:
        >>> import torch
        >>> rbf_kernel(torch.zeros(2, 3), torch.ones(1, 3), scale=3.0).squeeze()
        tensor([0.3679, 0.3679])
    """
    return (-_sq_dist(x, y) / scale).exp()


def imq_kernel(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """Inverse multiquadratic kernel ``k(x, y) = scale / (scale + |x - y|^2)``.

    Args:
        x: ``[n, d]``; y: ``[m, d]``.
        scale: ``C > 0`` (Tolstikhin et al. use ``C = 2 d`` for a standard-normal prior).

    Returns:
        ``[n, m]``.

    Example:
        >>> import torch
        >>> imq_kernel(torch.zeros(1, 2), torch.ones(1, 2), scale=2.0)
        tensor([[0.5000]])

    References:
        Tolstikhin, Bousquet, Gelly & Schoelkopf, Wasserstein Auto-Encoders, ICLR 2018.
    """
    return scale / (scale + _sq_dist(x, y))


_KERNELS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "imq": imq_kernel,
    "rbf": rbf_kernel,
}


def _off_diagonal_mean(k: Tensor) -> Tensor:
    n = k.shape[-1]
    return (k.sum((-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def mmd_u(x: Tensor, y: Tensor, *, kernel: str = "imq", scale: float | None = None) -> Tensor:
    """Unbiased estimate of the squared MMD between the distributions of ``x`` and ``y``.

    ``MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)``
    (the U-statistic of Gretton et al. 2012, Lemma 6). Its expectation is the squared MMD, so
    it is zero in expectation when the two distributions agree, and it can be negative.

    Args:
        x: samples ``[n, d]`` (``n >= 2``).
        y: samples ``[m, d]`` (``m >= 2``).
        kernel: ``"imq"`` or ``"rbf"``.
        scale: kernel scale (default ``2 d``, the usual choice for a standard-normal prior).

    Returns:
        A 0-dim tensor, differentiable in ``x`` and ``y``.

    Raises:
        ValueError: unknown kernel, non-positive scale, or samples of the wrong shape.

    Example:
        >>> import torch
        >>> x, y = torch.randn(500, 2), torch.randn(500, 2) + 3.0
        >>> bool(mmd_u(x, y) > 0.1)
        True

    References:
        Gretton, Borgwardt, Rasch, Schoelkopf & Smola, A Kernel Two-Sample Test, JMLR 2012.
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {MMD_KERNELS}, got {kernel!r}")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[0] < 2:
            raise ValueError(f"{name} must have shape [n, d] with n >= 2, got {tuple(t.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}"
        )
    if scale is None:
        scale = 2.0 * x.shape[1]
    if not 0 < scale < math.inf:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    k = _KERNELS[kernel]
    return (
        _off_diagonal_mean(k(x, x, scale))
        + _off_diagonal_mean(k(y, y, scale))
        - 2.0 * k(x, y, scale).mean()
    )

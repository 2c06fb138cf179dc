"""Evaluating a trained VAE: importance-sampled log-likelihood, active units, MMD, images.

Every function runs without gradients and vectorises over data points and samples; the
log-likelihood works in memory-bounded chunks so ``K = 5000`` samples fit on any device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from bayesdl._validation import check_positive, check_positive_int
from bayesdl.infer.mmd import MMD_KERNELS, mmd_u
from bayesdl.vae.vae import VAE

__all__ = [
    "active_units",
    "held_out_mmd",
    "image_grid",
    "log_likelihood",
    "reconstructions",
    "samples",
]


def _check_vae(vae: object) -> VAE:
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a bayesdl.vae.VAE, got {type(vae).__name__}")
    return vae


@torch.no_grad()
def log_likelihood(
    vae: VAE,
    x: Tensor,
    *,
    num_samples: int = 5000,
    batch_size: int = 100,
    max_elements: int = 2**22,
) -> Tensor:
    """Importance-sampled ``log p(x_n)`` per data point, with the encoder as proposal.

    ``log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K`` with
    ``z_k ~ q(z | x)``: the IWAE bound with ``K = num_samples`` (Burda et al. use
    ``K = 5000``). It is a stochastic lower bound in expectation and tends to ``log p(x)`` as
    ``K`` grows. Points go through in blocks of ``batch_size`` and samples in chunks of at
    most ``max_elements / (batch_size * D)`` (``D`` = elements per data point), each chunk one
    batched decoder call; chunks are combined by a running log-sum-exp.

    Args:
        vae: the trained :class:`~bayesdl.vae.VAE`.
        x: data ``[N, *input_shape]`` (test data, binarised as in training).
        num_samples: ``K >= 1``.
        batch_size: data points per block.
        max_elements: bound on ``samples x points x D`` per decoder call (memory).

    Returns:
        ``[N]`` estimates of ``log p(x_n)`` in nats (the NLL is their negative mean).

    Example:
        >>> import torch
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, log_likelihood
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2)
        >>> log_likelihood(vae, torch.rand(5, 16).round(), num_samples=100).shape
        torch.Size([5])

    References:
        Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
    """
    _check_vae(vae)
    check_positive_int(num_samples, "num_samples")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(max_elements, "max_elements")
    vae.check_input(x)
    per_point = max(1, math.prod(x.shape[1:]))
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        chunk = max(1, min(num_samples, max_elements // (xb.shape[0] * per_point)))
        acc = None
        for s in range(0, num_samples, chunk):
            log_w = vae.log_weights(xb, min(chunk, num_samples - s))
            part = torch.logsumexp(log_w, dim=0)
            acc = part if acc is None else torch.logaddexp(acc, part)
        out.append(acc - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def active_units(
    vae: VAE, x: Tensor, *, threshold: float = 1e-2, batch_size: int = 1000
) -> tuple[int, Tensor]:
    """Burda et al.'s active units: latent dims whose posterior mean varies with ``x``.

    Unit ``u`` is active when ``Cov_x(E_{q(z|x)}[z_u]) > threshold``; the posterior mean is the
    encoder's ``loc`` and the variance is taken over the rows of ``x`` (unbiased).

    Args:
        vae: a :class:`~bayesdl.vae.VAE`.
        x: data ``[N, *input_shape]``, ``N >= 2``.
        threshold: activity threshold (``1e-2`` in the paper).
        batch_size: points per encoder call.

    Returns:
        ``(number of active units, per-unit variances [L])``.

    Example:
        >>> import torch
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, active_units
        >>> vae = VAE(MLPEncoder(16, [8], 3), MLPDecoder(3, [8], 16), 3)
        >>> count, variances = active_units(vae, torch.rand(20, 16).round())
        >>> variances.shape
        torch.Size([3])
    """
    _check_vae(vae)
    check_positive(threshold, "threshold")
    check_positive_int(batch_size, "batch_size")
    vae.check_input(x)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows to measure a variance, got {x.shape[0]}")
    locs = torch.cat([vae.encode(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])
    variances = locs.var(0)
    return int((variances > threshold).sum()), variances


@torch.no_grad()
def held_out_mmd(
    vae: VAE,
    x: Tensor,
    *,
    kernel: str = "imq",
    scale: float | None = None,
    max_points: int = 2000,
) -> Tensor:
    """Unbiased ``MMD^2`` between the aggregate posterior of held-out data and the prior.

    Draws one ``z_n ~ q(z | x_n)`` per point (the first ``max_points`` points) and as many
    ``N(0, I)`` draws, and returns :func:`~bayesdl.infer.mmd.mmd_u` of the two sets: near 0 when
    the aggregate posterior matches the prior, what InfoVAE's MMD term pushes for.

    Args:
        vae: a :class:`~bayesdl.vae.VAE`.
        x: data ``[N, *input_shape]``, ``N >= 2``.
        kernel: ``"imq"`` or ``"rbf"``.
        scale: kernel scale (default ``2 L``).
        max_points: at most this many points (the kernel matrices are ``[n, n]``).

    Returns:
        A 0-dim tensor (it can be slightly negative: the estimator is unbiased).

    Example:
        >>> import torch
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, held_out_mmd
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2)
        >>> held_out_mmd(vae, torch.rand(50, 16).round()).shape
        torch.Size([])
    """
    _check_vae(vae)
    if kernel not in MMD_KERNELS:
        raise ValueError(f"kernel must be one of {MMD_KERNELS}, got {kernel!r}")
    check_positive_int(max_points, "max_points")
    vae.check_input(x)
    x = x[:max_points]
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows, got {x.shape[0]}")
    loc, sd = vae.encode(x)
    z = loc + sd * torch.randn_like(loc)
    return mmd_u(z, torch.randn_like(z), kernel=kernel, scale=scale)


@torch.no_grad()
def reconstructions(vae: VAE, x: Tensor) -> Tensor:
    """The likelihood's mean at the posterior mean ``z = loc(x)``: ``[N, *input_shape]``.

    Example:
        >>> import torch
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, reconstructions
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2)
        >>> reconstructions(vae, torch.rand(4, 16).round()).shape
        torch.Size([4, 16])
    """
    _check_vae(vae)
    vae.check_input(x)
    return vae.likelihood.mean(vae.decode(vae.encode(x)[0], x))


@torch.no_grad()
def samples(vae: VAE, num_samples: int, *, generator: torch.Generator | None = None) -> Tensor:
    """The likelihood's mean at ``num_samples`` prior draws ``z ~ N(0, I)``.

    Args:
        vae: a :class:`~bayesdl.vae.VAE`.
        num_samples: number of images.
        generator: optional ``torch.Generator`` on the VAE's device (reproducible draws).

    Returns:
        ``[num_samples, *output_shape]`` (pixel probabilities for Bernoulli likelihoods).

    Example:
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder, samples
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2)
        >>> samples(vae, 6).shape
        torch.Size([6, 16])
    """
    _check_vae(vae)
    check_positive_int(num_samples, "num_samples")
    p = next(vae.decoder.parameters())
    z = torch.randn(
        num_samples, vae.latent_dim, generator=generator, device=p.device, dtype=p.dtype
    )
    return vae.likelihood.mean(vae.decode(z))


def image_grid(
    images: Tensor,
    *,
    nrow: int = 8,
    image_shape: Sequence[int] | None = None,
    pad: int = 1,
    pad_value: float = 1.0,
) -> Tensor:
    """Tile images into one 2-D array for ``plt.imshow`` (grey levels).

    Args:
        images: ``[N, H, W]``, ``[N, 1, H, W]`` or flat ``[N, H * W]`` (square unless
            ``image_shape`` is given).
        nrow: images per row.
        image_shape: ``(H, W)`` of flat images.
        pad: pixels between images.
        pad_value: value of the padding.

    Returns:
        ``[rows * (H + pad) + pad, nrow * (W + pad) + pad]`` on the CPU.

    Example:
        >>> import torch
        >>> image_grid(torch.zeros(10, 64), nrow=5).shape
        torch.Size([19, 46])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    check_positive_int(nrow, "nrow")
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    images = images.detach().cpu()
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() == 2:
        if image_shape is None:
            side = math.isqrt(images.shape[1])
            if side * side != images.shape[1]:
                raise ValueError(
                    f"flat images of {images.shape[1]} pixels are not square; pass image_shape"
                )
            image_shape = (side, side)
        images = images.reshape(images.shape[0], *image_shape)
    if images.dim() != 3 or images.shape[0] == 0:
        raise ValueError(
            f"images must have shape [N, H, W], [N, 1, H, W] or [N, H * W] with N >= 1, got "
            f"{tuple(images.shape)}"
        )
    n, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.full((rows * (h + pad) + pad, cols * (w + pad) + pad), float(pad_value))
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = images[i]
    return grid

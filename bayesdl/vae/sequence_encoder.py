"""A per-frame encoder with separate output heads for the GP-VAE family."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from bayesdl._validation import check_positive_int

__all__ = ["SequenceEncoder"]


class SequenceEncoder(nn.Module):
    """``x [B, T, *frame_shape] -> (head_1, ..., head_H)``, each ``[B, T, L]``.

    Each frame is flattened and passed through an MLP trunk; with ``window > 1`` a 1-D
    convolution over time (``window`` frames, "same" padding) mixes neighbouring frames, as the
    CNN encoder of Fortuin et al. (2020) does; then ``num_heads`` separate linear heads give the
    per-time-step outputs. The GP-VAEs read the heads as:

    * two heads: a mean and a pre-softplus scale / variance (a per-time-step Gaussian, or the
      Gaussian pseudo-observations ``(y_t, v_t)`` of the Markovian GP-VAE; separate heads, so
      the site mean never comes from the variance head);
    * three heads: mean, pre-softplus diagonal and off-diagonal of the bidiagonal precision
      factor of the banded posterior.

    Args:
        frame_shape: shape of one frame (an int for flat frames).
        hidden: trunk widths (at least one).
        latent_dim: ``L``.
        num_heads: number of output heads (2 or 3).
        window: odd number of frames the temporal convolution sees (1: none).
        activation: activation module factory (default ``nn.ReLU``).

    Example:
        >>> import torch
        >>> enc = SequenceEncoder((1, 28, 28), [64], 4)
        >>> mean, raw_var = enc(torch.zeros(2, 10, 1, 28, 28))
        >>> mean.shape
        torch.Size([2, 10, 4])
    """

    def __init__(
        self,
        frame_shape: int | Sequence[int],
        hidden: Sequence[int],
        latent_dim: int,
        *,
        num_heads: int = 2,
        window: int = 1,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ):
        super().__init__()
        shape = (frame_shape,) if isinstance(frame_shape, int) else tuple(frame_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape):
            raise ValueError(f"frame_shape must be a positive int or tuple, got {frame_shape!r}")
        hidden = list(hidden)
        if not hidden:
            raise ValueError("hidden must list at least one width")
        for h in hidden:
            check_positive_int(h, "hidden sizes")
        check_positive_int(latent_dim, "latent_dim")
        if num_heads not in (2, 3):
            raise ValueError(f"num_heads must be 2 or 3, got {num_heads!r}")
        check_positive_int(window, "window")
        if window % 2 == 0:
            raise ValueError(f"window must be odd, got {window}")
        self.frame_shape = shape
        self.input_shape = shape  # the frame shape the GP-VAEs check inputs against
        self.latent_dim = latent_dim
        self.window = window
        layers: list[nn.Module] = []
        sizes = [math.prod(shape), *hidden]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), activation()]
        self.trunk = nn.Sequential(*layers)
        width = hidden[-1]
        self.temporal = (
            nn.Sequential(nn.Conv1d(width, width, window, padding=window // 2), activation())
            if window > 1
            else None
        )
        self.heads = nn.ModuleList(nn.Linear(width, latent_dim) for _ in range(num_heads))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        lead = x.shape[: x.dim() - len(self.frame_shape)]
        h = self.trunk(x.reshape(lead + (-1,)))
        if self.temporal is not None:
            if h.dim() != 3:
                raise ValueError(
                    f"a temporal window needs x of shape [B, T, *frame_shape], got {tuple(x.shape)}"
                )
            h = self.temporal(h.transpose(1, 2)).transpose(1, 2)
        return tuple(head(h) for head in self.heads)

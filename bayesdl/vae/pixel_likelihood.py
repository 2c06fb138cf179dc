"""Observation models of a VAE decoder: Bernoulli, continuous Bernoulli or Gaussian pixels."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesdl._validation import check_positive, check_positive_int

__all__ = ["PIXEL_LIKELIHOODS", "PixelLikelihood"]

PIXEL_LIKELIHOODS: tuple[str, ...] = ("bernoulli", "continuous_bernoulli", "gaussian")
"""Names accepted by :class:`PixelLikelihood`."""


class PixelLikelihood(nn.Module):
    """``p(x | z)`` for a data point ``x`` of any shape, given the decoder's output.

    Every element of ``x`` is independent given the decoder output ``f`` (same shape as ``x``):

    * ``"bernoulli"``: ``x ~ Bernoulli(logits=f)``, for data in ``[0, 1]`` (binary data give a
      proper likelihood; grey levels in ``[0, 1]`` are accepted, as in most VAE code);
    * ``"continuous_bernoulli"``: ``x ~ ContinuousBernoulli(logits=f)`` (Loaiza-Ganem &
      Cunningham 2019), a proper density on ``[0, 1]``;
    * ``"gaussian"``: ``x ~ Normal(f, scale^2)`` with a fixed ``scale`` or, with
      ``learn_scale=True``, one learned scale (a softplus-parameterised ``nn.Parameter``).

    It also owns the data plate's size: a minibatch of ``B`` points of a data set of
    ``dataset_size`` points is scaled by ``dataset_size / B`` (by the objectives, outside any
    log-sum-exp).

    Args:
        kind: One of :data:`PIXEL_LIKELIHOODS`.
        dataset_size: Number of training points ``N`` (``None``: every batch is the data set).
        scale: Gaussian standard deviation (fixed, or initial value when learned), ``> 0``.
        learn_scale: Learn the Gaussian scale by maximum likelihood.

    Example:
        >>> import torch
        >>> lik = PixelLikelihood("bernoulli", dataset_size=100)
        >>> f, x = torch.zeros(3, 4, 784), torch.ones(4, 784)
        >>> lik.log_prob(f, x).shape  # [K, B]: one value per particle and data point
        torch.Size([3, 4])
    """

    def __init__(
        self,
        kind: str = "bernoulli",
        dataset_size: int | None = None,
        *,
        scale: float = 1.0,
        learn_scale: bool = False,
    ):
        super().__init__()
        if kind not in PIXEL_LIKELIHOODS:
            valid = ", ".join(repr(k) for k in PIXEL_LIKELIHOODS)
            raise ValueError(f"likelihood must be one of {valid}, got {kind!r}")
        check_positive_int(dataset_size, "dataset_size", allow_none=True)
        check_positive(scale, "scale")
        if not isinstance(learn_scale, bool):
            raise TypeError(f"learn_scale must be a bool, got {type(learn_scale).__name__}")
        if learn_scale and kind != "gaussian":
            raise ValueError(f"learn_scale=True needs likelihood='gaussian', got {kind!r}")
        self.kind = kind
        self.dataset_size = dataset_size
        self.learn_scale = learn_scale
        s = torch.as_tensor(float(scale), dtype=torch.get_default_dtype())
        if learn_scale:
            self.raw_scale = nn.Parameter(s + torch.log(-torch.expm1(-s)))  # softplus inverse
        else:
            self.register_buffer("_fixed_scale", s)

    @property
    def needs_unit_interval(self) -> bool:
        """Whether the data must lie in ``[0, 1]`` (Bernoulli and continuous Bernoulli)."""
        return self.kind != "gaussian"

    def scale(self, like: Tensor) -> Tensor:
        """The Gaussian standard deviation (0-dim), on ``like``'s device and dtype."""
        s = F.softplus(self.raw_scale) if self.learn_scale else self._fixed_scale
        return s.to(device=like.device, dtype=like.dtype)

    def distribution(self, f: Tensor, event_dim: int) -> dist.Distribution:
        """The Pyro distribution of ``x`` given decoder outputs ``f [*batch, B, *event]``.

        Args:
            f: Decoder outputs; the last ``event_dim`` dims are one data point.
            event_dim: Number of dims of one data point.

        Returns:
            A distribution with batch shape ``[*batch, B]`` and event shape ``f.shape[-event_dim:]``.
        """
        if self.kind == "bernoulli":
            # the [0, 1] range is checked by the VAE; grey levels are allowed
            d = dist.Bernoulli(logits=f, validate_args=False)
        elif self.kind == "continuous_bernoulli":
            d = dist.ContinuousBernoulli(logits=f, validate_args=False)
        else:
            d = dist.Normal(f, self.scale(f))
        return d.to_event(event_dim)

    def log_prob(self, f: Tensor, x: Tensor) -> Tensor:
        """``log p(x | f)`` summed over each data point's elements.

        Args:
            f: Decoder outputs ``[*batch, B, *event]``.
            x: Data ``[B, *event]``.

        Returns:
            ``[*batch, B]``.
        """
        event_dim = x.dim() - 1
        dims = tuple(range(-event_dim, 0))
        if self.kind == "bernoulli":
            ll = -F.binary_cross_entropy_with_logits(f, x.expand_as(f), reduction="none")
        elif self.kind == "continuous_bernoulli":
            ll = torch.distributions.ContinuousBernoulli(logits=f, validate_args=False).log_prob(x)
        else:
            s = self.scale(f)
            ll = -0.5 * ((x - f) / s).square() - s.log() - 0.5 * math.log(2 * math.pi)
        return ll.sum(dims)

    def mean(self, f: Tensor) -> Tensor:
        """The mean of ``x`` given decoder outputs ``f`` (same shape), e.g. for image grids."""
        if self.kind == "bernoulli":
            return torch.sigmoid(f)
        if self.kind == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=f, validate_args=False).mean
        return f

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dataset_size={self.dataset_size}"

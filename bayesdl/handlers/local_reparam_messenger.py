"""Local reparameterisation: sample pre-activations instead of Gaussian weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bayesdl.handlers.flipout_messenger import FlipoutMessenger
from bayesdl.handlers.weight_noise_messenger import WeightNoiseMessenger

_CONV_MODES = ("flipout", "independent")


class LocalReparamMessenger(WeightNoiseMessenger):
    """Local reparameterisation trick for ``nn.Linear`` and ``nn.Conv2d`` weights.

    For a Gaussian weight ``W ~ N(M, S^2)`` a linear layer's output for input ``x`` is exactly
    ``N(x M^T + b, x^2 (S^2)^T)`` per unit, so it is sampled directly with independent noise
    per data point: the same distribution per example, lower-variance gradients.

    A convolution's kernel is shared across locations, so its output locations are correlated;
    sampling them independently (``conv="independent"``, the classic per-location trick) keeps
    each location's marginal but changes the objective once a later layer mixes locations
    (pooling, a dense head). The default ``conv="flipout"`` handles Conv2d layers with flipout
    instead, which is exact per example and still decorrelates the examples of a batch.

    Args:
        conv: ``"flipout"`` (exact, default) or ``"independent"`` (per-location noise; an
            approximation for networks that mix locations).

    Example:
        >>> from bayesdl.handlers import local_reparam
        >>> with local_reparam():  # around the whole guide + model evaluation
        ...     pass

    References:
        D. P. Kingma, T. Salimans, M. Welling, *Variational Dropout and the Local
        Reparameterization Trick*, NeurIPS 2015.
    """

    def __init__(self, *, conv: str = "flipout"):
        super().__init__()
        if conv not in _CONV_MODES:
            raise ValueError(f"conv must be one of {_CONV_MODES}, got {conv!r}")
        self.conv = conv

    def noisy_linear(self, x, weight, bias=None, *, scale):
        mean = F.linear(x, weight, bias)
        var = F.linear(x * x, scale * scale)
        return mean + (var + torch.finfo(var.dtype).tiny).sqrt() * torch.randn_like(mean)

    def noisy_conv2d(
        self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale
    ):
        if self.conv == "flipout":
            return FlipoutMessenger.noisy_conv2d(
                self, x, weight, bias, stride, padding, dilation, groups, scale=scale
            )
        mean = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        var = F.conv2d(x * x, scale * scale, None, stride, padding, dilation, groups)
        return mean + (var + torch.finfo(var.dtype).tiny).sqrt() * torch.randn_like(mean)

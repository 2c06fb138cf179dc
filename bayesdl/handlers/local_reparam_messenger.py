"""Local reparameterisation: sample pre-activations instead of Gaussian weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bayesdl.handlers.weight_noise_messenger import WeightNoiseMessenger


class LocalReparamMessenger(WeightNoiseMessenger):
    """Local reparameterisation trick for ``nn.Linear`` and ``nn.Conv2d`` weights.

    For a Gaussian weight ``W ~ N(M, S^2)`` a linear layer's output for input ``x`` is exactly
    ``N(x M^T + b, x^2 (S^2)^T)`` per unit, so it is sampled directly with independent noise
    per data point: the same marginal mean and variance per output, lower-variance gradients.
    For convolutions the same holds per output location (spatial correlations are dropped).

    Example:
        >>> from bayesdl.handlers import local_reparam
        >>> with local_reparam():  # around the whole guide + model evaluation
        ...     pass

    References:
        D. P. Kingma, T. Salimans, M. Welling, *Variational Dropout and the Local
        Reparameterization Trick*, NeurIPS 2015.
    """

    def noisy_linear(self, x, weight, bias=None, *, scale):
        mean = F.linear(x, weight, bias)
        var = F.linear(x * x, scale * scale)
        return mean + (var + torch.finfo(var.dtype).tiny).sqrt() * torch.randn_like(mean)

    def noisy_conv2d(
        self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale
    ):
        mean = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        var = F.conv2d(x * x, scale * scale, None, stride, padding, dilation, groups)
        return mean + (var + torch.finfo(var.dtype).tiny).sqrt() * torch.randn_like(mean)

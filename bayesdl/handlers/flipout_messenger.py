"""Flipout: pseudo-independent weight perturbations per example from one Gaussian draw."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bayesdl.handlers.weight_noise_messenger import WeightNoiseMessenger, rademacher_like


class FlipoutMessenger(WeightNoiseMessenger):
    """Flipout for ``nn.Linear`` and ``nn.Conv2d`` weights ``W = M + S * E``.

    One perturbation ``dW = S * E`` is drawn per particle and decorrelated across the examples
    of a batch with random sign vectors: ``y = x M^T + b + ((x * s_in) dW^T) * s_out``. Each
    example's output has exactly the distribution it would have under weight sampling.
    For convolutions the signs are per example and channel.

    Example:
        >>> from bayesdl.handlers import flipout
        >>> with flipout():
        ...     pass

    References:
        Y. Wen, P. Vicol, J. Ba, D. Tran, R. Grosse, *Flipout: Efficient Pseudo-Independent
        Weight Perturbations on Mini-Batches*, ICLR 2018.
    """

    def noisy_linear(self, x, weight, bias=None, *, scale):
        mean = F.linear(x, weight, bias)
        delta = scale * torch.randn_like(scale)
        s_in = rademacher_like(x)
        s_out = rademacher_like(mean)
        return mean + F.linear(x * s_in, delta) * s_out

    def noisy_conv2d(
        self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale
    ):
        mean = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        delta = scale * torch.randn_like(scale)
        s_in = rademacher_like(x, x.shape[:-2] + (1, 1))
        s_out = rademacher_like(mean, mean.shape[:-2] + (1, 1))
        return mean + F.conv2d(x * s_in, delta, None, stride, padding, dilation, groups) * s_out

"""Bernoulli likelihood on logits, for binary classification."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.likelihoods.prediction import Prediction


class BernoulliLikelihood(Likelihood):
    """``y ~ Bernoulli(logits=f)`` with outputs ``[*batch, B, 1]`` and targets ``[B]`` in {0, 1}.

    Predictions report ``probs`` as ``[B, 2]`` (class 0, class 1) so classification metrics
    apply unchanged.

    Example:
        >>> import torch
        >>> from bayesdl.likelihoods import BernoulliLikelihood
        >>> BernoulliLikelihood(10).distribution(torch.zeros(4, 1), {}).batch_shape
        torch.Size([4])
    """

    def distribution(self, f: Tensor, latents: dict[str, Tensor]) -> dist.Distribution:
        if f.shape[-1] != 1:
            raise ValueError(
                f"BernoulliLikelihood needs one output per input, got {tuple(f.shape)}"
            )
        return dist.Bernoulli(logits=f.squeeze(-1))

    def check_targets(self, y: Tensor, f: Tensor) -> None:
        super().check_targets(y.float(), f)
        if y.dim() != 1:
            raise ValueError(f"y must have shape [B], got {tuple(y.shape)}")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold only 0 and 1 for a Bernoulli likelihood")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor of 0/1 values, got {y.dtype}")

    def summarize(self, f: Tensor, latents: dict[str, Tensor]) -> Prediction:
        p1 = torch.sigmoid(f.squeeze(-1)).mean(0)
        probs = torch.stack([1 - p1, p1], dim=-1)
        return Prediction(f_samples=f, mean=probs, probs=probs)

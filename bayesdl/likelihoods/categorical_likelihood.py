"""Categorical likelihood on logits, for multi-class classification."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.likelihoods.prediction import Prediction


class CategoricalLikelihood(Likelihood):
    """``y ~ Categorical(logits=f)`` with outputs ``[*batch, B, C]`` and labels ``[B]`` (long).

    Example:
        >>> import torch
        >>> from bayesdl.likelihoods import CategoricalLikelihood
        >>> CategoricalLikelihood(100).distribution(torch.zeros(4, 3), {}).batch_shape
        torch.Size([4])
    """

    def distribution(self, f: Tensor, latents: dict[str, Tensor]) -> dist.Distribution:
        return dist.Categorical(logits=f)

    def check_targets(self, y: Tensor, f: Tensor) -> None:
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels (torch.long), got {y.dtype}")
        if y.dim() != 1:
            raise ValueError(f"y must have shape [B], got {tuple(y.shape)}")
        num_classes = f.shape[-1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"y must hold labels in [0, {num_classes - 1}] for {num_classes} network "
                f"outputs, got range [{int(y.min())}, {int(y.max())}]"
            )

    def summarize(self, f: Tensor, latents: dict[str, Tensor]) -> Prediction:
        probs = f.softmax(-1).mean(0)
        return Prediction(f_samples=f, mean=probs, probs=probs)

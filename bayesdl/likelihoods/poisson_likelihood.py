"""Poisson likelihood on the log rate, for count data."""

from __future__ import annotations

import pyro.distributions as dist
from torch import Tensor

from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.likelihoods.prediction import Prediction


class PoissonLikelihood(Likelihood):
    """``y ~ Poisson(exp(f))`` with outputs ``[*batch, B, 1]`` and counts ``[B]``.

    Example:
        >>> import torch
        >>> from bayesdl.likelihoods import PoissonLikelihood
        >>> PoissonLikelihood(10).distribution(torch.zeros(4, 1), {}).mean
        tensor([1., 1., 1., 1.])
    """

    def distribution(self, f: Tensor, latents: dict[str, Tensor]) -> dist.Distribution:
        if f.shape[-1] != 1:
            raise ValueError(f"PoissonLikelihood needs one output per input, got {tuple(f.shape)}")
        return dist.Poisson(f.squeeze(-1).exp())

    def check_targets(self, y: Tensor, f: Tensor) -> None:
        super().check_targets(y.float(), f)
        if y.dim() != 1:
            raise ValueError(f"y must have shape [B], got {tuple(y.shape)}")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor of counts, got {y.dtype}")
        if not bool(((y >= 0) & (y == y.round())).all()):
            raise ValueError("y must hold non-negative integer counts for a Poisson likelihood")

    def summarize(self, f: Tensor, latents: dict[str, Tensor]) -> Prediction:
        rates = f.squeeze(-1).exp()
        mean = rates.mean(0)
        epistemic = rates.var(0, unbiased=False)
        return Prediction(
            f_samples=f,
            mean=mean,
            variance=mean + epistemic,
            epistemic_variance=epistemic,
            aleatoric_variance=mean,
            sample_means=rates,
            sample_variances=rates,
        )

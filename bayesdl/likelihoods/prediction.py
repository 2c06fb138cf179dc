"""The summary of a posterior predictive returned by :func:`bayesdl.infer.predict`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Prediction:
    """Posterior predictive summary over ``S`` posterior samples at ``B`` inputs.

    Attributes:
        f_samples: network outputs, ``[S, B, *out]``.
        mean: predictive mean of ``y``: ``[B]`` (or ``[B, D]``) for regression and counts,
            ``[B, C]`` class probabilities for classification.
        variance: total predictive variance (epistemic + aleatoric), same shape as ``mean`` for
            regression / counts; ``None`` for classification.
        epistemic_variance: variance of the sampled means across posterior samples.
        aleatoric_variance: expected observation-noise variance.
        probs: class probabilities ``[B, C]`` (averaged over samples) for classification.
        sample_means: per-sample means of ``y``, ``[S, B(, D)]`` (regression / counts).
        sample_variances: per-sample noise variances broadcastable to ``sample_means``.
    """

    f_samples: Tensor
    mean: Tensor
    variance: Tensor | None = None
    epistemic_variance: Tensor | None = None
    aleatoric_variance: Tensor | None = None
    probs: Tensor | None = None
    sample_means: Tensor | None = None
    sample_variances: Tensor | None = None

    @property
    def num_samples(self) -> int:
        """The number ``S`` of posterior samples."""
        return int(self.f_samples.shape[0])

    @property
    def std(self) -> Tensor:
        """Total predictive standard deviation (regression)."""
        if self.variance is None:
            raise AttributeError("std is defined for regression predictions only")
        return self.variance.sqrt()

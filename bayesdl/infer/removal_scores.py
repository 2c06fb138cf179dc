"""Removal scores of sparse subspace VI: folded-normal moments of Gaussian weights (pure math).

For a weight ``w ~ N(mu, sigma^2)`` the six scores of SSVI rank how much an active weight
matters; the lowest-scoring ones are dropped from the subspace. All functions here are
elementwise, differentiable, free of Pyro, and computed in float64 internally (the variances
below are small differences of large moments) before being cast back to the input dtype.

Notation: ``r = |mu| / sigma``, ``phi`` and ``Phi`` the standard normal pdf and cdf.

* ``E|w| = |mu| + 2 sigma g(r)`` with ``g(r) = phi(r) - r Phi(-r)``, which equals the textbook
  ``mu erf(mu / (sigma sqrt 2)) + sigma sqrt(2/pi) exp(-mu^2 / (2 sigma^2))``;
* ``Var|w| = mu^2 + sigma^2 - (E|w|)^2 = sigma^2 (1 - 4 g^2 - 4 r g)`` (no cancellation);
* ``E[exp(lam |w|)] = exp(lam^2 sigma^2 / 2 + lam mu) Phi(mu / sigma + lam sigma)
  + exp(lam^2 sigma^2 / 2 - lam mu) Phi(-mu / sigma + lam sigma)``, evaluated in log space.

References:
    J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse Subspace
    Variational Inference*, ICLR 2024; F. C. Leone, L. S. Nelson, R. B. Nottingham, *The Folded
    Normal Distribution*, Technometrics 3(4), 1961.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "REMOVAL_SCORES",
    "RemovalScoreFn",
    "exp_abs_moment",
    "folded_normal_mean",
    "folded_normal_variance",
    "get_removal_score",
    "removal_score",
]

RemovalScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(loc, scale) -> score``: elementwise, larger means more worth keeping."""

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _wide(loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    loc, scale = torch.broadcast_tensors(loc, scale)
    return loc.to(torch.float64), scale.to(torch.float64)


def _g(r: Tensor) -> Tensor:
    """``phi(r) - r Phi(-r)`` (the standard normal loss function), for ``r >= 0``."""
    return _INV_SQRT_2PI * torch.exp(-0.5 * r * r) - r * torch.special.ndtr(-r)


def folded_normal_mean(loc: Tensor, scale: Tensor) -> Tensor:
    """``E|w|`` for ``w ~ N(loc, scale^2)`` (the mean of the folded normal), elementwise.

    Args:
        loc: means ``mu``, any shape.
        scale: standard deviations ``sigma > 0``, broadcastable with ``loc``.

    Returns:
        ``E|w|``, the broadcast shape, dtype of ``loc``.
    """
    mu, sigma = _wide(loc, scale)
    a = mu.abs()
    return (a + 2.0 * sigma * _g(a / sigma)).to(loc.dtype)


def folded_normal_variance(loc: Tensor, scale: Tensor) -> Tensor:
    """``Var|w| = mu^2 + sigma^2 - (E|w|)^2`` for ``w ~ N(loc, scale^2)``, elementwise.

    Computed as ``sigma^2 (1 - 4 g^2 - 4 r g)`` with ``r = |mu| / sigma``, which has no
    cancellation when ``|mu| >> sigma`` (there ``Var|w| -> sigma^2``).
    """
    mu, sigma = _wide(loc, scale)
    r = mu.abs() / sigma
    g = _g(r)
    return (sigma * sigma * (1.0 - 4.0 * g * g - 4.0 * r * g)).to(loc.dtype)


def _log_exp_abs_moment(mu: Tensor, sigma: Tensor, lam: float) -> Tensor:
    half = 0.5 * lam * lam * sigma * sigma
    t1 = half + lam * mu + torch.special.log_ndtr(mu / sigma + lam * sigma)
    t2 = half - lam * mu + torch.special.log_ndtr(-mu / sigma + lam * sigma)
    return torch.logaddexp(t1, t2)


def exp_abs_moment(loc: Tensor, scale: Tensor, lam: float = 1.0) -> Tensor:
    """``E[exp(lam |w|)]`` for ``w ~ N(loc, scale^2)``, elementwise (log-space evaluation).

    Args:
        loc: means, any shape.
        scale: standard deviations ``> 0``, broadcastable with ``loc``.
        lam: the exponent's rate ``lam`` (SSVI uses 1).
    """
    mu, sigma = _wide(loc, scale)
    return _log_exp_abs_moment(mu, sigma, float(lam)).exp().to(loc.dtype)


def _score_mean(mu: Tensor, sigma: Tensor) -> Tensor:
    return mu.abs()


def _score_snr(mu: Tensor, sigma: Tensor) -> Tensor:
    return mu.abs() / sigma


def _score_e_abs(mu: Tensor, sigma: Tensor) -> Tensor:
    return mu.abs() + 2.0 * sigma * _g(mu.abs() / sigma)


def _score_snr_abs(mu: Tensor, sigma: Tensor) -> Tensor:
    r = mu.abs() / sigma
    g = _g(r)
    # E|w| / sd|w| with the common factor sigma cancelled
    return (r + 2.0 * g) / torch.sqrt(1.0 - 4.0 * g * g - 4.0 * r * g)


def _score_e_exp_abs(mu: Tensor, sigma: Tensor) -> Tensor:
    return _log_exp_abs_moment(mu, sigma, 1.0).exp()


def _score_snr_exp_abs(mu: Tensor, sigma: Tensor) -> Tensor:
    log_m1 = _log_exp_abs_moment(mu, sigma, 1.0)
    log_m2 = _log_exp_abs_moment(mu, sigma, 2.0)
    # E[e^|w|] / sqrt(E[e^2|w|] - E[e^|w|]^2) = 1 / sqrt(exp(log m2 - 2 log m1) - 1)
    return torch.expm1(log_m2 - 2.0 * log_m1).rsqrt()


#: The six removal scores of SSVI by the names of the authors' code (``SNR_mean_abs`` is the
#: default there). Each maps ``(loc, scale)`` to a float64 score; see :func:`removal_score`.
REMOVAL_SCORES: dict[str, RemovalScoreFn] = {
    "mean": _score_mean,
    "snr": _score_snr,
    "E_mean_abs": _score_e_abs,
    "SNR_mean_abs": _score_snr_abs,
    "E_exp_mean_abs": _score_e_exp_abs,
    "SNR_exp_mean_abs": _score_snr_exp_abs,
}


def get_removal_score(score: str | RemovalScoreFn) -> RemovalScoreFn:
    """Resolve a score name (a key of :data:`REMOVAL_SCORES`) or pass a callable through.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: neither a string nor a callable.
    """
    if isinstance(score, str):
        try:
            return REMOVAL_SCORES[score]
        except KeyError:
            raise ValueError(
                f"removal_score must be one of {sorted(REMOVAL_SCORES)} or a callable "
                f"(loc, scale) -> score, got {score!r}"
            ) from None
    if callable(score):
        return score
    raise TypeError(
        f"removal_score must be a score name or a callable (loc, scale) -> score, "
        f"got {type(score).__name__}"
    )


def removal_score(score: str | RemovalScoreFn, loc: Tensor, scale: Tensor) -> Tensor:
    """Evaluate a removal score of weights ``N(loc, scale^2)``, elementwise.

    Scores are computed in float64 and returned in ``loc``'s dtype; NaNs (weights whose scale
    underflowed to zero, where the ratios are ``0 / 0``) get score 0, as in the authors' code.

    Args:
        score: a name of :data:`REMOVAL_SCORES` (``"mean"`` ``|mu|``, ``"snr"`` ``|mu|/sigma``,
            ``"E_mean_abs"`` ``E|w|``, ``"SNR_mean_abs"`` ``E|w| / sd|w|``, ``"E_exp_mean_abs"``
            ``E e^|w|``, ``"SNR_exp_mean_abs"`` ``E e^|w| / sd(e^|w|)``) or a callable.
        loc: means ``[n]`` (any shape).
        scale: standard deviations, broadcastable with ``loc``.

    Returns:
        scores, the broadcast shape of ``loc`` and ``scale``.

    Example:
        >>> import torch
        >>> from bayesdl.infer.removal_scores import removal_score
        >>> removal_score("snr", torch.tensor([1.0, -4.0]), torch.tensor([0.5, 1.0]))
        tensor([2., 4.])
    """
    fn = get_removal_score(score)
    mu, sigma = _wide(loc, scale)
    return torch.nan_to_num(fn(mu, sigma), nan=0.0).to(loc.dtype)

"""Predictive-performance metrics for Bayesian regression and classification.

Pure tensor functions: no ``pyro.sample`` and no global state. Every result lives on the
device of the inputs and has their (promoted) floating dtype, so float64 inputs give float64
results. Inputs are validated; a bad input raises :class:`TypeError` (not a tensor, wrong
dtype) or :class:`ValueError` (wrong shape, NaN, negative variance, probabilities that do not
sum to one, labels out of range), and the message names the offending argument.

Regression metrics take a predictive ``mean`` and variance ``var`` (for a Bayesian model the
moment-matched predictive: mean of the per-sample means, and mean of the per-sample variances
plus the variance of the per-sample means) and targets ``y`` of the same shape, ``N`` or
``N x D``. :func:`mixture_gaussian_nll` instead scores the full ``S``-component predictive
mixture from per-sample means and variances of shape ``S x N``.

Classification metrics take predictive class probabilities ``probs`` of shape ``N x C`` (for a
Bayesian model, the average of the per-sample softmax outputs) and integer class labels ``y``
of shape ``N``. Each row of ``probs`` must be non-negative and sum to one within
``max(1e-3, 10 * eps)`` of the dtype (``eps`` from :func:`torch.finfo`); the tolerance is
loose on purpose: it catches logits or unnormalised scores, not rounding error.

References:
    Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017
    (expected calibration error, reliability diagrams).
    Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
    Review 78(1), 1950.
    Gneiting, Raftery, "Strictly Proper Scoring Rules, Prediction, and Estimation", JASA 2007.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ReliabilityCurve",
    "accuracy",
    "brier_score",
    "categorical_nll",
    "classification_metrics",
    "ece",
    "expected_calibration_error",
    "gaussian_interval_coverage",
    "gaussian_nll",
    "interval_coverage",
    "mixture_gaussian_nll",
    "regression_metrics",
    "reliability_curve",
    "rmse",
]

Reduction = Literal["mean", "sum", "none"]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_float_tensor(name: str, x: object) -> Tensor:
    """Checks that ``x`` is a non-empty floating-point tensor without NaN."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN")
    return x


def _as_float_tensor(name: str, x: object, like: Tensor) -> Tensor:
    """Turns a Python number into a 0-d tensor like ``like``; checks a tensor as usual."""
    if isinstance(x, Real) and not isinstance(x, bool):
        if math.isnan(float(x)):
            raise ValueError(f"{name} is NaN")
        return torch.as_tensor(float(x), dtype=like.dtype, device=like.device)
    return _check_float_tensor(name, x)


def _check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"inputs must be on one device, got {found}")


def _check_same_shape(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} must have the same shape as {ref_name}, "
            f"got {tuple(x.shape)} and {tuple(ref.shape)}"
        )


def _check_broadcastable(name: str, x: Tensor, shape: torch.Size, ref_name: str) -> None:
    try:
        ok = torch.broadcast_shapes(x.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} does not broadcast to the shape of "
            f"{ref_name}, {tuple(shape)}"
        )


def _check_variance(name: str, var: Tensor, *, strict: bool) -> None:
    if bool((var < 0).any()):
        raise ValueError(f"{name} must be non-negative, found a negative variance")
    if strict and bool((var == 0).any()):
        raise ValueError(f"{name} must be positive, found a zero variance (infinite NLL)")


def _promote(*tensors: Tensor) -> tuple[Tensor, ...]:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _prob_atol(dtype: torch.dtype) -> float:
    return max(1e-3, 10.0 * torch.finfo(dtype).eps)


def _check_probs(probs: object) -> Tensor:
    probs = _check_float_tensor("probs", probs)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}")
    if bool((probs < 0).any()):
        raise ValueError("probs must be non-negative, found a negative probability")
    atol = _prob_atol(probs.dtype)
    deviation = float((probs.sum(-1) - 1).abs().max())
    if not deviation <= atol:
        raise ValueError(
            f"probs rows must sum to 1 (tolerance {atol:g}), largest deviation is "
            f"{deviation:.3g}; pass probabilities, not logits (see torch.softmax)"
        )
    return probs


def _check_labels(y: object, probs: Tensor) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(
            f"y must be an integer tensor of class indices (e.g. torch.long), got dtype {y.dtype}"
        )
    num_points, num_classes = probs.shape
    if y.shape != (num_points,):
        raise ValueError(
            f"y must have shape (N,) = ({num_points},) to match probs of shape "
            f"{tuple(probs.shape)}, got {tuple(y.shape)}"
        )
    _check_same_device(probs=probs, y=y)
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"y has labels out of range [0, {num_classes - 1}] for C = {num_classes} classes "
            f"(found min {low}, max {high})"
        )
    return y.long()


def _check_num_bins(num_bins: object) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, Integral):
        raise TypeError(f"num_bins must be an int, got {type(num_bins).__name__}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    return int(num_bins)


def _gaussian_log_prob(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    return -0.5 * (_LOG_2PI + var.log() + (y - mean).pow(2) / var)


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------


def rmse(mean: Tensor, y: Tensor) -> Tensor:
    """Root mean squared error of a point prediction.

    Args:
        mean: Predictions, shape ``N`` or ``N x D``.
        y: Targets, same shape as ``mean``.

    Returns:
        A 0-d tensor, ``sqrt(mean((mean - y) ** 2))`` averaged over all elements.

    Example:
        >>> rmse(torch.tensor([0.0, 0.0]), torch.tensor([3.0, -3.0]))
        tensor(3.)
    """
    mean = _check_float_tensor("mean", mean)
    y = _check_float_tensor("y", y)
    _check_same_shape("y", y, "mean", mean)
    _check_same_device(mean=mean, y=y)
    mean, y = _promote(mean, y)
    return (mean - y).pow(2).mean().sqrt()


def gaussian_nll(
    mean: Tensor,
    var: Tensor | float,
    y: Tensor,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """Negative log-likelihood of ``y`` under a Gaussian predictive, per element.

    ``0.5 * log(2 * pi * var) + (y - mean) ** 2 / (2 * var)``. For a Bayesian model pass the
    moment-matched predictive mean and variance; :func:`mixture_gaussian_nll` scores the
    full mixture instead.

    Args:
        mean: Predictive mean, shape ``N`` or ``N x D``.
        var: Predictive variance, positive, a tensor broadcastable to ``mean`` (e.g. a
            scalar noise variance) or a Python float.
        y: Targets, same shape as ``mean``.
        reduction: ``"mean"`` (over all elements), ``"sum"``, or ``"none"`` (shape of
            ``mean``). For ``N x D`` targets, ``reduction="none"`` then ``.sum(-1)`` gives
            the per-point joint NLL of independent outputs.

    Returns:
        A 0-d tensor, or per-element NLLs with ``reduction="none"``.

    Example:
        >>> gaussian_nll(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0]))
        tensor(0.9189)
    """
    _check_reduction(reduction)
    mean = _check_float_tensor("mean", mean)
    y = _check_float_tensor("y", y)
    var = _as_float_tensor("var", var, like=mean)
    _check_same_shape("y", y, "mean", mean)
    _check_broadcastable("var", var, mean.shape, "mean")
    _check_same_device(mean=mean, var=var, y=y)
    _check_variance("var", var, strict=True)
    mean, var, y = _promote(mean, var, y)
    nll = -_gaussian_log_prob(mean, var, y).expand(mean.shape)
    return _reduce(nll, reduction)


def mixture_gaussian_nll(
    means: Tensor,
    variances: Tensor | float,
    y: Tensor,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """Negative log-likelihood under an equally weighted mixture of ``S`` Gaussians.

    Per point, ``-log((1 / S) * sum_s N(y | means[s], variances[s]))``, computed with
    ``logsumexp`` so it stays finite when every component density underflows. This is the
    NLL of the sample-based Bayesian predictive (one component per posterior sample) and is
    never larger than the worst component's NLL.

    Args:
        means: Per-sample predictive means, shape ``S x N`` (generally ``S x *y.shape``).
        variances: Per-sample predictive variances, positive, broadcastable to ``means``:
            ``S x N``, ``S x 1``, a 0-d tensor or a Python float (a shared noise variance).
        y: Targets, shape ``N`` (generally ``means.shape[1:]``).
        reduction: ``"mean"``, ``"sum"``, or ``"none"`` (shape of ``y``).

    Returns:
        A 0-d tensor, or per-point NLLs of shape ``y.shape`` with ``reduction="none"``.

    Example:
        >>> means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])  # S=2 samples, N=2 points
        >>> mixture_gaussian_nll(means, 1.0, torch.tensor([0.0, 0.0]), reduction="none")
        tensor([1.4189, 0.9189])
    """
    _check_reduction(reduction)
    means = _check_float_tensor("means", means)
    y = _check_float_tensor("y", y)
    variances = _as_float_tensor("variances", variances, like=means)
    if means.dim() != y.dim() + 1 or means.shape[1:] != y.shape:
        raise ValueError(
            f"means must have shape (S, *y.shape) = (S, {', '.join(map(str, y.shape))}), "
            f"got {tuple(means.shape)}"
        )
    _check_broadcastable("variances", variances, means.shape, "means")
    _check_same_device(means=means, variances=variances, y=y)
    _check_variance("variances", variances, strict=True)
    means, variances, y = _promote(means, variances, y)
    log_probs = _gaussian_log_prob(means, variances, y).expand(means.shape)
    nll = math.log(means.shape[0]) - torch.logsumexp(log_probs, dim=0)
    return _reduce(nll, reduction)


def interval_coverage(lower: Tensor, upper: Tensor, y: Tensor) -> Tensor:
    """Fraction of targets inside their predictive interval, ``lower <= y <= upper``.

    Args:
        lower: Lower interval ends, broadcastable to ``y`` (shape ``N`` or ``N x D``).
        upper: Upper interval ends, broadcastable to ``y``; ``lower <= upper`` elementwise.
        y: Targets, shape ``N`` or ``N x D``.

    Returns:
        A 0-d tensor in ``[0, 1]``, the closed-interval coverage over all elements of ``y``.

    Example:
        >>> interval_coverage(torch.zeros(4), torch.ones(4), torch.tensor([0.0, 0.5, 1.0, 2.0]))
        tensor(0.7500)
    """
    lower = _check_float_tensor("lower", lower)
    upper = _check_float_tensor("upper", upper)
    y = _check_float_tensor("y", y)
    _check_broadcastable("lower", lower, y.shape, "y")
    _check_broadcastable("upper", upper, y.shape, "y")
    _check_same_device(lower=lower, upper=upper, y=y)
    lower, upper, y = _promote(lower, upper, y)
    if bool((lower > upper).any()):
        raise ValueError("lower must be <= upper elementwise, found lower > upper")
    return _coverage(lower, upper, y)


def _coverage(lower: Tensor, upper: Tensor, y: Tensor) -> Tensor:
    inside = (lower <= y) & (y <= upper)
    return inside.to(y.dtype).mean()


def gaussian_interval_coverage(
    mean: Tensor,
    var: Tensor | float,
    y: Tensor,
    *,
    level: float = 0.95,
) -> Tensor:
    """Coverage of the central Gaussian predictive interval at a given level.

    The interval is ``mean -/+ z * sqrt(var)`` with ``z = Phi^{-1}((1 + level) / 2)``
    (``z = 1.95996...`` for ``level=0.95``). A calibrated predictive gives coverage close to
    ``level``.

    Args:
        mean: Predictive mean, shape ``N`` or ``N x D``.
        var: Predictive variance, non-negative, a tensor broadcastable to ``mean`` or a
            Python float.
        y: Targets, same shape as ``mean``.
        level: Nominal coverage, in the open interval ``(0, 1)``.

    Returns:
        A 0-d tensor in ``[0, 1]``.

    Example:
        >>> gaussian_interval_coverage(torch.zeros(3), 1.0, torch.tensor([0.0, 1.9, 2.0]))
        tensor(0.6667)
    """
    if isinstance(level, bool) or not isinstance(level, Real):
        raise TypeError(f"level must be a float, got {type(level).__name__}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in the open interval (0, 1), got {level}")
    mean = _check_float_tensor("mean", mean)
    y = _check_float_tensor("y", y)
    var = _as_float_tensor("var", var, like=mean)
    _check_same_shape("y", y, "mean", mean)
    _check_broadcastable("var", var, mean.shape, "mean")
    _check_same_device(mean=mean, var=var, y=y)
    _check_variance("var", var, strict=False)
    mean, var, y = _promote(mean, var, y)
    z = torch.special.ndtri(mean.new_tensor((1.0 + float(level)) / 2.0))
    half_width = z * var.sqrt()
    return _coverage(mean - half_width, mean + half_width, y)


def regression_metrics(
    mean: Tensor,
    var: Tensor | float,
    y: Tensor,
    *,
    samples_mean: Tensor | None = None,
    samples_var: Tensor | float | None = None,
) -> dict[str, float]:
    """The standard regression summary of a (Bayesian) predictive, as Python floats.

    Args:
        mean: Moment-matched predictive mean, shape ``N`` or ``N x D``.
        var: Moment-matched predictive variance (broadcastable to ``mean``, positive).
        y: Targets, same shape as ``mean``.
        samples_mean: Optional per-sample predictive means, shape ``S x N``.
        samples_var: Per-sample predictive variances, broadcastable to ``samples_mean``
            (e.g. a float noise variance); required exactly when ``samples_mean`` is given.

    Returns:
        ``{"rmse", "nll", "coverage_95"}`` (:func:`rmse`, mean :func:`gaussian_nll`,
        :func:`gaussian_interval_coverage` at level 0.95), plus ``"nll_mixture"`` (mean
        :func:`mixture_gaussian_nll`) when per-sample moments are given.

    Example:
        >>> out = regression_metrics(torch.zeros(4), 1.0, torch.tensor([0.0, 1.0, -1.0, 3.0]))
        >>> sorted(out), round(out["coverage_95"], 2)
        (['coverage_95', 'nll', 'rmse'], 0.75)
    """
    if (samples_mean is None) != (samples_var is None):
        raise ValueError(
            "samples_mean and samples_var must be given together "
            "(samples_var may be a float noise variance)"
        )
    out = {
        "rmse": float(rmse(mean, y)),
        "nll": float(gaussian_nll(mean, var, y)),
        "coverage_95": float(gaussian_interval_coverage(mean, var, y, level=0.95)),
    }
    if samples_mean is not None:
        assert samples_var is not None
        out["nll_mixture"] = float(mixture_gaussian_nll(samples_mean, samples_var, y))
    return out


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def categorical_nll(
    probs: Tensor,
    y: Tensor,
    *,
    reduction: Reduction = "mean",
    eps: float = 1e-12,
) -> Tensor:
    """Negative log predictive probability of the true class, ``-log(max(probs[n, y_n], eps))``.

    The clamp at ``eps`` keeps a confidently wrong prediction (probability exactly 0, e.g.
    from an underflowed softmax) finite: it caps the per-point NLL at ``-log(eps)``,
    about 27.6 for the default ``eps=1e-12``. It changes nothing for probabilities above
    ``eps``. (In float16, 1e-12 underflows to 0; pass a larger ``eps`` there.)

    Args:
        probs: Predictive class probabilities, shape ``N x C``, rows summing to 1.
        y: Class labels, integer tensor of shape ``N`` with values in ``[0, C)``.
        reduction: ``"mean"``, ``"sum"``, or ``"none"`` (shape ``N``).
        eps: Lower clamp for the true-class probability, in ``(0, 1)``.

    Returns:
        A 0-d tensor, or per-point NLLs of shape ``N`` with ``reduction="none"``.

    Example:
        >>> probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
        >>> categorical_nll(probs, torch.tensor([0, 1]), reduction="none")
        tensor([0.6931, 2.3026])
    """
    _check_reduction(reduction)
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not 0.0 < float(eps) < 1.0:
        raise ValueError(f"eps must be in the open interval (0, 1), got {eps}")
    probs = _check_probs(probs)
    y = _check_labels(y, probs)
    p_true = probs.gather(1, y.unsqueeze(1)).squeeze(1)
    nll = -p_true.clamp_min(float(eps)).log()
    return _reduce(nll, reduction)


def accuracy(probs: Tensor, y: Tensor) -> Tensor:
    """Fraction of points whose most probable class is the label.

    Ties go to the lowest class index (:func:`torch.argmax`).

    Args:
        probs: Predictive class probabilities, shape ``N x C``.
        y: Class labels, integer tensor of shape ``N``.

    Returns:
        A 0-d tensor in ``[0, 1]`` with the dtype of ``probs``.

    Example:
        >>> accuracy(torch.tensor([[0.8, 0.2], [0.3, 0.7]]), torch.tensor([0, 0]))
        tensor(0.5000)
    """
    probs = _check_probs(probs)
    y = _check_labels(y, probs)
    return (probs.argmax(-1) == y).to(probs.dtype).mean()


def brier_score(probs: Tensor, y: Tensor) -> Tensor:
    """Multi-class Brier score, ``mean_n sum_c (probs[n, c] - onehot(y_n)[c]) ** 2``.

    Ranges over ``[0, 2]``: 0 for a confident correct prediction, 2 for a confident wrong
    one, ``(C - 1) / C`` for the uniform prediction.

    Args:
        probs: Predictive class probabilities, shape ``N x C``.
        y: Class labels, integer tensor of shape ``N``.

    Returns:
        A 0-d tensor with the dtype of ``probs``.

    Example:
        >>> brier_score(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 0]))
        tensor(0.2500)
    """
    probs = _check_probs(probs)
    y = _check_labels(y, probs)
    onehot = F.one_hot(y, probs.shape[1]).to(probs.dtype)
    return (probs - onehot).pow(2).sum(-1).mean()


class ReliabilityCurve(NamedTuple):
    """Per-bin statistics of a reliability diagram (a plain 3-tuple with names).

    Attributes:
        confidence: Mean max-probability of the points in each bin, shape ``num_bins``;
            NaN for an empty bin.
        accuracy: Fraction of correct predictions in each bin, shape ``num_bins``; NaN for
            an empty bin.
        count: Number of points in each bin, ``torch.long`` of shape ``num_bins``.
    """

    confidence: Tensor
    accuracy: Tensor
    count: Tensor


def _bin_sums(probs: Tensor, y: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bin index per point, and per-bin sums of confidence and of correctness."""
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == y).to(probs.dtype)
    # Interior edges k / B, k = 1..B-1, each correctly rounded. bucketize(right=False)
    # puts c in bin b when edge[b-1] < c <= edge[b]: bins are (lo, hi], the first [0, 1/B].
    edges = torch.arange(1, num_bins, dtype=probs.dtype, device=probs.device) / num_bins
    bin_index = torch.bucketize(confidence.contiguous(), edges)
    zeros = probs.new_zeros(num_bins)
    sum_confidence = zeros.index_add(0, bin_index, confidence)
    sum_correct = zeros.index_add(0, bin_index, correct)
    return bin_index, sum_confidence, sum_correct


def reliability_curve(probs: Tensor, y: Tensor, *, num_bins: int = 15) -> ReliabilityCurve:
    """Per-bin confidence, accuracy and count for a reliability diagram.

    Points are binned by confidence (max probability) into ``num_bins`` equal-width bins on
    ``[0, 1]``; bin ``b`` is ``(b / B, (b + 1) / B]``, the first bin also holding 0. Plot
    ``accuracy`` against ``confidence`` (or against bin centres ``(b + 0.5) / B``); a
    calibrated model lies on the diagonal.

    Args:
        probs: Predictive class probabilities, shape ``N x C``.
        y: Class labels, integer tensor of shape ``N``.
        num_bins: Number of bins ``B``, at least 1.

    Returns:
        ``(confidence, accuracy, count)``, each of shape ``B``. An empty bin has
        ``count == 0`` and NaN ``confidence`` and ``accuracy`` (drop it with
        ``count > 0`` before plotting). ``count`` is ``torch.long``; the others have the
        dtype of ``probs``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
        >>> curve = reliability_curve(probs, torch.tensor([0, 1, 1]), num_bins=2)
        >>> curve.count, curve.accuracy
        (tensor([0, 3]), tensor([   nan, 0.6667]))
    """
    num_bins = _check_num_bins(num_bins)
    probs = _check_probs(probs)
    y = _check_labels(y, probs)
    bin_index, sum_confidence, sum_correct = _bin_sums(probs, y, num_bins)
    count = torch.bincount(bin_index, minlength=num_bins)
    nonempty = count > 0
    denominator = count.clamp_min(1).to(probs.dtype)
    nan = probs.new_tensor(float("nan"))
    return ReliabilityCurve(
        confidence=torch.where(nonempty, sum_confidence / denominator, nan),
        accuracy=torch.where(nonempty, sum_correct / denominator, nan),
        count=count,
    )


def expected_calibration_error(probs: Tensor, y: Tensor, *, num_bins: int = 15) -> Tensor:
    """Expected calibration error with equal-width confidence bins.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|`` over the bins of :func:`reliability_curve`
    (empty bins contribute 0), where ``acc_b`` is the accuracy and ``conf_b`` the mean
    confidence (max probability) of the ``n_b`` points in bin ``b``.

    Args:
        probs: Predictive class probabilities, shape ``N x C``.
        y: Class labels, integer tensor of shape ``N``.
        num_bins: Number of equal-width bins on ``[0, 1]``, at least 1.

    Returns:
        A 0-d tensor in ``[0, 1]`` with the dtype of ``probs``.

    References:
        Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
        >>> expected_calibration_error(probs, torch.tensor([0, 1, 1]), num_bins=2)
        tensor(0.1000)
    """
    num_bins = _check_num_bins(num_bins)
    probs = _check_probs(probs)
    y = _check_labels(y, probs)
    _, sum_confidence, sum_correct = _bin_sums(probs, y, num_bins)
    # (n_b / N) * |acc_b - conf_b| == |sum_correct_b - sum_confidence_b| / N, also for n_b = 0.
    return (sum_correct - sum_confidence).abs().sum() / probs.shape[0]


ece = expected_calibration_error
"""Alias of :func:`expected_calibration_error`."""


def classification_metrics(probs: Tensor, y: Tensor, *, num_bins: int = 15) -> dict[str, float]:
    """The standard classification summary of a (Bayesian) predictive, as Python floats.

    Args:
        probs: Predictive class probabilities, shape ``N x C``.
        y: Class labels, integer tensor of shape ``N``.
        num_bins: Number of confidence bins for the ECE.

    Returns:
        ``{"accuracy", "nll", "ece", "brier"}`` from :func:`accuracy`, mean
        :func:`categorical_nll`, :func:`expected_calibration_error` and :func:`brier_score`.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
        >>> out = classification_metrics(probs, torch.tensor([0, 1]))
        >>> round(out["accuracy"], 4), round(out["brier"], 4)
        (1.0, 0.05)
    """
    return {
        "accuracy": float(accuracy(probs, y)),
        "nll": float(categorical_nll(probs, y)),
        "ece": float(expected_calibration_error(probs, y, num_bins=num_bins)),
        "brier": float(brier_score(probs, y)),
    }

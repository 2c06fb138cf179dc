"""Tests for :mod:`bayesdl.metrics`.

Tier 1 (contracts: dtype, device, shapes), tier 2 (exact values against hand computations
and scipy), property tests (hypothesis) and one Monte-Carlo coverage check with a binomial
standard-error bound. Exact comparisons run in float64; unless a test says otherwise the
tolerance ``_ATOL`` is a few hundred float64 ulps, the rounding of a short sum of logs.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp
from scipy.stats import norm

from bayesdl import metrics
from bayesdl.metrics import (
    ReliabilityCurve,
    accuracy,
    brier_score,
    categorical_nll,
    classification_metrics,
    ece,
    expected_calibration_error,
    gaussian_interval_coverage,
    gaussian_nll,
    interval_coverage,
    mixture_gaussian_nll,
    regression_metrics,
    reliability_curve,
    rmse,
)

_ATOL = 1e-12  # float64 rounding of O(10)-term sums of O(1) numbers
_F64 = torch.float64


def _t(x, device, dtype=_F64):
    return torch.as_tensor(x, dtype=dtype, device=device)


def _labels(x, device):
    return torch.as_tensor(x, dtype=torch.long, device=device)


def _close(actual: torch.Tensor, expected, atol: float = _ATOL) -> None:
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, rtol=0, atol=atol)


def test_all_is_sorted_and_complete():
    assert metrics.__all__ == sorted(metrics.__all__)
    for name in metrics.__all__:
        assert hasattr(metrics, name)
    assert ece is expected_calibration_error


def test_docstring_examples_run():
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 13
    assert result.failed == 0


# --------------------------------------------------------------------------------------------
# tier 1: dtype, device, shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_regression_outputs_follow_input_dtype_and_device(dtype, device):
    mean = torch.randn(7, 2, dtype=dtype, device=device)
    var = torch.rand(7, 2, dtype=dtype, device=device) + 0.1
    y = torch.randn(7, 2, dtype=dtype, device=device)
    outputs = [
        rmse(mean, y),
        gaussian_nll(mean, var, y),
        gaussian_nll(mean, 0.5, y, reduction="none"),
        mixture_gaussian_nll(torch.stack([mean, mean + 1]), var, y, reduction="none"),
        interval_coverage(mean - var, mean + var, y),
        gaussian_interval_coverage(mean, var, y, level=0.9),
    ]
    for out in outputs:
        assert out.dtype == dtype
        assert out.device == device
    assert outputs[2].shape == (7, 2)
    assert outputs[3].shape == (7, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_classification_outputs_follow_input_dtype_and_device(dtype, device):
    probs = torch.softmax(torch.randn(9, 4, dtype=dtype, device=device), dim=-1)
    y = torch.randint(0, 4, (9,), device=device)
    for out in [
        categorical_nll(probs, y),
        accuracy(probs, y),
        brier_score(probs, y),
        expected_calibration_error(probs, y),
    ]:
        assert out.shape == ()
        assert out.dtype == dtype
        assert out.device == device
    assert categorical_nll(probs, y, reduction="none").shape == (9,)
    curve = reliability_curve(probs, y, num_bins=6)
    assert isinstance(curve, ReliabilityCurve)
    assert [t.shape for t in curve] == [(6,), (6,), (6,)]
    assert curve.confidence.dtype == dtype and curve.accuracy.dtype == dtype
    assert curve.count.dtype == torch.long
    assert all(t.device == device for t in curve)


def test_mixed_float_dtypes_promote(device):
    mean = torch.zeros(3, dtype=torch.float32, device=device)
    y = torch.ones(3, dtype=torch.float64, device=device)
    assert rmse(mean, y).dtype == torch.float64
    assert gaussian_nll(mean, 1.0, y).dtype == torch.float64


def test_integer_labels_of_any_width_accepted(device):
    probs = _t([[0.2, 0.8], [0.6, 0.4]], device)
    for dtype in (torch.int32, torch.int64, torch.uint8):
        y = torch.tensor([1, 0], dtype=dtype, device=device)
        _close(accuracy(probs, y), 1.0)


# --------------------------------------------------------------------------------------------
# tier 2: regression, exact values
# --------------------------------------------------------------------------------------------


def test_rmse_hand_computed(device):
    _close(rmse(_t([1.0, 2.0, 3.0], device), _t([2.0, 2.0, 5.0], device)), math.sqrt(5 / 3))
    mean = _t([[0.0, 1.0], [2.0, 3.0]], device)
    y = _t([[1.0, 1.0], [2.0, 0.0]], device)
    _close(rmse(mean, y), math.sqrt((1 + 0 + 0 + 9) / 4))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gaussian_nll_matches_scipy(reduction, device):
    rng = np.random.default_rng(0)
    mean, y = rng.normal(size=(2, 11))
    var = rng.uniform(0.05, 3.0, size=11)
    expected = -norm.logpdf(y, loc=mean, scale=np.sqrt(var))
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]
    out = gaussian_nll(_t(mean, device), _t(var, device), _t(y, device), reduction=reduction)
    _close(out, expected)


def test_gaussian_nll_scalar_variance_broadcasts(device):
    mean = _t([[0.0, 1.0], [2.0, -1.0]], device)
    y = _t([[0.5, 1.0], [0.0, 0.0]], device)
    expected = -norm.logpdf(y.cpu().numpy(), loc=mean.cpu().numpy(), scale=math.sqrt(0.3))
    _close(gaussian_nll(mean, 0.3, y, reduction="none"), expected)
    _close(gaussian_nll(mean, _t(0.3, device), y, reduction="none"), expected)
    _close(gaussian_nll(mean, _t([0.3, 0.3], device), y, reduction="none"), expected)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_mixture_gaussian_nll_matches_scipy(reduction, device):
    rng = np.random.default_rng(1)
    means = rng.normal(size=(5, 8))
    variances = rng.uniform(0.1, 2.0, size=(5, 8))
    y = rng.normal(size=8)
    log_probs = norm.logpdf(y, loc=means, scale=np.sqrt(variances))
    expected = math.log(5) - logsumexp(log_probs, axis=0)
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]
    out = mixture_gaussian_nll(
        _t(means, device), _t(variances, device), _t(y, device), reduction=reduction
    )
    _close(out, expected)


def test_mixture_gaussian_nll_hand_computed(device):
    # S=2 unit-variance components at -1 and +1, y = 0: both densities are phi(1), so
    # NLL = 0.5 * log(2 pi) + 0.5.
    out = mixture_gaussian_nll(_t([[-1.0], [1.0]], device), 1.0, _t([0.0], device))
    _close(out, 0.5 * math.log(2 * math.pi) + 0.5)


def test_mixture_with_one_component_is_gaussian_nll(device):
    mean = torch.randn(6, dtype=_F64, device=device)
    var = torch.rand(6, dtype=_F64, device=device) + 0.1
    y = torch.randn(6, dtype=_F64, device=device)
    _close(
        mixture_gaussian_nll(mean[None], var[None], y, reduction="none"),
        gaussian_nll(mean, var, y, reduction="none").cpu().numpy(),
    )


def test_mixture_with_identical_components_is_gaussian_nll(device):
    mean = torch.randn(6, dtype=_F64, device=device)
    var = torch.rand(6, dtype=_F64, device=device) + 0.1
    y = torch.randn(6, dtype=_F64, device=device)
    means = mean.expand(4, 6)
    variances = var.expand(4, 6)
    _close(
        mixture_gaussian_nll(means, variances, y, reduction="none"),
        gaussian_nll(mean, var, y, reduction="none").cpu().numpy(),
    )


def test_mixture_nll_is_stable_when_all_densities_underflow(device):
    # Every component density is exp(-5e9): a naive log(mean(exp(.))) would give inf.
    means = _t([[0.0], [0.1]], device)
    variances = _t([[1e-4], [1e-4]], device)
    y = _t([1000.0], device)
    out = mixture_gaussian_nll(means, variances, y)
    log_probs = norm.logpdf(1000.0, loc=np.array([0.0, 0.1]), scale=1e-2)
    expected = math.log(2) - logsumexp(log_probs)
    assert torch.isfinite(out)
    _close(out, expected, atol=1e-6 * abs(expected))  # relative 1e-6 of a 5e9 value


def test_interval_coverage_hand_computed_and_closed(device):
    y = _t([0.0, 0.5, 1.0, 1.5, -0.1], device)
    # the endpoints 0 and 1 count as inside: 3 of 5
    _close(interval_coverage(_t(0.0, device), _t(1.0, device), y), 0.6)
    lower = _t([-1.0, 0.6, 1.0, 1.0, 0.0], device)
    upper = _t([1.0, 0.7, 1.0, 2.0, 0.0], device)
    _close(interval_coverage(lower, upper, y), 0.6)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_gaussian_interval_coverage_uses_exact_quantile(level, device):
    z = norm.ppf((1 + level) / 2)
    mean = _t([1.0, 1.0, -2.0, -2.0, 0.0], device)
    var = _t([4.0, 4.0, 0.25, 0.25, 1.0], device)
    # standardised offsets just inside (1 - 1e-9) and just outside (1 + 1e-9) +-z
    k = np.array([1 - 1e-9, -(1 + 1e-9), -(1 - 1e-9), 1 + 1e-9, 0.0]) * z
    y = mean + _t(k, device) * var.sqrt()
    _close(gaussian_interval_coverage(mean, var, y, level=level), 0.6)


def test_gaussian_interval_coverage_zero_variance_is_exact_match(device):
    mean = _t([1.0, 2.0], device)
    _close(gaussian_interval_coverage(mean, 0.0, _t([1.0, 2.5], device)), 0.5)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_gaussian_interval_coverage_of_exact_samples(level, device):
    # y_n ~ N(mean_n, var_n) with the true moments: each point is covered independently with
    # probability `level`, so the coverage has standard error sqrt(p (1 - p) / N); allow
    # z = 4 standard errors (two-sided false-failure rate ~6e-5 per level).
    num_points = 20_000
    gen = torch.Generator().manual_seed(123)
    mean = torch.randn(num_points, generator=gen, dtype=_F64) * 3
    var = torch.rand(num_points, generator=gen, dtype=_F64) * 2 + 0.01
    y = mean + var.sqrt() * torch.randn(num_points, generator=gen, dtype=_F64)
    coverage = gaussian_interval_coverage(
        mean.to(device), var.to(device), y.to(device), level=level
    )
    bound = 4 * math.sqrt(level * (1 - level) / num_points)
    assert abs(float(coverage) - level) < bound


def test_regression_metrics_collects_the_single_metrics(device):
    mean = torch.randn(10, dtype=_F64, device=device)
    var = torch.rand(10, dtype=_F64, device=device) + 0.2
    y = torch.randn(10, dtype=_F64, device=device)
    out = regression_metrics(mean, var, y)
    assert set(out) == {"rmse", "nll", "coverage_95"}
    assert all(type(v) is float for v in out.values())
    assert out["rmse"] == pytest.approx(float(rmse(mean, y)), abs=_ATOL)
    assert out["nll"] == pytest.approx(float(gaussian_nll(mean, var, y)), abs=_ATOL)
    assert out["coverage_95"] == float(gaussian_interval_coverage(mean, var, y))

    samples_mean = mean + torch.randn(3, 10, dtype=_F64, device=device)
    out = regression_metrics(mean, var, y, samples_mean=samples_mean, samples_var=0.4)
    expected = float(mixture_gaussian_nll(samples_mean, 0.4, y))
    assert out["nll_mixture"] == pytest.approx(expected, abs=_ATOL)


# --------------------------------------------------------------------------------------------
# tier 2: classification, exact values
# --------------------------------------------------------------------------------------------


def test_categorical_nll_hand_computed(device):
    probs = _t([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [0.25, 0.25, 0.5]], device)
    y = _labels([0, 2, 1], device)
    expected = -np.log([0.5, 0.7, 0.25])
    _close(categorical_nll(probs, y, reduction="none"), expected)
    _close(categorical_nll(probs, y), expected.mean())
    _close(categorical_nll(probs, y, reduction="sum"), expected.sum())


def test_categorical_nll_clamps_zero_probability_at_eps(device):
    probs = _t([[1.0, 0.0], [0.5, 0.5]], device)
    y = _labels([1, 1], device)
    _close(categorical_nll(probs, y, reduction="none"), [-math.log(1e-12), math.log(2)])
    _close(categorical_nll(probs, y, reduction="none", eps=1e-3)[0], -math.log(1e-3))


def test_accuracy_hand_computed(device):
    probs = _t([[0.6, 0.4, 0.0], [0.1, 0.1, 0.8], [0.3, 0.5, 0.2], [0.5, 0.5, 0.0]], device)
    # predictions 0, 2, 1, 0 (tie goes to the lowest index)
    _close(accuracy(probs, _labels([0, 2, 0, 0], device)), 0.75)


def test_brier_score_reference_values(device):
    num_classes = 4
    y = _labels([0, 3, 2, 1, 3], device)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(_F64)
    _close(brier_score(onehot, y), 0.0)
    uniform = torch.full((5, num_classes), 1 / num_classes, dtype=_F64, device=device)
    _close(brier_score(uniform, y), (num_classes - 1) / num_classes)
    _close(brier_score(onehot.roll(1, dims=1), y), 2.0)  # confident and always wrong
    # hand: point 1 -> 0.3^2 + 0.3^2 = 0.18; point 2 -> 0.6^2 + 0.6^2 = 0.72
    probs = _t([[0.7, 0.3], [0.6, 0.4]], device)
    _close(brier_score(probs, _labels([0, 1], device)), (0.18 + 0.72) / 2)


def test_ece_of_perfectly_calibrated_construction_is_zero(device):
    # 10 points at confidence 0.7 with 7 correct, 10 at 0.9 with 9 correct, 4 at 0.5
    # (binary, so the argmax is class 0) with 2 correct: every bin has acc == conf.
    conf = [0.7] * 10 + [0.9] * 10 + [0.5] * 4
    correct = [1] * 7 + [0] * 3 + [1] * 9 + [0] + [1] * 2 + [0] * 2
    probs = _t([[c, 1 - c] for c in conf], device)
    y = _labels([0 if ok else 1 for ok in correct], device)
    for num_bins in (1, 5, 10, 15):
        _close(expected_calibration_error(probs, y, num_bins=num_bins), 0.0)


def test_ece_toy_example_by_hand(device):
    # num_bins = 5, bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1].
    probs = _t(
        [
            [0.95, 0.05, 0.0],  # conf .95, pred 0 -> bin 4
            [0.1, 0.85, 0.05],  # conf .85, pred 1 -> bin 4
            [0.3, 0.3, 0.4],  # conf .40, pred 2 -> bin 1 (upper edge belongs to the bin)
            [0.7, 0.2, 0.1],  # conf .70, pred 0 -> bin 3
            [0.25, 0.65, 0.1],  # conf .65, pred 1 -> bin 3
            [0.6, 0.2, 0.2],  # conf .60, pred 0 -> bin 2 (upper edge)
        ],
        device,
    )
    y = _labels([0, 0, 2, 0, 0, 0], device)  # correct: 1, 0, 1, 1, 0, 1
    # bin 1: n=1, acc 1, conf .40      -> 1/6 * .60
    # bin 2: n=1, acc 1, conf .60      -> 1/6 * .40
    # bin 3: n=2, acc .5, conf .675    -> 2/6 * .175
    # bin 4: n=2, acc .5, conf .90     -> 2/6 * .40
    expected = (0.60 + 0.40 + 2 * 0.175 + 2 * 0.40) / 6
    _close(expected_calibration_error(probs, y, num_bins=5), expected)
    curve = reliability_curve(probs, y, num_bins=5)
    assert curve.count.tolist() == [0, 1, 1, 2, 2]
    _close(curve.confidence[1:], [0.40, 0.60, 0.675, 0.90])
    _close(curve.accuracy[1:], [1.0, 1.0, 0.5, 0.5])
    assert torch.isnan(curve.confidence[0]) and torch.isnan(curve.accuracy[0])


def test_ece_single_bin_is_accuracy_minus_mean_confidence(device):
    probs = torch.softmax(torch.randn(50, 3, dtype=_F64, device=device), dim=-1)
    y = torch.randint(0, 3, (50,), device=device)
    expected = abs(float(accuracy(probs, y)) - float(probs.max(-1).values.mean()))
    _close(expected_calibration_error(probs, y, num_bins=1), expected)


def test_ece_equals_weighted_reliability_gaps(device):
    probs = torch.softmax(2 * torch.randn(200, 5, dtype=_F64, device=device), dim=-1)
    y = torch.randint(0, 5, (200,), device=device)
    curve = reliability_curve(probs, y, num_bins=10)
    assert int(curve.count.sum()) == 200
    keep = curve.count > 0
    gaps = (curve.accuracy[keep] - curve.confidence[keep]).abs()
    expected = float((curve.count[keep].to(_F64) / 200 * gaps).sum())
    _close(ece(probs, y, num_bins=10), expected)


def test_classification_metrics_collects_the_single_metrics(device):
    probs = torch.softmax(torch.randn(30, 4, dtype=_F64, device=device), dim=-1)
    y = torch.randint(0, 4, (30,), device=device)
    out = classification_metrics(probs, y, num_bins=7)
    assert set(out) == {"accuracy", "nll", "ece", "brier"}
    assert all(type(v) is float for v in out.values())
    assert out["accuracy"] == float(accuracy(probs, y))
    assert out["nll"] == pytest.approx(float(categorical_nll(probs, y)), abs=_ATOL)
    assert out["ece"] == pytest.approx(float(ece(probs, y, num_bins=7)), abs=_ATOL)
    assert out["brier"] == pytest.approx(float(brier_score(probs, y)), abs=_ATOL)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

_PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def _probs_and_labels(draw):
    num_points = draw(st.integers(1, 30))
    num_classes = draw(st.integers(1, 6))
    weights = draw(hnp.arrays(np.float64, (num_points, num_classes), elements=st.floats(0.0, 1.0)))
    weights = weights + 1e-3  # keep every row sum positive
    probs = weights / weights.sum(axis=1, keepdims=True)
    labels = draw(hnp.arrays(np.int64, num_points, elements=st.integers(0, num_classes - 1)))
    return torch.from_numpy(probs), torch.from_numpy(labels)


@_PROPERTY_SETTINGS
@given(data=_probs_and_labels(), num_bins=st.integers(1, 20))
def test_calibration_and_brier_ranges(data, num_bins):
    probs, y = data
    value = float(expected_calibration_error(probs, y, num_bins=num_bins))
    assert 0.0 <= value <= 1.0
    brier = float(brier_score(probs, y))
    assert 0.0 <= brier <= 2.0
    assert float(categorical_nll(probs, y)) >= 0.0


@_PROPERTY_SETTINGS
@given(
    num_samples=st.integers(1, 6),
    num_points=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-2, 1e2),
)
def test_mixture_nll_between_best_and_worst_component(num_samples, num_points, seed, scale):
    # -log mean_s p_s lies between -log max_s p_s and -log min_s p_s.
    gen = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(num_samples, num_points, generator=gen, dtype=_F64)
    variances = scale * (torch.rand(num_samples, num_points, generator=gen, dtype=_F64) + 0.01)
    y = scale * torch.randn(num_points, generator=gen, dtype=_F64)
    mixture = mixture_gaussian_nll(means, variances, y, reduction="none")
    components = gaussian_nll(means, variances, y.expand_as(means), reduction="none")
    slack = 1e-9 * (1 + components.abs().max(0).values)  # float64 rounding of logsumexp
    assert bool((mixture <= components.max(0).values + slack).all())
    assert bool((mixture >= components.min(0).values - slack).all())


# --------------------------------------------------------------------------------------------
# validation: bad input raises, naming the argument
# --------------------------------------------------------------------------------------------

_P = torch.tensor([[0.3, 0.7], [0.5, 0.5]], dtype=_F64)
_Y = torch.tensor([1, 0])
_M = torch.zeros(3, dtype=_F64)
_V = torch.ones(3, dtype=_F64)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: rmse(_M, torch.zeros(4, dtype=_F64)), ValueError, "y must have the same shape"),
        (lambda: rmse([0.0, 1.0], _M), TypeError, "mean must be a torch.Tensor"),
        (lambda: rmse(torch.zeros(3, dtype=torch.long), _M), TypeError, "mean must be a float"),
        (lambda: rmse(_M, torch.tensor([0.0, float("nan"), 1.0])), ValueError, "y contains NaN"),
        (lambda: rmse(torch.zeros(0), torch.zeros(0)), ValueError, "mean is empty"),
        (lambda: gaussian_nll(_M, -_V, _M), ValueError, "var must be non-negative"),
        (lambda: gaussian_nll(_M, 0.0, _M), ValueError, "var must be positive"),
        (lambda: gaussian_nll(_M, float("nan"), _M), ValueError, "var is NaN"),
        (lambda: gaussian_nll(_M, torch.ones(2), _M), ValueError, "var of shape"),
        (lambda: gaussian_nll(_M, _V, _M, reduction="avg"), ValueError, "reduction must be"),
        (lambda: mixture_gaussian_nll(_M, _V, _M), ValueError, r"means must have shape \(S,"),
        (
            lambda: mixture_gaussian_nll(torch.zeros(2, 3), torch.ones(3, 3), _M),
            ValueError,
            "variances of shape",
        ),
        (
            lambda: mixture_gaussian_nll(torch.zeros(2, 3), -1.0, _M),
            ValueError,
            "variances must be non-negative",
        ),
        (lambda: interval_coverage(_V, _M, _M), ValueError, "lower must be <= upper"),
        (lambda: interval_coverage(_M, torch.ones(2), _M), ValueError, "upper of shape"),
        (lambda: gaussian_interval_coverage(_M, _V, _M, level=1.0), ValueError, "level must"),
        (lambda: gaussian_interval_coverage(_M, _V, _M, level=0.0), ValueError, "level must"),
        (lambda: gaussian_interval_coverage(_M, _V, _M, level="95%"), TypeError, "level must"),
        (lambda: gaussian_interval_coverage(_M, -_V, _M), ValueError, "var must be non-negative"),
        (
            lambda: regression_metrics(_M, _V, _M, samples_mean=_M[None]),
            ValueError,
            "samples_mean and samples_var must be given together",
        ),
        (lambda: accuracy(torch.full((2, 2), 0.3), _Y), ValueError, "probs rows must sum to 1"),
        (
            lambda: accuracy(torch.tensor([[1.5, -0.5]]), _Y[:1]),
            ValueError,
            "probs must be non-neg",
        ),
        (lambda: accuracy(_P[0], _Y), ValueError, r"probs must have shape \(N, C\)"),
        (lambda: accuracy(_P.tolist(), _Y), TypeError, "probs must be a torch.Tensor"),
        (lambda: accuracy(_P, _Y.double()), TypeError, "y must be an integer tensor"),
        (lambda: accuracy(_P, _Y.bool()), TypeError, "y must be an integer tensor"),
        (lambda: accuracy(_P, torch.tensor([0, 2])), ValueError, "y has labels out of range"),
        (lambda: accuracy(_P, torch.tensor([-1, 0])), ValueError, "y has labels out of range"),
        (lambda: accuracy(_P, torch.tensor([0, 1, 1])), ValueError, r"y must have shape \(N,\)"),
        (lambda: brier_score(_P, [1, 0]), TypeError, "y must be a torch.Tensor"),
        (lambda: categorical_nll(_P, _Y, eps=0.0), ValueError, "eps must be in"),
        (lambda: categorical_nll(_P, _Y, reduction=None), ValueError, "reduction must be"),
        (lambda: ece(_P, _Y, num_bins=0), ValueError, "num_bins must be >= 1"),
        (lambda: ece(_P, _Y, num_bins=2.5), TypeError, "num_bins must be an int"),
        (lambda: reliability_curve(_P, _Y, num_bins=True), TypeError, "num_bins must be an int"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_probability_tolerance_accepts_float32_rounding():
    # float32 softmax over many classes sums to 1 only up to rounding; it must be accepted.
    probs = torch.softmax(torch.randn(64, 1000), dim=-1)
    y = torch.randint(0, 1000, (64,))
    assert 0.0 <= float(accuracy(probs, y)) <= 1.0

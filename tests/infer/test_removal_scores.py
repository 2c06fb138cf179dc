"""SSVI removal scores: each against its textbook closed form and against Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bayesdl.infer.removal_scores import (
    REMOVAL_SCORES,
    exp_abs_moment,
    folded_normal_mean,
    folded_normal_variance,
    get_removal_score,
    removal_score,
)

ALPHA = 1e-4  # family-wise false-alarm rate of each Monte-Carlo test (Bonferroni inside)

# (mu, sigma) pairs: near zero, comparable, mean-dominated, negative
LOC = torch.tensor([0.0, 0.3, -0.7, 1.5, -0.05, 0.2], dtype=torch.float64)
SCALE = torch.tensor([1.0, 0.5, 0.4, 0.3, 0.1, 0.9], dtype=torch.float64)


def _z(m: int) -> float:
    return float(stats.norm.isf(ALPHA / (2 * m)))


def _textbook(mu: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
    """The formulas as written in the SSVI note (no rearrangement), float64."""
    e_abs = mu * torch.erf(mu / (s * math.sqrt(2))) + s * math.sqrt(2 / math.pi) * torch.exp(
        -(mu**2) / (2 * s**2)
    )
    var_abs = mu**2 + s**2 - e_abs**2
    phi = torch.special.ndtr

    def e_exp(lam):
        return torch.exp(lam**2 * s**2 / 2 + lam * mu) * phi(mu / s + lam * s) + torch.exp(
            lam**2 * s**2 / 2 - lam * mu
        ) * phi(-mu / s + lam * s)

    m1, m2 = e_exp(1.0), e_exp(2.0)
    return {
        "mean": mu.abs(),
        "snr": mu.abs() / s,
        "E_mean_abs": e_abs,
        "SNR_mean_abs": e_abs / var_abs.sqrt(),
        "E_exp_mean_abs": m1,
        "SNR_exp_mean_abs": m1 / (m2 - m1**2).sqrt(),
        "_var_abs": var_abs,
    }


@pytest.mark.parametrize("name", sorted(REMOVAL_SCORES))
def test_score_matches_closed_form(name, device):
    """Exact in float64: only rounding separates the stable forms from the textbook ones
    (relative 1e-10 covers cancellation in the textbook variance at these moderate ratios)."""
    got = removal_score(name, LOC.to(device), SCALE.to(device)).cpu()
    torch.testing.assert_close(got, _textbook(LOC, SCALE)[name], rtol=1e-10, atol=1e-12)


def test_moments_match_closed_form():
    ref = _textbook(LOC, SCALE)
    torch.testing.assert_close(
        folded_normal_mean(LOC, SCALE), ref["E_mean_abs"], rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        folded_normal_variance(LOC, SCALE), ref["_var_abs"], rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        exp_abs_moment(LOC, SCALE), ref["E_exp_mean_abs"], rtol=1e-12, atol=0
    )


def test_moments_match_monte_carlo():
    """E|w|, Var|w|, E e^|w| and Var e^|w| from N draws per (mu, sigma). Standard errors: of a
    mean, sd / sqrt(N); of a variance, sqrt((m4 - v^2) / N) with the sample fourth central
    moment m4. z Bonferroni-corrected over all 4 x 6 comparisons."""
    g = torch.Generator().manual_seed(11)
    n = 200_000
    w = LOC + SCALE * torch.randn(n, len(LOC), generator=g, dtype=torch.float64)
    z = _z(4 * len(LOC))
    for values, mean_exact, var_exact in [
        (w.abs(), folded_normal_mean(LOC, SCALE), folded_normal_variance(LOC, SCALE)),
        (
            w.abs().exp(),
            exp_abs_moment(LOC, SCALE, 1.0),
            exp_abs_moment(LOC, SCALE, 2.0) - exp_abs_moment(LOC, SCALE, 1.0) ** 2,
        ),
    ]:
        m = values.mean(0)
        c = values - m
        v = c.pow(2).mean(0)
        m4 = c.pow(4).mean(0)
        assert ((m - mean_exact).abs() < z * values.std(0) / math.sqrt(n)).all()
        assert ((v - var_exact).abs() < z * ((m4 - v * v) / n).sqrt()).all()


def test_snr_scores_are_ratios_of_the_moments():
    """SNR_mean_abs = E|w| / sd|w| and SNR_exp_mean_abs = E e^|w| / sd e^|w| (each moment
    checked above against Monte Carlo)."""
    snr = removal_score("SNR_mean_abs", LOC, SCALE)
    torch.testing.assert_close(
        snr, folded_normal_mean(LOC, SCALE) / folded_normal_variance(LOC, SCALE).sqrt()
    )
    m1, m2 = exp_abs_moment(LOC, SCALE, 1.0), exp_abs_moment(LOC, SCALE, 2.0)
    torch.testing.assert_close(
        removal_score("SNR_exp_mean_abs", LOC, SCALE), m1 / (m2 - m1 * m1).sqrt()
    )


def test_no_cancellation_far_from_zero():
    """For |mu| >> sigma the folded normal is the normal: Var|w| -> sigma^2 and the SNR of |w|
    -> |mu| / sigma. The exact corrections are O(exp(-r^2 / 2)), below float64 rounding at
    r = 40; the textbook difference mu^2 + sigma^2 - (E|w|)^2 would lose every digit here."""
    mu = torch.tensor([40.0, -4000.0], dtype=torch.float64)
    s = torch.tensor([1.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(folded_normal_variance(mu, s), s**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        removal_score("SNR_mean_abs", mu, s), mu.abs() / s, rtol=1e-12, atol=0
    )
    # E e^{|w|} overflows float64 here, but its SNR is a ratio in log space: finite
    assert torch.isfinite(removal_score("SNR_exp_mean_abs", mu, s)).all()


def test_nan_scores_become_zero_and_dtype_is_kept():
    loc = torch.tensor([0.0, 1.0], dtype=torch.float32)
    scale = torch.tensor([0.0, 0.5], dtype=torch.float32)
    for name in ("snr", "SNR_mean_abs"):
        out = removal_score(name, loc, scale)
        assert out.dtype == torch.float32
        assert out[0] == 0 and torch.isfinite(out).all()


def test_custom_callable_and_bad_names():
    fn = get_removal_score(lambda m, s: -s)
    assert removal_score(fn, LOC, SCALE).argmax() == SCALE.argmin()
    with pytest.raises(ValueError, match="removal_score must be one of"):
        get_removal_score("magnitude")
    with pytest.raises(TypeError, match="removal_score"):
        get_removal_score(3)

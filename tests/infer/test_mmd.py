"""MMD kernels and the unbiased U-statistic: exact values, symmetry, unbiasedness, closed form.

Statistical checks compare a Monte-Carlo mean with its target in units of its standard error
(``sd / sqrt(R)`` over ``R`` independent repetitions), with ``z = 3.5`` (two-sided false-alarm
rate below 5e-4 per comparison).
"""

from __future__ import annotations

import math

import pytest
import torch

from bayesdl.infer.mmd import MMD_KERNELS, imq_kernel, mmd_u, rbf_kernel

Z = 3.5


def _loop_mmd_u(x, y, k) -> float:
    """The U-statistic written out with Python loops over pairs (independent of mmd_u)."""
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


@pytest.mark.parametrize("kernel", MMD_KERNELS)
def test_mmd_u_equals_the_pairwise_loop(kernel, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64).to(device)
    y = (torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5).to(device)
    c = 1.7
    if kernel == "imq":

        def k(a, b):
            return c / (c + float((a - b).square().sum()))
    else:

        def k(a, b):
            return math.exp(-float((a - b).square().sum()) / c)

    expected = _loop_mmd_u(x.cpu(), y.cpu(), k)
    got = mmd_u(x, y, kernel=kernel, scale=c)
    assert got.device == x.device
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("fn", [imq_kernel, rbf_kernel])
def test_kernels_are_symmetric_bounded_and_one_on_the_diagonal(fn, device):
    x = torch.randn(6, 4, dtype=torch.float64, device=device)
    y = torch.randn(9, 4, dtype=torch.float64, device=device)
    kxy, kyx = fn(x, y, 8.0), fn(y, x, 8.0)
    torch.testing.assert_close(kxy, kyx.T, rtol=1e-12, atol=1e-15)
    assert ((kxy > 0) & (kxy <= 1)).all()
    torch.testing.assert_close(
        fn(x, x, 8.0).diagonal(), torch.ones(6, dtype=torch.float64, device=device)
    )


def test_kernel_values_by_hand():
    a, b = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    # |a - b|^2 = 25
    assert float(imq_kernel(a, b, 5.0)) == pytest.approx(5.0 / 30.0, rel=1e-15)
    assert float(rbf_kernel(a, b, 5.0)) == pytest.approx(math.exp(-5.0), rel=1e-15)


def _gauss_expect_rbf(mean_diff_sq: float, var: float, d: int, c: float) -> float:
    """E exp(-|u|^2 / c) for u ~ N(m, var I_d) with |m|^2 = mean_diff_sq (closed form)."""
    return (1 + 2 * var / c) ** (-d / 2) * math.exp(-mean_diff_sq / (c + 2 * var))


def _mc(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / len(values) ** 0.5)


def test_mmd_u_is_unbiased_for_the_closed_form_gaussian_mmd(device):
    """``x ~ N(0, s1^2 I)``, ``y ~ N(mu, s2^2 I)``: with the RBF kernel the squared MMD has a
    closed form, ``E k(x, x') + E k(y, y') - 2 E k(x, y)``, each a Gaussian integral
    (``x - x' ~ N(0, 2 s1^2 I)``, :func:`_gauss_expect_rbf`). The mean of 2000 independent
    U-statistics (n = 8, where a biased V-statistic would be off by O(1/n), far beyond the
    standard error) must be within 3.5 standard errors ``sd / sqrt(2000)`` of it (two-sided,
    false-alarm rate 5e-4); the target itself must be more than 10 standard errors from 0,
    so the check has power.
    """
    d, c, s1, s2 = 3, 2.0, 1.0, 0.7
    mu = torch.tensor([0.8, -0.3, 0.0], dtype=torch.float64, device=device)
    exact = (
        _gauss_expect_rbf(0.0, 2 * s1**2, d, c)
        + _gauss_expect_rbf(0.0, 2 * s2**2, d, c)
        - 2 * _gauss_expect_rbf(float(mu.square().sum()), s1**2 + s2**2, d, c)
    )
    reps, n = 2000, 8  # small n: a biased V-statistic would be off by O(1/n), far beyond MCSE
    x = s1 * torch.randn(reps, n, d, dtype=torch.float64, device=device)
    y = mu + s2 * torch.randn(reps, n, d, dtype=torch.float64, device=device)
    values = torch.stack([mmd_u(x[r], y[r], kernel="rbf", scale=c) for r in range(reps)])
    mean, se = _mc(values)
    assert abs(mean - exact) < Z * se, (mean, exact, se)
    assert exact > 10 * se  # the target is not ~0: the check has power


@pytest.mark.parametrize("kernel", MMD_KERNELS)
def test_mmd_u_has_mean_zero_for_identical_distributions(kernel, device):
    """Unbiasedness at the null: ``x`` and ``y`` both ``N(0, I)``, so ``E[MMD_u^2] = 0`` and
    the mean of 2000 independent statistics lies within 3.5 standard errors of 0
    (two-sided). An unbiased estimator of a quantity that is 0 must sometimes be negative
    (a V-statistic never is): with n = 6 about 60% of the values are (measured), so at
    least one of 2000 is, except with probability about 0.4^2000.
    """
    reps, n, d = 2000, 6, 2
    x = torch.randn(reps, n, d, dtype=torch.float64, device=device)
    y = torch.randn(reps, n, d, dtype=torch.float64, device=device)
    values = torch.stack([mmd_u(x[r], y[r], kernel=kernel) for r in range(reps)])
    mean, se = _mc(values)
    assert abs(mean) < Z * se, (mean, se)
    # unbiased, hence sometimes negative (a V-statistic never is)
    assert (values < 0).any()


@pytest.mark.parametrize("kernel", MMD_KERNELS)
def test_mmd_u_is_positive_for_shifted_distributions(kernel, device):
    """``y`` shifted by 1 in each of 2 dims: the mean of 200 independent statistics must
    exceed 3.5 standard errors ``sd / sqrt(200)`` (one-sided, false-alarm rate 2e-4)."""
    reps, n, d = 200, 50, 2
    x = torch.randn(reps, n, d, dtype=torch.float64, device=device)
    y = torch.randn(reps, n, d, dtype=torch.float64, device=device) + 1.0
    values = torch.stack([mmd_u(x[r], y[r], kernel=kernel) for r in range(reps)])
    mean, se = _mc(values)
    assert mean > Z * se, (mean, se)


def test_mmd_u_is_differentiable_and_follows_dtype():
    x = torch.randn(5, 2, dtype=torch.float32, requires_grad=True)
    out = mmd_u(x, torch.randn(4, 2))
    assert out.dtype == torch.float32 and out.shape == ()
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_mmd_u_bad_input():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="kernel"):
        mmd_u(x, x, kernel="laplace")
    with pytest.raises(ValueError, match="scale"):
        mmd_u(x, x, scale=0.0)
    with pytest.raises(ValueError, match=r"^y must have shape"):
        mmd_u(x, torch.randn(1, 2))
    with pytest.raises(ValueError, match="same dimension"):
        mmd_u(x, torch.randn(5, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mmd_u(x.numpy(), x)

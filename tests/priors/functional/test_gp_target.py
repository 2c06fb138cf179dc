"""GP targets: covariance of draws, hierarchical draws, bad input."""

from __future__ import annotations

import math

import pyro.contrib.gp as gp
import pyro.distributions as dist
import pytest
import torch

from bayesdl.priors.functional import GPTarget


def _rbf(lengthscale=0.6, variance=1.0, d=1):
    return gp.kernels.RBF(d, variance=torch.tensor(variance), lengthscale=torch.tensor(lengthscale))


def test_draws_have_the_kernel_covariance(device):
    target = GPTarget(_rbf())
    x = torch.linspace(-2, 2, 6, device=device, dtype=torch.float64).unsqueeze(-1)
    n = 20000
    f = target.sample(x, n)
    assert f.shape == (n, 6) and f.dtype == torch.float64 and f.device == x.device
    k = target.covariance(x).to(device)
    # each entry of the sample covariance has sd sqrt((K_ii K_jj + K_ij^2) / n) <= sqrt(2/n)
    # (variance 1); 5 sd bound over 36 entries
    assert (f.T.cov() - k).abs().max() < 5 * math.sqrt(2.0 / n)


def test_composite_kernels_sample():
    kernel = gp.kernels.Sum(_rbf(), gp.kernels.Periodic(1, period=torch.tensor(2.0)))
    f = GPTarget(kernel).sample(torch.linspace(-1, 1, 10).unsqueeze(-1), 3)
    assert f.shape == (3, 10) and torch.isfinite(f).all()


def test_hierarchical_marginal_variance():
    # variance ~ LogNormal(0.1, 1): E[f(x)^2] = E[variance] = exp(0.1 + 0.5)
    hyper = {"variance": dist.LogNormal(torch.tensor(0.1), 1.0)}
    target = GPTarget(_rbf(), hyperpriors=hyper)
    n = 40000
    f = target.sample(torch.zeros(1, 1), n)[:, 0]
    expected = math.exp(0.6)
    # sd of f^2: E f^4 = 3 E[v^2] = 3 exp(2*0.1 + 2); 5 MC standard errors
    sd = math.sqrt(3 * math.exp(2.2) - expected**2) / math.sqrt(n)
    assert abs(f.square().mean().item() - expected) < 5 * sd


def test_hierarchical_draws_are_independent_per_sample():
    # with a shared draw, |f(0)| / sqrt(mean over a dense grid of f^2) would be the same law for
    # all samples; here we check the per-sample amplitude varies as LogNormal: var(log amp^2)
    hyper = {"variance": dist.LogNormal(torch.tensor(0.0), 1.0)}
    target = GPTarget(_rbf(lengthscale=0.05), hyperpriors=hyper)
    x = torch.linspace(0, 10, 100).unsqueeze(-1)  # ~65 lengthscales: nearly independent values
    f = target.sample(x, 200)
    log_amp = f.square().mean(-1).log()
    # independent: var(log v) = 1 plus a small chi^2 term (~2/65); shared: only the chi^2 term
    assert log_amp.var().item() > 0.5


def test_ard_hyperprior_shape():
    d = 3
    hyper = {"lengthscale": dist.LogNormal(torch.zeros(d), 1.0)}
    target = GPTarget(gp.kernels.RBF(d, lengthscale=torch.ones(d)), hyperpriors=hyper)
    assert target.sample(torch.randn(7, d), 5).shape == (5, 7)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_lengthscale_is_rejected(bad):
    with pytest.raises(ValueError, match="lengthscale must be positive"):
        GPTarget(_rbf(lengthscale=bad))


def test_non_positive_lengthscale_inside_a_sum_is_rejected():
    kernel = gp.kernels.Sum(_rbf(), _rbf(lengthscale=-2.0))
    with pytest.raises(ValueError, match=r"kernel\.kern1\.lengthscale"):
        GPTarget(kernel)


def test_bad_hyperpriors_and_inputs():
    with pytest.raises(ValueError, match="positive values"):
        GPTarget(_rbf(), hyperpriors={"variance": dist.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match="unknown name"):
        GPTarget(_rbf(), hyperpriors={"period": dist.Gamma(1.0, 1.0)})
    with pytest.raises(ValueError, match="isotropic"):
        GPTarget(gp.kernels.Periodic(1), hyperpriors={"variance": dist.Gamma(1.0, 1.0)})
    target = GPTarget(_rbf())
    with pytest.raises(ValueError, match="input dimension 2"):
        target.sample(torch.zeros(4, 2), 3)
    with pytest.raises(ValueError, match="num_samples"):
        target.sample(torch.zeros(4, 1), 0)

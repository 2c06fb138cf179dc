"""InfoVAE: the objective against a hand-computed value, its ELBO special case, the aggregate
posterior in the MMD term, named non-finite terms and argument checks.

Statistical checks use ``z = 3.5`` standard errors of a Monte-Carlo mean over independent
repetitions (two-sided false-alarm rate below 5e-4).
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from bayesdl.infer import InfoVAE, LocalELBO, NonFiniteLossError
from bayesdl.vae import VAE
from tests.vae._ppca import LinearDecoder, LinearEncoder, make_ppca

Z = 3.5


def _rbf_mmd_u(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """U-statistic with broadcasting differences (not mmd_u's cdist route)."""

    def k(a, b):
        return torch.exp(-(a[:, None, :] - b[None, :, :]).square().sum(-1) / c)

    def off_diag_mean(m):
        n = m.shape[0]
        return (m.sum() - m.diagonal().sum()) / (n * (n - 1))

    return off_diag_mean(k(x, x)) + off_diag_mean(k(y, y)) - 2 * k(x, y).mean()


@pytest.mark.parametrize("path", ["fast", "traced"])
def test_info_vae_equals_hand_computed_objective(path, device):
    vae, x, _ = make_ppca(num_data=20, dataset_size=20, device=device)
    xb, n, b, k = x[:6], 20, 6, 3
    alpha, lam, c = 0.3, 25.0, 1.5
    objective = InfoVAE(alpha, lam, kernel="rbf", kernel_scale=c, num_particles=k)
    torch.manual_seed(11)
    if path == "fast":
        loss = objective.differentiable_loss(vae, vae.guide, xb)
    else:
        with poutine.block():  # an active handler sends the objective through Pyro traces
            loss = objective.differentiable_loss(vae, vae.guide, xb)

    # by hand, same draws: eps [K, B, L] for the posterior, then K B prior draws
    torch.manual_seed(11)
    loc, sd = vae.encoder(xb)
    eps = torch.randn((k,) + loc.shape, dtype=xb.dtype, device=device)
    z = loc + sd * eps
    prior = torch.randn(k * b, loc.shape[-1], dtype=xb.dtype, device=device)
    sigma = vae.likelihood.scale(xb)
    recon = Normal(vae.decoder(z), sigma).log_prob(xb).sum(-1).mean(0)  # [B]
    kl = kl_divergence(Normal(loc, sd), Normal(0.0, 1.0)).sum(-1)  # [B]
    mmd = _rbf_mmd_u(z.reshape(-1, loc.shape[-1]), prior, c)
    expected = -(n / b) * (recon - (1 - alpha) * kl).sum() + n * (alpha + lam - 1) * mmd
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-8)


def test_alpha_0_lambda_1_is_the_elbo(device):
    vae, x, _ = make_ppca(device=device)
    torch.manual_seed(2)
    info = InfoVAE(alpha=0.0, lambda_=1.0, num_particles=4).differentiable_loss(vae, vae.guide, x)
    torch.manual_seed(2)
    elbo = LocalELBO(4, analytic_kl=True).differentiable_loss(vae, vae.guide, x)
    torch.testing.assert_close(info, elbo, rtol=1e-12, atol=1e-10)


def _aggregate_matching_vae(s: float, dim: int, device) -> VAE:
    """q(z | x) = N(sqrt(1 - s^2) x, s^2 I): for x ~ N(0, I) the aggregate posterior is
    exactly N(0, I) although every single q(z | x) is narrow (KL to the prior large)."""
    dt = torch.float64
    eye = torch.eye(dim, dtype=dt)
    enc = LinearEncoder(math.sqrt(1 - s**2) * eye, torch.zeros(dim, dtype=dt),
                        torch.full((dim,), math.log(s), dtype=dt))  # fmt: skip
    dec = LinearDecoder(eye, torch.zeros(dim, dtype=dt))
    return VAE(enc, dec, dim, "gaussian", scale=0.5).to(device=device, dtype=dt)


@torch.no_grad()
def _mmd_term(objective: InfoVAE, vae: VAE, x: torch.Tensor) -> torch.Tensor:
    return objective._loss(objective.terms(vae, vae.guide, x))[1]["MMD"]


def test_mmd_term_compares_the_aggregate_posterior_with_the_prior(device):
    """The MMD term sees the aggregate posterior ``q(z) = E_x q(z | x)``, not each ``q(z | x)``.

    With :func:`_aggregate_matching_vae` (``s = 0.1``) and fresh ``x ~ N(0, I)`` each step,
    the batch's posterior samples are exact draws from ``N(0, I)``, so the unbiased MMD term
    has mean 0: over 1500 independent steps ``|mean| < 3.5 sd / sqrt(1500)`` (two-sided,
    false-alarm rate 5e-4). Meanwhile each ``q(z | x)`` is far from the prior: ``KL = d (-log
    s + (|mu|^2 / d + s^2 - 1) / 2)`` with ``E|mu|^2 = d (1 - s^2)``, so ``E[KL] = -d log s =
    4.605`` nats per point, checked within 3.5 standard errors of the per-step mean. An
    encoder whose aggregate posterior is too narrow (means shrunk by 0.3) must give a mean
    MMD term above 3.5 standard errors (200 steps, one-sided).
    """
    dim, b, reps, s = 2, 8, 1500, 0.1
    objective = InfoVAE(alpha=1.0, lambda_=1.0, kernel="imq")
    matching = _aggregate_matching_vae(s, dim, device)
    values, kls = [], []
    for _ in range(reps):
        x = torch.randn(b, dim, dtype=torch.float64, device=device)  # fresh data each time
        values.append(_mmd_term(objective, matching, x))
        with torch.no_grad():
            loc, sd = matching.encode(x)
            kls.append(kl_divergence(Normal(loc, sd), Normal(0.0, 1.0)).sum(-1).mean())
    values, kls = torch.stack(values), torch.stack(kls)
    mean, se = float(values.mean()), float(values.std() / reps**0.5)
    assert abs(mean) < Z * se, (mean, se)
    kl_mean, kl_se = float(kls.mean()), float(kls.std() / reps**0.5)
    assert abs(kl_mean + dim * math.log(s)) < Z * kl_se, (kl_mean, kl_se)

    narrow = _aggregate_matching_vae(s, dim, device)
    with torch.no_grad():
        narrow.encoder.a.mul_(0.3)
    shifted = torch.stack(
        [
            _mmd_term(objective, narrow, torch.randn(b, dim, dtype=torch.float64, device=device))
            for _ in range(200)
        ]
    )
    assert float(shifted.mean()) > Z * float(shifted.std() / 200**0.5)


def test_mmd_gradient_reaches_the_encoder(device):
    vae, x, _ = make_ppca(device=device)
    InfoVAE(alpha=1.0, lambda_=50.0).differentiable_loss(vae, vae.guide, x).backward()
    grads = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_non_finite_kl_is_named():
    vae, x, _ = make_ppca()
    with torch.no_grad():
        vae.encoder.log_scale.fill_(-math.inf)  # scale 0: KL(q || p) = +inf, z stays finite
    with pytest.raises(NonFiniteLossError, match="KL term") as err:
        InfoVAE(alpha=0.5, lambda_=1.0).differentiable_loss(vae, vae.guide, x)
    assert "reconstruction" not in str(err.value)


def test_non_finite_mmd_is_named(monkeypatch):
    vae, x, _ = make_ppca()
    original = VAE.local_terms

    def broken_prior(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        terms.prior_sample = lambda m: torch.full((m, self.latent_dim), math.nan,
                                                  dtype=x.dtype)  # fmt: skip
        return terms

    monkeypatch.setattr(VAE, "local_terms", broken_prior)
    with pytest.raises(NonFiniteLossError, match="MMD term") as err:
        InfoVAE(alpha=1.0, lambda_=10.0).differentiable_loss(vae, vae.guide, x)
    assert "reconstruction" not in str(err.value) and "KL term" not in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="lambda_"):
        InfoVAE(alpha=0.0, lambda_=0.0)
    with pytest.raises(ValueError, match="alpha \\+ lambda_ - 1"):
        InfoVAE(alpha=-1.0, lambda_=1.0)
    with pytest.raises(TypeError, match="alpha"):
        InfoVAE(alpha="1")
    with pytest.raises(ValueError, match="kernel"):
        InfoVAE(kernel="laplace")
    with pytest.raises(ValueError, match="kernel_scale"):
        InfoVAE(kernel_scale=math.inf)
    with pytest.raises(ValueError, match="num_prior_samples"):
        InfoVAE(num_prior_samples=1)
    with pytest.raises(ValueError, match="num_particles"):
        InfoVAE(num_particles=0)
    vae, x, _ = make_ppca()
    with pytest.raises(ValueError, match="B \\* K >= 2"):
        InfoVAE().differentiable_loss(vae, vae.guide, x[:1])

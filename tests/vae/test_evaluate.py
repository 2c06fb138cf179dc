"""Evaluation: importance-sampled log-likelihood against the exact PPCA value, active units,
held-out MMD, reconstructions, samples and image grids.

Statistical checks use ``z = 3.5`` standard errors of a mean over independent repetitions.
"""

from __future__ import annotations

import math

import pytest
import torch

from bayesdl.vae import (
    VAE,
    MLPDecoder,
    MLPEncoder,
    active_units,
    held_out_mmd,
    image_grid,
    log_likelihood,
    reconstructions,
    samples,
)
from tests.vae._ppca import make_ppca

Z = 3.5


@pytest.mark.parametrize("max_elements", [1, 50, 2**22])
def test_log_likelihood_is_exact_with_the_exact_posterior_in_any_chunking(max_elements, device):
    # every importance weight equals p(x): the estimate is exact whatever the chunks, which
    # checks the running log-sum-exp that joins them (max_elements=1: one sample per call)
    vae, x, log_px = make_ppca(num_data=7, exact=True, device=device)
    got = log_likelihood(vae, x, num_samples=37, batch_size=3, max_elements=max_elements)
    torch.testing.assert_close(got, log_px, rtol=1e-10, atol=1e-10)


def test_log_likelihood_scores_more_points_than_the_training_set(device):
    """Evaluation is per point and unscaled: a VAE trained on ``N = 3`` points (its data
    plate) scores 7 test points in blocks of 5 exactly (exact posterior, as above)."""
    vae, x, log_px = make_ppca(num_data=7, exact=True, dataset_size=3, device=device)
    got = log_likelihood(vae, x, num_samples=11, batch_size=5)
    torch.testing.assert_close(got, log_px, rtol=1e-10, atol=1e-10)


def test_log_likelihood_converges_to_the_exact_value(device):
    """``log_likelihood`` tends to the exact PPCA ``log p(x)`` as ``K`` grows.

    Power: at ``K = 1`` (the ELBO) the total gap over the 8 points, from 400 repetitions,
    must exceed 3.5 standard errors (measured: 2.7 nats against a standard error of ~0.1).
    At ``K = 5000`` (20 repetitions) each point's mean gap must lie within 3.5 standard
    errors plus the bias: ``E[log mean_k w_k] = log p(x) - Var(w / p(x)) / (2 K) + O(K^-2)``,
    and we allow twice that first-order term, ``Var(w / p(x)) / K``, with the relative
    variance estimated from 1e5 draws (the factor 2 covers that estimate's own error).
    """
    vae, x, log_px = make_ppca(num_data=8, perturb=0.1, device=device)

    def gap(k: int, reps: int) -> tuple[torch.Tensor, torch.Tensor]:
        est = torch.stack([log_likelihood(vae, x, num_samples=k) for _ in range(reps)])
        return log_px - est.mean(0), est.std(0) / reps**0.5

    gap1, se1 = gap(1, 400)
    gap5000, se5000 = gap(5000, 20)
    assert gap1.sum() > Z * se1.square().sum().sqrt(), (gap1, se1)
    with torch.no_grad():
        t = vae.local_terms(x, num_particles=100_000)
    rel_var = ((t.log_lik + t.log_prior - t.log_q) - log_px).exp().var(0)
    bias = rel_var / 5000  # measured Var(w / p(x)) 0.15 .. 8.2: a bias below 2e-3 nats
    assert (gap5000.abs() < Z * se5000 + bias).all(), (gap5000, se5000, bias)


def test_log_likelihood_arguments():
    vae, x, _ = make_ppca()
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(vae, x, num_samples=0)
    with pytest.raises(TypeError, match="vae must be a bayesdl.vae.VAE"):
        log_likelihood(object(), x)
    with pytest.raises(ValueError, match="x must have shape"):
        log_likelihood(vae, x[:, :2])


def test_active_units_follow_burdas_definition(device):
    vae, x, _ = make_ppca(num_data=50, latent_dim=3, dim=6, device=device)
    with torch.no_grad():
        vae.encoder.a[1].zero_()  # unit 1's posterior mean no longer depends on x
    count, variances = active_units(vae, x, batch_size=7)
    loc = x @ vae.encoder.a.detach().T + vae.encoder.c.detach()
    torch.testing.assert_close(variances, loc.var(0))
    assert count == int((loc.var(0) > 1e-2).sum()) and variances[1] == 0
    assert active_units(vae, x, threshold=1e9)[0] == 0


def test_held_out_mmd_is_near_zero_for_a_matching_aggregate_posterior(device):
    """An encoder that outputs ``N(0, I)`` whatever ``x``: the aggregate posterior is the
    prior and the unbiased ``MMD^2`` has mean 0, so over 300 independent evaluations
    ``|mean| < 3.5 sd / sqrt(300)`` (two-sided, false-alarm rate 5e-4). Shifting the first
    latent's mean by 2 must make the mean over 100 evaluations positive by more than 3.5
    standard errors (one-sided)."""
    vae = VAE(MLPEncoder(4, [4], 2), MLPDecoder(2, [4], 4), 2, "gaussian").to(device)
    with torch.no_grad():
        last = vae.encoder.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, math.log(math.e - 1), math.log(math.e - 1)]))
    x = torch.randn(40, 4, device=device)
    values = torch.stack([held_out_mmd(vae, x) for _ in range(300)])
    assert abs(float(values.mean())) < Z * float(values.std() / 300**0.5)
    with torch.no_grad():
        last.bias[0] = 2.0  # shift the first latent
    shifted = torch.stack([held_out_mmd(vae, x) for _ in range(100)])
    assert float(shifted.mean()) > Z * float(shifted.std() / 100**0.5)


def test_reconstructions_samples_and_grid(device):
    vae = VAE(MLPEncoder(16, [8], 3), MLPDecoder(3, [8], 16), 3).to(device)
    x = torch.rand(6, 16, device=device).round()
    rec = reconstructions(vae, x)
    assert rec.shape == (6, 16) and ((rec > 0) & (rec < 1)).all()
    g = torch.Generator(device=device).manual_seed(0)
    s1 = samples(vae, 5, generator=g)
    s2 = samples(vae, 5, generator=torch.Generator(device=device).manual_seed(0))
    torch.testing.assert_close(s1, s2)
    grid = image_grid(torch.arange(5 * 16, dtype=torch.float32).reshape(5, 16), nrow=3)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)
    # image 4 sits in row 1, column 1, after one pad pixel per image and at the border
    torch.testing.assert_close(grid[6:10, 6:10].reshape(-1), torch.arange(64, 80.0))
    assert float(grid[0, 0]) == 1.0  # padding value
    with pytest.raises(ValueError, match="image_shape"):
        image_grid(torch.zeros(2, 15))

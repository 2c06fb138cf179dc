"""GPVAE and MarkovianGPVAE: Pyro contracts, exact KLs, masking, missing frames, training, bad input."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from bayesdl.gp import MarkovGP, MaternKernel
from bayesdl.infer import IWAE, LocalELBO, fit
from bayesdl.vae import GPVAE, MarkovianGPVAE, MLPDecoder, SequenceEncoder
from bayesdl.vae.gp_vae import dense_gaussian_kl

KINDS = ["diagonal", "banded", "pseudo", "markov"]
Z = 4.0  # z-bound of the Monte-Carlo checks (two-sided p ~ 6e-5 per check)


def _make(kind, *, latent=2, dim=6, likelihood="bernoulli", dtype=torch.float64, **kw):
    torch.manual_seed(0)
    heads = 3 if kind == "banded" else 2
    enc = SequenceEncoder(dim, [16], latent, num_heads=heads, window=3 if kind == "banded" else 1)
    dec = MLPDecoder(latent, [16], dim)
    kernel = MaternKernel(1.5, lengthscale=torch.linspace(1.5, 3.0, latent), variance=1.0)
    if kind == "markov":
        vae = MarkovianGPVAE(enc, dec, latent, kernel, likelihood, **kw)
    else:
        vae = GPVAE(enc, dec, latent, kernel, likelihood, posterior=kind, **kw)
    return vae.to(dtype)


def _data(b=4, t=7, dim=6, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, dim, generator=g, dtype=dtype).round()
    mask = torch.rand(b, t, dim, generator=g) > 0.4
    return x.to(device), mask.to(device)


# ---------------------------------------------------------------------------- contracts
@pytest.mark.parametrize("kind", KINDS)
def test_model_and_guide_are_pyro_programs_in_one_subsampled_data_plate(kind, device):
    vae = _make(kind, dataset_size=40).to(device)
    x, mask = _data(device=device)
    guide_tr = poutine.trace(vae.guide).get_trace(x, mask)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, mask)
    z, obs = model_tr.nodes["z"], model_tr.nodes["x"]
    assert guide_tr.nodes["z"]["value"].shape == (4, 2, 7)
    assert z["fn"].batch_shape == (4,) and z["fn"].event_shape == (2, 7)
    assert obs["is_observed"] and obs["fn"].event_shape == (7, 6)
    for tr in (guide_tr, model_tr):
        frames = [f for f in tr.nodes["z"]["cond_indep_stack"]]
        assert [f.name for f in frames] == ["data"] and frames[0].full_size == 40
        assert tr.nodes["z"]["scale"] == pytest.approx(10.0)  # N / B
    assert torch.isfinite(model_tr.log_prob_sum()) and torch.isfinite(guide_tr.log_prob_sum())
    assert guide_tr.nodes["z"]["value"].device.type == torch.device(device).type


@pytest.mark.parametrize("kind", KINDS)
def test_local_terms_shapes_dtype_and_state_dict_round_trip(kind, device):
    vae = _make(kind, dataset_size=8).to(device)
    x, mask = _data(device=device)
    terms = vae.local_terms(x, mask, num_particles=3, analytic_kl=True)
    for t in (terms.log_lik, terms.log_prior, terms.log_q):
        assert t.shape == (3, 4) and t.dtype == torch.float64
    assert terms.kl.shape == (4,) and terms.scale == 2.0 and terms.z.shape == (3, 4, 14)
    assert terms.prior_sample(5).shape == (5, 14)
    other = _make(kind, dataset_size=8).to(device)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    assert not torch.allclose(other.kl(x, mask), vae.kl(x, mask))
    other.load_state_dict(vae.state_dict())
    assert torch.equal(other.kl(x, mask), vae.kl(x, mask))
    assert set(vae.guide.state_dict()) == {f"encoder.{k}" for k in vae.encoder.state_dict()}


def test_float32_model_gives_float32_terms():
    vae = _make("markov", dtype=torch.float32)
    x, mask = _data(dtype=torch.float32)
    terms = vae.local_terms(x, mask, num_particles=2, analytic_kl=True)
    assert terms.log_lik.dtype == terms.kl.dtype == torch.float32
    assert vae.posterior_mean(x, mask).shape == (4, 7, 2)


# ---------------------------------------------------------------------------- exact KLs
def _irregular_times(t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(0.2 + torch.rand(t, generator=g, dtype=torch.float64), 0)


def _dense_reference_kl(vae, x, frame_obs, times):
    """KL(q || p) of the pseudo-observation posterior by the textbook dense formula."""
    y, raw = vae.encode(x, None)
    v = vae.positive(raw)
    k = vae.kernel(times, times)  # [L, T, T], no jitter
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for b in range(x.shape[0]):
        w = torch.where(frame_obs[b], 1.0 / v[b], 0.0)  # [L, T]
        prec = torch.linalg.inv(k) + torch.diag_embed(w)
        cov = torch.linalg.inv(prec)
        mean = (cov @ (w * y[b]).unsqueeze(-1)).squeeze(-1)
        kl = dense_gaussian_kl(mean, torch.linalg.cholesky(cov), torch.linalg.cholesky(k))
        out[b] = kl.sum()
    return out


def test_markovian_kl_equals_dense_gpvae_kl_for_fixed_encoder_outputs():
    """The exactness core: same encoder/decoder/kernel, irregular times, missing frames."""
    markov = _make("markov", latent=3)
    dense = _make("pseudo", latent=3)
    dense.load_state_dict(markov.state_dict())
    x, _ = _data(b=5, t=12)
    frame_obs = torch.rand(5, 12, generator=torch.Generator().manual_seed(3)) > 0.3
    times = _irregular_times(12)
    kl_m, kl_d = markov.kl(x, frame_obs, times), dense.kl(x, frame_obs, times)
    # float64 round-off of two different algorithms plus the dense path's 1e-10 jitter
    torch.testing.assert_close(kl_m, kl_d, rtol=1e-8, atol=0)
    torch.testing.assert_close(kl_m, _dense_reference_kl(markov, x, frame_obs, times),
                               rtol=1e-8, atol=0)  # fmt: skip
    torch.testing.assert_close(
        markov.posterior_mean(x, frame_obs, times),
        dense.posterior_mean(x, frame_obs, times),
        rtol=0,
        atol=1e-8,
    )
    # gradients of the KL w.r.t. the encoder agree too
    g_m = torch.autograd.grad(
        markov.kl(x, frame_obs, times).sum(), list(markov.encoder.parameters())
    )
    g_d = torch.autograd.grad(dense.kl(x, frame_obs, times).sum(), list(dense.encoder.parameters()))
    for a, b in zip(g_m, g_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["diagonal", "banded"])
def test_structured_kl_equals_dense_closed_form(kind):
    vae = _make(kind)
    x, mask = _data()
    times = _irregular_times(7)
    xm = torch.where(mask, x, 0.0)
    heads = vae.encode(xm, None)
    if kind == "diagonal":
        mean, raw = heads
        cov_sqrt = torch.diag_embed(vae.positive(raw).sqrt())
    else:
        mean, raw_d, off = heads
        r = torch.diag_embed(vae.positive(raw_d)) + torch.diag_embed(off[..., :-1], offset=1)
        cov_sqrt = torch.linalg.inv(r)  # covariance R^-1 R^-T
    chol_k = torch.linalg.cholesky(vae.kernel(times, times))
    want = dense_gaussian_kl(mean, cov_sqrt, chol_k).sum(-1)
    # the model adds 1e-10 (relative) jitter to K: a relative change of about 1e-10 * cond(K)
    torch.testing.assert_close(vae.kl(x, mask, times), want, rtol=1e-7, atol=0)


def test_banded_log_prob_is_the_tridiagonal_precision_gaussian():
    vae = _make("banded")
    x, mask = _data()
    q = vae.posterior(*vae.check_input(x, mask))
    z = q.rsample(torch.Size([3]))
    r = torch.diag_embed(q.diag) + torch.diag_embed(q.offdiag[..., :-1], offset=1)
    mvn = torch.distributions.MultivariateNormal(q.mean, precision_matrix=r.mT @ r)
    torch.testing.assert_close(q.log_prob(z), mvn.log_prob(z).sum(-1), rtol=1e-10, atol=1e-10)
    # sample covariance of z equals (R^T R)^-1: 20000 draws, each variance estimate has
    # relative sd sqrt(2 / 20000) = 0.01
    draws = q.rsample(torch.Size([20000]))
    emp = draws.var(0)
    want = mvn.covariance_matrix.diagonal(dim1=-2, dim2=-1)
    assert ((emp / want - 1).abs() < Z * math.sqrt(2 / 20000)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_kl_matches_monte_carlo_within_mcse(kind):
    vae = _make(kind)
    x, mask = _data(b=3)
    pyro.set_rng_seed(2)
    k = 4000
    terms = vae.local_terms(x, mask, num_particles=k, analytic_kl=True)
    est = (terms.log_q - terms.log_prior).detach()
    mcse = est.std(0) / math.sqrt(k)
    assert ((est.mean(0) - terms.kl.detach()).abs() < Z * mcse).all(), (est.mean(0), terms.kl)


# ---------------------------------------------------------------------------- masking
@pytest.mark.parametrize("kind", KINDS)
def test_missing_entries_do_not_affect_any_term(kind):
    vae = _make(kind)
    x, mask = _data()
    x2 = torch.where(mask, x, 1.0 - x)  # change every missing entry
    out = []
    for xx in (x, x2):
        pyro.set_rng_seed(5)
        t = vae.local_terms(xx, mask, num_particles=2, analytic_kl=True)
        out.append((t.log_lik, t.log_q, t.log_prior, t.kl))
        guide_tr = poutine.trace(vae.guide).get_trace(xx, mask)
        model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, mask)
        out[-1] += (model_tr.nodes["x"]["fn"].log_prob(xx),)
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # ... while observed entries do
    pyro.set_rng_seed(5)
    t = vae.local_terms(torch.where(mask, 1.0 - x, x), mask, num_particles=2)
    assert not torch.allclose(t.log_lik, out[0][0])


@pytest.mark.parametrize("kind", ["pseudo", "markov"])
def test_frame_mask_equals_an_all_missing_entry_mask(kind):
    vae = _make(kind)
    x, _ = _data()
    frame_obs = torch.tensor([[1, 0, 1, 1, 0, 0, 1]] * 4, dtype=torch.bool)
    entry_mask = frame_obs[..., None].expand(x.shape)
    pyro.set_rng_seed(3)
    a = vae.local_terms(x, frame_obs, num_particles=2, analytic_kl=True)
    pyro.set_rng_seed(3)
    b = vae.local_terms(x, entry_mask, num_particles=2, analytic_kl=True)
    torch.testing.assert_close(a.log_lik, b.log_lik, rtol=0, atol=0)
    torch.testing.assert_close(a.kl, b.kl, rtol=0, atol=0)


def test_missing_frames_are_skipped_with_the_longer_time_step():
    """q at the kept frames equals the posterior on the irregular grid of kept frames only."""
    vae = _make("markov")
    x, _ = _data(b=2, t=9)
    keep = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=torch.bool)
    frame_obs = keep.expand(2, 9)
    times = torch.arange(9, dtype=torch.float64)
    y, raw = vae.encode(x, None)
    q = vae._posterior((y, raw), frame_obs, times)
    sub = MarkovGP(vae.kernel, times[keep]).posterior(y[..., keep], vae.positive(raw)[..., keep])
    torch.testing.assert_close(q.mean[..., keep], sub.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(q.post.variance[..., keep], sub.variance, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(q.post.log_normalizer, sub.log_normalizer, rtol=1e-10, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_impute_keeps_observed_entries_and_fills_missing_ones(kind):
    vae = _make(kind)
    x, mask = _data()
    filled = vae.impute(x, mask)
    assert filled.shape == x.shape
    assert torch.equal(filled[mask], x[mask])
    missing = filled[~mask]
    assert ((missing > 0) & (missing < 1)).all()  # Bernoulli means


# ---------------------------------------------------------------------------- objectives
def test_beta_weights_the_kl_terms():
    x, mask = _data()
    terms = []
    for beta in (1.0, 0.25):
        pyro.set_rng_seed(0)
        terms.append(_make("markov", beta=beta).local_terms(x, mask, analytic_kl=True))
    torch.testing.assert_close(terms[1].kl, 0.25 * terms[0].kl)
    torch.testing.assert_close(terms[1].log_q, 0.25 * terms[0].log_q)
    torch.testing.assert_close(terms[1].log_lik, terms[0].log_lik)


@pytest.mark.parametrize("kind", KINDS)
def test_iwae_dreg_and_trace_elbo_run(kind):
    vae = _make(kind, dataset_size=8)
    x, mask = _data()
    loss = IWAE(4, gradient="dreg").differentiable_loss(vae, vae.guide, x, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in vae.encoder.parameters())
    with pyro.settings.context(module_local_params=True):
        assert math.isfinite(Trace_ELBO().loss(vae.model, vae.guide, x, mask))


@pytest.mark.parametrize("kind", KINDS)
def test_fit_reduces_the_loss_on_tiny_data(kind):
    vae = _make(kind, dataset_size=8, dtype=torch.float32)
    _, mask = _data(b=8, dtype=torch.float32)
    x = torch.tensor([1.0, 0, 0, 1, 1, 0]).expand(8, 7, 6)  # one pattern the decoder can learn
    result = fit(vae, vae.guide, (x, mask), num_steps=40, batch_size=4,
                 loss=LocalELBO(analytic_kl=True), lr=2e-2, seed=0)  # fmt: skip
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", ["banded", "markov"])
def test_bad_input_is_rejected_with_named_arguments(kind):
    vae = _make(kind)
    x, mask = _data()
    with pytest.raises(ValueError, match="mask must have the shape"):
        vae.guide(x, mask[:, :, :3])
    with pytest.raises(ValueError, match="strictly increasing"):
        vae.guide(x, mask, torch.tensor([0.0, 1, 2, 2, 3, 4, 5], dtype=torch.float64))
    with pytest.raises(ValueError, match="times must have shape"):
        vae.guide(x, mask, torch.arange(5.0))
    with pytest.raises(ValueError, match="frame_shape"):
        vae.guide(torch.zeros(2, 7, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.guide(x + 2.0)
    with pytest.raises(ValueError, match="B, T >= 1|shape"):
        vae.guide(torch.zeros(4, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="mask"):
        vae.guide(x, [1, 2])


def test_bad_constructor_arguments():
    enc, dec = SequenceEncoder(6, [8], 2), MLPDecoder(2, [8], 6)
    with pytest.raises(ValueError, match="posterior"):
        GPVAE(enc, dec, 2, posterior="full")
    with pytest.raises(ValueError, match="channels"):
        GPVAE(enc, dec, 2, MaternKernel(1.5, lengthscale=torch.ones(3)))
    with pytest.raises(ValueError, match="beta"):
        MarkovianGPVAE(enc, dec, 2, beta=0.0)
    with pytest.raises(ValueError, match="method"):
        MarkovianGPVAE(enc, dec, 2, method="fast")
    with pytest.raises(TypeError, match="kernel"):
        MarkovianGPVAE(enc, dec, 2, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="encoder heads"):  # banded needs 3 heads
        GPVAE(enc, dec, 2, posterior="banded").guide(torch.zeros(2, 4, 6))


def test_one_channel_kernel_is_shared_by_all_latent_channels():
    enc, dec = SequenceEncoder(6, [8], 3), MLPDecoder(3, [8], 6)
    kernel = MaternKernel(1.5, lengthscale=2.0)
    markov = MarkovianGPVAE(enc, dec, 3, kernel).double()
    dense = GPVAE(enc, dec, 3, kernel, posterior="pseudo").double()
    x, _ = _data()
    torch.testing.assert_close(markov.kl(x), dense.kl(x), rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    "module", ["bayesdl.vae.gp_vae", "bayesdl.vae.markovian_gp_vae", "bayesdl.vae.sequence_encoder"]
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

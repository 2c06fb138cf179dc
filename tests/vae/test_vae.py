"""VAE: Pyro model/guide contract, pixel likelihoods, networks, bad input, fit and state_dict."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from bayesdl.data import DynamicBinarization, load_binarized_images
from bayesdl.infer import IWAE, InfoVAE, LocalELBO, NonFiniteLossError, fit
from bayesdl.vae import (
    VAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    PixelLikelihood,
    burda_mlp,
    log_likelihood,
)
from tests.vae._ppca import make_ppca

Z = 3.5


def _mlp_vae(dim=16, latent=3, likelihood="bernoulli", **kw) -> VAE:
    return VAE(MLPEncoder(dim, [8], latent), MLPDecoder(latent, [8], dim), latent, likelihood, **kw)


def test_model_and_guide_are_pyro_programs_in_one_subsampled_data_plate(device):
    vae = _mlp_vae(dataset_size=40).to(device)
    x = torch.rand(10, 16, device=device).round()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    z, obs = model_tr.nodes["z"], model_tr.nodes["x"]
    assert guide_tr.nodes["z"]["value"].shape == (10, 3)
    assert obs["is_observed"] and obs["fn"].event_shape == (16,)
    for site in (z, obs, guide_tr.nodes["z"]):
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        assert float(site["scale"]) == pytest.approx(40 / 10)


def test_pyro_trace_elbo_gives_the_same_loss_as_local_elbo(device):
    vae, x, _ = make_ppca(num_data=12, dataset_size=30, device=device)
    pyro.set_rng_seed(4)
    pyro_loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(4)
    ours = LocalELBO(1).loss(vae, vae.guide, x)
    # same draw (one standard normal per latent), same float64 terms up to summation order
    assert ours == pytest.approx(pyro_loss, rel=1e-12)


@pytest.mark.parametrize("kind", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_pixel_likelihood_matches_torch_distributions(kind, device):
    f = torch.randn(3, 4, 2, 5, dtype=torch.float64, device=device)
    x = torch.rand(4, 2, 5, dtype=torch.float64, device=device)
    lik = PixelLikelihood(kind, scale=0.7)
    if kind == "bernoulli":
        ref = torch.distributions.Bernoulli(logits=f, validate_args=False)
    elif kind == "continuous_bernoulli":
        ref = torch.distributions.ContinuousBernoulli(logits=f)
    else:
        ref = torch.distributions.Normal(f, 0.7)
    expected = ref.log_prob(x.expand_as(f)).sum((-2, -1))
    torch.testing.assert_close(lik.log_prob(f, x), expected)
    d = lik.distribution(f, event_dim=2)
    assert d.batch_shape == (3, 4) and d.event_shape == (2, 5)
    torch.testing.assert_close(d.log_prob(x), expected)
    assert lik.mean(f).shape == f.shape


def test_learned_gaussian_scale_is_a_parameter_that_gets_gradients():
    vae = _mlp_vae(likelihood="gaussian", scale=0.3, learn_scale=True, dataset_size=50)
    assert float(vae.likelihood.scale(torch.zeros(())).detach()) == pytest.approx(0.3, rel=1e-6)
    assert "likelihood.raw_scale" in dict(vae.named_parameters())
    IWAE(3).differentiable_loss(vae, vae.guide, torch.randn(5, 16)).backward()
    assert vae.likelihood.raw_scale.grad is not None


@pytest.mark.parametrize(
    "nets, x_shape",
    [
        (lambda: (MLPEncoder((1, 8, 8), [16], 4), MLPDecoder(4, [16], (1, 8, 8))), (5, 1, 8, 8)),
        (
            lambda: (
                ConvEncoder((1, 8, 8), 4, channels=(4, 8), hidden=16),
                ConvDecoder(4, (1, 8, 8), channels=(8, 4), hidden=16),
            ),
            (5, 1, 8, 8),
        ),
    ],  # fmt: skip
    ids=["mlp", "conv"],
)
def test_image_shaped_data_through_every_objective(nets, x_shape, device):
    enc, dec = nets()
    vae = VAE(enc, dec, 4, "bernoulli", dataset_size=20).to(device)
    x = torch.rand(x_shape, device=device).round()
    for objective in (LocalELBO(2), IWAE(3, gradient="dreg"), InfoVAE(1.0, 10.0)):
        vae.zero_grad()
        loss = objective.differentiable_loss(vae, vae.guide, x)
        loss.backward()
        assert loss.shape == () and torch.isfinite(loss)
        assert all(p.grad is not None for p in vae.parameters())
    assert dec(torch.zeros(3, 2, 4, device=device)).shape == (3, 2, 1, 8, 8)


def test_burda_preset():
    mean = torch.rand(784) * 0.98 + 0.01
    enc, dec = burda_mlp(data_mean=mean)
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 200), (200, 200),
                                                                  (200, 100)]  # fmt: skip
    assert any(isinstance(m, nn.Tanh) for m in enc.modules())
    torch.testing.assert_close(dec.output_layer.bias, torch.logit(mean))


def test_bad_input_is_rejected_with_named_arguments():
    vae = _mlp_vae(dataset_size=20)
    ok = torch.rand(4, 16).round()
    with pytest.raises(ValueError, match=r"\[0, 1\] for a bernoulli likelihood"):
        vae.guide(ok + 0.5)
    cb = _mlp_vae(likelihood="continuous_bernoulli")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        IWAE(2).differentiable_loss(cb, cb.guide, ok - 0.5)
    _mlp_vae(likelihood="gaussian").guide(ok - 0.5)  # Gaussian pixels may be anything
    with pytest.raises(ValueError, match=r"x must have shape \[B, 16\]"):
        IWAE(2).differentiable_loss(vae, vae.guide, ok[:, :8])
    with pytest.raises(ValueError, match="NaN"):
        vae.guide(torch.full((2, 16), float("nan")))
    with pytest.raises(TypeError, match="floating"):
        vae.guide(ok.long())
    with pytest.raises(ValueError, match="dataset_size"):
        LocalELBO().differentiable_loss(vae, vae.guide, torch.ones(21, 16))
    with pytest.raises(ValueError, match="num_particles"):
        IWAE(0)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        _mlp_vae(likelihood="poisson")
    with pytest.raises(ValueError, match="learn_scale"):
        _mlp_vae(learn_scale=True)
    with pytest.raises(TypeError, match="encoder"):
        VAE(lambda x: x, MLPDecoder(3, [8], 16), 3)
    with pytest.raises(ValueError, match="latent_dim"):
        _mlp_vae(latent=0)
    # an encoder whose output does not fit latent_dim
    wrong = VAE(MLPEncoder(16, [8], 2), MLPDecoder(3, [8], 16), 3)
    with pytest.raises(ValueError, match=r"encoder must return \[B, 2 \* latent_dim\]"):
        wrong.guide(ok)
    # a decoder whose output does not fit the data
    short = VAE(MLPEncoder(16, [8], 3), MLPDecoder(3, [8], 15), 3)
    with pytest.raises(ValueError, match="the decoder must map"):
        LocalELBO().differentiable_loss(short, short.guide, ok)


def test_fit_trains_on_dynamically_binarised_digits_and_state_dict_round_trips():
    """``fit`` + ``IWAE(5)`` on 200 dynamically binarised digits improves the test
    log-likelihood, and a fresh VAE loaded with the ``state_dict`` scores the same.

    The improvement is judged per test image: the 50 paired differences (after - before,
    each a K = 50 estimate) must have a mean above 3.5 standard errors ``sd / sqrt(50)``
    (one-sided; measured: about -45 -> -33 nats per image). A broken gradient path leaves
    the weights, hence the estimates, where they were.
    """
    data = load_binarized_images("digits", limit_train=200, limit_test=50)
    loader = DynamicBinarization(data.x_train, batch_size=50, seed=0)

    def make():
        torch.manual_seed(0)
        enc, dec = MLPEncoder(64, [32], 4), MLPDecoder(4, [32], 64)
        return VAE(enc, dec, 4, dataset_size=data.num_train)

    vae = make()
    before = log_likelihood(vae, data.x_test, num_samples=50)
    result = fit(vae, vae.guide, loader, num_epochs=40, loss=IWAE(5), lr=3e-3, seed=0)
    assert result.num_steps == 160 and all(torch.isfinite(torch.tensor(result.losses)))
    torch.manual_seed(1)
    after = log_likelihood(vae, data.x_test, num_samples=50)
    gain = after - before
    assert float(gain.mean()) > Z * float(gain.std() / len(gain) ** 0.5), gain

    fresh = make()
    fresh.load_state_dict(vae.state_dict())
    torch.manual_seed(1)
    torch.testing.assert_close(log_likelihood(fresh, data.x_test, num_samples=50), after)


def test_fit_stops_on_a_non_finite_loss_and_names_the_term(tmp_path):
    """A NaN decoder weight makes the reconstruction term NaN: ``fit`` stops with a
    ``NonFiniteLossError`` that names it, and the checkpoint written before is left alone."""
    vae = _mlp_vae(dataset_size=40)
    x = torch.rand(40, 16).round()
    ckpt = tmp_path / "vae.pt"
    fit(vae, vae.guide, x, num_steps=2, batch_size=20, loss=IWAE(3), checkpoint=ckpt,
        checkpoint_every=1)  # fmt: skip
    good = ckpt.read_bytes()
    with torch.no_grad():
        vae.decoder.net[-1].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="reconstruction"):
        fit(vae, vae.guide, x, num_steps=2, batch_size=20, loss=IWAE(3), checkpoint=ckpt,
            checkpoint_every=1)  # fmt: skip
    assert ckpt.read_bytes() == good

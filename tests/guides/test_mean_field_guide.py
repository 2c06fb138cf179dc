"""MeanFieldGuide: contracts, the exact mean-field optimum of conjugate regression, save/load."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.guides import MeanFieldGuide
from bayesdl.infer import fit, predict
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import IIDPrior, LayerwiseNormalPrior, ScaleMixturePrior


def _linear_problem(device, n=40, d=3, sigma=0.5, s0=1.0):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3
    y = y + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    bnn = BNN(
        torch.nn.Linear(d, 1).double(),
        IIDPrior(dist.Normal(0.0, s0)),
        GaussianLikelihood(n, scale=sigma),
    ).to(device)
    # exact Gaussian posterior over (w, b): precision Lam, mean mu
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    lam = xt.T @ xt / sigma**2 + torch.eye(d + 1, dtype=torch.float64) / s0**2
    mu = torch.linalg.solve(lam, xt.T @ y / sigma**2)
    return bnn, x.to(device), y.to(device), lam, mu


def test_conjugate_linear_regression_mean_field_optimum(device):
    """The reverse-KL mean-field optimum of a Gaussian posterior N(mu, Lam^-1) has means mu and
    variances 1 / diag(Lam) exactly; SVI must find it.

    Tolerance: we record the iterates over the last 500 of 3000 steps and compare their average
    with the exact optimum. The variance of an average of (correlated) iterates is at most the
    iterates' own variance, so the average lies within z standard deviations of the iterates'
    stationary mean; z = 4 for approximately Gaussian fluctuations gives a false-alarm rate of
    ~6e-5 per parameter (8 parameters). The means' gradient is linear in the means, so their
    stationary mean has no bias.
    """
    bnn, x, y, lam, mu = _linear_problem(device)
    guide = MeanFieldGuide(bnn, init_scale=0.1)
    traj = []

    def record(state):
        if state.step > 2500:
            traj.append(
                torch.cat(
                    [
                        guide.loc("weight").flatten(),
                        guide.loc("bias"),
                        guide.scale("weight").flatten(),
                        guide.scale("bias"),
                    ]
                )
                .detach()
                .cpu()
                .clone()
            )

    fit(bnn, guide, (x, y), num_steps=3000, num_particles=64, callbacks=[record], seed=0)
    traj = torch.stack(traj)
    avg, spread = traj.mean(0), traj.std(0)
    exact = torch.cat([mu, lam.diagonal().rsqrt()])
    assert torch.all((avg - exact).abs() <= 4 * spread), (avg, exact, spread)
    # the fluctuations themselves must be small next to the posterior scale for this to mean
    # anything: the optimisation noise is at most 10% of the posterior standard deviations
    assert torch.all(spread[:4] < 0.1 * lam.diagonal().rsqrt())


def test_delta_guide_finds_the_posterior_mode(device):
    """MAP of conjugate regression is the ridge solution (= the posterior mean). Full-batch
    gradients of the Delta guide are deterministic; Adam with a decaying step converges to
    within 1e-4 of the posterior standard deviation (checked against the exact solve)."""
    from bayesdl.guides import DeltaGuide

    bnn, x, y, lam, mu = _linear_problem(device)
    guide = DeltaGuide(bnn)

    def decay(state):
        for group in state.optimizer.param_groups:
            group["lr"] = 0.05 * 0.998**state.step

    fit(bnn, guide, (x, y), num_steps=4000, lr=0.05, callbacks=[decay], seed=0)
    found = torch.cat([guide.loc("weight").flatten(), guide.loc("bias")]).detach().cpu()
    sd = lam.diagonal().rsqrt()
    assert torch.all((found - mu).abs() < 1e-4 * sd), (found, mu)


def test_guide_contracts(device):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    bnn = BNN(net, LayerwiseNormalPrior(), GaussianLikelihood(8)).to(device)
    guide = MeanFieldGuide(bnn, init_scale=0.05)
    assert guide.site_names == bnn.site_names
    # init_loc="net" copies the network's values; scales start at init_scale
    assert torch.equal(guide.loc("0.weight"), net.get_buffer("0.weight"))
    assert torch.allclose(guide.scale("2.bias"), torch.full((1,), 0.05, device=device))
    sample = guide()
    assert {k: v.shape for k, v in sample.items()} == bnn.param_shapes
    assert all(v.device.type == device.type for v in sample.values())
    # closed-form KL applies: the guide site is an Independent Normal
    d = guide.get_posterior("0.weight")
    assert isinstance(d, dist.Independent) and isinstance(d.base_dist, dist.Normal)
    with pytest.raises(KeyError, match="no latent site"):
        guide.get_posterior("nope")


def test_init_loc_options():
    bnn = BNN(torch.nn.Linear(50, 2), LayerwiseNormalPrior(), GaussianLikelihood(8))
    fan = MeanFieldGuide(bnn, init_loc="fan_in")
    bound = 1 / 50**0.5
    assert fan.loc("weight").abs().max() <= bound
    assert torch.equal(fan.loc("bias"), torch.zeros(2))
    prior = MeanFieldGuide(bnn, init_loc="prior")
    assert not torch.equal(prior.loc("weight"), bnn.net.get_buffer("weight"))
    with pytest.raises(ValueError, match="init_loc"):
        MeanFieldGuide(bnn, init_loc="zeros")
    with pytest.raises(ValueError, match="init_scale"):
        MeanFieldGuide(bnn, init_scale=-1.0)
    with pytest.raises(TypeError, match="bayesdl.nn.BNN"):
        MeanFieldGuide(torch.nn.Linear(2, 1))


def test_constrained_sites_stay_in_support():
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    lik = GaussianLikelihood(8, scale_prior=dist.LogNormal(-1.0, 0.5))
    bnn = BNN(net, ScaleMixturePrior(), lik)
    guide = MeanFieldGuide(bnn, init_scale=0.5)
    assert "2.variance" in guide.site_names and "obs.scale" in guide.site_names
    with pyro.plate("p", 500, dim=-2):
        s = guide()
    assert bool((s["2.variance"] > 0).all()) and bool((s["obs.scale"] > 0).all())
    # the median of the positive site starts at the prior's mean (its finite mean)
    assert torch.allclose(guide.median()["obs.scale"], dist.LogNormal(-1.0, 0.5).mean, rtol=1e-6)


def test_state_dict_round_trip_reproduces_predictions(tmp_path):
    def build():
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        bnn = BNN(net, LayerwiseNormalPrior(), GaussianLikelihood(32, learn_scale=True))
        return bnn, MeanFieldGuide(bnn)

    x, y = torch.randn(32, 2), torch.randn(32)
    bnn, guide = build()
    fit(bnn, guide, (x, y), num_steps=30, seed=0)
    torch.save({"bnn": bnn.state_dict(), "guide": guide.state_dict()}, tmp_path / "m.pt")
    pyro.set_rng_seed(5)
    before = predict(bnn, guide, x, num_samples=20)

    bnn2, guide2 = build()
    state = torch.load(tmp_path / "m.pt")
    bnn2.load_state_dict(state["bnn"])
    guide2.load_state_dict(state["guide"])
    pyro.set_rng_seed(5)
    after = predict(bnn2, guide2, x, num_samples=20)
    assert torch.equal(before.f_samples, after.f_samples)
    assert torch.equal(before.variance, after.variance)

"""fit_functional_prior: matching a GP, checkpoint/resume, multi-output, bad input, plots."""

from __future__ import annotations

import pyro.contrib.gp as gp
import pytest
import torch

from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import HierarchicalGammaPrior
from bayesdl.priors.functional import (
    DataMeasurement,
    GaussianWeightPrior,
    GPTarget,
    GridMeasurement,
    LipschitzCritic,
    MinibatchMeasurement,
    SlicedWasserstein,
    fit_functional_prior,
    prior_functions,
    scaled_mlp,
)


def _target(lengthscale=0.6):
    return GPTarget(gp.kernels.RBF(1, lengthscale=torch.tensor(lengthscale)))


def _relative_cov_error(net, prior, target, x, num_draws):
    with torch.no_grad():
        f = prior_functions(net, prior, x, num_draws)[..., 0]
    k = target.covariance(x).to(f)
    return ((f.T.cov() - k).norm() / k.norm()).item()


def _matching_check(*, num_points, hidden, num_iters, num_samples, critic_steps, num_draws):
    """The issue's matching test: 1-hidden-layer tanh net vs an RBF GP on a 1-D grid."""
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, num_points).unsqueeze(-1)
    net = scaled_mlp((1, hidden, 1), "tanh")
    target = _target()
    fixed = GaussianWeightPrior(net, init_scale=1.0)  # N(0, 1) in the scaled parameterisation
    err_fixed = _relative_cov_error(net, fixed, target, x, num_draws)
    estimator = LipschitzCritic(num_steps=critic_steps, lr=0.02, threshold=0.01)
    prior = fit_functional_prior(
        net,
        target,
        GridMeasurement(x),
        estimator=estimator,
        num_iters=num_iters,
        num_samples=num_samples,
        lr=0.05,
        seed=0,
        progress=False,
    )
    err_fit = _relative_cov_error(net, prior, target, x, num_draws)
    history = prior.history
    assert len(history) == num_iters
    # the Frobenius error of a covariance from n >= 2000 draws has a sampling error of about
    # sqrt(2/n) relative (~3 %), far below the 30 % reduction asked for
    assert err_fit <= 0.7 * err_fixed, (err_fit, err_fixed)
    assert sum(history[-10:]) / 10 < 0.5 * history[0], history


def test_matching_reduces_covariance_error_fast():
    _matching_check(
        num_points=20, hidden=16, num_iters=25, num_samples=64, critic_steps=15, num_draws=2000
    )


@pytest.mark.slow
def test_matching_reduces_covariance_error_full():
    _matching_check(
        num_points=50, hidden=50, num_iters=150, num_samples=256, critic_steps=100, num_draws=4000
    )


def test_resume_gives_the_uninterrupted_result(tmp_path):
    x = torch.linspace(-2, 2, 10).unsqueeze(-1)
    kwargs = dict(
        estimator=LipschitzCritic(hidden=(16,), num_steps=3), num_samples=16, seed=3, progress=False
    )

    def run(**extra):
        net = scaled_mlp((1, 8, 1))
        prior = GaussianWeightPrior(net)
        return fit_functional_prior(
            net, _target(), GridMeasurement(x), prior=prior, **kwargs, **extra
        )

    full = run(num_iters=6)
    ckpt = tmp_path / "prior.pt"
    run(num_iters=4, checkpoint=ckpt, checkpoint_every=2)  # "killed" after 4 iterations
    resumed = run(num_iters=6, checkpoint=ckpt, checkpoint_every=2, resume=True)
    assert resumed.history == full.history  # exact: same RNG stream on one CPU device
    for (n1, p1), (n2, p2) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    assert not (tmp_path / ".tmp-").exists() and len(list(tmp_path.iterdir())) == 1


def test_resume_rejects_a_checkpoint_from_another_run(tmp_path):
    x = torch.linspace(-2, 2, 10).unsqueeze(-1)
    net = scaled_mlp((1, 8, 1))
    ckpt = tmp_path / "prior.pt"
    fit_functional_prior(
        net,
        _target(),
        GridMeasurement(x),
        estimator=SlicedWasserstein(),
        num_iters=2,
        num_samples=8,
        checkpoint=ckpt,
        progress=False,
    )
    with pytest.raises(ValueError, match="other settings"):
        fit_functional_prior(
            net,
            _target(),
            GridMeasurement(x),
            estimator=SlicedWasserstein(),
            num_iters=3,
            num_samples=16,
            checkpoint=ckpt,
            resume=True,
            progress=False,
        )


def test_fitted_prior_is_a_bayesdl_prior_for_any_bnn():
    x = torch.linspace(-2, 2, 12).unsqueeze(-1)
    net = scaled_mlp((1, 8, 1))
    prior = fit_functional_prior(
        net,
        _target(),
        GridMeasurement(x),
        estimator=SlicedWasserstein(),
        num_iters=3,
        num_samples=16,
        progress=False,
    )
    assert not any(p.requires_grad for p in prior.parameters())
    bnn = BNN(scaled_mlp((1, 8, 1)), prior, GaussianLikelihood(12, scale=0.3))
    assert bnn(x).shape == (12, 1)


def test_hierarchical_prior_can_be_fitted():
    x = torch.linspace(-2, 2, 12).unsqueeze(-1)
    net = scaled_mlp((1, 8, 1))
    prior = HierarchicalGammaPrior(net)
    before = prior.raw_rate["0__weight"].clone()
    fitted = fit_functional_prior(
        net,
        _target(),
        GridMeasurement(x),
        prior=prior,
        estimator=SlicedWasserstein(),
        num_iters=3,
        num_samples=16,
        progress=False,
    )
    assert fitted is prior and not torch.equal(prior.raw_rate["0__weight"], before)


def test_multi_output_network_shares_one_critic():
    x = torch.randn(40, 2)
    net = scaled_mlp((2, 16, 3), "relu")
    target = GPTarget(gp.kernels.RBF(2, lengthscale=torch.ones(2)))
    est = LipschitzCritic(hidden=(16,), num_steps=2)
    prior = fit_functional_prior(
        net,
        target,
        MinibatchMeasurement(x, batch_size=20),
        estimator=est,
        num_iters=2,
        num_samples=8,
        progress=False,
    )
    assert len(prior.history) == 2
    assert est.critic[0].in_features == 20  # one critic over M points, applied per output


def test_data_measurement_mixes_train_and_uniform_points():
    x_train = torch.randn(50, 3)
    x_test = torch.randn(10, 3) * 5
    m = DataMeasurement(x_train, num_points=20, x_extra=x_test)
    xs = m.sample()
    assert xs.shape == (20, 3) and m.num_train_points == 14
    is_train = (xs.unsqueeze(1) == x_train.unsqueeze(0)).all(-1).any(-1)
    assert int(is_train.sum()) == 14  # uniform points hit a training row with probability 0
    low = torch.cat([x_train, x_test]).min(0).values
    high = torch.cat([x_train, x_test]).max(0).values
    assert ((xs >= low) & (xs <= high)).all()


def test_bad_input_is_rejected():
    x1 = torch.linspace(-2, 2, 10).unsqueeze(-1)
    net = scaled_mlp((1, 8, 1))
    with pytest.raises(ValueError, match="input dimension 2 but the target"):
        fit_functional_prior(net, _target(), GridMeasurement(torch.randn(10, 2)), num_iters=1)
    target2 = GPTarget(gp.kernels.RBF(2))
    with pytest.raises(ValueError, match="first linear layer takes 1 inputs"):
        fit_functional_prior(
            net, target2, GridMeasurement(torch.randn(10, 2)), num_iters=1, progress=False
        )
    with pytest.raises(ValueError, match="built for 2 output"):
        fit_functional_prior(
            net,
            _target(),
            GridMeasurement(x1),
            estimator=SlicedWasserstein(num_outputs=2),
            num_iters=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="built for measurement sets of 50 points"):
        fit_functional_prior(
            net,
            _target(),
            GridMeasurement(x1),
            estimator=LipschitzCritic(num_points=50),
            num_iters=1,
            progress=False,
        )
    with pytest.raises(TypeError, match="fittable prior"):
        from bayesdl.priors import LayerwiseNormalPrior

        fit_functional_prior(net, _target(), GridMeasurement(x1), prior=LayerwiseNormalPrior())
    with pytest.raises(ValueError, match="num_iters"):
        fit_functional_prior(net, _target(), GridMeasurement(x1), num_iters=0)


def test_plot_is_written(tmp_path):
    x = torch.linspace(-2, 2, 12).unsqueeze(-1)
    net = scaled_mlp((1, 8, 1))
    path = tmp_path / "prior.png"
    fit_functional_prior(
        net,
        _target(),
        GridMeasurement(x),
        estimator=SlicedWasserstein(),
        num_iters=2,
        num_samples=8,
        progress=False,
        plot=path,
    )
    assert path.stat().st_size > 1000

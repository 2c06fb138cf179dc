"""Generated sequence data: shapes, determinism, statistics, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from bayesdl.data.sequences import (
    SequenceData,
    gp_trajectories,
    healing_fashion_mnist,
    moving_ball,
)


def test_healing_fashion_mnist_shapes_masks_and_determinism():
    data = healing_fashion_mnist(6, num_frames=5, seed=3)
    assert isinstance(data, SequenceData)
    assert data.x.shape == data.x_full.shape == data.mask.shape == (6, 5, 1, 28, 28)
    assert data.mask.dtype == torch.bool and data.labels.shape == (6,)
    assert data.times.tolist() == [0, 1, 2, 3, 4]
    assert set(data.x_full.unique().tolist()) <= {0.0, 1.0}
    # missing entries are zero in x, observed ones equal x_full
    assert torch.equal(data.x, data.x_full * data.mask)
    again = healing_fashion_mnist(6, num_frames=5, seed=3)
    assert torch.equal(again.x_full, data.x_full) and torch.equal(again.mask, data.mask)
    other = healing_fashion_mnist(6, num_frames=5, seed=4)
    assert not torch.equal(other.mask, data.mask)
    flat = healing_fashion_mnist(2, num_frames=3, flatten=True)
    assert flat.x.shape == (2, 3, 784)


def test_healing_fashion_mnist_statistics():
    data = healing_fashion_mnist(20, num_frames=10, missing_rate=0.6)
    # the missing rate: a binomial proportion over 156,800 pixels, sd 0.0012; allow 5 sd
    observed = data.mask.double().mean().item()
    assert abs(observed - 0.4) < 5 * math.sqrt(0.24 / data.mask.numel())
    # frame 0 is the binarised image itself
    from bayesdl.data import load_fashion_mnist

    images, _ = load_fashion_mnist("train", limit=20)
    assert torch.equal(data.x_full[:, 0], (images > 127 / 255).float())
    # frames rotate: later frames differ from the first, and consecutive frames are closer
    # (on average) than frames far apart, since the angle is a random walk
    diff = lambda a, b: (data.x_full[:, a] - data.x_full[:, b]).abs().mean().item()  # noqa: E731
    assert diff(0, 1) > 0
    assert diff(0, 1) < diff(0, 9)
    no_rotation = healing_fashion_mnist(4, num_frames=3, max_angle=0.0)
    assert torch.equal(no_rotation.x_full[:, 0], no_rotation.x_full[:, 2])


def test_moving_ball_shapes_and_path_statistics():
    data = moving_ball(40, seed=1)
    assert data.x.shape == (40, 30, 1, 32, 32) and data.latent.shape == (40, 30, 2)
    assert data.mask.shape == (40, 30) and bool(data.mask.all())
    assert float(data.x.min()) >= 0 and float(data.x.max()) <= 1
    # the ball covers about pi r^2 = 28 pixels (3.0 px radius plus a linear edge)
    area = data.x.sum((2, 3, 4))
    assert 20 < float(area.mean()) < 40
    # unit-variance GP paths: the sample variance of 2400 correlated values (about 40 * 2 * 30 / 5
    # = 480 effective) is 1 +- 0.07; allow 0.25
    assert abs(data.latent.var().item() - 1.0) < 0.25
    # the ball's centre of mass follows the path (affine, monotone): corr > 0.95
    cols = torch.arange(32, dtype=torch.float32) + 0.5
    centre_x = (data.x[:, :, 0].sum(2) * cols).sum(-1) / area
    r = torch.corrcoef(torch.stack([centre_x.flatten(), data.latent[..., 0].flatten()]))[0, 1]
    assert r > 0.95
    assert torch.equal(moving_ball(40, seed=1).x, data.x)


@pytest.mark.parametrize("nu", [0.5, 1.5])
def test_gp_trajectories_have_the_matern_covariance(nu):
    data = gp_trajectories(40, 400, latent_dim=2, observed_dim=3, nu=nu, lengthscale=5.0, seed=2)
    assert data.x.shape == (40, 400, 3) and data.latent.shape == (40, 400, 2)
    z = data.latent.double()
    # lag-1 and lag-5 autocorrelations of a Matérn GP; 80 paths x 400 steps, the estimates'
    # sd is about 0.02 (lengthscale 5: ~80 * 400 / 10 effective points); allow 0.06
    lam = math.sqrt(2 * nu) / 5.0
    for lag in (1, 5):
        k = math.exp(-lam * lag) * (1 + lam * lag if nu == 1.5 else 1)
        est = (z[:, lag:] * z[:, :-lag]).mean() / z.square().mean()
        assert abs(est.item() - k) < 0.06, (lag, est.item(), k)
    assert abs(z.var().item() - 1.0) < 0.15
    assert torch.equal(gp_trajectories(2, 50, seed=2).x, gp_trajectories(2, 50, seed=2).x)


def test_gp_trajectories_missing_frames():
    data = gp_trajectories(3, 1000, missing_frame_rate=0.6, seed=0)
    assert data.mask.shape == (3, 1000)
    assert bool(data.mask[:, 0].all()) and bool(data.mask[:, -1].all())
    # binomial proportion over 3000 frames: sd 0.009; allow 5 sd
    assert abs(data.mask.double().mean().item() - 0.4) < 0.045
    assert bool((data.x[~data.mask] == 0).all())
    assert torch.equal(data.x[data.mask], data.x_full[data.mask])


@pytest.mark.slow
def test_gp_trajectories_long_sequence_has_the_ou_statistics():
    # nu = 1/2 is an Ornstein-Uhlenbeck path: unit variance and lag-one autocorrelation
    # phi = exp(-1/l). Over T = 1e5 steps, mean(z^2) has sd ~ sqrt(2 l / T) (Var z^2 = 2, the
    # integrated autocorrelation time of z^2 is ~ l) and the lag-one autocorrelation estimate
    # of an AR(1) has sd ~ sqrt((1 - phi^2) / T); both bounds use z = 4.
    num_steps, ell = 100_000, 20.0
    data = gp_trajectories(
        1, num_steps, latent_dim=2, observed_dim=4, nu=0.5, lengthscale=ell, dtype=torch.float64
    )
    assert data.x.shape == (1, num_steps, 4)
    z = data.latent[0]  # [T, L]
    second = (z**2).mean(0)
    assert torch.all((second - 1).abs() < 4 * math.sqrt(2 * ell / num_steps)), second
    phi = math.exp(-1 / ell)
    lag1 = (z[1:] * z[:-1]).mean(0) / second
    assert torch.all((lag1 - phi).abs() < 4 * math.sqrt((1 - phi**2) / num_steps)), lag1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: healing_fashion_mnist(0), "num_sequences"),
        (lambda: healing_fashion_mnist(2, missing_rate=1.0), "missing_rate"),
        (lambda: healing_fashion_mnist(2, max_angle=-1.0), "max_angle"),
        (lambda: moving_ball(2, radius=20.0), "radius"),
        (lambda: moving_ball(2, lengthscale=0.0), "lengthscale"),
        (lambda: gp_trajectories(2, 10, nu=2.0), "nu"),
        (lambda: gp_trajectories(2, 10, missing_frame_rate=-0.1), "missing_frame_rate"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types():
    with pytest.raises(TypeError, match="seed"):
        moving_ball(2, seed=-1)
    with pytest.raises(TypeError, match="dtype"):
        gp_trajectories(2, 10, dtype=torch.int64)


def test_docstring_examples_run():
    import doctest

    import bayesdl.data.sequences as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

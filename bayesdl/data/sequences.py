"""Generated sequence data for GP-VAEs: Healing-Fashion-MNIST, moving-ball videos, GP trajectories.

The published GP-VAE benchmarks (Healing MNIST, Sprites, Physionet) need downloads, so bayesdl
generates offline analogues, deterministically from a seed (a ``torch.Generator`` on the CPU;
the same seed gives the same tensors on every machine):

* :func:`healing_fashion_mnist`: Fashion-MNIST images turned into short rotating sequences with
  pixels missing at random, built as Fortuin et al. (2020) built Healing MNIST;
* :func:`moving_ball`: videos of a ball whose two coordinates follow independent GP paths
  (Pearce 2020), with the true latent path for latent-recovery scores;
* :func:`gp_trajectories`: long Matérn-GP latent paths (up to ``T = 1e5`` and beyond, sampled in
  state-space form in ``O(T)``) seen through a fixed random nonlinear emission, optionally with
  frames missing at random.

Each returns a :class:`SequenceData`: observed sequences ``x [N, T, *frame_shape]`` (missing
entries set to 0), the observation ``mask`` (``True`` = observed), the complete sequences
``x_full``, the time stamps, and the ground truth the generator knows.

References:
    Fortuin, Baranchuk, Rätsch & Mandt, GP-VAE: Deep Probabilistic Time Series Imputation,
    AISTATS 2020 (Healing MNIST);
    Krishnan, Shalit & Sontag, Deep Kalman Filters, 2015 (the original Healing MNIST);
    Pearce, The Gaussian Process Prior VAE for Interpretable Latent Dynamics from Pixels,
    AABI 2020 (moving ball);
    Hartikainen & Särkkä, Kalman filtering and smoothing solutions to temporal Gaussian process
    regression models, MLSP 2010 (Matérn GPs as state-space models).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bayesdl._validation import check_positive, check_positive_int
from bayesdl.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from bayesdl.data.splits import _check_float_dtype

__all__ = ["SequenceData", "gp_trajectories", "healing_fashion_mnist", "moving_ball"]


@dataclass(eq=False)
class SequenceData:
    """A set of ``N`` sequences of ``T`` frames and what the generator knows about them.

    Attributes:
        x: observed sequences ``[N, T, *frame_shape]``; missing entries are 0.
        mask: ``True`` where observed: ``[N, T, *frame_shape]`` (missing pixels) or ``[N, T]``
            (missing frames).
        x_full: the complete sequences, ``[N, T, *frame_shape]``.
        times: time stamps ``[T]`` shared by all sequences.
        latent: the true latent path ``[N, T, L]`` (``None`` when there is none).
        labels: class labels ``[N]`` (``None`` when there are none).
        name: the generator's name.
    """

    x: Tensor
    mask: Tensor
    x_full: Tensor
    times: Tensor
    latent: Tensor | None = None
    labels: Tensor | None = None
    name: str = ""

    @property
    def num_sequences(self) -> int:
        """``N``."""
        return int(self.x.shape[0])

    @property
    def num_frames(self) -> int:
        """``T``."""
        return int(self.x.shape[1])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame."""
        return tuple(self.x.shape[2:])

    def __len__(self) -> int:
        return self.num_sequences


def _check_rate(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate ``images [M, 1, H, W]`` about their centres by ``degrees [M]`` (bilinear)."""
    theta = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def healing_fashion_mnist(
    num_sequences: int = 1000,
    *,
    num_frames: int = 10,
    max_angle: float = 15.0,
    missing_rate: float = 0.6,
    split: str = "train",
    flatten: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    root: str = DEFAULT_ROOT,
) -> SequenceData:
    """Healing-Fashion-MNIST: rotating, binarised Fashion-MNIST sequences with missing pixels.

    Built as Fortuin et al. (2020) built Healing MNIST from MNIST: the ``i``-th sequence starts
    from the ``i``-th image of the split; each frame rotates the previous one by an angle
    ``~ N(0, max_angle^2)`` degrees (frame 0 is the image itself; frame ``t`` is the image
    rotated by the cumulative angle, so interpolation blur does not accumulate); frames are
    binarised at ``127 / 255`` and each pixel is then missing independently with probability
    ``missing_rate`` (missing at random; 60% as in the paper).

    Args:
        num_sequences: ``N`` (at most the 60,000 / 10,000 images of the split).
        num_frames: ``T`` (10 in the paper).
        max_angle: standard deviation of the per-frame rotation in degrees.
        missing_rate: probability that a pixel is missing.
        split: ``"train"`` or ``"test"`` Fashion-MNIST images.
        flatten: frames of shape ``[784]`` instead of ``[1, 28, 28]``.
        seed: seed of the angles and of the missingness mask.
        dtype: floating dtype of ``x`` and ``x_full``.
        root: folder of the Fashion-MNIST IDX files.

    Returns:
        :class:`SequenceData` with ``x``, ``mask`` and ``x_full`` of shape
        ``[N, T, 1, 28, 28]`` (or ``[N, T, 784]``), ``times = arange(T)`` and the class
        ``labels``.

    Example:
        >>> data = healing_fashion_mnist(4, num_frames=5)
        >>> data.x.shape, data.mask.dtype
        (torch.Size([4, 5, 1, 28, 28]), torch.bool)

    References:
        Fortuin, Baranchuk, Rätsch & Mandt, GP-VAE: Deep Probabilistic Time Series Imputation,
        AISTATS 2020.
    """
    check_positive_int(num_sequences, "num_sequences")
    check_positive_int(num_frames, "num_frames")
    check_positive(max_angle, "max_angle", allow_zero=True)
    missing_rate = _check_rate(missing_rate, "missing_rate")
    seed = _check_seed(seed)
    dtype = _check_float_dtype(dtype)
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {type(flatten).__name__}")
    images, labels = load_fashion_mnist(split, limit=num_sequences, root=root)
    if images.shape[0] < num_sequences:
        raise ValueError(
            f"num_sequences={num_sequences} exceeds the {images.shape[0]} {split} images"
        )
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(num_sequences, num_frames, generator=g, dtype=torch.float64) * max_angle
    steps[:, 0] = 0.0
    angles = steps.cumsum(1).to(images.dtype)
    frames = images.unsqueeze(1).expand(-1, num_frames, -1, -1, -1).reshape(-1, 1, 28, 28)
    rotated = _rotate(frames, angles.reshape(-1))
    # an angle of exactly 0 keeps the image (bilinear resampling would add round-off)
    rotated = torch.where(angles.reshape(-1, 1, 1, 1) == 0, frames, rotated)
    x_full = (rotated > 127.0 / 255.0).to(dtype).reshape(num_sequences, num_frames, 1, 28, 28)
    mask = torch.rand(x_full.shape, generator=g, dtype=torch.float64) >= missing_rate
    if flatten:
        x_full = x_full.reshape(num_sequences, num_frames, 784)
        mask = mask.reshape(num_sequences, num_frames, 784)
    x = x_full * mask
    times = torch.arange(num_frames, dtype=dtype)
    return SequenceData(x, mask, x_full, times, labels=labels, name="healing_fashion_mnist")


def _rbf_paths(num: int, times: Tensor, lengthscale: float, g: torch.Generator) -> Tensor:
    """``num`` draws ``[num, T]`` of a unit-variance squared-exponential GP on ``times``."""
    tau = times[:, None] - times[None, :]
    cov = torch.exp(-0.5 * (tau / lengthscale).square())
    cov = cov + 1e-8 * torch.eye(len(times), dtype=cov.dtype)
    chol = torch.linalg.cholesky(cov)
    eps = torch.randn(num, len(times), generator=g, dtype=cov.dtype)
    return eps @ chol.T


def moving_ball(
    num_videos: int = 100,
    *,
    num_frames: int = 30,
    image_size: int = 32,
    lengthscale: float = 5.0,
    radius: float = 3.0,
    flatten: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SequenceData:
    """Videos of a ball whose ``x`` and ``y`` coordinates are independent GP paths.

    For each video two paths ``u_t, v_t`` are drawn from a unit-variance squared-exponential GP
    with ``lengthscale`` (in frames) on ``t = 0, ..., T - 1``; the ball's centre is
    ``c + s * (u_t, v_t)`` pixels with ``c`` the image centre and ``s = (image_size / 2 -
    radius) / 3`` (a 3-sigma excursion touches the border; positions are clipped to the
    image). Each frame draws the ball as a disk of ``radius`` pixels with a one-pixel linear
    edge, intensities in ``[0, 1]``. The true latent path ``(u_t, v_t)`` is returned, so a
    model's latent path can be scored after an affine alignment.

    Args:
        num_videos: ``N``.
        num_frames: ``T`` (30 as in Pearce 2020).
        image_size: side of the square frames (32).
        lengthscale: GP lengthscale in frames.
        radius: ball radius in pixels.
        flatten: frames of shape ``[image_size^2]`` instead of ``[1, H, W]``.
        seed: seed of the paths.
        dtype: floating dtype of the videos and paths.

    Returns:
        :class:`SequenceData` with ``x = x_full`` of shape ``[N, T, 1, H, W]`` (or flat), an
        all-``True`` frame mask ``[N, T]``, ``times = arange(T)`` and ``latent [N, T, 2]``.

    Example:
        >>> data = moving_ball(3)
        >>> data.x.shape, data.latent.shape
        (torch.Size([3, 30, 1, 32, 32]), torch.Size([3, 30, 2]))

    References:
        Pearce, The Gaussian Process Prior VAE for Interpretable Latent Dynamics from Pixels,
        AABI 2020.
    """
    check_positive_int(num_videos, "num_videos")
    check_positive_int(num_frames, "num_frames")
    check_positive_int(image_size, "image_size")
    check_positive(lengthscale, "lengthscale")
    check_positive(radius, "radius")
    seed = _check_seed(seed)
    dtype = _check_float_dtype(dtype)
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {type(flatten).__name__}")
    if 2 * radius >= image_size:
        raise ValueError(f"radius={radius} does not fit in image_size={image_size}")
    g = torch.Generator().manual_seed(seed)
    times = torch.arange(num_frames, dtype=torch.float64)
    paths = _rbf_paths(2 * num_videos, times, float(lengthscale), g)
    latent = paths.reshape(num_videos, 2, num_frames).transpose(1, 2)  # [N, T, 2]
    half = image_size / 2.0
    scale = (half - radius) / 3.0
    centre = (half + scale * latent).clamp(radius, image_size - radius)
    grid = torch.arange(image_size, dtype=torch.float64) + 0.5
    dx = grid[None, None, None, :] - centre[..., 0, None, None]  # columns follow u
    dy = grid[None, None, :, None] - centre[..., 1, None, None]  # rows follow v
    dist = (dx.square() + dy.square()).sqrt()
    frames = (radius + 0.5 - dist).clamp(0.0, 1.0)  # [N, T, H, W]
    x_full = frames.unsqueeze(2).to(dtype)
    if flatten:
        x_full = x_full.reshape(num_videos, num_frames, image_size * image_size)
    mask = torch.ones(num_videos, num_frames, dtype=torch.bool)
    return SequenceData(
        x_full.clone(), mask, x_full, times.to(dtype), latent=latent.to(dtype), name="moving_ball"
    )


def _matern_transition(nu: float, lengthscale: float, dt: float) -> tuple[Tensor, Tensor]:
    """``(A, Q)`` of a unit-variance Matérn-``nu`` SDE over a step ``dt`` (float64)."""
    if nu == 0.5:
        lam = 1.0 / lengthscale
        a = math.exp(-lam * dt)
        return torch.tensor([[a]], dtype=torch.float64), torch.tensor(
            [[1.0 - a * a]], dtype=torch.float64
        )
    # nu = 1.5: state (f, f'), F = [[0, 1], [-lam^2, -2 lam]], P_inf = diag(1, lam^2)
    lam = math.sqrt(3.0) / lengthscale
    e = math.exp(-lam * dt)
    a = e * torch.tensor(
        [[1.0 + lam * dt, dt], [-lam * lam * dt, 1.0 - lam * dt]], dtype=torch.float64
    )
    p_inf = torch.diag(torch.tensor([1.0, lam * lam], dtype=torch.float64))
    return a, p_inf - a @ p_inf @ a.T


def gp_trajectories(
    num_sequences: int = 8,
    num_steps: int = 1000,
    *,
    latent_dim: int = 2,
    observed_dim: int = 8,
    nu: float = 1.5,
    lengthscale: float = 20.0,
    hidden: int = 16,
    noise_scale: float = 0.1,
    missing_frame_rate: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SequenceData:
    """Long Matérn-GP latent paths seen through a fixed random nonlinear emission.

    Each of the ``latent_dim`` latent channels of each sequence is an independent unit-variance
    Matérn GP (``nu`` 1/2 or 3/2, ``lengthscale`` in time steps) on ``t = 0, ..., T - 1``,
    sampled exactly in ``O(T)`` from its state-space form (stationary start, exact
    discretisation; Hartikainen & Särkkä 2010). The observation is
    ``x_t = W_2 tanh(W_1 z_t + b_1) + b_2 + noise_scale * eps_t``, with ``W_1 [hidden, L]``,
    ``W_2 [D, hidden]`` drawn once from the seed (``N(0, 1/fan_in)``, so ``W_1 z`` is of
    order one), so the latent is identifiable only up to the emission's nonlinearity. With
    ``missing_frame_rate > 0`` whole frames are missing at random (the first and last are
    always kept) and set to 0 in ``x``.

    Args:
        num_sequences: ``N``.
        num_steps: ``T`` (``1e5`` takes about a second per sequence and channel batch).
        latent_dim: ``L``.
        observed_dim: ``D``.
        nu: Matérn smoothness, ``0.5`` or ``1.5``.
        lengthscale: GP lengthscale in steps.
        hidden: width of the emission's hidden layer.
        noise_scale: standard deviation of the Gaussian observation noise.
        missing_frame_rate: probability that a frame is missing.
        seed: seed of the latents, emission weights, noise and mask.
        dtype: floating dtype of the outputs.

    Returns:
        :class:`SequenceData` with ``x``, ``x_full [N, T, D]``, frame ``mask [N, T]``,
        ``times = arange(T)`` and ``latent [N, T, L]``.

    Example:
        >>> data = gp_trajectories(2, 500, latent_dim=3, observed_dim=5)
        >>> data.x.shape, data.latent.shape
        (torch.Size([2, 500, 5]), torch.Size([2, 500, 3]))
    """
    for name, value in (
        ("num_sequences", num_sequences),
        ("num_steps", num_steps),
        ("latent_dim", latent_dim),
        ("observed_dim", observed_dim),
        ("hidden", hidden),
    ):
        check_positive_int(value, name)
    if nu not in (0.5, 1.5):
        raise ValueError(f"nu must be 0.5 or 1.5, got {nu!r}")
    check_positive(lengthscale, "lengthscale")
    check_positive(noise_scale, "noise_scale", allow_zero=True)
    missing_frame_rate = _check_rate(missing_frame_rate, "missing_frame_rate")
    seed = _check_seed(seed)
    dtype = _check_float_dtype(dtype)
    g = torch.Generator().manual_seed(seed)
    a, q = _matern_transition(float(nu), float(lengthscale), 1.0)
    d = a.shape[0]
    p_inf = (
        torch.ones(1, 1, dtype=torch.float64)
        if d == 1
        else torch.diag(torch.tensor([1.0, 3.0 / lengthscale**2], dtype=torch.float64))
    )
    m = num_sequences * latent_dim
    chol_q = torch.linalg.cholesky(q + 1e-12 * torch.eye(d, dtype=torch.float64))
    state = torch.randn(m, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(p_inf).T
    noise = torch.randn(num_steps, m, d, generator=g, dtype=torch.float64) @ chol_q.T
    path = torch.empty(num_steps, m, dtype=torch.float64)
    # a linear recursion; the Python loop costs ~5 microseconds per step for all sequences
    a_t = a.T.contiguous()
    path[0] = state[:, 0]
    for t in range(1, num_steps):
        state = state @ a_t + noise[t]
        path[t] = state[:, 0]
    latent = path.reshape(num_steps, num_sequences, latent_dim).permute(1, 0, 2)  # [N, T, L]
    w1 = torch.randn(hidden, latent_dim, generator=g, dtype=torch.float64) / math.sqrt(latent_dim)
    b1 = 0.1 * torch.randn(hidden, generator=g, dtype=torch.float64)
    w2 = torch.randn(observed_dim, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    b2 = 0.1 * torch.randn(observed_dim, generator=g, dtype=torch.float64)
    clean = torch.tanh(latent @ w1.T + b1) @ w2.T + b2
    eps = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    x_full = clean + noise_scale * eps
    mask = torch.rand(num_sequences, num_steps, generator=g, dtype=torch.float64) >= (
        missing_frame_rate
    )
    mask[:, 0] = True
    mask[:, -1] = True
    x = x_full * mask[..., None]
    times = torch.arange(num_steps, dtype=dtype)
    return SequenceData(
        x.to(dtype),
        mask,
        x_full.to(dtype),
        times,
        latent=latent.to(dtype),
        name="gp_trajectories",
    )

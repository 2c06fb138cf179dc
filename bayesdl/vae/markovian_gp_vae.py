"""The Markovian GP-VAE of Zhu et al.: a Matérn state-space prior, q(z) by Kalman smoothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bayesdl.gp.markov_gp import MarkovGP
from bayesdl.gp.matern_kernel import MaternKernel
from bayesdl.vae._gp_sequence_vae import _GPSequenceVAE, _Posterior, gaussian_log_prob, masked_sum
from bayesdl.vae.pixel_likelihood import PixelLikelihood

__all__ = ["MarkovianGPVAE"]

_METHODS = ("parallel", "sequential")


class _MarkovPseudoPosterior(_Posterior):
    """``q(z) ∝ p(z) prod_t N(y_t | z_t, v_t)`` by Kalman filtering and RTS smoothing."""

    def __init__(self, prior: MarkovGP, y: Tensor, v: Tensor, obs: Tensor | None):
        self.prior = prior
        self.y, self.v, self.obs = y, v, obs
        self.post = prior.posterior(y, v, mask=obs)
        self.mean = self.post.mean

    def rsample(self, sample_shape: torch.Size) -> Tensor:
        return self.post.rsample(sample_shape)

    def log_prob(self, z: Tensor) -> Tensor:
        # q = p * prod_t N(y_t | z_t, v_t) / Z exactly, so log q costs one O(T) prior density
        pseudo = masked_sum(gaussian_log_prob(self.y, z, self.v), self.obs, 1)
        return (self.prior.log_prob(z) + pseudo - self.post.log_normalizer).sum(-1)

    def kl(self) -> Tensor:
        return self.post.kl_to_prior().sum(-1)


class MarkovianGPVAE(_GPSequenceVAE):
    """The Markovian GP-VAE: Matérn GP priors in state-space form, linear-time training.

    The generative model is the :class:`GPVAE`'s with a Matérn (or sum-of-Matérn) kernel,
    which is a linear SDE: the latent path of each channel is a Markov chain of ``d``-dim
    states on any (irregular) time grid. The encoder maps each frame to a Gaussian
    pseudo-observation of each latent channel, ``N(y_t | z_t, v_t)``, from *separate* mean and
    variance heads; the posterior ``q(z) ∝ p(z) prod_t N(y_t | z_t, v_t)`` is computed by a
    Kalman filter and RTS smoother (:class:`bayesdl.gp.MarkovGP`, sequential or parallel
    scan), so a step costs ``O(T)`` instead of the dense ``O(T^3)``, and

    ``KL(q || p) = sum_t E_q log N(y_t | z_t, v_t) - log Z``,

    with ``log Z`` the filter's marginal likelihood of the pseudo-observations. Missing frames
    (``mask [B, T]``, or frames with no observed entry) carry no pseudo-observation: the
    smoother steps over them with the longer time step, as for irregular sampling; so
    sequences sampled at different times go on the union of their grids (``times [T]``) with a
    frame mask marking the frames each one has, at no extra cost per missing frame. For the same
    encoder outputs the KL, posterior means and variances equal those of
    ``GPVAE(..., posterior="pseudo")`` up to round-off.

    The Pyro model (``mgpvae(x, mask, times)``) and guide (``mgpvae.guide(x, mask, times)``)
    put the latent ``"z" [B, L, T]`` and the observation ``"x"`` in
    ``pyro.plate("data", N)``; train with :func:`bayesdl.infer.fit` and
    :class:`~bayesdl.infer.LocalELBO` (``analytic_kl=True`` for the closed-form KL above).

    Args:
        encoder: ``x [B, T, *frame_shape] -> (y, raw_v)``, each ``[B, T, L]`` (or one tensor
            ``[B, T, 2 L]``); ``v = softplus(raw_v) + min_variance``.
            :class:`~bayesdl.vae.SequenceEncoder` makes one.
        decoder: ``z_t [*batch, L] -> [*batch, *frame_shape]`` likelihood parameters.
        latent_dim: ``L``.
        kernel: a :class:`bayesdl.gp.MaternKernel` or ``SumKernel`` with 1 or ``L`` channels
            (default: Matérn-3/2, lengthscale 2, variance 1); learned unless frozen.
        likelihood: ``"bernoulli"``, ``"continuous_bernoulli"``, ``"gaussian"`` or a
            :class:`~bayesdl.vae.PixelLikelihood`.
        method: ``"parallel"`` (associative scan, ``O(log T)`` depth) or ``"sequential"``.
        dataset_size: number of training sequences ``N``.
        frame_shape: shape of one frame (default: the encoder's ``frame_shape``).
        beta: weight of the KL term (a plain attribute: a :func:`~bayesdl.infer.fit`
            callback may anneal it).
        min_variance: floor of the pseudo-observation variances.
        scale, learn_scale: Gaussian likelihood scale and whether to learn it.
        name: prefix of the parameters in Pyro's global param store (classic ``SVI``).

    Example:
        >>> import torch
        >>> from bayesdl.vae import MarkovianGPVAE, MLPDecoder, SequenceEncoder
        >>> enc = SequenceEncoder(8, [16], 3)
        >>> vae = MarkovianGPVAE(enc, MLPDecoder(3, [16], 8), 3, likelihood="gaussian")
        >>> vae.guide(torch.randn(2, 500, 8)).shape
        torch.Size([2, 3, 500])

    References:
        Zhu, Balsells-Rodas & Li, Markovian Gaussian Process Variational Autoencoders,
        ICML 2023; Hartikainen & Särkkä, Kalman filtering and smoothing solutions to temporal
        Gaussian process regression models, MLSP 2010.
    """

    _heads = {"pseudo": 2}

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        kernel: nn.Module | None = None,
        likelihood: str | PixelLikelihood = "bernoulli",
        *,
        method: str = "parallel",
        dataset_size: int | None = None,
        frame_shape: int | Sequence[int] | None = None,
        beta: float = 1.0,
        min_variance: float = 1e-4,
        scale: float = 1.0,
        learn_scale: bool = False,
        name: str = "mgpvae",
    ):
        if method not in _METHODS:
            raise ValueError(f"method must be 'parallel' or 'sequential', got {method!r}")
        if kernel is None:
            kernel = MaternKernel(1.5, lengthscale=torch.full((latent_dim,), 2.0), variance=1.0)
        super().__init__(
            encoder,
            decoder,
            latent_dim,
            kernel,
            likelihood,
            posterior="pseudo",
            dataset_size=dataset_size,
            frame_shape=frame_shape,
            beta=beta,
            min_variance=min_variance,
            scale=scale,
            learn_scale=learn_scale,
            name=name,
        )
        self.method = method

    def prior(self, times: Tensor) -> MarkovGP:
        """The Markovian GP prior of one latent path: batch ``[L]``, event ``[T]``."""
        if self.kernel.num_channels != self.latent_dim:  # one kernel shared by every channel
            times = times.expand(self.latent_dim, times.shape[-1])
        return MarkovGP(self.kernel, times, method=self.method)

    def _posterior(
        self, heads: tuple[Tensor, ...], frame_obs: Tensor | None, times: Tensor
    ) -> _Posterior:
        y, raw = heads
        obs = None if frame_obs is None else frame_obs.unsqueeze(-2).expand(y.shape)
        return _MarkovPseudoPosterior(self.prior(times), y, self.positive(raw), obs)

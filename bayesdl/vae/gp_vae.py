"""The GP-VAE of Fortuin et al.: a dense Gaussian-process prior over each latent channel."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from bayesdl._validation import check_positive
from bayesdl.gp.matern_kernel import MaternKernel
from bayesdl.vae._gp_sequence_vae import (
    _GPSequenceVAE,
    _Posterior,
    gaussian_log_prob,
    masked_sum,
)
from bayesdl.vae.pixel_likelihood import PixelLikelihood

__all__ = ["GPVAE", "dense_gaussian_kl"]

_LOG_2PI = math.log(2 * math.pi)


def _solve_lower(chol: Tensor, rhs: Tensor) -> Tensor:
    return torch.linalg.solve_triangular(chol, rhs, upper=False)


def dense_gaussian_kl(mean: Tensor, cov_sqrt: Tensor, prior_chol: Tensor) -> Tensor:
    """``KL(N(mean, S S^T) || N(0, L L^T))`` by dense linear algebra, per channel.

    Args:
        mean: ``[..., T]``.
        cov_sqrt: any square root ``S`` of the covariance, ``[..., T, T]``.
        prior_chol: lower Cholesky factor ``L`` of the prior covariance, ``[..., T, T]``.

    Returns:
        ``[...]``: ``0.5 (tr(K^-1 S S^T) + m^T K^-1 m - T + log|K| - log|S S^T|)``.

    Example:
        >>> import torch
        >>> eye = torch.eye(3, dtype=torch.float64)
        >>> float(dense_gaussian_kl(torch.zeros(3, dtype=torch.float64), eye, eye))
        0.0
    """
    t = mean.shape[-1]
    a = _solve_lower(prior_chol, cov_sqrt)
    b = _solve_lower(prior_chol, mean.unsqueeze(-1)).squeeze(-1)
    logdet_k = 2 * prior_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_s = torch.linalg.slogdet(cov_sqrt)[1] * 2
    return 0.5 * (a.square().sum((-2, -1)) + b.square().sum(-1) - t + logdet_k - logdet_s)


class _DensePrior:
    """``N(0, K + jitter I)`` per channel over ``times``: covariance, Cholesky, distribution."""

    def __init__(self, kernel: nn.Module, times: Tensor, jitter: float, channels: int):
        k = kernel(times, times)  # [L or 1, T, T]
        k = k.expand((channels,) + k.shape[-2:])
        var = k.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True)  # [L, 1]
        eye = torch.eye(len(times), dtype=k.dtype, device=k.device)
        self.cov = k + jitter * var.unsqueeze(-1) * eye
        self.chol = torch.linalg.cholesky(self.cov)
        self.distribution = dist.MultivariateNormal(
            torch.zeros(k.shape[:-1], dtype=k.dtype, device=k.device), scale_tril=self.chol
        )


class _DiagonalPosterior(_Posterior):
    """Independent Gaussians per time step: ``q(z_lt) = N(mean_lt, scale_lt^2)``."""

    def __init__(self, prior: _DensePrior, mean: Tensor, scale: Tensor):
        self._dense = prior
        self.prior = prior.distribution
        self.mean, self.scale = mean, scale

    def rsample(self, sample_shape: torch.Size) -> Tensor:
        eps = torch.randn(sample_shape + self.mean.shape, dtype=self.mean.dtype,
                          device=self.mean.device)  # fmt: skip
        return self.mean + self.scale * eps

    def log_prob(self, z: Tensor) -> Tensor:
        return gaussian_log_prob(z, self.mean, self.scale.square()).sum((-2, -1))

    def kl(self) -> Tensor:
        chol = self._dense.chol
        # tr(K^-1 diag(s^2)) = sum_t s_t^2 (K^-1)_tt
        k_inv_diag = torch.cholesky_inverse(chol).diagonal(dim1=-2, dim2=-1)
        trace = (self.scale.square() * k_inv_diag).sum(-1)
        b = _solve_lower(chol, self.mean.unsqueeze(-1)).squeeze(-1)
        logdet_k = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        logdet_s = 2 * self.scale.log().sum(-1)
        t = self.mean.shape[-1]
        return (0.5 * (trace + b.square().sum(-1) - t + logdet_k - logdet_s)).sum(-1)


class _BandedPosterior(_Posterior):
    """Gaussian with tridiagonal precision ``R^T R``, ``R`` upper bidiagonal (Fortuin et al.).

    ``R_tt = diag_t > 0``, ``R_t,t+1 = offdiag_t`` (the last off-diagonal entry is unused);
    the covariance is ``R^-1 R^-T``, so ``z = mean + R^-1 eps`` and ``log|Sigma| = -2 sum log
    diag``.
    """

    def __init__(self, prior: _DensePrior, mean: Tensor, diag: Tensor, offdiag: Tensor):
        self._dense = prior
        self.prior = prior.distribution
        self.mean, self.diag = mean, diag
        self.offdiag = torch.cat([offdiag[..., :-1], torch.zeros_like(offdiag[..., -1:])], -1)

    def _factor(self) -> Tensor:
        return torch.diag_embed(self.diag) + torch.diag_embed(self.offdiag[..., :-1], offset=1)

    def rsample(self, sample_shape: torch.Size) -> Tensor:
        eps = torch.randn(sample_shape + self.mean.shape, dtype=self.mean.dtype,
                          device=self.mean.device)  # fmt: skip
        r = self._factor().expand(sample_shape + self.mean.shape + self.mean.shape[-1:])
        u = torch.linalg.solve_triangular(r, eps.unsqueeze(-1), upper=True).squeeze(-1)
        return self.mean + u

    def log_prob(self, z: Tensor) -> Tensor:
        e = z - self.mean
        nxt = torch.cat([e[..., 1:], torch.zeros_like(e[..., :1])], -1)
        u = self.diag * e + self.offdiag * nxt
        out = -0.5 * (u.square() + _LOG_2PI) + self.diag.log()
        return out.sum((-2, -1))

    def kl(self) -> Tensor:
        eye = torch.eye(self.mean.shape[-1], dtype=self.mean.dtype, device=self.mean.device)
        r_inv = torch.linalg.solve_triangular(self._factor(), eye, upper=True)
        return dense_gaussian_kl(self.mean, r_inv, self._dense.chol).sum(-1)


class _DensePseudoPosterior(_Posterior):
    """``q(z) ∝ p(z) prod_t N(y_t | z_t, v_t)`` over the observed frames, computed densely.

    With ``W = diag(obs / v)`` and ``B = I + W^1/2 K W^1/2 = L_B L_B^T`` (Rasmussen & Williams,
    Algorithm 3.1; missing frames have ``W_tt = 0``): mean ``K W^1/2 B^-1 W^1/2 y``, covariance
    ``K - K W^1/2 B^-1 W^1/2 K``, and ``log Z = log N(y_obs | 0, K_oo + V_o)``. Samples use
    Matheron's rule (a prior draw corrected by the data), which needs no factor of the
    posterior covariance.
    """

    def __init__(self, prior: _DensePrior, y: Tensor, v: Tensor, obs: Tensor | None):
        self._dense = prior
        self.prior = prior.distribution
        self.y, self.v = y, v
        self.obs = obs
        w = v.reciprocal() if obs is None else torch.where(obs, v.reciprocal(), 0.0)
        self.ws = w.sqrt()  # [B, L, T]
        k = prior.cov
        eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
        bmat = eye + self.ws.unsqueeze(-1) * k * self.ws.unsqueeze(-2)
        self.chol_b = torch.linalg.cholesky(bmat)
        wy = self.ws * y
        c = torch.cholesky_solve(wy.unsqueeze(-1), self.chol_b).squeeze(-1)
        self.mean = (k @ (self.ws * c).unsqueeze(-1)).squeeze(-1)
        v_mat = _solve_lower(self.chol_b, self.ws.unsqueeze(-1) * k)
        self.variance = k.diagonal(dim1=-2, dim2=-1) - v_mat.square().sum(-2)
        n_obs = y.new_tensor(y.shape[-1]) if obs is None else obs.sum(-1).to(y.dtype)
        logdet_b = 2 * self.chol_b.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        self.log_normalizer = (
            -0.5 * (wy * c).sum(-1)
            - 0.5 * logdet_b
            - 0.5 * masked_sum(v.log(), obs, 1)
            - 0.5 * n_obs * _LOG_2PI
        )  # [B, L]

    def expected_log_pseudo_lik(self) -> Tensor:
        """``sum_t E_q log N(y_t | z_t, v_t)`` over observed frames, ``[B, L]``."""
        per_t = gaussian_log_prob(self.y, self.mean, self.v) - 0.5 * self.variance / self.v
        return masked_sum(per_t, self.obs, 1)

    def rsample(self, sample_shape: torch.Size) -> Tensor:
        shape = sample_shape + self.y.shape
        eps1 = torch.randn(shape, dtype=self.y.dtype, device=self.y.device)
        eps2 = torch.randn(shape, dtype=self.y.dtype, device=self.y.device)
        f = (self._dense.chol @ eps1.unsqueeze(-1)).squeeze(-1)
        sq_obs = 1.0 if self.obs is None else self.obs.to(self.y.dtype)
        r = self.ws * (self.y - f) - sq_obs * eps2
        chol_b = self.chol_b.expand(shape + self.y.shape[-1:])
        c = torch.cholesky_solve(r.unsqueeze(-1), chol_b).squeeze(-1)
        return f + (self._dense.cov @ (self.ws * c).unsqueeze(-1)).squeeze(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        pseudo = masked_sum(gaussian_log_prob(self.y, z, self.v), self.obs, 1)
        return (self.prior.log_prob(z) + pseudo - self.log_normalizer).sum(-1)

    def kl(self) -> Tensor:
        return (self.expected_log_pseudo_lik() - self.log_normalizer).sum(-1)


class GPVAE(_GPSequenceVAE):
    """The GP-VAE: a dense GP prior over time for each latent channel, amortised Gaussian q.

    For each sequence ``x [T, *frame_shape]`` with time stamps ``t_1 < ... < t_T``: the latent
    path of each channel ``l`` is ``z_l ~ N(0, K_l)`` with ``K_l = k_l(t, t)`` (a dense
    ``T x T`` kernel matrix, factorised once per call: ``O(L T^3)``), each frame is
    ``x_t ~ p(x_t | decoder(z_t))``, and only the observed entries enter the likelihood
    (the HI-VAE-style masking of Fortuin et al.). The amortised posterior is one of:

    * ``"diagonal"``: independent Gaussians per time step (encoder heads: mean, scale);
    * ``"banded"``: the structured posterior of Fortuin et al., a Gaussian whose precision
      ``R^T R`` is tridiagonal with ``R`` upper bidiagonal (heads: mean, diagonal,
      off-diagonal of ``R``); sampling and ``log q`` cost ``O(T)``-``O(T^2)``;
    * ``"pseudo"``: Gaussian pseudo-observations ``N(y_t | z_t, v_t)`` (heads: ``y``, ``v``;
      missing frames carry none) combined with the prior, ``q ∝ p(z) prod_t N(y_t | z_t,
      v_t)``, computed densely: the same posterior as :class:`MarkovianGPVAE`, at ``O(T^3)``.

    Time stamps are one strictly increasing grid ``times [T]`` per call (default ``0, ...,
    T - 1``); sequences sampled at different times go on the union of their grids with a frame
    mask ``[B, T]`` marking the frames each one has.

    The KL term is in closed form (``analytic_kl=True`` in the objectives) for all three. The
    Pyro model (``gpvae(x, mask, times)``) and guide (``gpvae.guide(x, mask, times)``) put the
    latent ``"z" [B, L, T]`` and the observation ``"x"`` in ``pyro.plate("data", N)``; train
    with :func:`bayesdl.infer.fit` and :class:`~bayesdl.infer.LocalELBO`.

    Args:
        encoder: ``x [B, T, *frame_shape] ->`` the heads above, each ``[B, T, L]`` (a tuple, or
            one tensor ``[B, T, H * L]``); :class:`~bayesdl.vae.SequenceEncoder` makes one.
        decoder: ``z_t [*batch, L] -> [*batch, *frame_shape]`` likelihood parameters.
        latent_dim: ``L``.
        kernel: a :class:`bayesdl.gp.MaternKernel` or ``SumKernel`` with 1 or ``L`` channels
            (default: Matérn-3/2, lengthscale 2, variance 1); its hyperparameters are model
            parameters (learned unless frozen with ``kernel.requires_grad_(False)``).
        likelihood: ``"bernoulli"``, ``"continuous_bernoulli"``, ``"gaussian"`` or a
            :class:`~bayesdl.vae.PixelLikelihood`.
        posterior: ``"banded"`` (default), ``"diagonal"`` or ``"pseudo"``.
        dataset_size: number of training sequences ``N``.
        frame_shape: shape of one frame (default: the encoder's ``frame_shape``).
        beta: weight of the KL term (``E log p(x | z) - beta KL``; 0.8 for HMNIST in the
            paper). A plain attribute: a :func:`~bayesdl.infer.fit` callback may anneal it.
        jitter: added to the kernel matrix's diagonal, relative to the kernel variance
            (default ``1e-6``, or ``1e-10`` in float64).
        min_variance: floor added to the softplus of variance/scale heads.
        scale, learn_scale: Gaussian likelihood scale and whether to learn it.
        name: prefix of the parameters in Pyro's global param store (classic ``SVI``).

    Example:
        >>> import torch
        >>> from bayesdl.vae import GPVAE, MLPDecoder, SequenceEncoder
        >>> enc = SequenceEncoder(16, [32], 2, num_heads=3, window=3)
        >>> vae = GPVAE(enc, MLPDecoder(2, [32], 16), 2, dataset_size=100)
        >>> x = torch.rand(4, 10, 16).round()
        >>> vae.guide(x).shape
        torch.Size([4, 2, 10])

    References:
        Fortuin, Baranchuk, Rätsch & Mandt, GP-VAE: Deep Probabilistic Time Series
        Imputation, AISTATS 2020; Casale et al., Gaussian Process Prior Variational
        Autoencoders, NeurIPS 2018.
    """

    _heads = {"diagonal": 2, "banded": 3, "pseudo": 2}

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        kernel: nn.Module | None = None,
        likelihood: str | PixelLikelihood = "bernoulli",
        *,
        posterior: str = "banded",
        dataset_size: int | None = None,
        frame_shape: int | Sequence[int] | None = None,
        beta: float = 1.0,
        jitter: float | None = None,
        min_variance: float = 1e-4,
        scale: float = 1.0,
        learn_scale: bool = False,
        name: str = "gpvae",
    ):
        if kernel is None:
            kernel = MaternKernel(1.5, lengthscale=torch.full((latent_dim,), 2.0), variance=1.0)
        if jitter is not None:
            check_positive(jitter, "jitter")
        super().__init__(
            encoder,
            decoder,
            latent_dim,
            kernel,
            likelihood,
            posterior=posterior,
            dataset_size=dataset_size,
            frame_shape=frame_shape,
            beta=beta,
            min_variance=min_variance,
            scale=scale,
            learn_scale=learn_scale,
            name=name,
        )
        self.jitter = jitter

    def _dense_prior(self, times: Tensor) -> _DensePrior:
        jitter = self.jitter
        if jitter is None:
            jitter = 1e-10 if times.dtype == torch.float64 else 1e-6
        return _DensePrior(self.kernel, times, jitter, self.latent_dim)

    def prior(self, times: Tensor) -> dist.MultivariateNormal:
        """The dense GP prior of one latent path: batch ``[L]``, event ``[T]``."""
        return self._dense_prior(times).distribution

    def _posterior(
        self, heads: tuple[Tensor, ...], frame_obs: Tensor | None, times: Tensor
    ) -> _Posterior:
        prior = self._dense_prior(times)
        if self.posterior_kind == "diagonal":
            mean, raw = heads
            return _DiagonalPosterior(prior, mean, self.positive(raw).sqrt())
        if self.posterior_kind == "banded":
            mean, raw_diag, offdiag = heads
            return _BandedPosterior(prior, mean, self.positive(raw_diag), offdiag)
        y, raw = heads
        obs = None if frame_obs is None else frame_obs.unsqueeze(-2).expand(y.shape)
        return _DensePseudoPosterior(prior, y, self.positive(raw), obs)

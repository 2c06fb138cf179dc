"""Shared machinery of the GP-VAEs: inputs, masks, the data plate, likelihood, guide, objectives.

A GP-VAE models ``N`` sequences ``x [N, T, *frame_shape]``. Each sequence has a latent path
``z [L, T]`` (``L`` channels, each with a GP prior over the time stamps), each frame is decoded
independently from ``z_t [L]``, and missing entries (pixels or whole frames) are left out of the
likelihood. The subclasses say which GP prior (dense :class:`~bayesdl.vae.GPVAE`, Markovian
:class:`~bayesdl.vae.MarkovianGPVAE`) and which amortised posterior they use; this module holds
everything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import Tensor, nn

from bayesdl._validation import check_positive, check_positive_int
from bayesdl.infer._local_terms import LocalTerms
from bayesdl.vae.pixel_likelihood import PixelLikelihood
from bayesdl.vae.vae import _data_plate

__all__ = ["GPVAEGuide"]

_LOG_2PI = math.log(2 * math.pi)


class _Posterior:
    """The amortised ``q(z | x)`` of a minibatch, batch ``[B]``, event ``[L, T]``.

    Subclasses give ``mean [B, L, T]``, :meth:`rsample`, :meth:`log_prob` and :meth:`kl`.
    """

    mean: Tensor
    #: the GP prior of one latent path (batch ``[L]``, event ``[T]``) it was computed with
    prior: TorchDistribution

    def rsample(self, sample_shape: torch.Size) -> Tensor:  # [*S, B, L, T]
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:  # [..., B, L, T] -> [..., B]
        raise NotImplementedError

    def kl(self) -> Tensor:  # [B], KL(q || p) summed over channels
        raise NotImplementedError


class _PosteriorDistribution(TorchDistribution):
    """A :class:`_Posterior` as a Pyro distribution (for the guide's sample site)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, posterior: _Posterior):
        self.posterior = posterior
        b, size, t = posterior.mean.shape
        super().__init__(torch.Size([b]), torch.Size([size, t]), validate_args=False)

    def expand(self, batch_shape: Any, _instance: Any = None) -> TorchDistribution:
        if tuple(batch_shape) == tuple(self.batch_shape):
            return self
        # new leading dims (a particle plate): Pyro's generic expansion draws them as samples
        return TorchDistributionMixin.expand(self, batch_shape)

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        return self.posterior.rsample(torch.Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.posterior.log_prob(value)

    @property
    def mean(self) -> Tensor:
        return self.posterior.mean


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class GPVAEGuide(nn.Module):
    """The amortised guide of a GP-VAE: samples the latent paths ``"z" [B, L, T]``.

    Built by the model (``model.guide``); it owns the encoder, so ``model.guide.state_dict()``
    is the encoder's state. Called as ``guide(x, mask=None, times=None)`` with the model's
    arguments, it samples the site ``"z"`` inside the model's data plate.
    """

    def __init__(self, vae: _GPSequenceVAE, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        object.__setattr__(self, "_vae", vae)  # a back-reference, not a submodule

    def forward(self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """Sample ``z ~ q(z | x)``, ``[B, L, T]``."""
        vae = self._vae
        x, mask_full, frame_obs, times = vae.check_input(x, mask, times)
        if not pyro.settings.get("module_local_params") and _trainable(self.encoder):
            pyro.module(f"{vae.name}.encoder", self.encoder)
        q = vae.posterior(x, mask_full, frame_obs, times)
        with vae.plate(x), poutine.scale(scale=vae.beta):
            return pyro.sample(vae.latent_site, _PosteriorDistribution(q))


class _GPSequenceVAE(nn.Module):
    """Base class of the GP-VAEs (see the module docstring); not for direct use."""

    latent_site = "z"
    obs_site = "x"
    #: number of encoder heads each posterior needs
    _heads: dict[str, int] = {}

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        kernel: nn.Module,
        likelihood: str | PixelLikelihood,
        *,
        posterior: str,
        dataset_size: int | None,
        frame_shape: int | Sequence[int] | None,
        beta: float,
        min_variance: float,
        scale: float,
        learn_scale: bool,
        name: str,
    ):
        super().__init__()
        for arg, value in (("encoder", encoder), ("decoder", decoder), ("kernel", kernel)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{arg} must be a torch.nn.Module, got {type(value).__name__}")
        check_positive_int(latent_dim, "latent_dim")
        channels = getattr(kernel, "num_channels", None)
        if channels is None or not hasattr(kernel, "forward"):
            raise TypeError(
                f"kernel must be a bayesdl.gp MaternKernel or SumKernel, got {type(kernel).__name__}"
            )
        if channels not in (1, latent_dim):
            raise ValueError(
                f"kernel has {channels} channels but latent_dim={latent_dim}; give one "
                "hyperparameter per latent channel (shape [latent_dim]) or scalars"
            )
        if posterior not in self._heads:
            valid = ", ".join(repr(k) for k in self._heads)
            raise ValueError(f"posterior must be one of {valid}, got {posterior!r}")
        check_positive(beta, "beta")
        check_positive(min_variance, "min_variance")
        if isinstance(likelihood, PixelLikelihood):
            if dataset_size is not None:
                likelihood.dataset_size = dataset_size
            self.likelihood = likelihood
        elif isinstance(likelihood, str):
            self.likelihood = PixelLikelihood(
                likelihood, dataset_size, scale=scale, learn_scale=learn_scale
            )
        else:
            raise TypeError(
                f"likelihood must be a str or PixelLikelihood, got {type(likelihood).__name__}"
            )
        if frame_shape is None:
            frame_shape = getattr(encoder, "frame_shape", getattr(encoder, "input_shape", None))
        if isinstance(frame_shape, int):
            frame_shape = (frame_shape,)
        self.frame_shape: tuple[int, ...] | None = (
            None if frame_shape is None else tuple(int(s) for s in frame_shape)
        )
        self.latent_dim = int(latent_dim)
        self.kernel = kernel
        self.decoder = decoder
        self.guide = GPVAEGuide(self, encoder)
        self.posterior_kind = posterior
        self.beta = float(beta)
        self.min_variance = float(min_variance)
        self.name = name

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> nn.Module:
        """The encoder network (owned by :attr:`guide`)."""
        return self.guide.encoder

    @property
    def dataset_size(self) -> int | None:
        """``N``, the number of training sequences (``None``: each batch is the data set)."""
        return self.likelihood.dataset_size

    # ------------------------------------------------------------------ checks
    def check_input(
        self, x: Any, mask: Any = None, times: Any = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """Validate a minibatch and normalise its mask and time stamps.

        Args:
            x: sequences ``[B, T, *frame_shape]`` (missing entries may hold any finite value).
            mask: ``None`` (all observed), or boolean / 0-1 ``[B, T, *frame_shape]`` (missing
                pixels) or ``[B, T]`` (missing frames); ``True`` = observed.
            times: ``None`` (``0, 1, ..., T - 1``) or strictly increasing ``[T]``.

        Returns:
            ``(x, mask_full, frame_obs, times)``: the entry mask ``[B, T, *frame_shape]`` and
            the frame mask ``[B, T]`` (a frame counts as observed if any entry is; both
            ``None`` when everything is observed), and ``times [T]`` in ``x``'s dtype.

        Raises:
            TypeError: ``x``, ``mask`` or ``times`` is not a tensor of a suitable dtype.
            ValueError: wrong shapes, non-finite values, times not strictly increasing,
                or values outside ``[0, 1]`` for a (continuous) Bernoulli likelihood.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        if x.dim() < 3 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"x must have shape [B, T, *frame_shape] with B, T >= 1, got {tuple(x.shape)}"
            )
        if self.frame_shape is not None and tuple(x.shape[2:]) != self.frame_shape:
            raise ValueError(
                f"x must have shape [B, T, {', '.join(map(str, self.frame_shape))}] to match "
                f"frame_shape {self.frame_shape}, got {tuple(x.shape)}"
            )
        b, t = int(x.shape[0]), int(x.shape[1])
        mask_full = frame_obs = None
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
            if mask.shape == x.shape:
                mask_full = mask.bool()
                frame_obs = mask_full.reshape(b, t, -1).any(-1)
            elif mask.shape == x.shape[:2]:
                frame_obs = mask.bool()
                mask_full = frame_obs.reshape((b, t) + (1,) * (x.dim() - 2)).expand(x.shape)
            else:
                raise ValueError(
                    f"mask must have the shape of x {tuple(x.shape)} (missing entries) or "
                    f"[B, T] = {(b, t)} (missing frames), got {tuple(mask.shape)}"
                )
            if mask.device != x.device:
                raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
        if times is None:
            times = torch.arange(t, dtype=x.dtype, device=x.device)
        else:
            if not isinstance(times, Tensor):
                raise TypeError(f"times must be a torch.Tensor or None, got {type(times).__name__}")
            if times.dim() == 2 and times.shape[0] == b and bool((times == times[:1]).all()):
                times = times[0]  # one grid repeated per sequence (as fit's minibatches give it)
            if times.shape != (t,):
                raise ValueError(
                    f"times must have shape [T] = [{t}] (one grid shared by the minibatch; "
                    f"missing frames go in mask), got {tuple(times.shape)}"
                )
            times = times.to(dtype=x.dtype)
            if t > 1 and not x.is_cuda and not bool((times.diff() > 0).all()):
                raise ValueError("times must be strictly increasing")
        if not x.is_cuda:  # a range check on CUDA would synchronise every step
            lo, hi = (float(v) for v in torch.aminmax(x))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("x contains NaN or infinite values")
            if self.likelihood.needs_unit_interval and (lo < 0.0 or hi > 1.0):
                raise ValueError(
                    f"x must lie in [0, 1] for a {self.likelihood.kind} likelihood, got values "
                    f"in [{lo:.4g}, {hi:.4g}]"
                )
        return x, mask_full, frame_obs, times

    # ------------------------------------------------------------------ networks
    def encode(self, x: Tensor, mask_full: Tensor | None) -> tuple[Tensor, ...]:
        """The encoder heads for ``x`` with missing entries set to 0, each ``[B, L, T]``."""
        if mask_full is not None:
            x = torch.where(mask_full, x, torch.zeros((), dtype=x.dtype, device=x.device))
        try:
            out = self.guide.encoder(x)
        except RuntimeError as e:
            raise ValueError(
                f"the encoder failed on x of shape {tuple(x.shape)}; check frame_shape: {e}"
            ) from e
        n = self._heads[self.posterior_kind]
        b, t, size = x.shape[0], x.shape[1], self.latent_dim
        if isinstance(out, Tensor):
            if out.shape != (b, t, n * size):
                raise ValueError(
                    f"the encoder must return {n} heads of shape [B, T, L] or one tensor "
                    f"[B, T, {n} * L] = {(b, t, n * size)}, got shape {tuple(out.shape)}"
                )
            out = out.chunk(n, dim=-1)
        out = tuple(out)
        if len(out) != n or any(h.shape != (b, t, size) for h in out):
            raise ValueError(
                f"posterior={self.posterior_kind!r} needs {n} encoder heads of shape "
                f"[B, T, L] = {(b, t, size)}, got {[tuple(h.shape) for h in out]}"
            )
        return tuple(h.transpose(-1, -2) for h in out)

    def positive(self, raw: Tensor) -> Tensor:
        """``softplus(raw) + min_variance``: a positive encoder output."""
        return F.softplus(raw) + self.min_variance

    def decode(self, z: Tensor, like: Tensor | None = None) -> Tensor:
        """Decoder outputs ``[*batch, B, T, *frame_shape]`` for latent paths ``z [*batch, B, L, T]``."""
        f = self.decoder(z.transpose(-1, -2))
        frame = tuple(like.shape[2:]) if like is not None else self.frame_shape
        want = tuple(z.shape[:-2]) + (z.shape[-1],) + tuple(frame or f.shape[z.dim() - 1 :])
        if tuple(f.shape) != want:
            raise ValueError(
                f"the decoder must map z_t of shape {tuple(z.transpose(-1, -2).shape)} to "
                f"{want}, got {tuple(f.shape)}"
            )
        return f

    def plate(self, x: Tensor) -> pyro.plate:
        """The data plate of a minibatch ``x`` (size ``N``, subsample ``arange(B)``)."""
        return _data_plate(x, self.dataset_size, "sequences")

    # ------------------------------------------------------------------ subclass hooks
    def prior(self, times: Tensor) -> TorchDistribution:
        """The GP prior of one latent path: batch ``[L]``, event ``[T]``."""
        raise NotImplementedError

    def posterior(
        self, x: Tensor, mask_full: Tensor | None, frame_obs: Tensor | None, times: Tensor
    ) -> _Posterior:
        """``q(z | x)`` of a checked minibatch."""
        return self._posterior(self.encode(x, mask_full), frame_obs, times)

    def _posterior(
        self, heads: tuple[Tensor, ...], frame_obs: Tensor | None, times: Tensor
    ) -> _Posterior:
        raise NotImplementedError

    # ------------------------------------------------------------------ likelihood
    def _log_lik(self, f: Tensor, x: Tensor, mask_full: Tensor | None) -> Tensor:
        """``log p(x_obs | z)``, summed over observed entries: ``[*batch, B]``."""
        ll = self.likelihood.distribution(f, 0).log_prob(x)
        if mask_full is not None:
            ll = torch.where(mask_full, ll, torch.zeros((), dtype=ll.dtype, device=ll.device))
        return ll.flatten(-(x.dim() - 1)).sum(-1)

    # ------------------------------------------------------------------ Pyro model
    def forward(self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """The Pyro model: ``z ~ GP`` per channel, observe the unmasked entries of ``x``.

        Args:
            x: minibatch ``[B, T, *frame_shape]``.
            mask: ``None``, ``[B, T, *frame_shape]`` or ``[B, T]`` (``True`` = observed).
            times: ``None`` or strictly increasing ``[T]``.

        Returns:
            the decoder outputs ``[*batch, B, T, *frame_shape]``.
        """
        x, mask_full, _, times = self.check_input(x, mask, times)
        if not pyro.settings.get("module_local_params"):
            for part in ("decoder", "likelihood", "kernel"):
                module = getattr(self, part)
                if _trainable(module):
                    pyro.module(f"{self.name}.{part}", module)
        prior = self.prior(times).to_event(1)
        with self.plate(x):
            with poutine.scale(scale=self.beta):
                z = pyro.sample(self.latent_site, prior)
            f = self.decode(z, x)
            obs = self.likelihood.distribution(f, 0)
            if mask_full is not None:
                obs = obs.mask(mask_full)
            pyro.sample(self.obs_site, obs.to_event(x.dim() - 1), obs=x)
        return f

    def model(self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """The Pyro model (same as calling the GP-VAE)."""
        return self(x, mask, times)

    # ------------------------------------------------------------------ fast path
    def local_terms(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        times: Tensor | None = None,
        *,
        num_particles: int = 1,
        detach_guide_params: bool = False,
        analytic_kl: bool = False,
    ) -> LocalTerms:
        """Per-sequence log-densities of ``K`` particles in one batched pass (no Pyro trace).

        ``beta`` multiplies ``log p(z)``, ``log q(z | x)`` and the KL, as
        ``poutine.scale(beta)`` on the latent site does in the Pyro model and guide, so
        :class:`~bayesdl.infer.LocalELBO` gives ``E_q log p(x_obs | z) - beta KL(q || p)``.

        Args:
            x, mask, times: as for the model.
            num_particles: ``K``.
            detach_guide_params: evaluate ``log q(z | x)`` with the encoder's outputs held
                constant (DReG); the gradient still reaches them through ``z``.
            analytic_kl: also return the closed-form ``KL(q(z | x_b) || p(z))`` per sequence.

        Returns:
            :class:`~bayesdl.infer._local_terms.LocalTerms` with ``[K, B]`` tensors and
            ``z [K, B, L * T]``.
        """
        x, mask_full, frame_obs, times = self.check_input(x, mask, times)
        b = int(x.shape[0])
        n = b if self.dataset_size is None else self.dataset_size
        if b > n:
            raise ValueError(
                f"the minibatch has {b} sequences but dataset_size={n}; pass the number of "
                "training sequences as dataset_size"
            )
        heads = self.encode(x, mask_full)
        q = self._posterior(heads, frame_obs, times)
        z = q.rsample(torch.Size([num_particles]))
        f = self.decode(z, x)
        log_lik = self._log_lik(f, x, mask_full)
        log_prior = q.prior.log_prob(z).sum(-1)
        if detach_guide_params:
            q_eval = self._posterior(tuple(h.detach() for h in heads), frame_obs, times)
        else:
            q_eval = q
        log_q = q_eval.log_prob(z)
        kl = self.beta * q.kl() if analytic_kl else None
        flat = z.reshape(num_particles, b, -1)
        prior = q.prior

        def prior_sample(m: int) -> Tensor:
            with torch.no_grad():
                return prior.sample((m,)).reshape(m, -1).to(dtype=z.dtype)

        return LocalTerms(
            log_lik=log_lik,
            log_prior=self.beta * log_prior,
            log_q=self.beta * log_q,
            scale=n / b,
            latents=[z],
            kl=kl,
            z=flat,
            prior_sample=prior_sample,
        )

    def log_weights(
        self,
        x: Tensor,
        num_particles: int,
        mask: Tensor | None = None,
        times: Tensor | None = None,
    ) -> Tensor:
        """``log p(x_obs, z_k) - log q(z_k | x)`` for ``K`` posterior draws, ``[K, B]`` (unscaled)."""
        x, mask_full, frame_obs, times = self.check_input(x, mask, times)
        q = self.posterior(x, mask_full, frame_obs, times)
        z = q.rsample(torch.Size([num_particles]))
        log_lik = self._log_lik(self.decode(z, x), x, mask_full)
        return log_lik + q.prior.log_prob(z).sum(-1) - q.log_prob(z)

    def kl(self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """Closed-form ``KL(q(z | x_b) || p(z))`` per sequence, ``[B]`` (not weighted by beta)."""
        x, mask_full, frame_obs, times = self.check_input(x, mask, times)
        return self.posterior(x, mask_full, frame_obs, times).kl()

    # ------------------------------------------------------------------ use
    @torch.no_grad()
    def posterior_mean(
        self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None
    ) -> Tensor:
        """The posterior mean latent path, ``[B, T, L]``."""
        x, mask_full, frame_obs, times = self.check_input(x, mask, times)
        return self.posterior(x, mask_full, frame_obs, times).mean.transpose(-1, -2)

    @torch.no_grad()
    def impute(self, x: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """Fill the missing entries of ``x`` with the likelihood mean at the posterior mean path.

        Observed entries are returned unchanged (as in Fortuin et al.'s evaluation, which
        scores the imputation on the missing entries only).

        Args:
            x: sequences ``[B, T, *frame_shape]``.
            mask: ``[B, T, *frame_shape]`` or ``[B, T]``, ``True`` = observed.
            times: ``None`` or ``[T]``.

        Returns:
            ``[B, T, *frame_shape]``.
        """
        x, mask_full, frame_obs, times = self.check_input(x, mask, times)
        q = self.posterior(x, mask_full, frame_obs, times)
        pred = self.likelihood.mean(self.decode(q.mean, x))
        return pred if mask_full is None else torch.where(mask_full, x, pred)

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.latent_dim}, frame_shape={self.frame_shape}, "
            f"posterior={self.posterior_kind!r}, beta={self.beta}"
        )


def gaussian_log_prob(y: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Elementwise ``log N(y | mean, var)``."""
    return -0.5 * ((y - mean).square() / var + var.log() + _LOG_2PI)


def masked_sum(values: Tensor, mask: Tensor | None, dims: int) -> Tensor:
    """Sum the last ``dims`` dims of ``values``, leaving out entries where ``mask`` is False."""
    if mask is not None:
        values = torch.where(
            mask, values, torch.zeros((), dtype=values.dtype, device=values.device)
        )
    return values.flatten(-dims).sum(-1) if dims > 1 else values.sum(-1)

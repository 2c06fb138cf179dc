"""The variational autoencoder as a Pyro model and an amortised Pyro guide."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesdl._validation import check_positive_int
from bayesdl.infer._local_terms import LocalTerms
from bayesdl.vae.pixel_likelihood import PixelLikelihood

__all__ = ["VAE", "VAEGuide"]

_LOG_2PI = math.log(2 * math.pi)


class VAEGuide(nn.Module):
    """The amortised guide ``q(z | x) = Normal(loc(x), scale(x))`` of a :class:`VAE`.

    Built by the VAE (``vae.guide``); it owns the encoder, so ``vae.guide.state_dict()`` is the
    encoder's state. Calling it samples the latent site ``"z"`` inside the VAE's data plate.
    """

    def __init__(self, vae: VAE, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        object.__setattr__(self, "_vae", vae)  # a back-reference, not a submodule

    def forward(self, x: Tensor) -> Tensor:
        """Sample ``z ~ q(z | x)`` for a minibatch ``x [B, *input_shape]``; returns ``[B, L]``."""
        vae = self._vae
        vae.check_input(x)
        if not pyro.settings.get("module_local_params") and _trainable(self.encoder):
            pyro.module(f"{vae.name}.encoder", self.encoder)
        with vae.plate(x):
            loc, scale = vae.encode(x)
            return pyro.sample(vae.latent_site, dist.Normal(loc, scale).to_event(1))


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _data_plate(x: Tensor, dataset_size: int | None, unit: str) -> pyro.plate:
    """``pyro.plate("data", N, subsample=arange(B))`` for a minibatch ``x [B, ...]`` of a data
    set of ``dataset_size`` ``unit`` (``N = B`` when ``None``); a batch larger than ``N`` is an
    error, since the plate would scale its likelihood by ``N / B < 1``."""
    b = int(x.shape[0])
    n = b if dataset_size is None else dataset_size
    if b > n:
        raise ValueError(
            f"the minibatch has {b} {unit} but dataset_size={n}; pass the number of training "
            f"{unit} as dataset_size"
        )
    return pyro.plate("data", n, subsample=torch.arange(b, device=x.device), dim=-1)


class VAE(nn.Module):
    """A variational autoencoder: ``z ~ N(0, I)``, ``x ~ p(x | decoder(z))``, ``q(z | x)`` Gaussian.

    The model (``vae(x)`` or ``vae.model(x)``) and the guide (``vae.guide(x)``) are ordinary
    Pyro programs: the latent ``"z"`` and the observation ``"x"`` sit in
    ``pyro.plate("data", N, subsample=...)``, so any Pyro ELBO applies and a minibatch of ``B``
    points is scaled by ``N / B``. Besides, :meth:`local_terms` computes the per-point
    log-densities of ``K`` particles in one batched pass; bayesdl's objectives
    (:class:`~bayesdl.infer.LocalELBO`, :class:`~bayesdl.infer.IWAE`,
    :class:`~bayesdl.infer.InfoVAE`) use it instead of Pyro traces when no handler is active.

    Args:
        encoder: ``nn.Module`` mapping ``x [B, *input_shape]`` to ``[B, 2 L]`` (location and a
            pre-softplus scale) or to a pair ``(loc [B, L], scale [B, L])``.
        decoder: ``nn.Module`` mapping ``z [*batch, B, L]`` (any leading dims) to likelihood
            parameters ``[*batch, B, *input_shape]``.
        latent_dim: ``L``.
        likelihood: ``"bernoulli"`` (logits), ``"continuous_bernoulli"``, ``"gaussian"``, or a
            :class:`PixelLikelihood`.
        dataset_size: number of training points ``N`` (``None``: each batch is the data set).
        input_shape: shape of one data point; default ``encoder.input_shape`` if it has one.
            Inputs of another shape are rejected with a ``ValueError``.
        scale, learn_scale: Gaussian likelihood scale and whether to learn it.
        name: prefix of the parameters in Pyro's global param store (classic ``SVI``).

    Example:
        >>> import torch
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder(64, [32], 4), MLPDecoder(4, [32], 64), 4, dataset_size=100)
        >>> vae.guide(torch.rand(8, 64).round()).shape
        torch.Size([8, 4])

    References:
        Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014;
        Rezende, Mohamed & Wierstra, Stochastic Backpropagation and Approximate Inference in
        Deep Generative Models, ICML 2014.
    """

    latent_site = "z"
    obs_site = "x"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: str | PixelLikelihood = "bernoulli",
        *,
        dataset_size: int | None = None,
        input_shape: int | Sequence[int] | None = None,
        scale: float = 1.0,
        learn_scale: bool = False,
        name: str = "vae",
    ):
        super().__init__()
        for arg, value in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{arg} must be a torch.nn.Module, got {type(value).__name__}")
        check_positive_int(latent_dim, "latent_dim")
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
        if input_shape is None:
            input_shape = getattr(encoder, "input_shape", None)
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self.input_shape: tuple[int, ...] | None = (
            None if input_shape is None else tuple(int(s) for s in input_shape)
        )
        self.latent_dim = int(latent_dim)
        self.decoder = decoder
        self.guide = VAEGuide(self, encoder)
        self.name = name

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> nn.Module:
        """The encoder network (owned by :attr:`guide`)."""
        return self.guide.encoder

    @property
    def dataset_size(self) -> int | None:
        """``N``, the number of training points (``None``: each batch is the data set)."""
        return self.likelihood.dataset_size

    # ------------------------------------------------------------------ checks
    def check_input(self, x: Any) -> None:
        """Reject inputs of the wrong type, shape or range (the range only off-GPU, no sync).

        Raises:
            TypeError: ``x`` is not a floating tensor.
            ValueError: wrong shape, non-finite values, or values outside ``[0, 1]`` for a
                (continuous) Bernoulli likelihood.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape [B, {', '.join(map(str, self.input_shape))}] to match the "
                f"encoder's input_shape {self.input_shape}, got {tuple(x.shape)}"
            )
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(
                f"x must have shape [B, *input_shape] with B >= 1, got {tuple(x.shape)}"
            )
        if x.is_cuda:
            return  # a range check on CUDA would synchronise every step
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x contains NaN or infinite values")
        if self.likelihood.needs_unit_interval and (lo < 0.0 or hi > 1.0):
            raise ValueError(
                f"x must lie in [0, 1] for a {self.likelihood.kind} likelihood, got values in "
                f"[{lo:.4g}, {hi:.4g}]"
            )

    # ------------------------------------------------------------------ networks
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The guide's ``(loc, scale)``, each ``[B, L]``."""
        try:
            out = self.guide.encoder(x)
        except RuntimeError as e:
            raise ValueError(
                f"the encoder failed on x of shape {tuple(x.shape)}; check input_shape: {e}"
            ) from e
        b, size = x.shape[0], self.latent_dim
        if isinstance(out, (tuple, list)):
            loc, scale = out
        else:
            if out.shape != (b, 2 * size):
                raise ValueError(
                    f"the encoder must return [B, 2 * latent_dim] = [{b}, {2 * size}] or a pair "
                    f"(loc, scale), got shape {tuple(out.shape)}"
                )
            loc, raw = out.chunk(2, dim=-1)
            scale = F.softplus(raw)
        if loc.shape != (b, size) or scale.shape != (b, size):
            raise ValueError(
                f"the encoder's loc and scale must have shape [{b}, {size}], got "
                f"{tuple(loc.shape)} and {tuple(scale.shape)}"
            )
        return loc, scale

    def decode(self, z: Tensor, like: Tensor | None = None) -> Tensor:
        """Decoder outputs ``[*batch, B, *input_shape]`` for ``z [*batch, B, L]``."""
        f = self.decoder(z)
        want = tuple(z.shape[:-1]) + (
            tuple(like.shape[1:]) if like is not None else (self.input_shape or tuple(f.shape[-1:]))
        )
        if tuple(f.shape) != want:
            raise ValueError(
                f"the decoder must map z of shape {tuple(z.shape)} to {want}, got {tuple(f.shape)}"
            )
        return f

    def plate(self, x: Tensor) -> pyro.plate:
        """The data plate of a minibatch ``x`` (size ``N``, subsample ``arange(B)``)."""
        return _data_plate(x, self.dataset_size, "points")

    # ------------------------------------------------------------------ Pyro model
    def forward(self, x: Tensor) -> Tensor:
        """The Pyro model: ``z ~ N(0, I)``, observe ``x ~ p(x | decoder(z))`` in the data plate.

        Args:
            x: minibatch ``[B, *input_shape]``.

        Returns:
            the decoder outputs ``[*batch, B, *input_shape]``.
        """
        self.check_input(x)
        if not pyro.settings.get("module_local_params"):
            for part, module in (("decoder", self.decoder), ("likelihood", self.likelihood)):
                if _trainable(module):
                    pyro.module(f"{self.name}.{part}", module)
        zero = x.new_zeros(())
        with self.plate(x):
            prior = dist.Normal(zero, zero + 1).expand([self.latent_dim]).to_event(1)
            z = pyro.sample(self.latent_site, prior)
            f = self.decode(z, x)
            pyro.sample(self.obs_site, self.likelihood.distribution(f, x.dim() - 1), obs=x)
        return f

    def model(self, x: Tensor) -> Tensor:
        """The Pyro model (same as calling the VAE)."""
        return self(x)

    # ------------------------------------------------------------------ fast path
    def local_terms(
        self,
        x: Tensor,
        *,
        num_particles: int = 1,
        detach_guide_params: bool = False,
        analytic_kl: bool = False,
    ) -> LocalTerms:
        """Per-point log-densities of ``K`` particles in one batched pass (no Pyro trace).

        Draws ``z_kb = loc_b + scale_b * eps_kb`` and evaluates the decoder once on
        ``[K, B, L]``.

        Args:
            x: minibatch ``[B, *input_shape]``.
            num_particles: ``K``.
            detach_guide_params: evaluate ``log q(z | x)`` with ``loc, scale`` held constant
                (DReG); the gradient still reaches the encoder through ``z``.
            analytic_kl: also return ``KL(q(z | x_b) || N(0, I))`` per point, ``[B]``.

        Returns:
            :class:`~bayesdl.infer._local_terms.LocalTerms` with ``[K, B]`` tensors, the scale
            ``N / B``, ``z [K, B, L]`` and a prior sampler.
        """
        self.check_input(x)
        b = int(x.shape[0])
        n = b if self.dataset_size is None else self.dataset_size
        if b > n:
            raise ValueError(
                f"the minibatch has {b} points but dataset_size={n}; pass the number of training "
                "points as dataset_size"
            )
        log_lik, log_prior, log_q, kl, z = self._draw(
            x, num_particles, detach_guide_params=detach_guide_params, analytic_kl=analytic_kl
        )
        size = self.latent_dim

        def prior_sample(m: int) -> Tensor:
            return torch.randn(m, size, dtype=z.dtype, device=z.device)

        return LocalTerms(
            log_lik=log_lik,
            log_prior=log_prior,
            log_q=log_q,
            scale=n / b,
            latents=[z],
            kl=kl,
            z=z,
            prior_sample=prior_sample,
        )

    def log_weights(self, x: Tensor, num_particles: int) -> Tensor:
        """``log p(x_b, z_kb) - log q(z_kb | x_b)`` for ``K`` draws ``z_kb ~ q(z | x_b)``.

        Unscaled and free of the data plate (any number of points, whatever
        ``dataset_size``): what importance-sampled evaluation needs. ``x`` is not checked
        here; callers check it once (:meth:`check_input`).

        Args:
            x: data ``[B, *input_shape]``.
            num_particles: ``K``.

        Returns:
            ``[K, B]``.
        """
        log_lik, log_prior, log_q, _, _ = self._draw(x, num_particles)
        return log_lik + log_prior - log_q

    def _draw(
        self,
        x: Tensor,
        num_particles: int,
        *,
        detach_guide_params: bool = False,
        analytic_kl: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """``(log_lik, log_prior, log_q [K, B], kl [B] or None, z [K, B, L])``."""
        loc, scale = self.encode(x)
        size = self.latent_dim
        eps = torch.randn((num_particles,) + tuple(loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        f = self.decode(z, x)
        log_lik = self.likelihood.log_prob(f, x)
        const = 0.5 * size * _LOG_2PI
        log_prior = -0.5 * z.square().sum(-1) - const
        if detach_guide_params:
            loc_d, scale_d = loc.detach(), scale.detach()
            log_q = -0.5 * ((z - loc_d) / scale_d).square().sum(-1) - scale_d.log().sum(-1) - const
        else:
            log_q = -0.5 * eps.square().sum(-1) - scale.log().sum(-1) - const
        kl = None
        if analytic_kl:
            kl = 0.5 * (loc.square() + scale.square() - 1.0).sum(-1) - scale.log().sum(-1)
        return log_lik, log_prior, log_q, kl, z

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, input_shape={self.input_shape}"

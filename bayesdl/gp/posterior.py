"""The posterior of a GP under Gaussian pseudo-observations, shared by the dense and Markov paths."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["GPPosterior"]

_LOG_2PI = math.log(2 * math.pi)


class GPPosterior:
    r"""``q(f) ∝ p(f) Π_t N(ỹ_t | f_t, ṽ_t)`` for a GP prior ``p`` and Gaussian pseudo-observations.

    Returned by :meth:`bayesdl.gp.MarkovGP.posterior` (Kalman filter + RTS smoother) and
    :meth:`bayesdl.gp.GP.posterior` (dense linear algebra); both give the same numbers up to
    round-off. Shapes: ``...`` are the pseudo-observations' leading batch dimensions (e.g. a data
    batch ``B``), ``L`` channels, ``T`` time points.

    Attributes:
        mean: marginal posterior means of ``f``, ``[..., L, T]``.
        variance: marginal posterior variances of ``f``, ``[..., L, T]``.
        log_normalizer: ``log Z = log ∫ p(f) Π_t N(ỹ_t | f_t, ṽ_t) df`` (masked entries
            omitted), ``[..., L]``.
        pseudo_obs, pseudo_var: the pseudo-observations ``ỹ`` and variances ``ṽ``,
            ``[..., L, T]``.
        mask: bool ``[..., L, T]`` or ``None`` (all observed).

    Since ``q = p Π N / Z``, ``KL(q || p) = E_q[Σ_t log N(ỹ_t | f_t, ṽ_t)] - log Z`` exactly
    (:meth:`kl_to_prior`); this is the Markovian GP-VAE's KL term (Zhu et al. 2023).

    Example:
        >>> from bayesdl.gp import MarkovGP, MaternKernel
        >>> t = torch.linspace(0, 1, 6, dtype=torch.float64)
        >>> post = MarkovGP(MaternKernel(1.5), t).posterior(
        ...     torch.randn(4, 1, 6, dtype=torch.float64), torch.full((4, 1, 6), 0.1, dtype=torch.float64))
        >>> post.mean.shape, post.kl_to_prior().shape, post.rsample((2,)).shape
        (torch.Size([4, 1, 6]), torch.Size([4, 1]), torch.Size([2, 4, 1, 6]))

    References:
        Zhu, Balsells-Rodas & Li (2023), "Markovian Gaussian process variational
        autoencoders", ICML.
    """

    def __init__(
        self,
        mean: Tensor,
        variance: Tensor,
        log_normalizer: Tensor,
        pseudo_obs: Tensor,
        pseudo_var: Tensor,
        mask: Tensor | None,
        sampler: Callable[[torch.Size, torch.Generator | None], Tensor],
    ) -> None:
        self.mean = mean
        self.variance = variance
        self.log_normalizer = log_normalizer
        self.pseudo_obs = pseudo_obs
        self.pseudo_var = pseudo_var
        self.mask = mask
        self._sampler = sampler

    @property
    def stddev(self) -> Tensor:
        """Marginal posterior standard deviations ``[..., L, T]``."""
        return self.variance.clamp_min(0).sqrt()

    def rsample(
        self,
        sample_shape: Sequence[int] = torch.Size(),
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Joint posterior draws of ``f``, ``[*sample_shape, ..., L, T]``, reparameterised."""
        return self._sampler(torch.Size(sample_shape), generator)

    def sample(
        self,
        sample_shape: Sequence[int] = torch.Size(),
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """As :meth:`rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def expected_log_pseudo_lik(self) -> Tensor:
        """``Σ_t E_q log N(ỹ_t | f_t, ṽ_t)`` over observed ``t``, ``[..., L]``."""
        v = self.pseudo_var
        terms = -0.5 * (
            _LOG_2PI + v.log() + ((self.pseudo_obs - self.mean).square() + self.variance) / v
        )
        if self.mask is not None:
            terms = torch.where(self.mask, terms, torch.zeros_like(terms))
        return terms.sum(-1)

    def kl_to_prior(self) -> Tensor:
        """``KL(q || p) = expected_log_pseudo_lik() - log_normalizer``, ``[..., L]``."""
        return self.expected_log_pseudo_lik() - self.log_normalizer


def check_pseudo(
    pseudo_obs: Tensor,
    pseudo_var: Tensor,
    mask: Tensor | None,
    num_channels: int,
    num_times: int,
    *,
    validate: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate pseudo-observations ``[..., L, T]``; masked entries are replaced by (0, 1).

    Shapes are always checked; the value check (``pseudo_var > 0``, a device sync) only with
    ``validate``.
    """
    for name, x in (("pseudo_obs", pseudo_obs), ("pseudo_var", pseudo_var)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[-1] != num_times or x.shape[-2] not in (1, num_channels):
            raise ValueError(
                f"{name} must have shape [..., L, T] = [..., {num_channels}, {num_times}], got "
                f"shape {tuple(x.shape)}"
            )
    try:
        shape = torch.broadcast_shapes(pseudo_obs.shape, pseudo_var.shape)
    except RuntimeError:
        raise ValueError(
            f"pseudo_var's shape {tuple(pseudo_var.shape)} does not broadcast with pseudo_obs's "
            f"{tuple(pseudo_obs.shape)}"
        ) from None
    shape = shape[:-2] + (num_channels, num_times)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
        try:
            shape = torch.broadcast_shapes(shape, mask.shape)
        except RuntimeError:
            raise ValueError(
                f"mask must be broadcastable to pseudo_obs's shape {tuple(shape)}, got shape "
                f"{tuple(mask.shape)}"
            ) from None
        if shape[-2:] != (num_channels, num_times):
            raise ValueError(f"mask must have shape [..., L, T], got shape {tuple(mask.shape)}")
        mask = mask.expand(shape)
    pseudo_obs, pseudo_var = pseudo_obs.expand(shape), pseudo_var.expand(shape)
    if mask is not None:
        pseudo_obs = torch.where(mask, pseudo_obs, torch.zeros((), dtype=pseudo_obs.dtype))
        pseudo_var = torch.where(mask, pseudo_var, torch.ones((), dtype=pseudo_var.dtype))
    if validate and bool((pseudo_var <= 0).any()):
        raise ValueError(
            f"pseudo_var must be > 0 on observed entries, got minimum {pseudo_var.min().item():.4g}"
        )
    return pseudo_obs, pseudo_var, mask

"""The importance-weighted bound (IWAE), per data point, with standard or DReG gradients."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bayesdl.infer._local_objective import LocalObjective
from bayesdl.infer._local_terms import LocalTerms

__all__ = ["IWAE", "IWAE_GRADIENTS"]

IWAE_GRADIENTS: tuple[str, ...] = ("dreg", "standard")
"""Gradient estimators accepted by :class:`IWAE`."""


def _grad_scaler(weights: Tensor):
    def hook(grad: Tensor) -> Tensor:
        return grad * weights.reshape(weights.shape + (1,) * (grad.dim() - weights.dim()))

    return hook


class IWAE(LocalObjective):
    """The importance-weighted autoencoder bound with ``K`` samples per data point.

    For a minibatch of ``B`` of ``N`` points, with ``log w_kb = log p(x_b, z_kb) -
    log q(z_kb | x_b)`` and ``z_1b..z_Kb ~ q(z | x_b)``::

        loss = -(N / B) * sum_b [logsumexp_k(log w_kb) - log K]

    The log-sum-exp is taken **per data point, then** the minibatch is scaled by ``N / B``, so
    ``-loss`` is an unbiased estimate of ``sum_n IWAE_K(x_n) <= log p(x_1..N)``. (Pyro's
    ``RenyiELBO(alpha=0)`` with a subsampled plate puts ``N / B`` inside the log-sum-exp and
    returns a value that is not a bound.) The ``K`` samples are drawn and evaluated in one
    batched call. ``K = 1`` is the ELBO.

    Gradients:

    * ``"standard"``: the gradient of the bound, ``sum_k w~_k grad log w_k``.
    * ``"dreg"``: doubly-reparameterised gradients (Tucker et al. 2019). The decoder gets the
      same gradient; the encoder gets ``sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)``
      with ``log q`` evaluated at fixed guide parameters, which is unbiased for the same
      expected gradient and has lower variance (and keeps a signal to the encoder as ``K``
      grows). The reported loss is still the bound. Needs reparameterised latents.

    For a :class:`~bayesdl.vae.VAE` with no Pyro handler active the bound is computed in one
    batched pass, with no Pyro trace; for other model/guide pairs (every sample site in one
    subsampled data plate, sharing one scale) it is read off Pyro traces, and DReG then needs
    the guide to be an ``nn.Module``.

    Args:
        num_particles: ``K >= 1`` importance samples per data point.
        gradient: ``"standard"`` or ``"dreg"``.
        max_plate_nesting: plates inside the particle plate (1: the data plate).
        check_finite: raise :class:`~bayesdl.infer.NonFiniteLossError` naming the
            non-finite term (default: on CPU only, where the check needs no device sync).

    Example:
        >>> import torch
        >>> from bayesdl.infer import IWAE
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2, dataset_size=40)
        >>> loss = IWAE(num_particles=50, gradient="dreg")
        >>> loss.differentiable_loss(vae, vae.guide, torch.rand(10, 16).round()).shape
        torch.Size([])

    References:
        Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016;
        Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte
        Carlo Objectives, ICLR 2019.
    """

    def __init__(
        self,
        num_particles: int = 1,
        *,
        gradient: str = "standard",
        max_plate_nesting: int = 1,
        check_finite: bool | None = None,
    ):
        super().__init__(
            num_particles, max_plate_nesting=max_plate_nesting, check_finite=check_finite
        )
        if gradient not in IWAE_GRADIENTS:
            raise ValueError(f"gradient must be 'standard' or 'dreg', got {gradient!r}")
        self.gradient = gradient
        self._detach_guide_params = gradient == "dreg"

    def _loss(self, terms: LocalTerms):
        log_w = terms.log_lik + terms.log_prior - terms.log_q  # [K, B]
        bound = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])  # [B]
        loss = -terms.scale * bound.sum()
        parts = {
            "reconstruction log p(x|z)": terms.log_lik,
            "KL log p(z) - log q(z|x)": terms.log_prior - terms.log_q,
        }
        if self.gradient == "dreg" and torch.is_grad_enabled() and log_w.requires_grad:
            weights = torch.softmax(log_w.detach(), dim=0)  # normalised importance weights
            hooked = False
            for value in terms.latents:
                if value.requires_grad:
                    value.register_hook(_grad_scaler(weights))
                    hooked = True
            if not hooked:
                raise ValueError(
                    "gradient='dreg' needs reparameterised latent sites (rsample); none found"
                )
            surrogate = -terms.scale * (weights * log_w).sum()
            loss = loss.detach() + (surrogate - surrogate.detach())
        return loss, parts

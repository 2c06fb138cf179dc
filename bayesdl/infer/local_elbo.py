"""The ELBO of a model with local latents, averaged over particles, scaled by N/B."""

from __future__ import annotations

from bayesdl.infer._local_objective import LocalObjective, particle_mean
from bayesdl.infer._local_terms import LocalTerms

__all__ = ["LocalELBO"]


class LocalELBO(LocalObjective):
    """The evidence lower bound of a VAE-like model, ``K`` particles per data point.

    ``loss = -(N / B) * sum_b (1 / K) sum_k [log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b)]``
    with ``z_kb ~ q(z | x_b)``: the "VAE with k samples" of Burda et al. (its gradient is the
    average of ``K`` single-sample gradients). With ``analytic_kl=True`` the KL term is
    computed in closed form, ``E_q[log p(x | z)] - KL(q(z | x) || p(z))``.

    For a :class:`~bayesdl.vae.VAE` (``loss.differentiable_loss(vae, vae.guide, x)``) with no
    Pyro handler active, the terms come from one batched pass with no Pyro trace; for any
    other model/guide pair (all latent sites in one subsampled data plate) they are read off
    Pyro traces. Works with :func:`bayesdl.infer.fit` and :class:`pyro.infer.SVI`.

    Args:
        num_particles: ``K >= 1``.
        analytic_kl: use ``KL(q || p)`` in closed form where Pyro knows it.
        max_plate_nesting: plates inside the particle plate (1: the data plate).
        check_finite: raise :class:`~bayesdl.infer.NonFiniteLossError` naming the
            non-finite term (default: on CPU only, where the check needs no device sync).

    Example:
        >>> import torch
        >>> from bayesdl.infer import LocalELBO
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2, dataset_size=40)
        >>> x = torch.rand(10, 16).round()
        >>> LocalELBO(num_particles=5).differentiable_loss(vae, vae.guide, x).shape
        torch.Size([])

    References:
        Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
    """

    def __init__(
        self,
        num_particles: int = 1,
        *,
        analytic_kl: bool = False,
        max_plate_nesting: int = 1,
        check_finite: bool | None = None,
    ):
        super().__init__(
            num_particles, max_plate_nesting=max_plate_nesting, check_finite=check_finite
        )
        if not isinstance(analytic_kl, bool):
            raise TypeError(f"analytic_kl must be a bool, got {type(analytic_kl).__name__}")
        self._analytic_kl = analytic_kl

    def _loss(self, terms: LocalTerms):
        if terms.kl is not None:
            kl = particle_mean(terms.kl)
            per_point = terms.log_lik.mean(0) - kl
        else:
            kl = (terms.log_q - terms.log_prior).mean(0)
            per_point = (terms.log_lik + terms.log_prior - terms.log_q).mean(0)
        loss = -terms.scale * per_point.sum()
        return loss, {"reconstruction log p(x|z)": terms.log_lik, "KL": kl}

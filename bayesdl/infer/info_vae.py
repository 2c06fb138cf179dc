"""InfoVAE: reconstruction, a weighted KL and an MMD between the aggregate posterior and prior."""

from __future__ import annotations

import math
import numbers

from bayesdl.infer._local_objective import LocalObjective, particle_mean
from bayesdl.infer._local_terms import LocalTerms
from bayesdl.infer.mmd import MMD_KERNELS, mmd_u

__all__ = ["InfoVAE"]


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


class InfoVAE(LocalObjective):
    """The InfoVAE objective of Zhao, Song & Ermon with an MMD divergence.

    Per data set of ``N`` points, estimated from a minibatch of ``B``::

        -loss = (N / B) sum_b [E_q log p(x_b | z) - (1 - alpha) KL(q(z | x_b) || p(z))]
                - N (alpha + lambda_ - 1) MMD^2(q(z), p(z))

    where ``q(z) = E_x q(z | x)`` is the **aggregate posterior**: the MMD compares the
    minibatch's posterior samples (one per data point and particle, ``K B`` in all) with
    as many (or ``num_prior_samples``) prior samples, by the unbiased U-statistic
    :func:`~bayesdl.infer.mmd.mmd_u`. (Pyro's ``Trace_MMD`` instead compares particles of the
    joint ``q(z_1..z_B | x_1..x_B)``, not the aggregate posterior.) ``alpha = 0, lambda_ = 1``
    is the ELBO; ``alpha = 1`` is the MMD-VAE. The MMD term is the per-point objective's
    divergence times ``N``, so the loss is ``N`` times the per-point InfoVAE objective.

    The model's latent site must be a single site (one vector per data point); the prior
    samples come from the model (``N(0, I)`` for a :class:`~bayesdl.vae.VAE`).

    Args:
        alpha: weight of the mutual information (KL weight ``1 - alpha``).
        lambda_: weight of the divergence, ``> 0`` with ``alpha + lambda_ - 1 >= 0``.
        kernel: ``"imq"`` or ``"rbf"``.
        kernel_scale: kernel scale (default ``2 L``, see :func:`~bayesdl.infer.mmd.mmd_u`).
        num_particles: ``K`` posterior samples per data point.
        num_prior_samples: prior samples per step (default: ``K B``).
        analytic_kl: closed-form KL where Pyro knows it (default ``True``).
        max_plate_nesting: plates inside the particle plate (1: the data plate).
        check_finite: raise :class:`~bayesdl.infer.NonFiniteLossError` naming the
            non-finite term (reconstruction, KL or MMD); default on CPU only.

    Example:
        >>> import torch
        >>> from bayesdl.infer import InfoVAE
        >>> from bayesdl.vae import VAE, MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder(16, [8], 2), MLPDecoder(2, [8], 16), 2, dataset_size=40)
        >>> loss = InfoVAE(alpha=1.0, lambda_=100.0, kernel="imq")
        >>> loss.differentiable_loss(vae, vae.guide, torch.rand(10, 16).round()).shape
        torch.Size([])

    References:
        Zhao, Song & Ermon, InfoVAE: Balancing Learning and Inference in Variational
        Autoencoders, AAAI 2019 (arXiv:1706.02262).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        lambda_: float = 1.0,
        *,
        kernel: str = "imq",
        kernel_scale: float | None = None,
        num_particles: int = 1,
        num_prior_samples: int | None = None,
        analytic_kl: bool = True,
        max_plate_nesting: int = 1,
        check_finite: bool | None = None,
    ):
        super().__init__(
            num_particles, max_plate_nesting=max_plate_nesting, check_finite=check_finite
        )
        alpha, lambda_ = _real(alpha, "alpha"), _real(lambda_, "lambda_")
        if not lambda_ > 0:
            raise ValueError(f"lambda_ must be > 0, got {lambda_}")
        if alpha + lambda_ - 1 < 0:
            raise ValueError(
                f"alpha + lambda_ - 1 must be >= 0 (the MMD weight), got alpha={alpha}, "
                f"lambda_={lambda_}"
            )
        if kernel not in MMD_KERNELS:
            raise ValueError(f"kernel must be one of {MMD_KERNELS}, got {kernel!r}")
        if kernel_scale is not None and not 0 < _real(kernel_scale, "kernel_scale") < math.inf:
            raise ValueError(f"kernel_scale must be finite and > 0, got {kernel_scale}")
        if num_prior_samples is not None and (
            isinstance(num_prior_samples, bool)
            or not isinstance(num_prior_samples, int)
            or num_prior_samples < 2
        ):
            raise ValueError(f"num_prior_samples must be an int >= 2, got {num_prior_samples!r}")
        if not isinstance(analytic_kl, bool):
            raise TypeError(f"analytic_kl must be a bool, got {type(analytic_kl).__name__}")
        self.alpha = alpha
        self.lambda_ = lambda_
        self.kernel = kernel
        self.kernel_scale = kernel_scale
        self.num_prior_samples = num_prior_samples
        self._analytic_kl = analytic_kl

    def _loss(self, terms: LocalTerms):
        if terms.z is None or terms.prior_sample is None:
            raise ValueError("InfoVAE needs a model with a single latent sample site")
        recon = terms.log_lik.mean(0)
        kl = (
            particle_mean(terms.kl)
            if terms.kl is not None
            else (terms.log_q - terms.log_prior).mean(0)
        )
        z = terms.z.reshape(-1, terms.z.shape[-1])
        if z.shape[0] < 2:
            raise ValueError("InfoVAE needs at least 2 posterior samples per step (B * K >= 2)")
        prior = terms.prior_sample(self.num_prior_samples or z.shape[0])
        mmd = mmd_u(z, prior, kernel=self.kernel, scale=self.kernel_scale)
        loss = -terms.scale * (recon - (1.0 - self.alpha) * kl).sum()
        loss = loss + terms.dataset_size * (self.alpha + self.lambda_ - 1.0) * mmd
        return loss, {"reconstruction log p(x|z)": terms.log_lik, "KL": kl, "MMD": mmd}

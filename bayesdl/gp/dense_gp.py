"""GPs over time as a Pyro distribution evaluated with dense Cholesky factorisations (``O(T^3)``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import Tensor

from bayesdl.gp.markov_gp import check_kernel_and_times
from bayesdl.gp.matern_kernel import MaternKernel, SumKernel
from bayesdl.gp.posterior import GPPosterior, check_pseudo

__all__ = ["GP"]

_LOG_2PI = math.log(2 * math.pi)


def _cholesky(K: Tensor, what: str) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(K)
    if bool((info > 0).any()):
        raise ValueError(
            f"the {what} is not numerically positive definite; use float64 times, fewer or "
            "less tightly spaced points, or a larger jitter"
        )
    return chol


class GP(TorchDistribution):
    r"""Independent GPs over time, one per channel, with dense covariance matrices.

    The dense counterpart of :class:`~bayesdl.gp.MarkovGP` with the same interface; it
    accepts the same kernels and gives the same numbers (to round-off, and to ``jitter`` in
    :meth:`log_prob` and the draws) at ``O(T^3)`` cost. Posteriors use the well-conditioned form
    ``B = I + W K W`` with ``W = diag(sqrt(mask / pseudo_var))`` (eigenvalues >= 1, no jitter),
    which also handles missing entries exactly.

    Args:
        kernel: a :class:`~bayesdl.gp.MaternKernel` or :class:`~bayesdl.gp.SumKernel`.
        times: strictly increasing time stamps ``[T]`` or ``[L, T]``.
        jitter: added to the prior covariance's diagonal, relative to each channel's
            ``K[t, t]``, for :meth:`log_prob` and :meth:`rsample` (and the prior draw inside
            posterior sampling). Default ``1e-10`` for float64, ``1e-5`` for float32.
        validate_args: as for any torch distribution.

    Example:
        >>> t = torch.linspace(0, 5, 30, dtype=torch.float64)
        >>> prior = GP(MaternKernel(2.5, lengthscale=torch.tensor([1.0, 2.0])), t)
        >>> prior.rsample((3,)).shape, prior.covariance_matrix.shape
        (torch.Size([3, 2, 30]), torch.Size([2, 30, 30]))

    References:
        Rasmussen & Williams (2006), GPML, Algorithm 2.1; Fortuin et al. (2020), "GP-VAE:
        deep probabilistic time series imputation".
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(
        self,
        kernel: MaternKernel | SumKernel,
        times: Tensor,
        *,
        jitter: float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        times, num_channels = check_kernel_and_times(kernel, times)
        if jitter is None:
            jitter = 1e-10 if times.dtype == torch.float64 else 1e-5
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or jitter < 0:
            raise ValueError(f"jitter must be a float >= 0, got {jitter!r}")
        self.kernel = kernel
        self.times = times
        self.jitter = float(jitter)
        super().__init__(
            torch.Size([num_channels]), torch.Size([times.shape[-1]]), validate_args=validate_args
        )

    @property
    def covariance_matrix(self) -> Tensor:
        """Prior covariance ``[L, T, T]`` (without jitter)."""
        K = self.kernel(self.times, self.times)
        return K.expand(self.batch_shape + K.shape[-2:])

    def _prior_cholesky(self) -> Tensor:
        K = self.covariance_matrix
        if self.jitter:
            diag = torch.diagonal(K, dim1=-2, dim2=-1)
            K = K + torch.diag_embed(self.jitter * diag)
        return _cholesky(K, "prior covariance")

    @property
    def mean(self) -> Tensor:
        """Prior mean (zero), ``[L, T]``."""
        return self.times.new_zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> Tensor:
        """Prior marginal variances, ``[L, T]``."""
        return torch.diagonal(self.covariance_matrix, dim1=-2, dim2=-1)

    def expand(self, batch_shape, _instance=None):
        """``self`` for the same batch shape, else Pyro's ``ExpandedDistribution`` (plates)."""
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        return TorchDistributionMixin.expand(self, batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density of paths ``value [..., L, T]``, ``[..., L]``."""
        if self._validate_args:
            self._validate_sample(value)
        chol = self._prior_cholesky()
        z = torch.linalg.solve_triangular(chol, value.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (z.square().sum(-1) + value.shape[-1] * _LOG_2PI) - logdet

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        """Prior draws ``[*sample_shape, L, T]`` (reparameterised)."""
        chol = self._prior_cholesky()
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        eps = torch.randn(shape, dtype=chol.dtype, device=chol.device)
        return (chol @ eps.unsqueeze(-1)).squeeze(-1)

    def posterior(
        self, pseudo_obs: Tensor, pseudo_var: Tensor, mask: Tensor | None = None
    ) -> GPPosterior:
        """Posterior under Gaussian pseudo-observations (see :meth:`MarkovGP.posterior`).

        Args:
            pseudo_obs: ``[..., L, T]``.
            pseudo_var: positive variances, broadcastable to ``pseudo_obs``.
            mask: optional bool ``[..., L, T]``; ``False`` entries carry no observation.

        Returns:
            :class:`~bayesdl.gp.GPPosterior` (dense; draws by Matheron's rule).
        """
        L, T = self.batch_shape[0], self.event_shape[0]
        y, v, mask = check_pseudo(
            pseudo_obs, pseudo_var, mask, L, T, validate=bool(self._validate_args)
        )
        K = self.covariance_matrix.to(torch.promote_types(self.times.dtype, y.dtype))
        w = v.rsqrt() if mask is None else torch.where(mask, v.rsqrt(), torch.zeros_like(v))
        eye = torch.eye(T, dtype=K.dtype, device=K.device)
        B = eye + w.unsqueeze(-1) * K * w.unsqueeze(-2)  # [..., L, T, T]
        chol_b = _cholesky(B, "matrix I + W K W")
        wy = w * y
        u = torch.cholesky_solve(wy.unsqueeze(-1), chol_b).squeeze(-1)  # B^{-1} W y
        mean = (K @ (w * u).unsqueeze(-1)).squeeze(-1)
        V = torch.linalg.solve_triangular(chol_b, w.unsqueeze(-1) * K, upper=False)
        variance = torch.diagonal(K, dim1=-2, dim2=-1) - V.square().sum(-2)
        obs_log_var = v.log() if mask is None else torch.where(mask, v.log(), torch.zeros_like(v))
        num_obs = T if mask is None else mask.sum(-1).to(v.dtype)
        log_z = (
            -0.5 * (wy * u).sum(-1)
            - torch.diagonal(chol_b, dim1=-2, dim2=-1).log().sum(-1)
            - 0.5 * (obs_log_var.sum(-1) + num_obs * _LOG_2PI)
        )

        def sampler(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
            chol_k = self._prior_cholesky().to(K.dtype)
            full = shape + y.shape
            e1 = torch.randn(full, dtype=K.dtype, device=K.device, generator=generator)
            e2 = torch.randn(full, dtype=K.dtype, device=K.device, generator=generator)
            f0 = (chol_k @ e1.unsqueeze(-1)).squeeze(-1)
            noise = e2 if mask is None else torch.where(mask, e2, torch.zeros_like(e2))
            rhs = w * (y - f0) - noise
            s = torch.cholesky_solve(rhs.unsqueeze(-1), chol_b).squeeze(-1)
            return f0 + (K @ (w * s).unsqueeze(-1)).squeeze(-1)

        return GPPosterior(mean, variance, log_z, y, v, mask, sampler)

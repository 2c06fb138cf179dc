"""Matérn GPs over time as a Pyro distribution evaluated by Kalman filtering (linear in ``T``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import Tensor

from bayesdl._validation import check_finite
from bayesdl.gp.kalman import (
    ffbs_sample,
    kalman_filter,
    rts_smoother,
    sample_linear_gaussian,
)
from bayesdl.gp.matern_kernel import MaternKernel, SumKernel
from bayesdl.gp.posterior import GPPosterior, check_pseudo

__all__ = ["MarkovGP"]

_METHODS = ("parallel", "sequential")


def check_kernel_and_times(kernel: object, times: object) -> tuple[Tensor, int]:
    """Validate a kernel and a time grid ``[T]`` or ``[L, T]``; return times and ``L``."""
    if not isinstance(kernel, MaternKernel | SumKernel):
        raise TypeError(f"kernel must be a MaternKernel or SumKernel, got {type(kernel).__name__}")
    if not isinstance(times, Tensor):
        raise TypeError(f"times must be a torch.Tensor, got {type(times).__name__}")
    if not times.is_floating_point():
        raise TypeError(f"times must be a floating-point tensor, got dtype {times.dtype}")
    if times.dim() not in (1, 2) or times.shape[-1] < 1:
        raise ValueError(
            f"times must have shape [T] or [L, T] with T >= 1, got {tuple(times.shape)}"
        )
    check_finite(times, "times")
    num_channels = kernel.num_channels
    if times.dim() == 2:
        if num_channels not in (1, times.shape[0]):
            raise ValueError(
                f"times has {times.shape[0]} rows (channels) but the kernel has L = {num_channels}"
            )
        num_channels = times.shape[0]
    if times.shape[-1] > 1:
        dt = times.diff()
        if not bool((dt > 0).all()):
            bad = int((dt <= 0).nonzero()[0, -1])
            raise ValueError(
                "times must be strictly increasing along the last dimension; got "
                f"times[..., {bad + 1}] <= times[..., {bad}] (smallest step {dt.min().item():.4g})"
            )
    return times, num_channels


class MarkovGP(TorchDistribution):
    r"""Independent Matérn GPs over time, one per channel, via their state-space form.

    ``f_l(times) ~ GP(0, kernel_l)`` for ``l = 1..L``; all densities, draws and posteriors go
    through Kalman filtering and smoothing (:mod:`bayesdl.gp.kalman`), so they cost ``O(T)`` work
    (``O(log T)`` depth with ``method="parallel"``) instead of the dense path's ``O(T^3)``. The
    numbers equal :class:`~bayesdl.gp.GP`'s to round-off.

    Args:
        kernel: a :class:`~bayesdl.gp.MaternKernel` or :class:`~bayesdl.gp.SumKernel` with
            ``L`` (or 1) channels.
        times: strictly increasing time stamps, ``[T]`` (shared) or ``[L, T]`` (per channel);
            irregular spacing is fine. Use float64 for exactness (see
            :mod:`bayesdl.gp.kalman` on float32).
        method: ``"parallel"`` (associative scans) or ``"sequential"`` (loops over time).
        validate_args: as for any torch distribution.

    Shapes: ``batch_shape = [L]``, ``event_shape = [T]``; ``log_prob(value [..., L, T]) ->
    [..., L]``; ``rsample(sample_shape) -> [*sample_shape, L, T]``.

    Example:
        >>> t = torch.cumsum(torch.rand(50, dtype=torch.float64), 0)
        >>> prior = MarkovGP(MaternKernel(1.5, lengthscale=torch.tensor([1.0, 3.0])), t)
        >>> f = prior.rsample((4,))
        >>> f.shape, prior.log_prob(f).shape
        (torch.Size([4, 2, 50]), torch.Size([4, 2]))

    References:
        Hartikainen & Särkkä (2010); Särkkä & García-Fernández (2021); Zhu, Balsells-Rodas &
        Li (2023), "Markovian Gaussian process variational autoencoders".
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(
        self,
        kernel: MaternKernel | SumKernel,
        times: Tensor,
        *,
        method: str = "parallel",
        validate_args: bool | None = None,
    ) -> None:
        times, num_channels = check_kernel_and_times(kernel, times)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.kernel = kernel
        self.times = times
        self.method = method
        super().__init__(
            torch.Size([num_channels]), torch.Size([times.shape[-1]]), validate_args=validate_args
        )

    # ------------------------------------------------------------------ state space
    def state_space(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(A [L, T-1, d, d], Q [L, T-1, d, d], H [d], P_inf [L, d, d])`` for these times."""
        L = self.batch_shape[0]
        dtype = self.times.dtype
        A, Q = self.kernel.transition(self.times.diff())
        d = A.shape[-1]
        A = A.expand(L, *A.shape[-3:])
        Q = Q.expand(L, *Q.shape[-3:])
        P0 = self.kernel.stationary_covariance(dtype).expand(L, d, d)
        H = self.kernel.observation_vector(dtype)
        return A, Q, H, P0

    # ------------------------------------------------------------------ distribution API
    @property
    def mean(self) -> Tensor:
        """Prior mean (zero), ``[L, T]``."""
        return self.times.new_zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> Tensor:
        """Prior marginal variances, ``[L, T]``."""
        _, _, H, P0 = self.state_space()
        var = (H * (P0 @ H)).sum(-1)  # [L]
        return var.unsqueeze(-1).expand(self.batch_shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        """``self`` for the same batch shape, else Pyro's ``ExpandedDistribution`` (plates)."""
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        return TorchDistributionMixin.expand(self, batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density of paths ``value [..., L, T]``, ``[..., L]`` (noiseless Kalman filter)."""
        if self._validate_args:
            self._validate_sample(value)
        A, Q, H, P0 = self.state_space()
        m0 = P0.new_zeros(P0.shape[:-1])
        r = torch.zeros((), dtype=A.dtype, device=A.device)
        # the filter's innovation form: the reduced log normaliser of kalman_log_marginal loses
        # precision on noiseless observations of smooth kernels (tiny H Q H^T per step)
        return kalman_filter(A, Q, H, m0, P0, value, r, method=self.method).log_marginal

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        """Prior draws ``[*sample_shape, L, T]`` (reparameterised; exact state-space recursion)."""
        A, Q, H, P0 = self.state_space()
        m0 = P0.new_zeros(P0.shape[:-1])
        x = sample_linear_gaussian(A, Q, m0, P0, sample_shape, method=self.method)
        return (x * H).sum(-1)

    def posterior(
        self, pseudo_obs: Tensor, pseudo_var: Tensor, mask: Tensor | None = None
    ) -> GPPosterior:
        """Posterior under Gaussian pseudo-observations ``N(pseudo_obs_t | f_t, pseudo_var_t)``.

        Args:
            pseudo_obs: ``[..., L, T]`` (leading batch dimensions allowed, e.g. a data batch).
            pseudo_var: positive variances, broadcastable to ``pseudo_obs``.
            mask: optional bool ``[..., L, T]``; ``False`` entries carry no observation.

        Returns:
            :class:`~bayesdl.gp.GPPosterior` (Kalman filter + RTS smoother; draws by FFBS).
        """
        L, T = self.batch_shape[0], self.event_shape[0]
        pseudo_obs, pseudo_var, mask = check_pseudo(
            pseudo_obs, pseudo_var, mask, L, T, validate=bool(self._validate_args)
        )
        A, Q, H, P0 = self.state_space()
        m0 = P0.new_zeros(P0.shape[:-1])
        method = self.method
        filt = kalman_filter(A, Q, H, m0, P0, pseudo_obs, pseudo_var, mask, method=method)
        smooth = rts_smoother(A, Q, filt, method=method)
        mean = (smooth.means * H).sum(-1)
        variance = (H * (smooth.covs @ H)).sum(-1)

        def sampler(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
            x = ffbs_sample(A, Q, filt, shape, method=method, generator=generator, smoothed=smooth)
            return (x * H).sum(-1)

        return GPPosterior(mean, variance, filt.log_marginal, pseudo_obs, pseudo_var, mask, sampler)

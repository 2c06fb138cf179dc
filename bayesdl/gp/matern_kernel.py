"""Matérn kernels in dense form and in state-space (linear SDE) form, and sums of them.

One kernel object serves both GP paths: ``kernel(t1, t2)`` gives the dense covariance used by
:class:`~bayesdl.gp.GP`, and :meth:`MaternKernel.transition` /
:meth:`MaternKernel.stationary_covariance` give the exact discretisation of the equivalent
linear SDE used by :class:`~bayesdl.gp.MarkovGP` (Kalman filtering and smoothing).

Conventions: ``L`` channels (independent GPs, each with its own hyperparameters), ``T`` time
points, state dimension ``d`` (1, 2, 3 for ν = 1/2, 3/2, 5/2; the sum over components for a
:class:`SumKernel`). Hyperparameters are cast to the dtype of the time stamps they are applied
to, so a kernel built with Python floats works on float64 inputs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bayesdl._validation import check_finite

__all__ = ["MaternKernel", "SumKernel"]

_NUS = (0.5, 1.5, 2.5)


def _positive_parameter(value: float | Tensor, name: str) -> Tensor:
    """Validate a positive hyperparameter and return its log as a 1-d tensor ``[L]``."""
    if isinstance(value, Tensor):
        tensor = value.detach().clone()
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.get_default_dtype())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        tensor = torch.tensor(float(value), dtype=torch.get_default_dtype())
    else:
        raise TypeError(
            f"{name} must be a float or a tensor of shape [L], got {type(value).__name__}"
        )
    if tensor.dim() > 1:
        raise ValueError(
            f"{name} must be a scalar or have shape [L], got shape {tuple(tensor.shape)}"
        )
    check_finite(tensor, name)
    if not bool((tensor > 0).all()):
        raise ValueError(f"{name} must be > 0, got minimum {tensor.min().item():.4g}")
    return tensor.reshape(-1).log()


def _align(param: Tensor, like: Tensor) -> Tensor:
    """Shape ``[L]`` hyperparameter ``-> [L, 1]`` in ``like``'s dtype, to broadcast ``[..., L, n]``."""
    return param.to(dtype=like.dtype).unsqueeze(-1)


class MaternKernel(nn.Module):
    r"""Matérn kernel with smoothness ν ∈ {1/2, 3/2, 5/2}, for ``L`` independent channels.

    Dense form, with :math:`r = |t - t'|` and :math:`\lambda = \sqrt{2\nu} / \ell`:

    * ν = 1/2: :math:`\sigma^2 e^{-\lambda r}`;
    * ν = 3/2: :math:`\sigma^2 (1 + \lambda r) e^{-\lambda r}`;
    * ν = 5/2: :math:`\sigma^2 (1 + \lambda r + \lambda^2 r^2 / 3) e^{-\lambda r}`.

    State-space form (Hartikainen & Särkkä 2010): the process is the first coordinate
    (:math:`H = [1, 0, \dots]`) of the ``d = ν + 1/2``-dimensional linear SDE
    :math:`dx = F x\,dt + L\,dW` whose drift has characteristic polynomial
    :math:`(s + \lambda)^d`. Because :math:`N = F + \lambda I` is nilpotent, the transition is
    exactly :math:`A(\Delta t) = e^{-\lambda \Delta t} \sum_{k<d} N^k \Delta t^k / k!`, and the
    stationary process noise is :math:`Q(\Delta t) = P_\infty - A P_\infty A^\top` (for ν = 1/2
    written as ``-σ² expm1(-2λΔt)`` to avoid cancellation).

    Args:
        nu: smoothness, one of 0.5, 1.5, 2.5.
        lengthscale: positive float, or tensor of shape ``[L]`` (one per channel).
        variance: positive float, or tensor of shape ``[L]``.

    Both hyperparameters are learnable ``nn.Parameter`` s stored in log space
    (``log_lengthscale``, ``log_variance``, shape ``[L]``; ``L = 1`` for scalars, and a scalar
    broadcasts against the other's ``L``).

    Numerics: the state-space matrices are exact, but ``Q`` at very small ``λΔt`` loses
    relative precision to cancellation (about ``eps / (λΔt)``); use float64 time stamps when
    ``λΔt`` can fall below ~1e-3 (see :func:`bayesdl.gp.kalman.kalman_filter`).

    Example:
        >>> k = MaternKernel(1.5, lengthscale=torch.tensor([0.5, 2.0]), variance=1.0)
        >>> t = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> k(t, t).shape
        torch.Size([2, 5, 5])
        >>> A, Q = k.transition(t.diff())
        >>> A.shape, k.stationary_covariance().shape
        (torch.Size([2, 4, 2, 2]), torch.Size([2, 2, 2]))

    References:
        Hartikainen & Särkkä (2010), "Kalman filtering and smoothing solutions to temporal
        Gaussian process regression models"; Rasmussen & Williams (2006), GPML, §4.2.
    """

    def __init__(
        self, nu: float = 1.5, lengthscale: float | Tensor = 1.0, variance: float | Tensor = 1.0
    ) -> None:
        super().__init__()
        if isinstance(nu, bool) or not isinstance(nu, numbers.Real):
            raise TypeError(f"nu must be one of {_NUS}, got {type(nu).__name__}")
        matches = [v for v in _NUS if abs(float(nu) - v) < 1e-12]
        if not matches:
            raise ValueError(f"nu must be one of {_NUS} (Matérn 1/2, 3/2, 5/2), got {nu!r}")
        self.nu = matches[0]
        log_ls = _positive_parameter(lengthscale, "lengthscale")
        log_var = _positive_parameter(variance, "variance")
        n = max(log_ls.numel(), log_var.numel())
        if log_ls.numel() not in (1, n) or log_var.numel() not in (1, n):
            raise ValueError(
                f"lengthscale and variance must have the same number of channels L (or one of "
                f"them a scalar); got {log_ls.numel()} and {log_var.numel()}"
            )
        dtype = torch.promote_types(log_ls.dtype, log_var.dtype)
        self.log_lengthscale = nn.Parameter(log_ls.to(dtype).expand(n).clone())
        self.log_variance = nn.Parameter(log_var.to(dtype).expand(n).clone())

    # ------------------------------------------------------------------ hyperparameters
    @property
    def lengthscale(self) -> Tensor:
        """Positive lengthscales, shape ``[L]``."""
        return self.log_lengthscale.exp()

    @property
    def variance(self) -> Tensor:
        """Positive variances, shape ``[L]``."""
        return self.log_variance.exp()

    @property
    def num_channels(self) -> int:
        """Number of channels ``L``."""
        return self.log_lengthscale.shape[0]

    @property
    def state_dim(self) -> int:
        """State dimension ``d`` = ν + 1/2."""
        return int(self.nu + 0.5)

    def extra_repr(self) -> str:
        return f"nu={self.nu}, num_channels={self.num_channels}"

    def __add__(self, other: MaternKernel | SumKernel) -> SumKernel:
        return SumKernel([self, other])

    # ------------------------------------------------------------------ dense form
    def forward(self, t1: Tensor, t2: Tensor) -> Tensor:
        """Dense covariance ``k(t1, t2)``.

        Args:
            t1: time stamps ``[T1]`` or ``[L, T1]``.
            t2: time stamps ``[T2]`` or ``[L, T2]``.

        Returns:
            covariance ``[L, T1, T2]``.
        """
        r = (t1.unsqueeze(-1) - t2.unsqueeze(-2)).abs()
        lam = _align(self._rate(), r).unsqueeze(-1)  # [L, 1, 1]
        var = _align(self.variance, r).unsqueeze(-1)
        z = lam * r
        if self.nu == 0.5:
            poly = torch.ones_like(z)
        elif self.nu == 1.5:
            poly = 1 + z
        else:
            poly = 1 + z + z.square() / 3
        out = var * poly * torch.exp(-z)
        return out.expand(self.num_channels, *out.shape[-2:]) if out.dim() == 2 else out

    # ------------------------------------------------------------------ state-space form
    def _rate(self) -> Tensor:
        return math.sqrt(2 * self.nu) / self.lengthscale

    def observation_vector(self, dtype: torch.dtype | None = None) -> Tensor:
        """``H = [1, 0, ..., 0]``, shape ``[d]`` (the GP value is the first state coordinate)."""
        h = torch.zeros(self.state_dim, dtype=dtype or self.log_lengthscale.dtype,
                        device=self.log_lengthscale.device)  # fmt: skip
        h[0] = 1
        return h

    def stationary_covariance(self, dtype: torch.dtype | None = None) -> Tensor:
        """Stationary state covariance ``P_inf``, shape ``[L, d, d]``."""
        lam = self._rate()
        var = self.variance
        if dtype is not None:
            lam, var = lam.to(dtype), var.to(dtype)
        d = self.state_dim
        zero = torch.zeros_like(var)
        if d == 1:
            rows = [[var]]
        elif d == 2:
            rows = [[var, zero], [zero, lam.square() * var]]
        else:
            kappa = lam.square() * var / 3
            rows = [[var, zero, -kappa], [zero, kappa, zero], [-kappa, zero, lam.pow(4) * var]]
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    def transition(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Exact discretisation over time steps ``dt``.

        Args:
            dt: positive time steps ``[..., n]`` (usually ``n = T - 1``). The hyperparameters
                (shape ``[L]``) align with the dimension just before the last one, so ``dt`` may
                be ``[n]`` (shared grid), ``[L, n]`` (one grid per channel) or ``[B, L, n]``.

        Returns:
            ``(A, Q)``, transition matrices and process-noise covariances, each
            ``[..., L, n, d, d]`` (the broadcast of ``dt.shape[:-1]`` with ``[L]``).
        """
        lam = _align(self._rate(), dt)  # [L, 1]
        var = _align(self.variance, dt)
        shape = torch.broadcast_shapes(dt.shape[:-1], (self.num_channels,)) + dt.shape[-1:]
        dt = dt.expand(shape)
        lam, var = lam.expand(shape), var.expand(shape)
        z = lam * dt
        decay = torch.exp(-z)
        d = self.state_dim
        if d == 1:
            A = decay.unsqueeze(-1).unsqueeze(-1)
            Q = (-var * torch.expm1(-2 * z)).unsqueeze(-1).unsqueeze(-1)
            return A, Q
        if d == 2:
            rows = [[1 + z, dt], [-lam * z, 1 - z]]
        else:
            # A = e^{-z} (I + N dt + N^2 dt^2 / 2), N = F + lam I, F the companion matrix of
            # (s + lam)^3; entries written out (N is nilpotent: N^3 = 0)
            z2 = z.square() / 2
            rows = [
                [1 + z + z2, dt * (1 + z), dt * dt / 2],
                [-lam * lam * lam * dt * dt / 2, 1 + z - 2 * z2, dt * (1 - z / 2)],
                [lam * lam * (-z + z2), lam * (-3 * z + 2 * z2), 1 - 2 * z + z2],
            ]
        A = decay[..., None, None] * torch.stack([torch.stack(r, -1) for r in rows], -2)
        # Q = P - A P A^T entry by entry on [..., L, n] slabs (batched 2x2 / 3x3 matmuls are
        # slow on CPU); P's structural zeros are skipped
        P = self.stationary_covariance(dt.dtype).unsqueeze(-3)  # [L, 1, d, d]
        p = [[P[..., k, l] for l in range(d)] for k in range(d)]
        nonzero = [(k, k) for k in range(d)] + ([(0, 2), (2, 0)] if d == 3 else [])
        decay2 = decay.square()
        q = {}
        for i in range(d):
            for j in range(i, d):
                apa = sum(rows[i][k] * rows[j][l] * p[k][l] for k, l in nonzero)
                q[i, j] = p[i][j] - decay2 * apa
        Q = torch.stack(
            [torch.stack([q[min(i, j), max(i, j)] for j in range(d)], -1) for i in range(d)], -2
        )
        return A, Q


class SumKernel(nn.Module):
    """Sum of Matérn kernels: block-diagonal state, observation vectors concatenated.

    ``SumKernel([k1, k2])(t1, t2) == k1(t1, t2) + k2(t1, t2)``; the state is the stacked states
    of the components (``d = d1 + d2 + ...``), the transition and covariances are block
    diagonal and ``H = [H1, H2, ...]``. ``k1 + k2`` builds the same thing. All components must
    have the same number of channels ``L`` (or one).

    Args:
        kernels: the component :class:`MaternKernel` s (or nested :class:`SumKernel` s).

    Example:
        >>> k = MaternKernel(0.5, lengthscale=3.0) + MaternKernel(2.5, lengthscale=0.3)
        >>> k.state_dim, k.observation_vector()
        (4, tensor([1., 1., 0., 0.]))

    References:
        Solin (2016), "Stochastic differential equation methods for spatio-temporal Gaussian
        process regression", §4 (sums of state-space kernels).
    """

    def __init__(self, kernels: Sequence[MaternKernel | SumKernel]) -> None:
        super().__init__()
        flat: list[MaternKernel] = []
        for i, k in enumerate(kernels):
            if isinstance(k, SumKernel):
                flat.extend(k.kernels)
            elif isinstance(k, MaternKernel):
                flat.append(k)
            else:
                raise TypeError(
                    f"kernels[{i}] must be a MaternKernel or SumKernel, got {type(k).__name__}"
                )
        if not flat:
            raise ValueError("kernels must contain at least one kernel")
        sizes = {k.num_channels for k in flat} - {1}
        if len(sizes) > 1:
            raise ValueError(
                f"kernels must share the number of channels L (or have 1), got {sizes}"
            )
        self.kernels = nn.ModuleList(flat)

    @property
    def num_channels(self) -> int:
        """Number of channels ``L``."""
        return max(k.num_channels for k in self.kernels)

    @property
    def state_dim(self) -> int:
        """Total state dimension (sum over components)."""
        return sum(k.state_dim for k in self.kernels)

    def forward(self, t1: Tensor, t2: Tensor) -> Tensor:
        """Dense covariance ``[L, T1, T2]`` (sum of the components')."""
        out = sum(k(t1, t2) for k in self.kernels)
        return out.expand(self.num_channels, *out.shape[-2:])

    def observation_vector(self, dtype: torch.dtype | None = None) -> Tensor:
        """Concatenated ``H``, shape ``[d]``."""
        return torch.cat([k.observation_vector(dtype) for k in self.kernels])

    def stationary_covariance(self, dtype: torch.dtype | None = None) -> Tensor:
        """Block-diagonal ``P_inf``, shape ``[L, d, d]``."""
        blocks = [k.stationary_covariance(dtype) for k in self.kernels]
        return _block_diag(blocks, self.num_channels)

    def transition(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Block-diagonal ``(A, Q)``, each ``[..., L, n, d, d]``; see :meth:`MaternKernel.transition`."""
        parts = [k.transition(dt) for k in self.kernels]
        shape = torch.broadcast_shapes(*(a.shape[:-2] for a, _ in parts))
        A = _block_diag([a.expand(*shape, *a.shape[-2:]) for a, _ in parts], None)
        Q = _block_diag([q.expand(*shape, *q.shape[-2:]) for _, q in parts], None)
        return A, Q

    def __add__(self, other: MaternKernel | SumKernel) -> SumKernel:
        return SumKernel([self, other])


def _block_diag(blocks: list[Tensor], num_channels: int | None) -> Tensor:
    """Block-diagonal stack of ``[..., d_i, d_i]`` blocks (leading dims broadcast)."""
    lead = torch.broadcast_shapes(*(b.shape[:-2] for b in blocks))
    if num_channels is not None:
        lead = torch.broadcast_shapes(lead, (num_channels,))
    d = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(*lead, d, d)
    i = 0
    rows = []
    for b in blocks:
        n = b.shape[-1]
        b = b.expand(*lead, n, n)
        left = out[..., :n, :i]
        right = out[..., :n, i + n :]
        rows.append(torch.cat([left, b, right], -1))
        i += n
    return torch.cat(rows, -2)

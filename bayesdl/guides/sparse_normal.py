"""A Normal over a weight tensor whose entries outside an active set are exactly zero."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal, register_kl

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def scatter_active(values: Tensor, index: Tensor, shape: torch.Size) -> Tensor:
    """A dense tensor of ``shape`` holding ``values [s]`` at flat positions ``index [s]`` and
    exactly zero elsewhere (differentiable in ``values``)."""
    n = math.prod(shape)
    return values.new_zeros(n).scatter(0, index, values).view(shape)


class SparseNormal(dist.Normal):
    """``q(W) = prod_{i active} N(w_i | mu_i, sigma_i^2) prod_{i inactive} delta_0(w_i)``.

    A :class:`pyro.distributions.Normal` whose ``loc`` and ``scale`` are the dense views
    (shape ``param_shape``, zeros outside the active set), so samples are exactly zero at
    inactive entries and the local-reparameterisation handlers (which read ``loc`` / ``scale``)
    apply to it unchanged. It also keeps the compact description: the flat positions
    ``index [s]`` and the active means and scales ``[s]``, with which the KL divergence to a
    Normal prior is computed over the active entries only (registered with
    :func:`torch.distributions.kl_divergence`; inactive entries contribute 0, the subspace
    convention of SSVI). ``log_prob`` is the density with respect to Lebesgue measure on the
    active entries and counting measure at 0 on the others (``-inf`` if an inactive entry is
    not 0).

    Args:
        active_loc: means of the active entries ``[s]``.
        active_scale: standard deviations of the active entries ``[s]`` (``> 0``).
        index: flat positions of the active entries in the parameter, ``[s]`` int64, distinct.
        param_shape: the parameter's shape (the distribution's batch shape).

    Example:
        >>> import torch
        >>> from bayesdl.guides import SparseNormal
        >>> q = SparseNormal(torch.tensor([1.0, -2.0]), torch.tensor([0.1, 0.2]),
        ...                  torch.tensor([0, 3]), torch.Size([2, 2]))
        >>> (q.rsample() != 0).sum().item(), q.loc.tolist()
        (2, [[1.0, 0.0], [0.0, -2.0]])

    References:
        J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse
        Subspace Variational Inference*, ICLR 2024.
    """

    def __init__(
        self,
        active_loc: Tensor,
        active_scale: Tensor,
        index: Tensor,
        param_shape: torch.Size,
        *,
        loc: Tensor | None = None,
        scale: Tensor | None = None,
    ):
        param_shape = torch.Size(param_shape)
        if active_loc.dim() != 1 or active_loc.shape != active_scale.shape:
            raise ValueError(
                "active_loc and active_scale must be equally long vectors [s], got shapes "
                f"{tuple(active_loc.shape)} and {tuple(active_scale.shape)}"
            )
        if index.shape != active_loc.shape or index.dtype != torch.long:
            raise ValueError(
                f"index must be an int64 vector of the same length as active_loc "
                f"({active_loc.shape[0]}), got {index.dtype} of shape {tuple(index.shape)}"
            )
        self.active_loc = active_loc
        self.active_scale = active_scale
        self.index = index
        self.param_shape = param_shape
        # the dense views may be passed in (a guide that keeps a handle on them, e.g. to read
        # the gradient of the dense mean); otherwise they are built here
        loc = scatter_active(active_loc, index, param_shape) if loc is None else loc
        scale = scatter_active(active_scale, index, param_shape) if scale is None else scale
        super().__init__(loc, scale, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SparseNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.active_loc, new.active_scale = self.active_loc, self.active_scale
        new.index, new.param_shape = self.index, self.param_shape
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def num_active(self) -> int:
        """Number of active entries ``s``."""
        return int(self.index.shape[0])

    def active_mask(self) -> Tensor:
        """Dense boolean mask of the active entries, shape ``param_shape``."""
        n = math.prod(self.param_shape)
        mask = torch.zeros(n, dtype=torch.bool, device=self.index.device)
        return mask.index_fill_(0, self.index, True).view(self.param_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        k = len(self.param_shape)
        lead = value.shape[: value.dim() - k]
        n = math.prod(self.param_shape)
        flat = value.reshape(lead + (n,))
        z = (flat[..., self.index] - self.active_loc) / self.active_scale
        lp_active = -0.5 * z * z - self.active_scale.log() - _HALF_LOG_2PI
        out = flat.new_zeros(lead + (n,)).index_copy(-1, self.index, lp_active)
        off = (flat != 0) & ~self.active_mask().view(n)
        out = out.masked_fill(off, -math.inf)
        return out.view(lead + self.param_shape).expand(
            torch.broadcast_shapes(lead + self.param_shape, self.batch_shape)
        )

    def entropy(self) -> Tensor:
        h = 0.5 + _HALF_LOG_2PI + self.active_scale.log()
        return scatter_active(h, self.index, self.param_shape).expand(self.batch_shape)


def _active_values(t: Tensor, batch_shape: torch.Size, q: SparseNormal) -> Tensor | None:
    """``t`` (broadcastable to ``batch_shape``) at the active entries of ``q``, ``[s]`` or a
    scalar; ``None`` when ``t`` varies along the leading (particle) dims."""
    t = t.expand(batch_shape)
    if t.dim() == 0 or all(s == 0 for s in t.stride()):
        return t.as_strided((), ())
    for _ in range(t.dim() - len(q.param_shape)):
        if t.shape[0] != 1 and t.stride(0) != 0:
            return None
        t = t[0]
    return t.reshape(-1)[q.index]


@register_kl(SparseNormal, Normal)
def _kl_sparse_normal_normal(q: SparseNormal, p: Normal) -> Tensor:
    """Elementwise ``KL(q || p)`` over the active entries, 0 at the inactive ones."""
    batch_shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    p_loc = _active_values(p.loc, batch_shape, q)
    p_scale = _active_values(p.scale, batch_shape, q)
    if p_loc is not None and p_scale is not None:  # q's own parameters never vary by particle
        var_ratio = (q.active_scale / p_scale).square()
        t = ((q.active_loc - p_loc) / p_scale).square()
        kl = 0.5 * (var_ratio + t - 1.0 - var_ratio.log())
        return scatter_active(kl, q.index, q.param_shape).expand(batch_shape)
    # a prior (or guide) that differs across particles: dense, masked
    mask = q.active_mask()
    safe_scale = torch.where(mask, q.scale, torch.ones_like(q.scale))
    var_ratio = (safe_scale / p.scale).square()
    t = ((q.loc - p.loc) / p.scale).square()
    kl = 0.5 * (var_ratio + t - 1.0 - var_ratio.log())
    return torch.where(mask, kl, torch.zeros_like(kl))


__all__ = ["SparseNormal", "scatter_active"]

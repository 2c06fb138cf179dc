"""Gaussian-process targets for functional-prior matching: function draws at any inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro.distributions as dist
import torch
from pyro.contrib.gp.kernels import (
    RBF,
    Exponential,
    Kernel,
    Matern32,
    Matern52,
)
from torch import Tensor

from bayesdl._validation import check_finite, check_positive, check_tensor

_HYPER_NAMES = ("lengthscale", "variance")
_VECTORISED = (RBF, Exponential, Matern32, Matern52)


def _check_kernel(kernel: Kernel, path: str = "kernel") -> None:
    """Reject non-positive or non-finite hyperparameters anywhere in a (composite) kernel."""
    for attr in ("lengthscale", "variance", "period"):
        if not hasattr(kernel, attr):
            continue
        value = getattr(kernel, attr)
        if not isinstance(value, Tensor):
            continue
        value = value.detach()
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ValueError(
                f"{path}.{attr} must be positive and finite, got {value.tolist()} (a Pyro kernel "
                f"built with a non-positive {attr} stores NaN: its constraint is 'positive')"
            )
    for child in ("kern0", "kern1", "kern"):
        sub = getattr(kernel, child, None)
        if isinstance(sub, Kernel):
            _check_kernel(sub, f"{path}.{child}")


def _isotropic_gram(kernel: Kernel, r2: Tensor) -> Tensor:
    """The correlation ``k(r)/σ²`` of a stationary kernel as a function of ``r² = |Δx/ℓ|²``."""
    if isinstance(kernel, RBF):
        return torch.exp(-0.5 * r2)
    r = r2.clamp(min=1e-30).sqrt()
    if isinstance(kernel, Exponential):
        return torch.exp(-r)
    if isinstance(kernel, Matern32):
        s = math.sqrt(3.0) * r
        return (1 + s) * torch.exp(-s)
    s = math.sqrt(5.0) * r  # Matern52
    return (1 + s + s * s / 3.0) * torch.exp(-s)


class GPTarget:
    """A zero-mean Gaussian-process prior to match, sampled noise-free in float64.

    ``sample(x, S)`` draws ``S`` independent functions at inputs ``x`` ``[M, D]``:
    ``f = L z`` with ``L = chol(K(x, x) + jitter I)`` computed in float64 (the jitter grows ten-fold
    up to ``max_jitter`` if the factorisation fails), returned in ``x``'s dtype.

    Hierarchical targets: with ``hyperpriors`` (``{"lengthscale": d, "variance": d}``), every
    function sample gets its own kernel hyperparameters drawn from their hyper-priors, then its
    own function draw (the marginal is a scale mixture of GPs). This path is vectorised and
    supports the isotropic kernels :class:`~pyro.contrib.gp.kernels.RBF`,
    :class:`~pyro.contrib.gp.kernels.Matern32`, :class:`~pyro.contrib.gp.kernels.Matern52`
    and :class:`~pyro.contrib.gp.kernels.Exponential` (ARD when the lengthscale hyper-prior
    has batch shape ``[D]``). Without hyper-priors any Pyro kernel works (periodic, sums,
    products, ...).

    Args:
        kernel: a :class:`pyro.contrib.gp.kernels.Kernel` with positive hyperparameters.
        hyperpriors: optional hyper-priors by name (``"lengthscale"``, ``"variance"``), each a
            distribution over positive values with batch shape ``[]`` or (lengthscale) ``[D]``.
        jitter: diagonal jitter added before the Cholesky factorisation (``> 0``).
        max_jitter: the largest jitter tried.

    Example:
        >>> import torch
        >>> import pyro.contrib.gp as gp
        >>> target = GPTarget(gp.kernels.RBF(1, lengthscale=torch.tensor(0.6)))
        >>> target.sample(torch.linspace(-3, 3, 50).unsqueeze(-1), 8).shape
        torch.Size([8, 50])

    References:
        C. E. Rasmussen, C. K. I. Williams, *Gaussian Processes for Machine Learning*, 2006;
        B.-H. Tran et al., *All You Need is a Good Functional Prior for Bayesian Deep
        Learning*, JMLR 2022 (hierarchical targets).
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        hyperpriors: Mapping[str, dist.Distribution] | None = None,
        jitter: float = 1e-6,
        max_jitter: float = 1e-2,
    ):
        if not isinstance(kernel, Kernel):
            raise TypeError(
                f"kernel must be a pyro.contrib.gp.kernels.Kernel, got {type(kernel).__name__}"
            )
        _check_kernel(kernel)
        check_positive(jitter, "jitter")
        check_positive(max_jitter, "max_jitter")
        hyperpriors = dict(hyperpriors or {})
        unknown = set(hyperpriors) - set(_HYPER_NAMES)
        if unknown:
            raise ValueError(
                f"hyperpriors may name {_HYPER_NAMES}, got unknown name(s) {sorted(unknown)}"
            )
        if hyperpriors and not isinstance(kernel, _VECTORISED):
            raise ValueError(
                "hyperpriors are supported for the isotropic kernels RBF, Matern32, Matern52 and "
                f"Exponential, got {type(kernel).__name__}"
            )
        for name, d in hyperpriors.items():
            if not isinstance(d, torch.distributions.Distribution):
                raise TypeError(f"hyperpriors[{name!r}] must be a distribution, got {d!r}")
            if d.event_shape != torch.Size():
                raise ValueError(f"hyperpriors[{name!r}] must have an empty event shape")
            ok_batch = d.batch_shape in (torch.Size(), torch.Size([kernel.input_dim]))
            if name == "variance":
                ok_batch = d.batch_shape == torch.Size()
            if not ok_batch:
                raise ValueError(
                    f"hyperpriors[{name!r}] has batch shape {tuple(d.batch_shape)}; expected () "
                    f"{'' if name == 'variance' else f'or ({kernel.input_dim},)'}"
                )
            support = d.support
            lower = getattr(support, "lower_bound", None)
            positive = isinstance(lower, (int, float)) and lower >= 0 and not support.is_discrete
            if not positive:
                raise ValueError(
                    f"hyperpriors[{name!r}] must be a distribution over positive values "
                    f"(e.g. LogNormal, Gamma), got support {support}"
                )
        self.kernel = kernel
        self.hyperpriors = hyperpriors
        self.jitter = float(jitter)
        self.max_jitter = float(max_jitter)

    @property
    def input_dim(self) -> int:
        """Input dimension ``D`` of the kernel."""
        return int(self.kernel.input_dim)

    @property
    def hierarchical(self) -> bool:
        """Whether hyperparameters are drawn afresh for every function sample."""
        return bool(self.hyperpriors)

    def _check_x(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=2)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got {x.dtype}")
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x has input dimension {x.shape[-1]} but the target's kernel has input_dim "
                f"{self.input_dim}"
            )
        return check_finite(x, "x")

    def covariance(self, x: Tensor) -> Tensor:
        """The prior covariance ``K(x, x)`` ``[M, M]`` (float64; with hyper-priors, the
        marginal covariance ``E[K]`` is not closed-form and the kernel's own values are used)."""
        x = self._check_x(x)
        with torch.no_grad():
            return self.kernel(x.double()).detach().to(torch.float64)

    def _grams(self, x: Tensor, num_samples: int) -> Tensor:
        """``[S, M, M]`` float64 Gram matrices, one per function sample (hierarchical)."""
        kernel = self.kernel
        xd = kernel._slice_input(x.double())
        d = xd.shape[-1]
        with torch.no_grad():
            ls = kernel.lengthscale.detach().double()
            var = kernel.variance.detach().double()
        if "lengthscale" in self.hyperpriors:
            ls = self.hyperpriors["lengthscale"].sample((num_samples,)).double()
        if "variance" in self.hyperpriors:
            var = self.hyperpriors["variance"].sample((num_samples,)).double()
        ls = ls.to(xd.device).reshape(-1, 1, ls.shape[-1] if ls.dim() and ls.shape[-1] == d else 1)
        ls = ls.expand(num_samples, 1, ls.shape[-1])
        var = var.to(xd.device).reshape(-1, 1, 1).expand(num_samples, 1, 1)
        scaled = xd.unsqueeze(0) / ls  # [S, M, D]
        r2 = torch.cdist(scaled, scaled).square()
        return var * _isotropic_gram(kernel, r2)

    def _cholesky(self, gram: Tensor) -> Tensor:
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        jitter = self.jitter
        while True:
            chol, info = torch.linalg.cholesky_ex(gram + jitter * eye)
            if not bool((info > 0).any()):
                return chol
            if jitter >= self.max_jitter:
                raise ValueError(
                    f"the target's Gram matrix is not positive definite even with jitter "
                    f"{jitter:g}; are inputs duplicated or the lengthscale huge?"
                )
            jitter *= 10.0

    def sample(self, x: Tensor, num_samples: int) -> Tensor:
        """Draw ``num_samples`` functions at ``x`` ``[M, D]``.

        Randomness comes from the global torch RNG (seed with ``pyro.set_rng_seed``).

        Returns:
            ``[num_samples, M]`` in ``x``'s dtype and on its device.
        """
        x = self._check_x(x)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        m = x.shape[0]
        if self.hierarchical:
            chol = self._cholesky(self._grams(x, num_samples))  # [S, M, M]
            z = torch.randn(num_samples, m, 1, dtype=torch.float64, device=x.device)
            f = (chol @ z).squeeze(-1)
        else:
            chol = self._cholesky(self.covariance(x))
            z = torch.randn(num_samples, m, dtype=torch.float64, device=x.device)
            f = z @ chol.T
        return f.to(x.dtype)

    def __repr__(self) -> str:
        hyper = f", hyperpriors={sorted(self.hyperpriors)}" if self.hyperpriors else ""
        return f"GPTarget({type(self.kernel).__name__}{hyper})"


__all__ = ["GPTarget"]

"""Zero-mean Gaussian weights with a learnable scale per layer or per parameter entry."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bayesdl._validation import check_positive
from bayesdl.priors._fittable import FittablePrior, SiteFilter, softplus_inverse
from bayesdl.priors.prior import WeightSite, as_event

_PER = ("layer", "parameter")


class GaussianWeightPrior(FittablePrior):
    """``w ~ N(0, (c · σ)²)`` with ``σ = softplus(ρ)`` learnable, per layer or per entry.

    ``per="layer"``: one ``σ`` for each parameter tensor (the weight and the bias of each layer
    separately); ``per="parameter"``: one ``σ`` per entry. ``c`` is the fan-in factor
    (``1/√fan_in`` for weights of ordinary layers, 1 for
    :class:`~bayesdl.priors.functional.ScaledLinear` weights and for biases), so with
    ``σ = 1`` this is the fixed Neal-scaled ``N(0, 1)`` prior of the scaled parameterisation.
    Fitted by :func:`~bayesdl.priors.functional.fit_functional_prior` (the "GPi-G" prior of
    Tran et al.). Once frozen (:meth:`freeze`), a per-layer prior is a plain scalar Normal per
    site, which the fast :class:`~bayesdl.infer.mcmc.BNNPotential` path handles in closed form.

    Args:
        net: the plain network (or a BNN).
        per: ``"layer"`` or ``"parameter"``.
        init_scale: initial ``σ`` (default ``softplus(1) ≈ 1.313``, as in the reference code).
        site_filter, fan_in_scaling: see :class:`~bayesdl.priors.FittablePrior`.

    Example:
        >>> import torch
        >>> from bayesdl.priors.functional import GaussianWeightPrior, scaled_mlp
        >>> prior = GaussianWeightPrior(scaled_mlp((1, 16, 1)), init_scale=1.0)
        >>> round(float(prior.scale("0.weight").detach()), 6)
        1.0
        >>> prior.rsample_weights(4)["2.weight"].shape
        torch.Size([4, 1, 16])

    References:
        B.-H. Tran et al., *All You Need is a Good Functional Prior for Bayesian Deep
        Learning*, JMLR 2022.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        per: str = "layer",
        init_scale: float = math.log1p(math.e),
        site_filter: SiteFilter | None = None,
        fan_in_scaling: bool | str = "auto",
    ):
        super().__init__(net, site_filter=site_filter, fan_in_scaling=fan_in_scaling)
        if per not in _PER:
            raise ValueError(f"per must be one of {_PER}, got {per!r}")
        check_positive(init_scale, "init_scale")
        rho = softplus_inverse(float(init_scale))
        self.per = per
        self.raw_scale = nn.ParameterDict(
            {
                s.key: nn.Parameter(
                    torch.full(() if per == "layer" else s.shape, rho, dtype=self._dtype)
                )
                for s in self.specs
            }
        )

    def scale(self, name: str) -> Tensor:
        """``σ`` of parameter ``name`` (before the fan-in factor): ``[]`` or the parameter's shape."""
        return F.softplus(self.raw_scale[self.spec(name).key])

    def distribution(self, site: WeightSite) -> dist.Distribution:
        spec = self.spec(site)
        p = site.param
        std = (spec.factor * self.scale(spec.name)).to(p)
        return (
            as_event(dist.Normal(p.new_zeros(()), std), p.shape)
            if std.dim() == 0
            else (dist.Normal(p.new_zeros(p.shape), std).to_event(p.dim()))
        )

    def rsample_weights(self, num_samples: int) -> dict[str, Tensor]:
        out = {}
        for spec in self.specs:
            std = spec.factor * self.scale(spec.name)
            eps = torch.randn(num_samples, *spec.shape, dtype=std.dtype, device=std.device)
            out[spec.name] = eps * std
        return out

    def extra_repr(self) -> str:
        return f"per={self.per!r}, sites={len(self.specs)}"


__all__ = ["GaussianWeightPrior"]

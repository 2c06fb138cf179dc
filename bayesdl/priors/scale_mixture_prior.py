"""Scale-mixture prior: an inverse-gamma variance shared by the last layer's weights."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor

from bayesdl._validation import check_positive
from bayesdl.priors.layerwise_normal_prior import LayerwiseNormalPrior
from bayesdl.priors.prior import Prior, WeightSite


class ScaleMixturePrior(Prior):
    """Neal-scaled Normal weights with an inverse-gamma variance on the last layer.

    The last layer's weights and bias share one variance ``v ~ InverseGamma(a, b)`` (sample
    site ``"<last layer>.variance"``), and given ``v`` they are
    ``Normal(0, v * s^2)`` with ``s`` the base prior's scale. Marginally each last-layer weight
    is Student-t with ``2a`` degrees of freedom and scale ``s * sqrt(b / a)``; in the
    infinite-width limit the network is a Student-t process (a scale mixture of NNGPs). Earlier
    layers keep the base prior.

    Args:
        base: prior of every layer and the conditional scale of the last one (default
            ``LayerwiseNormalPrior("radford")``); must provide ``scale(site)``.
        concentration: ``a > 0`` of the inverse-gamma.
        rate: ``b > 0`` of the inverse-gamma.
        last_layer: dotted module name of the layer to mix; default the module owning the last
            selected weight matrix.

    Example:
        >>> from bayesdl.priors import ScaleMixturePrior
        >>> prior = ScaleMixturePrior(concentration=2.0, rate=2.0)

    References:
        H. Lee, E. Yun, H. Yang, J. Lee, *Scale Mixtures of Neural Network Gaussian Processes*,
        ICLR 2022.
    """

    def __init__(
        self,
        base: LayerwiseNormalPrior | None = None,
        *,
        concentration: float = 2.0,
        rate: float = 2.0,
        last_layer: str | None = None,
    ):
        super().__init__()
        base = LayerwiseNormalPrior("radford") if base is None else base
        if not hasattr(base, "scale"):
            raise TypeError("base must be a prior with a scale(site) method (LayerwiseNormalPrior)")
        check_positive(concentration, "concentration")
        check_positive(rate, "rate")
        self.base = base
        self.concentration = float(concentration)
        self.rate = float(rate)
        self.last_layer = last_layer

    def _last_layer(self, sites: list[WeightSite]) -> str:
        if self.last_layer is not None:
            if not any(s.module_name == self.last_layer for s in sites):
                raise ValueError(
                    f"last_layer={self.last_layer!r} owns no selected parameter; selected: "
                    f"{[s.name for s in sites]}"
                )
            return self.last_layer
        weights = [s for s in sites if s.is_weight]
        if not weights:
            raise ValueError("ScaleMixturePrior needs at least one selected weight matrix")
        return weights[-1].module_name

    def variance_site(self, sites: list[WeightSite]) -> str:
        """Name of the inverse-gamma variance sample site."""
        last = self._last_layer(sites)
        return f"{last}.variance" if last else "variance"

    def distribution(self, site: WeightSite) -> dist.Distribution:
        """The base prior (used for layers other than the last)."""
        return self.base.distribution(site)

    def sample(self, sites: list[WeightSite]) -> dict[str, Tensor]:
        last = self._last_layer(sites)
        template = sites[0].param
        variance = pyro.sample(
            self.variance_site(sites),
            dist.InverseGamma(
                template.new_full((), self.concentration), template.new_full((), self.rate)
            ),
        )
        values = {}
        for site in sites:
            if site.module_name != last:
                values[site.name] = pyro.sample(site.name, self.base.distribution(site))
                continue
            shape = site.param.shape
            std = variance.sqrt().reshape(variance.shape + (1,) * len(shape)) * self.base.scale(
                site
            )
            prior = dist.Normal(site.param.new_zeros(shape), std.expand(variance.shape + shape))
            values[site.name] = pyro.sample(site.name, prior.to_event(len(shape)))
        return values

    def extra_repr(self) -> str:
        return (
            f"concentration={self.concentration}, rate={self.rate}, last_layer={self.last_layer!r}"
        )

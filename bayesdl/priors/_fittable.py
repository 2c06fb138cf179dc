"""Shared bookkeeping of the priors whose hyperparameters are fitted (functional priors)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bayesdl.priors.prior import Prior, WeightSite

SiteFilter = Callable[[str, nn.Module], bool]


def softplus_inverse(value: float) -> float:
    """``ρ`` with ``softplus(ρ) = value`` (``value > 0``)."""
    if not value > 0:
        raise ValueError(f"value must be > 0, got {value!r}")
    return value + math.log(-math.expm1(-value))


@dataclass(frozen=True)
class SiteSpec:
    """What a fittable prior records about one random parameter.

    Attributes:
        name: dotted parameter name (the sample-site name).
        key: the name with dots replaced, usable as an ``nn.ParameterDict`` key.
        shape: the parameter's shape.
        is_weight: a matrix/kernel (2 or more dims) rather than a vector.
        factor: the fan-in factor ``c``: the prior scale of the stored parameter is ``c · σ``
            (``1/√fan_in`` for weights of ordinary layers, 1 for :class:`ScaledLinear` weights,
            which divide by ``√fan_in`` in their forward pass, and for biases).
    """

    name: str
    key: str
    shape: torch.Size
    is_weight: bool
    factor: float


def _is_scaled(module: nn.Module) -> bool:
    from bayesdl.priors.functional.scaled_linear import ScaledLinear

    return isinstance(module, ScaledLinear)


def _net_sites(
    net: nn.Module, site_filter: SiteFilter | None
) -> tuple[nn.Module, list[WeightSite]]:
    from bayesdl.nn.bnn import BNN

    if isinstance(net, BNN):
        return net.net, net.sites
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"net must be a torch.nn.Module or a bayesdl.nn.BNN, got {type(net).__name__}"
        )
    sites = []
    for name, param in net.named_parameters():
        module = net.get_submodule(name.rpartition(".")[0])
        if site_filter is None or site_filter(name, module):
            sites.append(WeightSite(name, param, module))
    if not sites:
        raise ValueError("the network has no (selected) parameter to put a prior on")
    return net, sites


class FittablePrior(Prior):
    """Base of priors with trainable hyperparameters ``ψ`` and reparameterised weight draws.

    Subclasses set up ``ψ`` per recorded site and implement :meth:`rsample_weights`, which
    draws ``S`` independent weight sets differentiably in ``ψ`` (the input of functional-prior
    matching).

    Args:
        net: the plain network (or a :class:`~bayesdl.nn.BNN`, whose random sites are used).
        site_filter: ``(name, module) -> bool`` selecting the random parameters of a plain
            network (default: all).
        fan_in_scaling: ``"auto"`` (weights of ordinary layers get the factor ``1/√fan_in``,
            :class:`~bayesdl.priors.functional.ScaledLinear` weights and biases 1), ``True``
            (every weight) or ``False`` (none).

    Example:
        >>> import torch
        >>> from bayesdl.priors import HierarchicalGammaPrior
        >>> prior = HierarchicalGammaPrior(torch.nn.Linear(4, 2))
        >>> [(s.name, round(s.factor, 3)) for s in prior.specs]
        [('weight', 0.5), ('bias', 1.0)]
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        site_filter: SiteFilter | None = None,
        fan_in_scaling: bool | str = "auto",
    ):
        super().__init__()
        if fan_in_scaling not in ("auto", True, False):
            raise ValueError(
                f"fan_in_scaling must be 'auto', True or False, got {fan_in_scaling!r}"
            )
        _, sites = _net_sites(net, site_filter)
        specs = []
        for site in sites:
            scale = (
                site.is_weight and not _is_scaled(site.module)
                if fan_in_scaling == "auto"
                else bool(fan_in_scaling) and site.is_weight
            )
            factor = 1.0 / math.sqrt(site.fan_in) if scale else 1.0
            key = site.name.replace(".", "__")
            specs.append(SiteSpec(site.name, key, site.param.shape, site.is_weight, factor))
        self.specs = specs
        self._by_name = {s.name: s for s in specs}
        template = sites[0].param
        self._dtype = template.dtype

    @property
    def site_names(self) -> list[str]:
        """Names of the parameters this prior covers."""
        return [s.name for s in self.specs]

    def spec(self, site: WeightSite | str) -> SiteSpec:
        """The recorded :class:`SiteSpec` of a site, checked against its shape."""
        name = site if isinstance(site, str) else site.name
        spec = self._by_name.get(name)
        if spec is None:
            raise ValueError(
                f"{type(self).__name__} was built for the parameters {self.site_names}; it has no "
                f"hyperparameters for {name!r} (build it from the same network)"
            )
        if not isinstance(site, str) and tuple(site.param.shape) != tuple(spec.shape):
            raise ValueError(
                f"parameter {name!r} has shape {tuple(site.param.shape)} but the prior was built "
                f"for shape {tuple(spec.shape)}"
            )
        return spec

    def rsample_weights(self, num_samples: int) -> dict[str, Tensor]:
        """``num_samples`` independent weight sets ``{name: [S, *shape]}``, reparameterised
        (differentiable in the hyperparameters; global torch RNG)."""
        raise NotImplementedError

    def freeze(self) -> FittablePrior:
        """Stop gradients to the hyperparameters (a fitted prior used for inference); returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self


__all__ = ["FittablePrior", "SiteSpec", "softplus_inverse"]

"""Shared machinery of bayesdl's guides: one set of parameters per latent site of a BNN."""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from torch import Tensor, nn

from bayesdl.nn.bnn import BNN

_INIT_LOCS = ("net", "fan_in", "prior")


class LatentSite(NamedTuple):
    """A latent sample site of a BNN model as seen by a guide."""

    name: str
    shape: torch.Size
    support: constraints.Constraint
    is_weight: bool
    fan_in: int


def _key(name: str) -> str:
    return name.replace(".", "__")


class SiteGuide(nn.Module):
    """Base of guides with eagerly created, module-local parameters for every latent site.

    The sites are read from one blocked trace of ``bnn.sample_latents()``: the network's random
    parameters and any hyper-latents (a scale-mixture variance, a sampled noise scale).
    Parameters live on the module (``state_dict`` is the whole guide state), on the network's
    device and dtype. Sites with constrained support are handled in unconstrained space through
    ``biject_to(support)``.
    """

    def __init__(self, bnn: BNN, *, init_loc: str = "net"):
        super().__init__()
        if not isinstance(bnn, BNN):
            raise TypeError(
                f"bnn must be a bayesdl.nn.BNN, got {type(bnn).__name__}; for other Pyro models "
                "use pyro.infer.autoguide.AutoNormal"
            )
        if init_loc not in _INIT_LOCS:
            raise ValueError(f"init_loc must be one of {_INIT_LOCS}, got {init_loc!r}")
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(bnn.sample_latents).get_trace()
        weight_sites = {s.name: s for s in bnn.sites}
        self._sites: list[LatentSite] = []
        self.locs = nn.ParameterDict()
        for name, node in trace.nodes.items():
            if node["type"] != "sample" or node["is_observed"]:
                continue
            fn = node["fn"]
            shape = fn.batch_shape + fn.event_shape
            support = fn.support
            w = weight_sites.get(name)
            site = LatentSite(
                name, shape, support, w is not None and w.is_weight, w.fan_in if w else 1
            )
            self._sites.append(site)
            transform = biject_to(support)
            with torch.no_grad():
                if w is not None and init_loc == "net":
                    value = w.param.detach().clone()
                elif w is not None and init_loc == "fan_in":
                    bound = 1.0 / math.sqrt(site.fan_in) if w.is_weight else 0.0
                    value = torch.empty_like(w.param).uniform_(-bound, bound)
                elif init_loc == "prior" or not _finite_mean(fn):
                    value = node["value"].detach().clone()
                else:
                    value = fn.mean.detach().clone()
                unconstrained = transform.inv(value).reshape(shape)
            self.locs[_key(name)] = nn.Parameter(unconstrained.contiguous())

    @property
    def site_names(self) -> list[str]:
        """Names of the latent sites this guide covers."""
        return [s.name for s in self._sites]

    @property
    def sites(self) -> list[LatentSite]:
        """The latent sites with their shapes and supports."""
        return list(self._sites)

    def loc(self, name: str) -> Tensor:
        """The unconstrained location of site ``name``."""
        return self.locs[_key(name)]

    def site_distribution(self, site: LatentSite) -> dist.Distribution:
        """The guide's distribution of one site (event shape = site shape)."""
        raise NotImplementedError

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        """Sample every latent site (the model's arguments are accepted and ignored)."""
        return {s.name: pyro.sample(s.name, self.site_distribution(s)) for s in self._sites}

    @torch.no_grad()
    def median(self) -> dict[str, Tensor]:
        """Posterior median of each site in constrained space (the mean for real sites)."""
        return {s.name: biject_to(s.support)(self.loc(s.name)).detach() for s in self._sites}


def _finite_mean(fn: dist.Distribution) -> bool:
    try:
        return bool(torch.isfinite(fn.mean).all())
    except NotImplementedError:
        return False


def constrain(d: dist.Distribution, support: constraints.Constraint) -> dist.Distribution:
    """Push an unconstrained distribution through ``biject_to(support)`` (no-op for reals)."""
    if (
        support is constraints.real
        or isinstance(support, constraints.independent)
        and (support.base_constraint is constraints.real)
    ):
        return d
    return dist.TransformedDistribution(d, [biject_to(support)])

"""Independent, identically distributed weight priors."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

from bayesdl.priors.prior import Prior, WeightSite, as_event, move_distribution


class IIDPrior(Prior):
    """Every selected weight drawn independently from one scalar distribution.

    Args:
        distribution: a scalar (empty batch and event shape) distribution, e.g.
            ``dist.Normal(0., 1.)``, ``dist.Laplace(0., 0.1)`` or ``dist.StudentT(3., 0., 1.)``.
            Its tensors are moved to each parameter's device and dtype when used.

    Example:
        >>> import pyro.distributions as dist
        >>> import torch
        >>> from bayesdl.priors import IIDPrior, WeightSite
        >>> prior = IIDPrior(dist.Normal(0.0, 1.0))
        >>> w = torch.nn.Linear(3, 2).weight
        >>> prior.distribution(WeightSite("weight", w, None)).event_shape
        torch.Size([2, 3])
    """

    def __init__(self, distribution: dist.Distribution):
        super().__init__()
        if not isinstance(distribution, TorchDistributionMixin):
            raise TypeError(
                "distribution must be a pyro.distributions distribution (e.g. "
                f"pyro.distributions.Normal), got {type(distribution).__module__}."
                f"{type(distribution).__name__}"
            )
        if distribution.batch_shape != torch.Size() or distribution.event_shape != torch.Size():
            raise ValueError(
                "distribution must be scalar (empty batch and event shape), got batch_shape="
                f"{tuple(distribution.batch_shape)}, event_shape={tuple(distribution.event_shape)}"
            )
        self.base = distribution

    def distribution(self, site: WeightSite) -> dist.Distribution:
        base = move_distribution(self.base, site.param)
        return as_event(base, site.param.shape)

    def extra_repr(self) -> str:
        return repr(self.base)

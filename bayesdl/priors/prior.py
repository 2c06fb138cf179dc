"""The weight-prior interface shared by every prior in :mod:`bayesdl.priors`."""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn


class WeightSite(NamedTuple):
    """A network parameter selected to become a Pyro sample site.

    Attributes:
        name: dotted path of the parameter in the network (``"0.weight"``); also the site name.
        param: the parameter itself (a template: shape, device, dtype, and an initial value).
        module: the module that owns the parameter (``net.get_submodule(prefix)``).
    """

    name: str
    param: Tensor
    module: nn.Module

    @property
    def module_name(self) -> str:
        """Dotted path of the owning module (``""`` for the root)."""
        return self.name.rpartition(".")[0]

    @property
    def fan_in(self) -> int:
        """Number of inputs per output unit (``shape[1] * prod(shape[2:])`` for weights, 1 for vectors)."""
        shape = self.param.shape
        if len(shape) < 2:
            return 1
        return int(shape[1] * math.prod(shape[2:]))

    @property
    def fan_out(self) -> int:
        """Number of outputs per input unit (``shape[0] * prod(shape[2:])`` for weights, ``numel`` otherwise)."""
        shape = self.param.shape
        if len(shape) < 2:
            return int(self.param.numel())
        return int(shape[0] * math.prod(shape[2:]))

    @property
    def is_weight(self) -> bool:
        """Whether the parameter is a weight matrix/kernel (2 or more dimensions)."""
        return self.param.dim() >= 2


class Prior(nn.Module):
    """Base class of weight priors.

    A prior maps each selected network parameter (a :class:`WeightSite`) to a
    :class:`pyro.distributions.Distribution` whose event shape is the parameter's shape and
    whose batch shape is empty, on the parameter's device and dtype. Priors are ``nn.Module`` s
    so that their hyperparameters move with ``.to(device)``, are saved in ``state_dict`` and can
    be fitted (the functional-prior matcher fits them).

    Subclasses implement :meth:`distribution`; hierarchical priors override :meth:`sample` to
    draw their hyper-latent sites first.
    """

    def distribution(self, site: WeightSite) -> dist.Distribution:
        """The prior of one parameter: event shape ``site.param.shape``, empty batch shape."""
        raise NotImplementedError

    def sample(self, sites: list[WeightSite]) -> dict[str, Tensor]:
        """Draw every selected parameter as a Pyro sample site named ``site.name``.

        Args:
            sites: the selected parameters, in ``net.named_parameters()`` order.

        Returns:
            a dict from site name to the sampled value, of shape ``[*batch, *param.shape]``
            where ``batch`` comes from enclosing (particle) plates.
        """
        return {site.name: pyro.sample(site.name, self.distribution(site)) for site in sites}


def as_event(base: dist.Distribution, shape: torch.Size) -> dist.Distribution:
    """Expand a scalar distribution to ``shape`` and declare all of it as event dims."""
    return base.expand(shape).to_event(len(shape))


def move_distribution(d: dist.Distribution, like: Tensor) -> dist.Distribution:
    """Rebuild a distribution with its tensor arguments on ``like``'s device and dtype.

    Works for distributions constructed from their ``arg_constraints`` names (Normal, Laplace,
    StudentT, Uniform, Gamma, ...). Returns ``d`` itself when nothing needs to move.
    """
    kwargs = {}
    moved = False
    for key in d.arg_constraints:
        if key not in d.__dict__:
            continue
        value = d.__dict__[key]
        if isinstance(value, Tensor):
            dtype = like.dtype if value.is_floating_point() else value.dtype
            if value.device != like.device or value.dtype != dtype:
                value = value.to(device=like.device, dtype=dtype)
                moved = True
        kwargs[key] = value
    if not moved:
        return d
    try:
        return type(d)(**kwargs)
    except TypeError as e:  # pragma: no cover - exotic distributions
        raise TypeError(
            f"cannot move a {type(d).__name__} prior to {like.device}/{like.dtype}; "
            "build the distribution on the network's device and dtype"
        ) from e

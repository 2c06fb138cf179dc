"""Zero-mean Normal priors whose weight scale follows each layer's fan-in."""

from __future__ import annotations

import math

import pyro.distributions as dist

from bayesdl._validation import check_positive
from bayesdl.priors.prior import Prior, WeightSite, as_event

_METHODS = ("radford", "neal", "xavier", "kaiming")


class LayerwiseNormalPrior(Prior):
    """``w ~ Normal(0, s_l^2)`` with a per-layer scale ``s_l`` set by the layer's fan-in/out.

    For a weight of shape ``[out, in, *kernel]`` with ``fan_in = in * prod(kernel)`` and
    ``fan_out = out * prod(kernel)``:

    * ``"radford"`` (alias ``"neal"``): ``s = weight_scale / sqrt(fan_in)`` — Neal's scaling, whose
      infinite-width limit is a Gaussian process;
    * ``"xavier"``: ``s = weight_scale * sqrt(2 / (fan_in + fan_out))``;
    * ``"kaiming"``: ``s = weight_scale * sqrt(2 / fan_in)``.

    One-dimensional parameters (biases, normalisation gains) get ``s = bias_scale``.

    Args:
        method: one of ``"radford"``, ``"neal"``, ``"xavier"``, ``"kaiming"``.
        weight_scale: multiplies the fan-based scale of weights (``> 0``).
        bias_scale: standard deviation of 1-D parameters (``> 0``).

    Example:
        >>> import torch
        >>> from bayesdl.priors import LayerwiseNormalPrior, WeightSite
        >>> prior = LayerwiseNormalPrior("radford")
        >>> layer = torch.nn.Linear(100, 10)
        >>> float(prior.scale(WeightSite("weight", layer.weight, layer)))
        0.1

    References:
        R. M. Neal, *Bayesian Learning for Neural Networks*, 1996.
    """

    def __init__(
        self, method: str = "radford", *, weight_scale: float = 1.0, bias_scale: float = 1.0
    ):
        super().__init__()
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        check_positive(weight_scale, "weight_scale")
        check_positive(bias_scale, "bias_scale")
        self.method = "radford" if method == "neal" else method
        self.weight_scale = float(weight_scale)
        self.bias_scale = float(bias_scale)

    def scale(self, site: WeightSite) -> float:
        """The prior standard deviation of every entry of ``site``'s parameter."""
        if not site.is_weight:
            return self.bias_scale
        if self.method == "radford":
            return self.weight_scale / math.sqrt(site.fan_in)
        if self.method == "xavier":
            return self.weight_scale * math.sqrt(2.0 / (site.fan_in + site.fan_out))
        return self.weight_scale * math.sqrt(2.0 / site.fan_in)

    def distribution(self, site: WeightSite) -> dist.Distribution:
        p = site.param
        base = dist.Normal(p.new_zeros(()), p.new_full((), self.scale(site)))
        return as_event(base, p.shape)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, weight_scale={self.weight_scale}, bias_scale={self.bias_scale}"

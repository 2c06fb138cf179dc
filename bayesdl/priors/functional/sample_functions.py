"""Function draws of a weight prior: many weight sets through one batched forward pass."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bayesdl.nn.vectorized_forward import vectorized_forward
from bayesdl.priors._fittable import FittablePrior


def prior_functions(
    net: nn.Module,
    prior: FittablePrior,
    x: Tensor,
    num_samples: int,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """``num_samples`` functions of the network under the prior, evaluated at ``x``.

    One independent weight set per function (:meth:`FittablePrior.rsample_weights`); all of them
    go through the network in one ``vmap``-ed ``functional_call``, not a Python loop.
    Differentiable in the prior's hyperparameters.

    Args:
        net: the plain network (its own parameter values are replaced, not used).
        prior: a fittable prior built for ``net``.
        x: inputs ``[M, D]``.
        num_samples: ``S``.
        chunk_size: evaluate at most this many weight sets at once.

    Returns:
        ``[S, M, K]`` (a trailing output dim of 1 is added for networks returning ``[M]``).

    Example:
        >>> import torch
        >>> from bayesdl.priors.functional import GaussianWeightPrior, scaled_mlp
        >>> net = scaled_mlp((1, 32, 2))
        >>> prior_functions(net, GaussianWeightPrior(net), torch.randn(10, 1), 7).shape
        torch.Size([7, 10, 2])
    """
    params = prior.rsample_weights(num_samples)
    shapes = {name: spec.shape for name, spec in zip(prior.site_names, prior.specs, strict=True)}
    f = vectorized_forward(net, params, x, shapes=shapes, chunk_size=chunk_size)
    if f.dim() == 2:
        f = f.unsqueeze(-1)
    if f.dim() != 3:
        raise ValueError(
            f"the network must map inputs [M, D] to outputs [M, K] (or [M]); got function draws "
            f"of shape {tuple(f.shape)}"
        )
    return f


def _first_linear_in_features(net: nn.Module) -> int | None:
    from bayesdl.priors.functional.scaled_linear import ScaledLinear

    for module in net.modules():
        if isinstance(module, (nn.Linear, ScaledLinear)):
            return int(module.in_features)
    return None


def network_output_dim(net: nn.Module, prior: FittablePrior, x: Tensor) -> int:
    """``K``, found from one draw; raises a ``ValueError`` if ``x`` does not fit the network."""
    expected = _first_linear_in_features(net)
    if expected is not None and x.shape[-1] != expected:
        raise ValueError(
            f"the measurement set has input dimension {x.shape[-1]} but the network's first "
            f"linear layer takes {expected} inputs"
        )
    try:
        with torch.no_grad():
            f = prior_functions(net, prior, x, 1)
    except RuntimeError as e:
        raise ValueError(
            f"the network cannot be evaluated at measurement inputs of shape {tuple(x.shape)}: {e}"
        ) from e
    return int(f.shape[-1])


__all__ = ["network_output_dim", "prior_functions"]

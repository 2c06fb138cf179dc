"""One batched forward pass of a plain network over many weight particles."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


def particle_batch_shape(params: dict[str, Tensor], shapes: dict[str, torch.Size]) -> torch.Size:
    """The broadcast batch shape of parameter values ``[*batch, *shape]``.

    Args:
        params: sampled values by parameter name.
        shapes: each parameter's own shape.

    Raises:
        ValueError: if a value's trailing dims do not match its parameter's shape.
    """
    batch_shapes = []
    for name, value in params.items():
        shape = shapes[name]
        n = value.dim() - len(shape)
        if n < 0 or tuple(value.shape[n:]) != tuple(shape):
            raise ValueError(
                f"value for parameter {name!r} has shape {tuple(value.shape)}, which does not end "
                f"in the parameter's shape {tuple(shape)}"
            )
        batch_shapes.append(value.shape[:n])
    if not batch_shapes:
        return torch.Size()
    try:
        return torch.broadcast_shapes(*batch_shapes)
    except RuntimeError as e:
        shown = ", ".join(f"{n!r}: {tuple(b)}" for n, b in zip(params, batch_shapes, strict=True))
        raise ValueError(
            f"the particle dims of the parameter values do not broadcast ({shown})"
        ) from e


def vectorized_forward(
    net: nn.Module,
    params: dict[str, Tensor],
    x: Tensor,
    *,
    shapes: dict[str, torch.Size],
    unbatched: dict[str, Tensor] | None = None,
    batch_shape: torch.Size | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Evaluate ``net(x)`` at every weight particle in one batched call.

    Parameter values carry leading particle dims ``[*batch, *shape]``; they are broadcast,
    flattened to ``K = prod(batch)`` particles, and ``torch.func.functional_call`` is mapped
    over them with ``torch.func.vmap`` (``randomness="different"``, so dropout and noise differ
    per particle). Parameters not in ``params`` keep the module's own values.

    Args:
        net: a plain ``nn.Module``.
        params: sampled values by dotted parameter name, ``[*batch, *shape]``.
        x: inputs ``[B, ...]`` shared by all particles.
        shapes: each parameter's own shape (to split batch from parameter dims).
        unbatched: extra tensors passed to ``functional_call`` unchanged for all particles.
        batch_shape: force this particle batch shape (broadcast with the values').
        chunk_size: evaluate at most this many particles at a time (memory bound).

    Returns:
        outputs ``[*batch, B, *out]`` (``[B, *out]`` when there is no particle dim).

    Example:
        >>> import torch
        >>> from bayesdl.nn import vectorized_forward
        >>> net = torch.nn.Linear(3, 2)
        >>> w = torch.randn(8, 2, 3)
        >>> vectorized_forward(net, {"weight": w}, torch.randn(5, 3),
        ...                    shapes={"weight": net.weight.shape}).shape
        torch.Size([8, 5, 2])
    """
    unbatched = {} if unbatched is None else unbatched
    batch = particle_batch_shape(params, shapes)
    if batch_shape is not None:
        batch = torch.broadcast_shapes(batch, batch_shape)
    if len(batch) == 0:
        return functional_call(net, {**params, **unbatched}, (x,))
    num = math.prod(batch)
    flat = {
        name: value.expand(batch + shapes[name]).reshape((num,) + tuple(shapes[name]))
        for name, value in params.items()
    }
    index = torch.arange(num, device=x.device)

    def one_particle(p: dict[str, Tensor], _i: Tensor) -> Tensor:
        return functional_call(net, {**p, **unbatched}, (x,))

    out = vmap(one_particle, in_dims=(0, 0), randomness="different", chunk_size=chunk_size)(
        flat, index
    )
    return out.reshape(batch + out.shape[1:])

"""Cost accounting of (sparse) Bayesian networks: active parameters, model size, training FLOPs.

FLOPs are counted for the ``nn.Linear`` / ``nn.Conv2d`` weight multiplications only (biases,
activations, pooling, the loss and the optimiser are left out), one multiply-add = 2 FLOPs.
A layer with ``a`` random (active) weights whose output has ``P`` spatial positions per example
(``P = 1`` for a linear layer, ``H_out * W_out`` for a convolution) costs per example:

* forward: ``2 a P`` per path; a Gaussian weight under the local reparameterisation trick has
  two paths, the mean ``x * M`` and the variance ``x^2 * S^2`` (flipout likewise: the mean and
  the perturbation), a deterministic weight one;
* backward: the same again for the weight gradient, and again for the input gradient except
  in the first layer (whose input is the data);
* a subspace update of SSVI needs the gradient of the *dense* mean once: ``2 n P`` for a layer
  with ``n`` entries, every ``update_every`` steps (the removal scores and top-k are ``O(n)``
  and left out).

This is the accounting of the SSVI paper's "training FLOPs" (its exact convention is not
published; this one is stated here): what a sparse kernel would execute. On CPU and GPU the
layers here run dense kernels on zero-padded weights, so wall-clock time does not shrink in
proportion; measure it separately.

References:
    J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse Subspace
    Variational Inference*, ICLR 2024; U. Evci et al., *Rigging the Lottery* (RigL), ICML 2020.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from bayesdl._validation import check_positive_int, check_tensor
from bayesdl.nn.bnn import BNN

__all__ = [
    "FlopCount",
    "LayerCost",
    "ModelSize",
    "active_weights",
    "layer_costs",
    "model_size",
    "training_flops",
]

_LAYERS = (nn.Linear, nn.Conv2d)


class LayerCost(NamedTuple):
    """One Linear / Conv2d weight of a network.

    Attributes:
        name: the weight's dotted name (``"3.weight"``).
        num_entries: ``n``, entries of the weight.
        positions: ``P``, output positions per example.
        order: position in the forward pass (0 = first layer run).
    """

    name: str
    num_entries: int
    positions: int
    order: int


class FlopCount(NamedTuple):
    """Training FLOPs.

    Attributes:
        forward: FLOPs of the forward passes.
        backward: FLOPs of the backward passes.
        update: FLOPs of the dense gradients of subspace updates.
    """

    forward: float
    backward: float
    update: float

    @property
    def total(self) -> float:
        """``forward + backward + update``."""
        return self.forward + self.backward + self.update


def layer_costs(net: nn.Module | BNN, example: Tensor) -> list[LayerCost]:
    """Shapes of every ``nn.Linear`` / ``nn.Conv2d`` weight, from one forward pass.

    Args:
        net: a plain network or a :class:`~bayesdl.nn.BNN` (its ``net`` is used, with the
            weights it currently holds).
        example: one input batch ``[B, ...]`` (only shapes matter; ``B = 1`` suffices).

    Returns:
        the layers in forward order.
    """
    check_tensor(example, "example")
    module = net.net if isinstance(net, BNN) else net
    if not isinstance(module, nn.Module):
        raise TypeError(f"net must be an nn.Module or a BNN, got {type(net).__name__}")
    names = {m: n for n, m in module.named_modules() if isinstance(m, _LAYERS)}
    seen: list[LayerCost] = []

    def hook(m: nn.Module, inputs: Any, output: Tensor) -> None:
        b = inputs[0].shape[0] if inputs[0].dim() > 1 else 1
        per_channel = output.numel() // (b * output.shape[1 if isinstance(m, nn.Conv2d) else -1])
        prefix = names[m]
        name = f"{prefix}.weight" if prefix else "weight"
        seen.append(LayerCost(name, m.weight.numel(), int(per_channel), len(seen)))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def active_weights(guide: Any, names: list[str] | None = None) -> dict[str, int]:
    """Random (active) entries per weight site of a guide.

    A :class:`~bayesdl.guides.SparseMeanFieldGuide` reports its active counts; any other guide
    with ``site_names`` counts every entry of its sites.
    """
    if hasattr(guide, "num_active"):
        sites = guide.site_names if names is None else names
        return {n: guide.num_active(n) for n in sites}
    if hasattr(guide, "sites"):
        return {s.name: math.prod(s.shape) for s in guide.sites}
    raise TypeError(f"guide must be a bayesdl guide, got {type(guide).__name__}")


def training_flops(
    layers: list[LayerCost],
    *,
    num_steps: int,
    batch_size: int,
    active: Mapping[str, int] | None = None,
    gaussian: bool | Mapping[str, bool] = True,
    num_particles: int = 1,
    num_updates: int = 0,
) -> FlopCount:
    """FLOPs of ``num_steps`` training steps on batches of ``batch_size`` examples.

    Args:
        layers: from :func:`layer_costs`.
        num_steps: training steps.
        batch_size: examples per step.
        active: active entries per weight name (default: every entry, a dense network).
        gaussian: whether each weight is Gaussian (two paths under local reparameterisation)
            or deterministic (one path); a bool for all, or per name (missing names: True).
        num_particles: weight samples per example (multiplies forward and backward).
        num_updates: subspace updates; each costs the dense mean gradient (``2 n P`` per
            example of one batch) of every layer with ``active < n``.

    Returns:
        a :class:`FlopCount`.

    Example:
        >>> import torch
        >>> from bayesdl.infer.accounting import layer_costs, training_flops
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(),
        ...                           torch.nn.Linear(20, 2))
        >>> layers = layer_costs(net, torch.zeros(1, 10))
        >>> dense = training_flops(layers, num_steps=1, batch_size=1)
        >>> dense.forward, dense.backward  # 2 paths x 2 FLOPs x (200 + 40); no input grad in layer 1
        (960.0, 1120.0)
        >>> sparse = training_flops(layers, num_steps=1, batch_size=1, active={"2.weight": 4})
        >>> sparse.forward
        816.0
    """
    check_positive_int(num_steps, "num_steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(num_particles, "num_particles")
    if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < 0:
        raise ValueError(f"num_updates must be a non-negative int, got {num_updates!r}")
    active = {} if active is None else dict(active)
    unknown = set(active) - {layer.name for layer in layers}
    if unknown:
        raise ValueError(
            f"active names {sorted(unknown)}, which are not among the layers "
            f"{[layer.name for layer in layers]}"
        )
    examples = float(num_steps) * batch_size * num_particles
    forward = backward = update = 0.0
    for layer in layers:
        a = active.get(layer.name, layer.num_entries)
        if not 0 <= a <= layer.num_entries:
            raise ValueError(f"active[{layer.name!r}] must be in [0, {layer.num_entries}], got {a}")
        g = gaussian if isinstance(gaussian, bool) else gaussian.get(layer.name, True)
        paths = 2 if g else 1
        one = 2.0 * paths * a * layer.positions
        forward += one * examples
        backward += one * examples * (1 if layer.order == 0 else 2)
        if a < layer.num_entries:
            update += 2.0 * layer.num_entries * layer.positions * batch_size * num_updates
    return FlopCount(forward, backward, update)


class ModelSize(NamedTuple):
    """Size of a fitted (guide, model) pair.

    Attributes:
        num_random: random (active) weight entries.
        num_parameters: stored trainable numbers (variational parameters plus the model's
            deterministic parameters).
        num_bytes: bytes of the guide's state (parameters and index buffers) plus the model's
            deterministic parameters.
    """

    num_random: int
    num_parameters: int
    num_bytes: int


def model_size(guide: nn.Module, model: nn.Module | None = None) -> ModelSize:
    """Active entries, stored parameters and bytes of a guide (and the model's own params).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import MeanFieldGuide
        >>> from bayesdl.infer.accounting import model_size
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> bnn = BNN(torch.nn.Linear(3, 1), LayerwiseNormalPrior(), GaussianLikelihood(8))
        >>> model_size(MeanFieldGuide(bnn), bnn)
        ModelSize(num_random=4, num_parameters=8, num_bytes=32)
    """
    if not isinstance(guide, nn.Module):
        raise TypeError(f"guide must be an nn.Module guide, got {type(guide).__name__}")
    num_random = sum(active_weights(guide).values())
    params = [p for p in guide.parameters() if p.requires_grad]
    num_parameters = sum(p.numel() for p in params)
    num_bytes = sum(t.numel() * t.element_size() for t in guide.state_dict().values())
    if model is not None:
        own = [p for p in model.parameters() if p.requires_grad]
        num_parameters += sum(p.numel() for p in own)
        num_bytes += sum(p.numel() * p.element_size() for p in own)
    return ModelSize(num_random, num_parameters, num_bytes)

"""The scaled (fan-in, NTK-style) linear layer of the functional-prior networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ScaledLinear(nn.Module):
    """``y = x Wᵀ / √in_features + b`` with ``W`` stored and initialised at unit scale.

    The ``1/√fan_in`` factor lives in the forward pass, so a prior ``N(0, σ²)`` on the stored
    ``weight`` is the Neal-scaled prior ``N(0, σ²/fan_in)`` on the effective weight. Weights are
    initialised ``N(0, 1)`` and biases at 0, as in the functional-prior reference code.

    Args:
        in_features: input size ``D_in``.
        out_features: output size ``D_out``.
        bias: add a bias.
        device, dtype: where the parameters live.

    Shapes:
        ``[*, D_in] -> [*, D_out]``.

    Example:
        >>> import torch
        >>> layer = ScaledLinear(4, 3)
        >>> layer(torch.randn(5, 4)).shape
        torch.Size([5, 3])

    References:
        A. Jacot, F. Gabriel, C. Hongler, *Neural Tangent Kernel*, NeurIPS 2018; B.-H. Tran et
        al., *All You Need is a Good Functional Prior for Bayesian Deep Learning*, JMLR 2022.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        for argname, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{argname} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(
            torch.randn(out_features, in_features, device=device, dtype=dtype)
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``x`` ``[*, in_features]``."""
        out = F.linear(x, self.weight) * (1.0 / math.sqrt(self.in_features))
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def scaled_mlp(
    sizes: Sequence[int],
    activation: str | type[nn.Module] = "tanh",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """A multilayer perceptron of :class:`ScaledLinear` layers.

    Args:
        sizes: layer widths ``(D_in, H_1, ..., D_out)``, at least two.
        activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or an ``nn.Module`` class, applied
            after every layer but the last.
        device, dtype: where the parameters live.

    Returns:
        an ``nn.Sequential`` mapping ``[B, D_in]`` to ``[B, D_out]``; its layers are at the
        even indices (``"0.weight"``, ``"2.weight"``, ...).

    Example:
        >>> net = scaled_mlp((1, 50, 1), "tanh")
        >>> [name for name, _ in net.named_parameters()]
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must hold at least an input and an output size, got {sizes}")
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            names = sorted(_ACTIVATIONS)
            raise ValueError(
                f"activation must be one of {names} or a module class, got {activation!r}"
            )
        act = _ACTIVATIONS[activation]
    elif isinstance(activation, type) and issubclass(activation, nn.Module):
        act = activation
    else:
        raise TypeError(f"activation must be a name or an nn.Module class, got {activation!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(ScaledLinear(n_in, n_out, device=device, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


__all__ = ["ScaledLinear", "scaled_mlp"]

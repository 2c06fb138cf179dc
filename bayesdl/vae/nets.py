"""Encoder and decoder networks for :class:`~bayesdl.vae.VAE`: MLP, convolutional, Burda preset.

Encoders map ``x [B, *input_shape]`` to ``[B, 2 L]`` (location, pre-softplus scale). Decoders
map ``z [*batch, L]`` with any leading dims (particles, data points) to
``[*batch, *output_shape]`` likelihood parameters (logits for Bernoulli pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bayesdl._validation import check_positive_int

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "burda_mlp"]

Activation = Callable[[], nn.Module]


def _shape(value: int | Sequence[int], name: str) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, int) else tuple(value)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape):
        raise ValueError(f"{name} must be a positive int or a tuple of them, got {value!r}")
    return shape


def _mlp(sizes: Sequence[int], activation: Activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(activation())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _hidden(hidden: Sequence[int]) -> list[int]:
    hidden = list(hidden)
    for h in hidden:
        check_positive_int(h, "hidden sizes")
    return hidden


class MLPEncoder(nn.Module):
    """``x [B, *input_shape] -> [B, 2 L]``: flatten, then Linear/activation layers.

    Args:
        input_shape: shape of one data point (an int for flat data).
        hidden: hidden layer widths.
        latent_dim: ``L``.
        activation: activation module factory (default ``nn.Tanh``, as in Burda et al.).

    Example:
        >>> import torch
        >>> MLPEncoder(784, [200, 200], 50)(torch.zeros(3, 784)).shape
        torch.Size([3, 100])
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        hidden: Sequence[int],
        latent_dim: int,
        *,
        activation: Activation = nn.Tanh,
    ):
        super().__init__()
        check_positive_int(latent_dim, "latent_dim")
        self.input_shape = _shape(input_shape, "input_shape")
        self.latent_dim = latent_dim
        sizes = [math.prod(self.input_shape), *_hidden(hidden), 2 * latent_dim]
        self.net = _mlp(sizes, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[: x.dim() - len(self.input_shape)] + (-1,)))


class MLPDecoder(nn.Module):
    """``z [*batch, L] -> [*batch, *output_shape]``: Linear/activation layers, then reshape.

    Args:
        latent_dim: ``L``.
        hidden: hidden layer widths.
        output_shape: shape of one data point (an int for flat data).
        activation: activation module factory (default ``nn.Tanh``).

    Example:
        >>> import torch
        >>> MLPDecoder(50, [200, 200], 784)(torch.zeros(5, 3, 50)).shape
        torch.Size([5, 3, 784])
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        output_shape: int | Sequence[int],
        *,
        activation: Activation = nn.Tanh,
    ):
        super().__init__()
        check_positive_int(latent_dim, "latent_dim")
        self.latent_dim = latent_dim
        self.output_shape = _shape(output_shape, "output_shape")
        sizes = [latent_dim, *_hidden(hidden), math.prod(self.output_shape)]
        self.net = _mlp(sizes, activation)

    @property
    def output_layer(self) -> nn.Linear:
        """The last ``nn.Linear`` (its bias sets the data-independent pixel logits)."""
        return self.net[-1]

    def init_output_bias(self, data_mean: Tensor, *, eps: float = 1e-3) -> None:
        """Set the output bias to ``logit(data_mean)`` (Burda et al.'s initialisation).

        Args:
            data_mean: mean training pixel, shape ``output_shape`` or flat.
            eps: clamp the mean to ``[eps, 1 - eps]`` first.
        """
        p = data_mean.detach().reshape(-1).clamp(eps, 1 - eps)
        bias = self.output_layer.bias
        if p.numel() != bias.numel():
            raise ValueError(
                f"data_mean must have {bias.numel()} elements, got shape {tuple(data_mean.shape)}"
            )
        with torch.no_grad():
            bias.copy_(torch.logit(p).to(bias))

    def forward(self, z: Tensor) -> Tensor:
        out = self.net(z)
        return out.reshape(out.shape[:-1] + self.output_shape)


def _conv_out(size: int, num_layers: int) -> int:
    for _ in range(num_layers):
        size = (size + 2 - 4) // 2 + 1  # kernel 4, stride 2, padding 1 halves even sizes
    return size


class ConvEncoder(nn.Module):
    """``x [B, C, H, W] -> [B, 2 L]``: stride-2 4x4 convolutions, then an MLP head.

    Each convolution halves the image side (``H`` and ``W`` must be divisible by
    ``2 ** len(channels)``).

    Args:
        input_shape: ``(C, H, W)``.
        latent_dim: ``L``.
        channels: output channels of each convolution.
        hidden: width of the fully connected layer after the convolutions.
        activation: activation module factory (default ``nn.ReLU``).

    Example:
        >>> import torch
        >>> ConvEncoder((1, 28, 28), 16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        activation: Activation = nn.ReLU,
    ):
        super().__init__()
        self.input_shape = _shape(input_shape, "input_shape")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        c, h, w = self.input_shape
        depth = len(channels)
        if h % 2**depth or w % 2**depth:
            raise ValueError(
                f"image sides must be divisible by 2 ** {depth}, got input_shape {self.input_shape}"
            )
        check_positive_int(latent_dim, "latent_dim")
        check_positive_int(hidden, "hidden")
        layers: list[nn.Module] = []
        for c_out in _hidden(channels):
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), activation()]
            c = c_out
        self.conv = nn.Sequential(*layers)
        flat = c * _conv_out(h, depth) * _conv_out(w, depth)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), activation(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x))


class ConvDecoder(nn.Module):
    """``z [*batch, L] -> [*batch, C, H, W]``: an MLP, then stride-2 transposed convolutions.

    Leading dims are flattened into one batch for the convolutions and restored after.

    Args:
        latent_dim: ``L``.
        output_shape: ``(C, H, W)``.
        channels: input channels of each transposed convolution (the first is the channel
            count of the ``H / 2^d x W / 2^d`` map the MLP produces).
        hidden: width of the fully connected layer.
        activation: activation module factory (default ``nn.ReLU``).

    Example:
        >>> import torch
        >>> ConvDecoder(16, (1, 28, 28))(torch.zeros(3, 2, 16)).shape
        torch.Size([3, 2, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 32),
        hidden: int = 256,
        activation: Activation = nn.ReLU,
    ):
        super().__init__()
        self.output_shape = _shape(output_shape, "output_shape")
        if len(self.output_shape) != 3:
            raise ValueError(f"output_shape must be (C, H, W), got {tuple(output_shape)}")
        c_out, h, w = self.output_shape
        channels = _hidden(channels)
        depth = len(channels)
        if h % 2**depth or w % 2**depth:
            raise ValueError(
                f"image sides must be divisible by 2 ** {depth}, got output_shape "
                f"{self.output_shape}"
            )
        check_positive_int(latent_dim, "latent_dim")
        check_positive_int(hidden, "hidden")
        self.start = (channels[0], h // 2**depth, w // 2**depth)
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden), activation(), nn.Linear(hidden, math.prod(self.start))
        )
        layers: list[nn.Module] = [activation()]
        for i, c_in in enumerate(channels):
            nxt = channels[i + 1] if i + 1 < depth else c_out
            layers.append(nn.ConvTranspose2d(c_in, nxt, 4, stride=2, padding=1))
            if i + 1 < depth:
                layers.append(activation())
        self.deconv = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape((-1,) + self.start)
        return self.deconv(h).reshape(lead + self.output_shape)


def burda_mlp(
    input_dim: int = 784,
    latent_dim: int = 50,
    *,
    hidden: Sequence[int] = (200, 200),
    data_mean: Tensor | None = None,
) -> tuple[MLPEncoder, MLPDecoder]:
    """The one-stochastic-layer architecture of Burda et al. (2016): 784-200-200-50, tanh.

    The decoder mirrors the encoder (50-200-200-784) and outputs Bernoulli logits; with
    ``data_mean`` its output bias starts at the logit of the mean training pixel, as in the
    paper.

    Args:
        input_dim: pixels per image (784 for 28 x 28).
        latent_dim: ``L`` (50 in the paper).
        hidden: hidden widths of the encoder (reversed for the decoder).
        data_mean: optional mean training image (``[input_dim]``).

    Returns:
        ``(encoder, decoder)``.

    Example:
        >>> encoder, decoder = burda_mlp()
        >>> sum(p.numel() for p in encoder.parameters())
        217300

    References:
        Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
    """
    encoder = MLPEncoder(input_dim, hidden, latent_dim, activation=nn.Tanh)
    decoder = MLPDecoder(latent_dim, list(hidden)[::-1], input_dim, activation=nn.Tanh)
    if data_mean is not None:
        decoder.init_output_bias(data_mean)
    return encoder, decoder

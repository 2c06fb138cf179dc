"""Measurement sets: the finite input sets at which prior functions are compared."""

from __future__ import annotations

import torch
from torch import Tensor

from bayesdl._validation import check_finite, check_positive_int, check_tensor


def _check_inputs(x: Tensor, name: str) -> Tensor:
    check_tensor(x, name, ndim=2)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one input row, got shape {tuple(x.shape)}")
    return check_finite(x, name)


class MeasurementSet:
    """Base class: ``sample()`` returns the inputs ``[M, D]`` of one measurement set.

    Randomness comes from the global torch RNG, so a seeded run (and a resumed one, whose
    checkpoint restores the RNG state) draws the same sets.

    Attributes:
        input_dim: ``D``.
        num_points: ``M``.

    Example:
        >>> import torch
        >>> class Corners(MeasurementSet):
        ...     input_dim, num_points = 2, 4
        ...     def sample(self):
        ...         return torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> Corners().sample().shape
        torch.Size([4, 2])
    """

    input_dim: int
    num_points: int

    def sample(self) -> Tensor:
        """One measurement set ``[M, D]``."""
        raise NotImplementedError


class GridMeasurement(MeasurementSet):
    """The same fixed inputs at every iteration (e.g. a regular grid for 1-D problems).

    Args:
        x: the inputs ``[M, D]``.

    Example:
        >>> import torch
        >>> m = GridMeasurement(torch.linspace(-6, 6, 200).unsqueeze(-1))
        >>> m.sample().shape, m.num_points
        (torch.Size([200, 1]), 200)
    """

    def __init__(self, x: Tensor):
        self.x = _check_inputs(x, "x")
        self.input_dim = int(x.shape[1])
        self.num_points = int(x.shape[0])

    def sample(self) -> Tensor:
        return self.x


class DataMeasurement(MeasurementSet):
    """Training inputs mixed with uniform points in the data's bounding box (UCI recipe).

    Each set holds ``num_points`` rows: ``round(train_fraction · num_points)`` distinct training
    inputs (all of them when there are fewer), the rest uniform in the per-dimension box
    ``[min, max]`` over ``x_train`` and ``x_extra`` (e.g. unlabelled test inputs, which set the
    box only), shuffled.

    Args:
        x_train: training inputs ``[N, D]``.
        num_points: ``M``.
        train_fraction: share of training inputs, in ``[0, 1]``.
        x_extra: optional extra inputs ``[N', D]`` that widen the box.

    Example:
        >>> import torch
        >>> m = DataMeasurement(torch.randn(300, 4), num_points=100)
        >>> m.sample().shape
        torch.Size([100, 4])

    References:
        B.-H. Tran et al., *All You Need is a Good Functional Prior for Bayesian Deep
        Learning*, JMLR 2022.
    """

    def __init__(
        self,
        x_train: Tensor,
        *,
        num_points: int = 100,
        train_fraction: float = 0.7,
        x_extra: Tensor | None = None,
    ):
        x_train = _check_inputs(x_train, "x_train")
        check_positive_int(num_points, "num_points")
        if not 0.0 <= float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction must lie in [0, 1], got {train_fraction!r}")
        box = x_train
        if x_extra is not None:
            x_extra = _check_inputs(x_extra, "x_extra")
            if x_extra.shape[1] != x_train.shape[1]:
                raise ValueError(
                    f"x_extra has {x_extra.shape[1]} columns but x_train has {x_train.shape[1]}"
                )
            box = torch.cat([x_train, x_extra.to(x_train)])
        self.x_train = x_train
        self.low = box.min(0).values
        self.high = box.max(0).values
        self.input_dim = int(x_train.shape[1])
        self.num_points = int(num_points)
        self.num_train_points = min(round(train_fraction * num_points), x_train.shape[0])

    def sample(self) -> Tensor:
        x = self.x_train
        n_train = self.num_train_points
        idx = torch.randperm(x.shape[0], device=x.device)[:n_train]
        n_unif = self.num_points - n_train
        u = torch.rand(n_unif, self.input_dim, dtype=x.dtype, device=x.device)
        unif = self.low + (self.high - self.low) * u
        out = torch.cat([x[idx], unif])
        return out[torch.randperm(out.shape[0], device=x.device)]


class MinibatchMeasurement(MeasurementSet):
    """A random minibatch of the training inputs (classification recipe).

    Args:
        x_train: training inputs ``[N, D]``.
        batch_size: ``M`` (at most ``N``).

    Example:
        >>> import torch
        >>> MinibatchMeasurement(torch.randn(1000, 2), batch_size=256).sample().shape
        torch.Size([256, 2])
    """

    def __init__(self, x_train: Tensor, *, batch_size: int = 256):
        x_train = _check_inputs(x_train, "x_train")
        check_positive_int(batch_size, "batch_size")
        if batch_size > x_train.shape[0]:
            raise ValueError(
                f"batch_size ({batch_size}) exceeds the number of training inputs "
                f"({x_train.shape[0]})"
            )
        self.x_train = x_train
        self.input_dim = int(x_train.shape[1])
        self.num_points = int(batch_size)

    def sample(self) -> Tensor:
        idx = torch.randperm(self.x_train.shape[0], device=self.x_train.device)[: self.num_points]
        return self.x_train[idx]


__all__ = ["DataMeasurement", "GridMeasurement", "MeasurementSet", "MinibatchMeasurement"]

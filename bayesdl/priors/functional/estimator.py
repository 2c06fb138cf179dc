"""The interface of the distance estimators used to match a prior to a target process."""

from __future__ import annotations

from torch import Tensor


def _check_int_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return value


def as_rows(f: Tensor) -> Tensor:
    """``[S, M, K]`` function values to ``[S·K, M]`` rows: one row per (sample, output)."""
    s, m, k = f.shape
    return f.permute(0, 2, 1).reshape(s * k, m)


class DistanceEstimator:
    """Base class: a (differentiable) distance between two sets of function samples.

    ``estimator(f_nn, f_gp)`` takes function values at one measurement set, ``[S, M, K]``
    (``S`` samples, ``M`` points, ``K`` outputs) from the network prior (differentiable) and
    from the target, and returns a scalar whose gradient with respect to ``f_nn`` moves the
    prior towards the target. Each output is compared separately and the per-output distances
    are summed (one critic shared by all outputs, for multi-output networks).

    Args:
        num_points: if given, the ``M`` the estimator was built for (checked).
        num_outputs: if given, the ``K`` the estimator was built for (checked).

    Example (a distance between the means, for illustration):
        >>> import torch
        >>> class MeanGap(DistanceEstimator):
        ...     def __call__(self, f_nn, f_gp, *, train=None):
        ...         self._check_pair(f_nn, f_gp)
        ...         return (f_nn.mean(0) - f_gp.mean(0)).norm()
        >>> round(float(MeanGap()(torch.ones(4, 3, 1), torch.zeros(4, 3, 1))), 4)  # √3
        1.7321
    """

    def __init__(self, *, num_points: int | None = None, num_outputs: int | None = None):
        self.num_points = _check_int_or_none(num_points, "num_points")
        self.num_outputs = _check_int_or_none(num_outputs, "num_outputs")

    def check(self, num_points: int, num_outputs: int) -> None:
        """Raise a ``ValueError`` if the estimator cannot compare functions of this shape."""
        if self.num_points is not None and num_points != self.num_points:
            raise ValueError(
                f"the estimator was built for measurement sets of {self.num_points} points, "
                f"but the measurement set has {num_points}"
            )
        if self.num_outputs is not None and num_outputs != self.num_outputs:
            raise ValueError(
                f"the estimator was built for {self.num_outputs} output(s), but the network "
                f"has {num_outputs}"
            )

    def _check_pair(self, f_nn: Tensor, f_gp: Tensor) -> None:
        for name, f in (("f_nn", f_nn), ("f_gp", f_gp)):
            if not isinstance(f, Tensor) or f.dim() != 3:
                shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"{name} must be a tensor [S, M, K], got {shape}")
        if f_nn.shape != f_gp.shape:
            raise ValueError(
                f"f_nn {tuple(f_nn.shape)} and f_gp {tuple(f_gp.shape)} must have the same "
                "shape [S, M, K]"
            )
        self.check(int(f_nn.shape[1]), int(f_nn.shape[2]))

    def __call__(
        self, f_nn: Tensor, f_gp: Tensor, *, train: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """The distance estimate (a scalar tensor, differentiable in ``f_nn``).

        Args:
            f_nn: network-prior functions ``[S, M, K]``.
            f_gp: target functions ``[S, M, K]``.
            train: an optional separate pair of (detached) samples to fit internal state on
                (the critic), as in the reference algorithm; defaults to ``(f_nn, f_gp)``.
        """
        raise NotImplementedError


__all__ = ["DistanceEstimator", "as_rows"]

"""Figures of function samples: target process next to network priors (or posteriors)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_function_samples(
    x: Tensor,
    samples: Mapping[str, Tensor],
    *,
    axes: list[Axes] | None = None,
    num_lines: int = 8,
    data: tuple[Tensor, Tensor] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per entry: a few sampled functions, the mean and a ±2 std band.

    Args:
        x: 1-D inputs ``[M]`` or ``[M, 1]``.
        samples: panel title -> function draws ``[S, M]`` (or ``[S, M, 1]``).
        axes: draw into these axes (one per entry) instead of a new figure.
        num_lines: sample paths drawn per panel.
        data: optional training points ``(x [N], y [N])`` overlaid on every panel.
        path: also write the figure as PNG there (atomically).

    Returns:
        the figure.

    Example:
        >>> import torch
        >>> x = torch.linspace(-3, 3, 50)
        >>> fig = plot_function_samples(x, {"A": torch.randn(20, 50), "B": torch.randn(20, 50)})
        >>> len(fig.axes)
        2
    """
    from matplotlib.figure import Figure

    from bayesdl._plots import _np, _save

    x = x.reshape(-1)
    xs = _np(x)
    order = np.argsort(xs)
    xs = xs[order]
    if axes is None:
        fig = Figure(figsize=(4.2 * len(samples), 3.2), layout="constrained")
        axes = list(fig.subplots(1, len(samples), squeeze=False)[0])
    else:
        fig = axes[0].figure
    if len(axes) != len(samples):
        raise ValueError(f"got {len(axes)} axes for {len(samples)} panels")
    for ax, (title, f) in zip(axes, samples.items(), strict=True):
        f = f.detach().reshape(f.shape[0], -1)
        if f.shape[1] != x.numel():
            raise ValueError(
                f"samples[{title!r}] has {f.shape[1]} points per function, x has {x.numel()}"
            )
        fs = _np(f)[:, order]
        mean, std = fs.mean(0), fs.std(0)
        ax.fill_between(xs, mean - 2 * std, mean + 2 * std, alpha=0.2, color="C0", lw=0)
        for row in fs[:num_lines]:
            ax.plot(xs, row, color="C0", alpha=0.5, lw=0.8)
        ax.plot(xs, mean, color="k", lw=1.2)
        if data is not None:
            ax.scatter(
                _np(data[0].reshape(-1)), _np(data[1].reshape(-1)), s=6, color="C3", zorder=3
            )
        ax.set_title(title)
    if path is not None:
        _save(fig, Path(path))
    return fig


__all__ = ["plot_function_samples"]

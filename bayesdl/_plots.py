"""Figures for :mod:`bayesdl.compare`: predictive bands (1-D regression), reliability diagrams.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so no
display, no global figure state, and the Agg renderer is used for PNG output on any backend.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from bayesdl.metrics import expected_calibration_error, reliability_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bayesdl.compare import MethodOutput, Task

__all__ = ["plot_predictive_bands", "plot_reliability"]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _grid(num: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(num, max_cols)
    return math.ceil(num / cols), cols


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG to a temporary file beside ``path`` and rename it into place."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def plot_predictive_bands(
    task: Task, outputs: Mapping[str, MethodOutput], path: str | os.PathLike
) -> Path:
    """One panel per method: predictive mean, ±2 std bands, training points, test targets.

    Everything is drawn in the original units of ``x`` and ``y``. The outer band is the total
    predictive std (epistemic + noise), the inner one the epistemic std alone; the toy's gap
    in the training inputs (``data.extra["gap"]``) is shaded.

    Args:
        task: a 1-D regression :class:`~bayesdl.compare.Task`.
        outputs: method name -> :class:`~bayesdl.compare.MethodOutput` (test predictions).
        path: where to write the PNG.

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    if not task.is_1d_regression:
        raise ValueError(f"predictive bands need a 1-D regression task, got {task.name!r}")
    if not outputs:
        raise ValueError("outputs is empty; nothing to plot")
    data = task.data
    xs, xm = float(data.x_std[0]), float(data.x_mean[0])
    ys, ym = float(data.y_std), float(data.y_mean)
    x_test = _np(data.x_test[:, 0]) * xs + xm
    order = np.argsort(x_test)
    x_test = x_test[order]
    y_test = _np(data.y_test)[order] * ys + ym
    x_train = _np(data.x_train[:, 0]) * xs + xm
    y_train = _np(data.y_train) * ys + ym
    lo = min(y_test.min(), y_train.min())
    hi = max(y_test.max(), y_train.max())
    pad = 0.35 * (hi - lo)

    rows, cols = _grid(len(outputs))
    fig = Figure(figsize=(5.0 * cols, 3.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, (name, out) in zip(axes, outputs.items(), strict=False):
        p = out.prediction
        mean = _np(p.mean)[order] * ys + ym
        std = np.sqrt(_np(p.variance)[order]) * ys
        epi = p.epistemic_variance
        if "gap" in data.extra:
            g_lo, g_hi = data.extra["gap"]
            ax.axvspan(g_lo, g_hi, color="0.9", zorder=0, label="gap in training inputs")
        ax.fill_between(
            x_test, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.2, lw=0, label="±2 std"
        )
        if epi is not None and bool((epi > 0).any()):
            e = np.sqrt(_np(epi)[order]) * ys
            ax.fill_between(
                x_test,
                mean - 2 * e,
                mean + 2 * e,
                color="C0",
                alpha=0.3,
                lw=0,
                label="±2 epistemic std",
            )
        ax.plot(x_test, y_test, "k--", lw=1, label="test targets")
        ax.plot(x_test, mean, color="C0", lw=1.8, label="predictive mean")
        ax.plot(x_train, y_train, "o", color="C3", ms=3, label="training data")
        ax.set_title(name)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("x")
    for ax in axes[::cols]:
        ax.set_ylabel("y")
    for ax in axes[len(outputs) :]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # label -> handle, over all panels (MAP has no epistemic band)
    for ax in axes[: len(outputs)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    try:  # below the panels, clear of the data (the "outside" locations need matplotlib 3.7)
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small")
    except ValueError:
        axes[0].legend(handles, labels, loc="lower left", fontsize="x-small", framealpha=0.8)
    fig.suptitle(f"{task.name}: posterior predictive")
    return _save(fig, Path(path))


def plot_reliability(
    task: Task,
    outputs: Mapping[str, MethodOutput],
    path: str | os.PathLike,
    *,
    num_bins: int = 15,
) -> Path:
    """One reliability diagram per method: accuracy against confidence in equal-width bins.

    Bars show each bin's accuracy at its mean confidence (empty bins are left out); a
    calibrated model lies on the diagonal. The title gives the ECE over the same bins.

    Args:
        task: a classification :class:`~bayesdl.compare.Task`.
        outputs: method name -> :class:`~bayesdl.compare.MethodOutput`.
        path: where to write the PNG.
        num_bins: confidence bins on ``[0, 1]``.

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    if task.kind != "classification":
        raise ValueError(f"reliability diagrams need a classification task, got {task.name!r}")
    if not outputs:
        raise ValueError("outputs is empty; nothing to plot")
    y = task.data.y_test
    rows, cols = _grid(len(outputs))
    fig = Figure(figsize=(3.8 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    width = 1.0 / num_bins
    centres = (np.arange(num_bins) + 0.5) * width
    for ax, (name, out) in zip(axes, outputs.items(), strict=False):
        probs: Any = out.prediction.probs
        curve = reliability_curve(probs, y, num_bins=num_bins)
        ece = float(expected_calibration_error(probs, y, num_bins=num_bins))
        keep = _np(curve.count) > 0
        acc = _np(curve.accuracy)[keep]
        conf = _np(curve.confidence)[keep]
        ax.bar(
            centres[keep], acc, width=width, color="C0", alpha=0.7, edgecolor="C0", label="accuracy"
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        ax.plot(conf, acc, "o", color="C3", ms=3, label="(confidence, accuracy)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("confidence (max probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.3f}")
    for ax in axes[len(outputs) :]:
        ax.set_visible(False)
    axes[0].legend(loc="upper left", fontsize="x-small")
    fig.suptitle(f"{task.name}: reliability on {int(y.shape[0])} test points")
    return _save(fig, Path(path))

"""Timing helpers shared by the benchmarks: interleaved blocks, medians and quartiles.

A *runner* is a callable ``runner(n) -> seconds`` that performs ``n`` steps of one
implementation and returns the wall-clock time they took (it synchronises the device itself,
so a runner may also exclude set-up work it cannot avoid, e.g. inside ``bayesdl.infer.fit``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch

Runner = Callable[[int], float]


def device_sync(device: torch.device) -> Callable[[], None]:
    """A no-argument function that waits for all queued work on ``device``."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def step_runner(
    step_fn: Callable[[], object],
    sync: Callable[[], None],
    *,
    context: Callable[[], AbstractContextManager] = nullcontext,
    untimed: int = 0,
) -> Runner:
    """Wrap a one-step function into a runner that times ``n`` consecutive calls, each block
    inside a fresh ``context()`` and after ``untimed`` steps there."""

    def run(n: int) -> float:
        with context():
            for _ in range(untimed):
                step_fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                step_fn()
            sync()
            return time.perf_counter() - t0

    return run


def interleaved_times(
    runners: Mapping[str, Runner], *, steps: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per step of each runner, from ``repeats`` interleaved blocks of ``steps`` steps.

    Each runner first runs ``warmup`` untimed steps. Then, per repeat, every runner runs one
    block; the order rotates from one repeat to the next, so slow drift of the machine (thermal,
    other load) spreads over all implementations instead of biasing whichever runs last.

    Returns:
        for each runner name, ``repeats`` values of (block time / ``steps``) in seconds.
    """
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need steps >= 1, repeats >= 1, warmup >= 0; got {steps}, {repeats}, {warmup}"
        )
    names = list(runners)
    for name in names:
        if warmup:
            runners[name](warmup)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(runners[name](steps) / steps)
    return out


def summarize_ms(per_step_s: list[float]) -> dict[str, float]:
    """Median and quartiles (milliseconds) of per-step times in seconds."""
    ms = sorted(1e3 * t for t in per_step_s)
    if len(ms) == 1:
        q1 = q3 = ms[0]
    else:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return {
        "ms_per_step": round(statistics.median(ms), 3),
        "min_ms": round(ms[0], 3),
        "q1_ms": round(q1, 3),
        "q3_ms": round(q3, 3),
        "iqr_ms": round(q3 - q1, 3),
    }


def paired_ratio(a_s: list[float], b_s: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-repeat ratios ``a[r] / b[r]``.

    Blocks of the same repeat run next to each other in time, so their ratio cancels most of
    the machine's slow drift (other load, clock changes); prefer it to a ratio of medians on a
    shared machine.
    """
    if len(a_s) != len(b_s) or not a_s:
        raise ValueError(f"need two equally long, non-empty lists, got {len(a_s)} and {len(b_s)}")
    r = sorted(a / b for a, b in zip(a_s, b_s, strict=True))
    if len(r) == 1:
        return r[0], r[0], r[0]
    q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive")
    return statistics.median(r), q1, q3


def cycle(items: list) -> Iterator:
    """Endless iterator over ``items`` (each implementation gets its own)."""
    while True:
        yield from items

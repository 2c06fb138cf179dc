"""Warm-up adaptation for Hamiltonian kernels, as pure tensor functions over chains.

* Step size: Nesterov dual averaging towards a target acceptance statistic (Hoffman & Gelman
  2014, section 3.2), one independent controller per chain (all tensors ``[C]``).
* Mass matrix: a diagonal inverse mass matrix from Welford's running variance of the positions
  inside Stan's windows (a fast initial buffer, doubling slow windows, a fast terminal buffer),
  shrunk towards ``1e-3`` as Stan does.

Every function returns new tensors (nothing is modified in place), so adaptation state is plain
tensors that a checkpoint can hold.

References:
    M. D. Hoffman and A. Gelman. The No-U-Turn Sampler: adaptively setting path lengths in
    Hamiltonian Monte Carlo. JMLR 15, 2014.
    Stan Development Team. Stan Reference Manual, section "HMC algorithm parameters"
    (windowed adaptation).
    B. P. Welford. Note on a method for calculating corrected sums of squares and products.
    Technometrics 4(3), 1962.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: dual-averaging constants of Hoffman & Gelman (2014) (also Stan's and NumPyro's defaults)
DA_GAMMA = 0.05
DA_T0 = 10.0
DA_KAPPA = 0.75


class DualAveraging(NamedTuple):
    """Per-chain dual-averaging state, every field ``[C]``.

    Attributes:
        mu: shrinkage target ``log(10 * eps_0)``.
        log_step_size_avg: the averaged iterate ``log eps_bar`` (the final step size).
        h_bar: running mean of ``target - accept_stat``.
        count: number of updates since the last restart (a float tensor).
    """

    mu: Tensor
    log_step_size_avg: Tensor
    h_bar: Tensor
    count: Tensor


def dual_averaging_init(step_size: Tensor) -> DualAveraging:
    """Restart dual averaging around ``step_size`` ``[C]`` (``mu = log(10 * step_size)``)."""
    zeros = torch.zeros_like(step_size)
    return DualAveraging(torch.log(10.0 * step_size), zeros, zeros, zeros)


def dual_averaging_update(
    state: DualAveraging,
    accept_stat: Tensor,
    target_accept_prob: float,
    *,
    gamma: float = DA_GAMMA,
    t0: float = DA_T0,
    kappa: float = DA_KAPPA,
) -> tuple[DualAveraging, Tensor]:
    """One dual-averaging update per chain.

    Args:
        state: the controller state (fields ``[C]``).
        accept_stat: the transition's acceptance statistic ``[C]`` in ``[0, 1]`` (NaN counts as
            0, i.e. "shrink the step").
        target_accept_prob: the target ``delta``.
        gamma, t0, kappa: the method's constants.

    Returns:
        the new state and the next step size ``exp(log eps_t)`` ``[C]`` to use while adapting.
    """
    accept_stat = torch.nan_to_num(accept_stat, nan=0.0).clamp(0.0, 1.0)
    count = state.count + 1
    eta = 1.0 / (count + t0)
    h_bar = (1.0 - eta) * state.h_bar + eta * (target_accept_prob - accept_stat)
    # clamped so that a controller driven far off never yields a step of exactly 0 or inf
    bound = math.log(torch.finfo(h_bar.dtype).max) / 4
    log_step = (state.mu - count.sqrt() / gamma * h_bar).clamp(-bound, bound)
    weight = count.pow(-kappa)
    log_avg = weight * log_step + (1.0 - weight) * state.log_step_size_avg
    return DualAveraging(state.mu, log_avg, h_bar, count), log_step.exp()


class Welford(NamedTuple):
    """Running per-coordinate moments of the chains' positions.

    Attributes:
        count: ``[C]`` number of points seen (a float tensor).
        mean: ``[C, D]``.
        m2: ``[C, D]`` sum of squared deviations from the running mean.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor


def welford_init(z: Tensor) -> Welford:
    """An empty accumulator shaped like chains ``z`` ``[C, D]``."""
    zeros = torch.zeros_like(z)
    return Welford(z.new_zeros(z.shape[0]), zeros, zeros.clone())


def welford_update(state: Welford, z: Tensor) -> Welford:
    """Add one point per chain, ``z`` ``[C, D]``."""
    count = state.count + 1
    delta = z - state.mean
    mean = state.mean + delta / count.unsqueeze(-1)
    m2 = state.m2 + delta * (z - mean)
    return Welford(count, mean, m2)


def welford_variance(state: Welford, *, regularize: bool = True) -> Tensor:
    """Sample variance ``[C, D]`` (denominator ``n - 1``), shrunk as Stan does when ``regularize``:
    ``n / (n + 5) * var + 1e-3 * 5 / (n + 5)``.

    Raises:
        ValueError: fewer than two points were seen.
    """
    n = state.count.unsqueeze(-1)
    var = state.m2 / (n - 1.0)
    if regularize:
        var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
    return var


def adaptation_windows(
    num_warmup: int,
    *,
    init_buffer: int = 75,
    term_buffer: int = 50,
    base_window: int = 25,
) -> list[tuple[int, int]]:
    """Stan's slow (mass-matrix) adaptation windows, as inclusive ``(start, end)`` iterations.

    Warm-up is split into a fast initial buffer (step size only), slow windows that double in
    length (the mass matrix is re-estimated at the end of each) and a fast terminal buffer.
    A window whose doubled successor would not fit is stretched to the terminal buffer. When
    the three default lengths do not fit in ``num_warmup`` they become 15%, 75% and 10% of
    it; below 20 warm-up iterations there is no window (the mass matrix is not adapted).

    Example:
        >>> adaptation_windows(1000)
        [(75, 99), (100, 149), (150, 249), (250, 449), (450, 949)]
        >>> adaptation_windows(100)
        [(15, 89)]
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    last = num_warmup - term_buffer - 1
    windows = []
    start, size = init_buffer, base_window
    while start <= last:
        end = start + size - 1
        if end + 2 * size > last:
            end = last
        windows.append((start, end))
        start, size = end + 1, 2 * size
    return windows


__all__ = [
    "DualAveraging",
    "Welford",
    "adaptation_windows",
    "dual_averaging_init",
    "dual_averaging_update",
    "welford_init",
    "welford_update",
    "welford_variance",
]

"""What HMC and NUTS share: the state, the leapfrog integrator with a diagonal mass matrix, the
initial step-size heuristic and warm-up adaptation (dual averaging + windowed mass matrix)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bayesdl.infer.mcmc._compile import (
    CompiledStep,
    check_compile,
    functional_value_and_grad,
    has_while_loop,
)
from bayesdl.infer.mcmc.adaptation import (
    DualAveraging,
    Welford,
    adaptation_windows,
    dual_averaging_init,
    dual_averaging_update,
    welford_init,
    welford_update,
    welford_variance,
)
from bayesdl.infer.mcmc.kernel import MCMCKernel
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG


class HamiltonianState(NamedTuple):
    """State of ``C`` HMC/NUTS chains: positions plus every piece of adaptation state.

    Attributes:
        z: positions ``[C, D]``.
        potential_energy: ``U(z)`` ``[C]``.
        grad: ``∇U(z)`` ``[C, D]``.
        step_size: current step sizes ``[C]``.
        inv_mass: diagonal inverse mass matrices ``[C, D]``.
        da_mu, da_log_step_size_avg, da_h_bar, da_count: dual-averaging state ``[C]``
            (see :class:`~bayesdl.infer.mcmc.adaptation.DualAveraging`).
        wf_count, wf_mean, wf_m2: Welford accumulators ``[C]``, ``[C, D]``, ``[C, D]`` of the
            current mass-matrix window.
    """

    z: Tensor
    potential_energy: Tensor
    grad: Tensor
    step_size: Tensor
    inv_mass: Tensor
    da_mu: Tensor
    da_log_step_size_avg: Tensor
    da_h_bar: Tensor
    da_count: Tensor
    wf_count: Tensor
    wf_mean: Tensor
    wf_m2: Tensor


@lru_cache(maxsize=32)
def _window_ends(num_warmup: int) -> frozenset[int]:
    return frozenset(end for _, end in adaptation_windows(num_warmup))


@lru_cache(maxsize=32)
def _window_starts_ends(num_warmup: int) -> tuple[tuple[int, int], ...]:
    return tuple(adaptation_windows(num_warmup))


def _in_window(iteration: int, num_warmup: int) -> bool:
    return any(s <= iteration <= e for s, e in _window_starts_ends(num_warmup))


def kinetic_energy(r: Tensor, inv_mass: Tensor) -> Tensor:
    """``K(r) = r^T M^{-1} r / 2`` per chain, ``[C]``."""
    return 0.5 * (inv_mass * r * r).sum(-1)


def leapfrog(
    potential: Potential,
    batch: Batch | None,
    z: Tensor,
    r: Tensor,
    grad: Tensor,
    step: Tensor,
    inv_mass: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One velocity-Verlet step per chain.

    Args:
        potential: ``U``.
        batch: data passed to ``potential``.
        z, r, grad: positions, momenta and ``∇U(z)``, each ``[C, D]``.
        step: signed step sizes ``[C, 1]`` (negative integrates backwards in time).
        inv_mass: ``[C, D]``.

    Returns:
        new ``z``, ``r``, ``U`` ``[C]`` and ``∇U`` ``[C, D]``.
    """
    half = 0.5 * step
    r = r - half * grad
    z = z + step * inv_mass * r
    u, grad = potential.value_and_grad(z, batch)
    r = r - half * grad
    return z, r, u, grad


def _sanitize_energy(h: Tensor) -> Tensor:
    """A NaN energy counts as infinite (a divergence)."""
    return torch.where(torch.isnan(h), torch.full_like(h, math.inf), h)


def find_reasonable_step_size(
    potential: Potential,
    batch: Batch | None,
    z: Tensor,
    u: Tensor,
    grad: Tensor,
    inv_mass: Tensor,
    step_size: Tensor,
    rng: ChainRNG,
    *,
    max_iterations: int = 100,
) -> Tensor:
    """Hoffman & Gelman's heuristic (their Algorithm 4), per chain: double or halve the step
    until the acceptance ratio of one leapfrog step from ``z`` crosses 0.8.

    One momentum ``[D]`` is drawn per chain (the same shape whatever happens), so chains stay
    reproducible one by one. Chains stop independently; the loop syncs once per iteration.

    Returns:
        step sizes ``[C]``.
    """
    threshold = math.log(0.8)
    r = rng.normal((z.shape[-1],), dtype=z.dtype) * inv_mass.rsqrt()
    h0 = u + kinetic_energy(r, inv_mass)
    step = step_size.clone()

    def log_ratio(step: Tensor) -> Tensor:
        _, r1, u1, _ = leapfrog(potential, batch, z, r, grad, step.unsqueeze(-1), inv_mass)
        h1 = _sanitize_energy(u1 + kinetic_energy(r1, inv_mass))
        return h0 - h1

    delta = log_ratio(step)
    direction = torch.where(delta > threshold, 1.0, -1.0).to(z.dtype)
    active = torch.ones_like(step, dtype=torch.bool)
    finfo = torch.finfo(z.dtype)
    for _ in range(max_iterations):
        active = active & (direction * delta > direction * threshold)
        active = active & (step < 1.0 / finfo.eps) & (step > finfo.tiny / finfo.eps)
        if not bool(active.any()):
            break
        step = torch.where(active, step * torch.pow(2.0, direction), step)
        delta = torch.where(active, log_ratio(step), delta)
    return step


def _check_float(value: Any, name: str, *, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok = math.isfinite(value) and value > low and (high is None or value < high)
    if not ok:
        interval = f"({low}, {high})" if high is not None else f"({low}, inf)"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_int(value: Any, name: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return int(value)


Transition = tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]


class HamiltonianKernel(MCMCKernel):
    """Base of :class:`~bayesdl.infer.mcmc.HMC` and :class:`~bayesdl.infer.mcmc.NUTS`.

    Subclasses implement :meth:`_transition` (one Metropolis-corrected move from the current
    state, with the current step size and mass matrix); this class runs warm-up adaptation
    around it.
    """

    State = HamiltonianState

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: float | None = None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        target_accept_prob: float = 0.8,
        max_delta_energy: float = 1000.0,
        init_strategy: str | dict[str, Tensor] = "uniform",
        compile: bool | str = False,
    ):
        super().__init__(model, init_strategy=init_strategy)
        self.compile = check_compile(compile)
        self._compiled: tuple[Any, ...] | None = None
        self._compile_time_before = 0.0
        if step_size is not None:
            step_size = _check_float(step_size, "step_size", low=0.0)
        self.step_size = step_size
        self.adapt_step_size = _check_bool(adapt_step_size, "adapt_step_size")
        self.adapt_mass_matrix = _check_bool(adapt_mass_matrix, "adapt_mass_matrix")
        self.target_accept_prob = _check_float(
            target_accept_prob, "target_accept_prob", low=0.0, high=1.0
        )
        self.max_delta_energy = _check_float(max_delta_energy, "max_delta_energy", low=0.0)

    #: the potential whose compiled ``while_loop`` failed to compile: the kernel then runs
    #: that potential's steps as separate compiled calls for the rest of the run (a pickled
    #: or resumed kernel forgets it and tries the loop again)
    _loop_failed_for: Potential | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # compiled graphs are rebuilt on first use, never pickled
        state.pop("_loop_failed_for", None)  # a resumed run tries the loop again
        return state

    def _use_loop(self, flag: bool | None, device: torch.device, potential: Potential) -> bool:
        """Whether to run a compiled ``while_loop`` for ``potential``: ``flag`` when set,
        else on CPU when torch has the operator; never once it failed for ``potential``."""
        if potential is not None and potential is self._loop_failed_for:
            return False
        if flag is not None:
            return flag
        return device.type == "cpu" and has_while_loop()

    @property
    def compile_time_s(self) -> float:
        """Seconds spent compiling so far (0 when ``compile=False``): every compiled
        function the kernel built (leapfrog steps, leaf blocks, ``while_loop`` trajectories
        and sub-trees), failed compile attempts included."""
        current = 0.0 if self._compiled is None else self._compiled[-1].compile_time_s
        return self._compile_time_before + current

    def _step_function(
        self,
        potential: Potential,
        device: torch.device,
        build: Callable[..., Callable[..., Any]],
        *,
        reraise: bool = False,
    ) -> Callable[..., Any]:
        """The kernel's per-leapfrog function for ``potential``: ``build(value_and_grad)``
        eagerly with the potential's own ``value_and_grad`` when ``compile=False``, else
        compiled with a ``torch.func`` gradient (cached for the last potential and builder
        used; ``reraise``: see :class:`CompiledStep`)."""
        if self.compile is False:
            return build(lambda z, batch: potential.value_and_grad(z, batch))
        cached = self._compiled
        key = (potential, device, getattr(build, "__func__", build))
        if cached is not None and cached[0] is potential and cached[1:3] == key[1:]:
            return cached[3]
        if cached is not None:
            self._compile_time_before += cached[3].compile_time_s
        step = CompiledStep(
            build(functional_value_and_grad(potential)),
            mode=self.compile,
            what=f"the {type(self).__name__} {'while_loop' if reraise else 'leapfrog step'}",
            device=device,
            reraise=reraise,
        )
        self._compiled = (*key, step)
        return step

    # ------------------------------------------------------------------ functional API
    def init_state(
        self, z: Tensor, potential: Potential, rng: ChainRNG, *, num_warmup: int
    ) -> HamiltonianState:
        """The state of chains starting at ``z`` ``[C, D]``.

        With step-size adaptation on (and ``num_warmup > 0``) the initial step size is found
        by Hoffman & Gelman's heuristic, starting from ``step_size`` (default 1).

        Raises:
            TypeError / ValueError: ``z`` is not a floating ``[C, D]`` tensor matching the
                potential, ``rng`` has another number of chains, ``num_warmup`` is negative,
                or the potential is not finite at ``z``.
        """
        if not isinstance(potential, Potential):
            raise TypeError(f"potential must be a Potential, got {type(potential).__name__}")
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating torch.Tensor [C, D], got {z!r:.60}")
        if z.dim() != 2 or z.shape[-1] != potential.dim:
            raise ValueError(
                f"z must have shape [C, {potential.dim}] (chains x potential.dim), "
                f"got {tuple(z.shape)}"
            )
        if not (hasattr(rng, "num_chains") and hasattr(rng, "normal")):
            raise TypeError(f"rng must be a ChainRNG, got {type(rng).__name__}")
        if rng.num_chains != z.shape[0]:
            raise ValueError(
                f"rng has {rng.num_chains} chain generator(s) but z has {z.shape[0]} chains"
            )
        num_warmup = _check_int(num_warmup, "num_warmup", low=0)
        u, grad = potential.value_and_grad(z)
        bad = ~(torch.isfinite(u) & torch.isfinite(grad).all(-1))
        if bool(bad.any()):
            raise ValueError(
                f"the potential or its gradient is not finite at the initial z of chain(s) "
                f"{bad.nonzero().flatten().tolist()}; choose other initial values"
            )
        step = torch.full_like(u, 1.0 if self.step_size is None else self.step_size)
        inv_mass = torch.ones_like(z)
        if self.adapt_step_size and num_warmup > 0:
            step = find_reasonable_step_size(potential, None, z, u, grad, inv_mass, step, rng)
        da = dual_averaging_init(step)
        wf = welford_init(z)
        return HamiltonianState(z, u, grad, step, inv_mass, *da, *wf)

    def _transition(
        self,
        state: HamiltonianState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
    ) -> Transition:
        """One move: returns new ``z``, ``U``, ``∇U``, the acceptance statistic ``[C]`` for
        dual averaging, and the info dict (without ``step_size``)."""
        raise NotImplementedError

    def step(
        self,
        state: HamiltonianState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None = None,
        *,
        iteration: int,
        num_warmup: int,
    ) -> tuple[HamiltonianState, dict[str, Tensor]]:
        """One transition of every chain, then (while ``iteration < num_warmup``) adaptation."""
        z, u, grad, accept_stat, info = self._transition(state, potential, rng, batch)
        info["step_size"] = state.step_size
        step_size, inv_mass = state.step_size, state.inv_mass
        da = DualAveraging(state.da_mu, state.da_log_step_size_avg, state.da_h_bar, state.da_count)
        wf = Welford(state.wf_count, state.wf_mean, state.wf_m2)
        if iteration < num_warmup:
            if self.adapt_step_size:
                da, step_size = dual_averaging_update(da, accept_stat, self.target_accept_prob)
            if self.adapt_mass_matrix and _in_window(iteration, num_warmup):
                wf = welford_update(wf, z)
                if iteration in _window_ends(num_warmup):
                    inv_mass = welford_variance(wf)
                    wf = welford_init(z)
                    if self.adapt_step_size:
                        step_size = find_reasonable_step_size(
                            potential, batch, z, u, grad, inv_mass, step_size, rng
                        )
                        da = dual_averaging_init(step_size)
            if iteration == num_warmup - 1 and self.adapt_step_size:
                step_size = da.log_step_size_avg.exp()
        new = HamiltonianState(z, u, grad, step_size, inv_mass, *da, *wf)
        return new, info


__all__ = [
    "HamiltonianKernel",
    "HamiltonianState",
    "find_reasonable_step_size",
    "kinetic_energy",
    "leapfrog",
]

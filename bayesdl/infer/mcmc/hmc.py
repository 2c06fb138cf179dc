"""Hamiltonian Monte Carlo with a fixed trajectory, vectorised over chains."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bayesdl.infer.mcmc._compile import CompileFailed, run_while_loop
from bayesdl.infer.mcmc._hamiltonian import (
    HamiltonianKernel,
    HamiltonianState,
    Transition,
    _check_float,
    _check_int,
    _sanitize_energy,
    kinetic_energy,
)
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG

_log = logging.getLogger(__name__)


def _leapfrog_builder(value_and_grad: Callable[..., tuple[Tensor, Tensor]]) -> Callable[..., Any]:
    """A leapfrog step plus the new energy, for :meth:`HamiltonianKernel._step_function`."""

    def step(
        batch: Batch | None, z: Tensor, r: Tensor, g: Tensor, step: Tensor, inv_mass: Tensor
    ) -> tuple[Tensor, ...]:
        half = 0.5 * step
        r = r - half * g
        z = z + step * inv_mass * r
        u, g = value_and_grad(z, batch)
        r = r - half * g
        return z, r, u, g, _sanitize_energy(u + kinetic_energy(r, inv_mass))

    return step


def _masked_step(
    out: tuple[Tensor, ...],
    max_delta_energy: float,
    h0: Tensor,
    steps: Tensor,
    n: Tensor | int,
    z: Tensor,
    r: Tensor,
    u: Tensor,
    g: Tensor,
    moving: Tensor,
    diverging: Tensor,
    num_done: Tensor,
) -> tuple[Tensor, ...]:
    """Apply leapfrog step ``n``'s output ``out`` (:func:`_leapfrog_builder`) to the chains
    still moving: a chain stops after its own ``steps`` or at a divergence (energy error above
    ``max_delta_energy`` or a non-finite gradient), keeping its last valid state."""
    z_new, r_new, u_new, g_new, h = out
    bad = (h - h0 > max_delta_energy) | ~torch.isfinite(g_new).all(-1)
    doing = moving & (n < steps)
    num_done = num_done + doing.long()
    diverging = diverging | (doing & bad)
    moving = doing & ~bad
    mask = moving.unsqueeze(-1)
    z = torch.where(mask, z_new, z)
    r = torch.where(mask, r_new, r)
    u = torch.where(moving, u_new, u)
    g = torch.where(mask, g_new, g)
    return z, r, u, g, moving, diverging, num_done


def _trajectory_builder(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]], max_delta_energy: float
) -> Callable[..., Any]:
    """The whole trajectory as one function (a ``while_loop`` when compiled): up to
    ``longest`` (0-d long) leapfrog steps of :func:`_masked_step`, stopping early once no
    chain moves (the later steps would change nothing)."""
    leapfrog = _leapfrog_builder(value_and_grad)

    def trajectory(
        batch: Batch | None,
        z: Tensor,
        r: Tensor,
        u: Tensor,
        g: Tensor,
        step: Tensor,
        inv_mass: Tensor,
        h0: Tensor,
        steps: Tensor,
        longest: Tensor,
        moving: Tensor,
        diverging: Tensor,
        num_done: Tensor,
    ) -> tuple[Tensor, ...]:
        def cond(n: Tensor, z: Tensor, r: Tensor, u: Tensor, g: Tensor, moving: Tensor,
                 *rest: Tensor) -> Tensor:  # fmt: skip
            return (n < longest) & moving.any()

        def body(n: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            out = leapfrog(batch, state[0], state[1], state[3], step, inv_mass)
            return (n + 1, *_masked_step(out, max_delta_energy, h0, steps, n, *state))

        n0 = torch.zeros((), dtype=torch.long, device=z.device)
        # fresh carries: none may alias another or an input
        carry = (n0, z.clone(), r.clone(), u.clone(), g.clone(), moving.clone(),
                 diverging.clone(), num_done.clone())  # fmt: skip
        return run_while_loop(cond, body, carry)[1:]

    return trajectory


class HMC(HamiltonianKernel):
    """Hamiltonian Monte Carlo: ``L`` leapfrog steps, then a Metropolis test, for ``C`` chains
    at once, each with its own step size and diagonal mass matrix.

    The number of steps is ``num_steps`` when given, otherwise
    ``L = max(1, floor(trajectory_length / step_size))`` per chain (capped at
    ``max_num_steps``), as in Pyro, except that by default the integration time is jittered:
    each iteration a chain uses ``trajectory_length · U`` with ``U ~ Uniform(1 − jitter,
    1 + jitter)``. A fixed integration time can sit near a multiple of a half period of some
    direction of the target, where consecutive draws nearly mirror each other and that
    direction's spread barely mixes (a chain can then report a huge ESS with a wrong variance);
    randomising the time breaks that periodicity (Neal 2011, §5.4). Chains needing fewer steps
    than the longest are masked. A
    step whose energy exceeds the initial one by more than ``max_delta_energy`` is a
    divergence: the chain stops integrating and rejects. Each iteration a chain draws a
    momentum ``[D]`` and one uniform, so chains run side by side equal chains run one by one.

    Warm-up adapts the step size by dual averaging (acceptance statistic: the Metropolis
    probability) and a diagonal mass matrix in Stan's windows.

    Args:
        model: a Pyro model, for use through ``pyro.infer.MCMC``.
        step_size: initial (or fixed) step size; default 1.
        num_steps: leapfrog steps per iteration (overrides ``trajectory_length``).
        trajectory_length: integration time ``L * step_size``; default ``2 * pi``.
        max_num_steps: cap on ``L`` when it follows from ``trajectory_length``.
        jitter: relative half-width in ``[0, 1)`` of the uniform jitter of the integration time
            (not used with ``num_steps``, which fixes ``L``); ``0`` gives Pyro's fixed length.
        adapt_step_size: as for :class:`~bayesdl.infer.mcmc.NUTS`.
        adapt_mass_matrix: as for :class:`~bayesdl.infer.mcmc.NUTS`.
        target_accept_prob: as for :class:`~bayesdl.infer.mcmc.NUTS`.
        max_delta_energy: as for :class:`~bayesdl.infer.mcmc.NUTS`.
        init_strategy: as for :class:`~bayesdl.infer.mcmc.NUTS`.
        compile: as for :class:`~bayesdl.infer.mcmc.NUTS`: on CPU each trajectory (its
            leapfrog steps, energies and per-chain stopping) is one compiled ``while_loop``
            call that ends once no chain moves, elsewhere (or when the loop cannot be
            compiled, e.g. a potential with a graph break) each leapfrog step is a compiled
            call. On ``benchmarks/hmc_bnn.py``'s 502-parameter network (one core of a 2-core
            AVX-512 CPU, fixed step, 100 steps per trajectory) the loop took 45 instead of
            149 us per step for one chain (eager: 430 us, Pyro's HMC: 1.3 ms), 49-53 instead
            of 81-84 us per chain-step for eight.

    Example:
        >>> import torch
        >>> from bayesdl.infer.mcmc import HMC, ChainRNG, FunctionPotential
        >>> potential = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)
        >>> kernel = HMC(num_steps=5)
        >>> rng = ChainRNG.from_seed(0, num_chains=3)
        >>> state = kernel.init_state(torch.zeros(3, 2), potential, rng, num_warmup=10)
        >>> state, info = kernel.step(state, potential, rng, None, iteration=0, num_warmup=10)
        >>> info["num_steps"].tolist()
        [5, 5, 5]

    References:
        S. Duane, A. D. Kennedy, B. J. Pendleton and D. Roweth. Hybrid Monte Carlo. Physics
        Letters B 195(2), 1987.
        R. M. Neal. MCMC using Hamiltonian dynamics. Handbook of Markov Chain Monte Carlo, 2011.
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: float | None = None,
        num_steps: int | None = None,
        trajectory_length: float | None = None,
        max_num_steps: int = 1024,
        jitter: float = 0.2,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        target_accept_prob: float = 0.8,
        max_delta_energy: float = 1000.0,
        init_strategy: str | dict[str, Tensor] = "uniform",
        compile: bool | str = False,
    ):
        super().__init__(
            model,
            step_size=step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            target_accept_prob=target_accept_prob,
            max_delta_energy=max_delta_energy,
            init_strategy=init_strategy,
            compile=compile,
        )
        if num_steps is not None:
            num_steps = _check_int(num_steps, "num_steps", low=1)
        if trajectory_length is not None:
            trajectory_length = _check_float(trajectory_length, "trajectory_length", low=0.0)
        self.num_steps = num_steps
        self.trajectory_length = 2 * math.pi if trajectory_length is None else trajectory_length
        self.max_num_steps = _check_int(max_num_steps, "max_num_steps", low=1)
        jitter = _check_float(jitter, "jitter", low=-1.0)
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must lie in [0, 1), got {jitter}")
        self.jitter = jitter

    #: run each trajectory as one compiled ``while_loop`` call (``compile=True``):
    #: ``None`` ("auto") does so on CPU when torch has the operator, ``True`` / ``False``
    #: force it (otherwise each leapfrog step is a compiled call; see
    #: :attr:`NUTS._subtree_loop`). ``benchmarks/hmc_bnn.py`` compares the two.
    _trajectory_loop: bool | None = None

    def _trajectory_builder(self, value_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        return _trajectory_builder(value_and_grad, self.max_delta_energy)

    def _transition(
        self,
        state: HamiltonianState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
    ) -> Transition:
        z0, u0, g0, inv_mass = state.z, state.potential_energy, state.grad, state.inv_mass
        dtype = z0.dtype
        r0 = rng.normal((z0.shape[-1],), dtype=dtype) * inv_mass.rsqrt()
        log_u = rng.uniform((1,), dtype=dtype).squeeze(-1).log()
        h0 = u0 + kinetic_energy(r0, inv_mass)
        if self.num_steps is not None:
            steps = torch.full_like(u0, self.num_steps, dtype=torch.long)
            longest = self.num_steps
        else:
            length = self.trajectory_length
            if self.jitter > 0:
                u = rng.uniform((1,), dtype=dtype).squeeze(-1)
                length = length * (1.0 + self.jitter * (2.0 * u - 1.0))
            steps = torch.floor(length / state.step_size).clamp(1, self.max_num_steps)
            steps = steps.long()
            longest = int(steps.max())  # one sync per iteration
        step = state.step_size.unsqueeze(-1)
        z, r, u, g = z0, r0, u0, g0
        moving = torch.ones_like(u0, dtype=torch.bool)
        diverging = torch.zeros_like(moving)
        num_done = torch.zeros_like(steps)
        looped = False
        if self.compile is not False and self._use_loop(
            self._trajectory_loop, z0.device, potential
        ):
            trajectory = self._step_function(
                potential, z0.device, self._trajectory_builder, reraise=True
            )
            try:
                z, r, u, g, moving, diverging, num_done = trajectory(
                    batch, z, r, u, g, step, inv_mass, h0, steps,
                    torch.tensor(longest, device=z0.device), moving, diverging, num_done,
                )  # fmt: skip
                looped = True
            except CompileFailed as error:
                # (a graph break in the potential, say): the call changed nothing; this
                # potential's trajectories run as separate compiled leapfrog steps
                _log.info("HMC: %s; compiling single leapfrog steps", error)
                self._loop_failed_for = potential
        if not looped:
            leapfrog_step = self._step_function(potential, z0.device, _leapfrog_builder)
            on_cpu = z0.device.type == "cpu"
            for n in range(longest):
                if on_cpu and n > 0 and not bool(moving.any()):
                    break  # no chain moves: the later steps would change nothing (a free
                    # check on CPU; on an accelerator it would sync every step)
                out = leapfrog_step(batch, z, r, g, step, inv_mass)
                z, r, u, g, moving, diverging, num_done = _masked_step(
                    out, self.max_delta_energy, h0, steps, n, z, r, u, g, moving, diverging,
                    num_done,
                )  # fmt: skip
        h1 = _sanitize_energy(u + kinetic_energy(r, inv_mass))
        accept_prob = torch.where(diverging, 0.0, torch.exp((h0 - h1).clamp(max=0.0)))
        accept = ~diverging & (log_u < h0 - h1)
        mask = accept.unsqueeze(-1)
        z1 = torch.where(mask, z, z0)
        u1 = torch.where(accept, u, u0)
        g1 = torch.where(mask, g, g0)
        info = {
            "potential_energy": u1,
            "accept_prob": accept_prob,
            "diverging": diverging,
            "num_steps": num_done,
            "energy": torch.where(accept, h1, h0),
        }
        return z1, u1, g1, accept_prob, info


__all__ = ["HMC"]

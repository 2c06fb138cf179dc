"""The No-U-Turn Sampler, vectorised over chains: every chain builds its own tree in lockstep."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bayesdl.infer.mcmc._hamiltonian import (
    HamiltonianKernel,
    HamiltonianState,
    Transition,
    _check_int,
)
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products ``[..., D] x [..., D] -> [...]``."""
    return torch.linalg.vecdot(a, b)


def _turning(checks: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """Whether any span ``(p♯_start, p♯_end, ρ)`` fails the generalised no-U-turn criterion
    ``p♯_start·ρ > 0 and p♯_end·ρ > 0``; all spans in one batched call. Returns ``[C]``."""
    if len(checks) == 1:
        p_start, p_end, rho = checks[0]
        return ~(_dot(torch.stack([p_start, p_end]), rho) > 0).all(0)
    ps = torch.stack([c[0] for c in checks] + [c[1] for c in checks])
    rhos = torch.stack([c[2] for c in checks] * 2)
    return ~(_dot(ps, rhos) > 0).all(0)


class NUTS(HamiltonianKernel):
    """The No-U-Turn Sampler with multinomial sampling and the generalised U-turn criterion.

    ``C`` chains (the rows of ``z`` ``[C, D]``) build their trees together: at tree depth
    ``j`` every chain still running adds ``2**j`` leapfrog steps in its own direction, with its
    own step size and diagonal mass matrix; a chain that has stopped (U-turn, divergence or
    ``max_tree_depth``) is masked out. Trees are built iteratively leaf by leaf: the U-turn
    criterion is checked on every balanced sub-tree as it completes (plus Stan's two extra
    checks across the halves of each merge) from a stack of ``O(max_tree_depth)`` momentum
    sums, so no recursion and no per-leaf host sync on accelerators (CPU checks every leaf
    whether any chain is still building, which is free there; other devices check at
    power-of-two leaf counts). Samples within a sub-tree are drawn multinomially
    (progressively, unbiased), sub-trees are merged with Stan's biased progressive sampling.
    A leaf whose energy exceeds the initial one by more than ``max_delta_energy`` is a
    divergence and ends the trajectory.

    Each iteration a chain draws a momentum ``[D]`` and ``2 * max_tree_depth +
    2**max_tree_depth`` uniforms (directions, merges, leaves), whatever happens, so chains run
    side by side equal chains run one by one with the same generators.

    Warm-up: dual averaging of the step size towards ``target_accept_prob`` (the acceptance
    statistic is the mean Metropolis probability over the trajectory's leaves) and a diagonal
    mass matrix from Stan's windowed adaptation
    (:func:`~bayesdl.infer.mcmc.adaptation.adaptation_windows`).

    Args:
        model: a Pyro model, for use through ``pyro.infer.MCMC`` (optional for the functional
            ``init_state`` / ``step`` API).
        step_size: initial (or, without adaptation, fixed) step size; default 1.
        adapt_step_size: adapt the step size during warm-up.
        adapt_mass_matrix: adapt a diagonal inverse mass matrix during warm-up.
        target_accept_prob: dual-averaging target in ``(0, 1)``.
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per iteration
            (``1 <= max_tree_depth <= 16``).
        max_delta_energy: energy error that counts as a divergence.
        init_strategy: initial values when run through ``pyro.infer.MCMC``.

    Example:
        >>> import torch
        >>> from bayesdl.infer.mcmc import NUTS, ChainRNG, FunctionPotential
        >>> potential = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)
        >>> kernel = NUTS(max_tree_depth=5)
        >>> rng = ChainRNG.from_seed(0, num_chains=4)
        >>> state = kernel.init_state(torch.zeros(4, 2), potential, rng, num_warmup=10)
        >>> for t in range(20):
        ...     state, info = kernel.step(state, potential, rng, None, iteration=t, num_warmup=10)
        >>> state.z.shape, info["tree_depth"].shape
        (torch.Size([4, 2]), torch.Size([4]))

    References:
        M. D. Hoffman and A. Gelman. The No-U-Turn Sampler: adaptively setting path lengths in
        Hamiltonian Monte Carlo. JMLR 15, 2014.
        M. Betancourt. A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434,
        2017 (multinomial sampling, generalised no-U-turn criterion).
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: float | None = None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        target_accept_prob: float = 0.8,
        max_tree_depth: int = 10,
        max_delta_energy: float = 1000.0,
        init_strategy: str | dict[str, Tensor] = "uniform",
    ):
        super().__init__(
            model,
            step_size=step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            target_accept_prob=target_accept_prob,
            max_delta_energy=max_delta_energy,
            init_strategy=init_strategy,
        )
        self.max_tree_depth = _check_int(max_tree_depth, "max_tree_depth", low=1, high=16)

    def _transition(
        self,
        state: HamiltonianState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
    ) -> Transition:
        z0, u0, g0, inv_mass = state.z, state.potential_energy, state.grad, state.inv_mass
        dtype = z0.dtype
        num_chains, dim = z0.shape
        depth_max = self.max_tree_depth
        # on CPU a host sync is free: test every leaf whether chains still build, and skip
        # the masking work while all of them do
        on_cpu = z0.device.type == "cpu"

        # all of this iteration's randomness, the same shapes for every chain
        r0 = rng.normal((dim,), dtype=dtype) * inv_mass.rsqrt()
        uniforms = rng.uniform((2 * depth_max + 2**depth_max,), dtype=dtype)
        forward_all = uniforms[:, :depth_max] < 0.5
        log_u_merge = uniforms[:, depth_max : 2 * depth_max].log()
        log_u_leaf = uniforms[:, 2 * depth_max :].log()

        p0 = inv_mass * r0
        h0 = torch.add(u0, _dot(p0, r0), alpha=0.5)
        # trajectory ends [C, 4, D] = (z, r, grad, p♯), momentum sum, log weight, and the
        # proposal packed as [z | grad | U | H]  [C, 2D + 2]
        left = right = torch.stack([z0, r0, g0, p0], 1)
        rho = r0
        log_w = torch.zeros_like(u0)
        prop = torch.cat([z0, g0, u0.unsqueeze(-1), h0.unsqueeze(-1)], -1)
        active = torch.ones(num_chains, dtype=torch.bool, device=z0.device)
        diverging = torch.zeros_like(active)
        depth = torch.zeros(num_chains, dtype=torch.long, device=z0.device)
        num_steps = torch.zeros_like(depth)
        sum_metro = torch.zeros_like(u0)
        step = state.step_size.unsqueeze(-1)

        for j in range(depth_max):
            forward = forward_all[:, j]
            fwd3 = forward.view(-1, 1, 1)
            start = torch.where(fwd3, right, left)
            p_far = torch.where(fwd3, left, right)[:, 3]
            z, r, g, p_near = start.unbind(1)
            r_near = r
            signed_step = torch.where(forward.unsqueeze(-1), step, -step)
            half = 0.5 * signed_step
            step_mass = signed_step * inv_mass
            # the sub-tree of 2**j leaves, built leaf by leaf
            building = active.clone()
            all_building = on_cpu and bool(building.all())
            sub_diverged = torch.zeros_like(active)
            sub_rho = torch.zeros_like(z)
            sub_log_w = torch.full_like(u0, -math.inf)
            sub = prop
            first_r = first_p = p = r_new = z_new = g_new = z
            # slot k-1 holds the first leaf of the current balanced sub-tree of 2**k leaves
            # (p♯, momentum sum before / after it) and the last leaf of the previous one
            start_p: list[Tensor] = [z] * (j + 1)
            start_before: list[Tensor] = [z] * (j + 1)
            start_after: list[Tensor] = [z] * (j + 1)
            end_p: list[Tensor] = [z] * (j + 1)
            end_before: list[Tensor] = [z] * (j + 1)
            num_leaves = 2**j
            for n in range(num_leaves):
                # leapfrog
                r_half = torch.addcmul(r, half, g, value=-1.0)
                z_new = torch.addcmul(z, step_mass, r_half)
                u_new, g_new = potential.value_and_grad(z_new, batch)
                r_new = torch.addcmul(r_half, half, g_new, value=-1.0)
                p = inv_mass * r_new
                h = torch.nan_to_num(torch.add(u_new, _dot(p, r_new), alpha=0.5), nan=math.inf)
                leaf_log_w = h0 - h
                divergent = leaf_log_w < -self.max_delta_energy
                metro = leaf_log_w.clamp(max=0.0).exp()
                if all_building:
                    sum_metro = sum_metro + metro
                    num_steps = num_steps + 1
                else:
                    sum_metro = sum_metro + torch.where(building, metro, 0.0)
                    num_steps = num_steps + building
                # progressive (unbiased) multinomial sampling inside the sub-tree; leaf n of
                # depth j is leaf 2**j - 1 + n of the trajectory, for every chain
                new_sub_log_w = torch.logaddexp(sub_log_w, leaf_log_w)
                leaf = torch.cat([z_new, g_new, u_new.unsqueeze(-1), h.unsqueeze(-1)], -1)
                if n == 0:
                    sub = leaf
                else:
                    take = log_u_leaf[:, num_leaves - 1 + n] < leaf_log_w - new_sub_log_w
                    sub = torch.where(take.unsqueeze(-1), leaf, sub)
                sub_log_w = new_sub_log_w
                # generalised U-turn checks on the balanced sub-trees ending at this leaf
                before = sub_rho
                sub_rho = sub_rho + r_new
                if n == 0:
                    first_r, first_p = r_new, p
                for k in range(1, j + 1):
                    if n % 2**k == 0:
                        start_p[k - 1] = p
                        start_before[k - 1], start_after[k - 1] = before, sub_rho
                ends = [k for k in range(1, j + 1) if (n + 1) % 2**k == 0]
                checks = []
                for k in ends:
                    checks.append((start_p[k - 1], p, sub_rho - start_before[k - 1]))
                    if k >= 2:  # Stan's extra checks across the two halves
                        checks.append(
                            (
                                start_p[k - 1],
                                start_p[k - 2],
                                start_after[k - 2] - start_before[k - 1],
                            )
                        )
                        checks.append((end_p[k - 2], p, sub_rho - end_before[k - 2]))
                for k in ends:
                    end_p[k - 1], end_before[k - 1] = p, before
                stop = divergent
                if checks:
                    stop = stop | _turning(checks)
                sub_diverged = sub_diverged | (building & divergent)
                building = building & ~stop
                if on_cpu:
                    all_building = bool(building.all())
                    if not all_building and n + 1 < num_leaves and not bool(building.any()):
                        break
                if all_building:
                    z, r, g = z_new, r_new, g_new
                else:  # chains that stopped keep their last valid state
                    mask = building.unsqueeze(-1)
                    z = torch.where(mask, z_new, z)
                    r = torch.where(mask, r_new, r)
                    g = torch.where(mask, g_new, g)
                if not on_cpu and n + 1 < num_leaves and (n + 1) & n == 0:
                    if not bool(building.any()):  # a sync at power-of-two leaf counts only
                        break
            # merge the sub-tree into the trajectory (chains whose sub-tree stayed valid)
            valid = building
            diverging = diverging | sub_diverged
            depth = torch.where(active, j + 1, depth)
            take = valid & (log_u_merge[:, j] < sub_log_w - log_w)
            prop = torch.where(take.unsqueeze(-1), sub, prop)
            log_w = torch.where(valid, torch.logaddexp(log_w, sub_log_w), log_w)
            rho = torch.where(valid.unsqueeze(-1), rho + sub_rho, rho)
            outer = torch.stack([z, r, g, p], 1)
            right = torch.where((valid & forward).view(-1, 1, 1), outer, right)
            left = torch.where((valid & ~forward).view(-1, 1, 1), outer, left)
            checks = [(left[:, 3], right[:, 3], rho)]
            if j >= 1:
                # old trajectory plus the sub-tree's first leaf; old near end plus the sub-tree
                checks.append((p_far, first_p, rho - sub_rho + first_r))
                checks.append((p_near, p, sub_rho + r_near))
            active = valid & ~_turning(checks)
            if not bool(active.any()):
                break

        z1, g1 = prop[:, :dim], prop[:, dim : 2 * dim]
        u1, h1 = prop[:, 2 * dim], prop[:, 2 * dim + 1]
        accept_prob = sum_metro / num_steps.clamp(min=1).to(dtype)
        info = {
            "potential_energy": u1,
            "accept_prob": accept_prob,
            "diverging": diverging,
            "num_steps": num_steps,
            "tree_depth": depth,
            "energy": h1,
        }
        return z1, u1, g1, accept_prob, info


__all__ = ["NUTS"]

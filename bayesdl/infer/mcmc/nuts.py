"""The No-U-Turn Sampler, vectorised over chains: every chain builds its own tree in lockstep."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from bayesdl.infer.mcmc._compile import CompileFailed, run_while_loop
from bayesdl.infer.mcmc._hamiltonian import (
    HamiltonianKernel,
    HamiltonianState,
    Transition,
    _check_int,
)
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG

_log = logging.getLogger(__name__)


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


def _leaf(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]],
    max_delta_energy: float,
    batch: Batch | None,
    z: Tensor,
    r: Tensor,
    g: Tensor,
    half: Tensor,
    step_mass: Tensor,
    inv_mass: Tensor,
    h0: Tensor,
    sub_log_w: Tensor,
    sub: Tensor,
    log_u: Tensor,
    sub_rho: Tensor,
    building: Tensor,
    sum_metro: Tensor,
    num_steps: Tensor,
) -> tuple[Tensor, ...]:
    """One leaf of a NUTS sub-tree, every chain at once: a leapfrog step from ``(z, r, g)``
    (``half`` = signed step / 2 ``[C, 1]``, ``step_mass`` = signed step * ``inv_mass``), the
    leaf's energy and log weight against ``h0``, the acceptance-statistic sums (for chains
    still ``building``), the progressive multinomial choice of the sub-tree's proposal
    ``sub`` = ``[z | grad | U | H]`` (the leaf replaces it with probability
    ``w_leaf / w_subtree``, decided by ``log_u``) and the sub-tree's momentum sum.

    A pure tensor function, so ``torch.compile`` fuses it with the potential's forward and
    backward passes into one graph.

    Returns:
        ``z', r', ∇U(z'), p♯' = M⁻¹ r'``, divergent ``[C]``, ``sum_metro``, ``num_steps``,
        ``sub_log_w``, ``sub``, ``sub_rho``, all updated.
    """
    r_half = torch.addcmul(r, half, g, value=-1.0)
    z_new = torch.addcmul(z, step_mass, r_half)
    u_new, g_new = value_and_grad(z_new, batch)
    r_new = torch.addcmul(r_half, half, g_new, value=-1.0)
    p = inv_mass * r_new
    h = torch.nan_to_num(torch.add(u_new, _dot(p, r_new), alpha=0.5), nan=math.inf)
    leaf_log_w = h0 - h
    divergent = leaf_log_w < -max_delta_energy
    metro = leaf_log_w.clamp(max=0.0).exp()
    sum_metro = sum_metro + torch.where(building, metro, 0.0)
    num_steps = num_steps + building
    new_sub_log_w = torch.logaddexp(sub_log_w, leaf_log_w)
    # the first leaf (sub_log_w = -inf) is always taken: log_u < 0 = leaf_log_w - new_sub_log_w
    take = log_u < leaf_log_w - new_sub_log_w
    leaf = torch.cat([z_new, g_new, u_new.unsqueeze(-1), h.unsqueeze(-1)], -1)
    sub = torch.where(take.unsqueeze(-1), leaf, sub)
    return (
        z_new,
        r_new,
        g_new,
        p,
        divergent,
        sum_metro,
        num_steps,
        new_sub_log_w,
        sub,
        sub_rho + r_new,
    )


def _leaf_and_checks(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]],
    max_delta_energy: float,
    batch: Batch | None,
    z: Tensor,
    r: Tensor,
    g: Tensor,
    half: Tensor,
    step_mass: Tensor,
    inv_mass: Tensor,
    h0: Tensor,
    sub_log_w: Tensor,
    sub: Tensor,
    log_u: Tensor,
    sub_rho: Tensor,
    building: Tensor,
    sum_metro: Tensor,
    num_steps: Tensor,
    sub_diverged: Tensor,
    real: Tensor,
    starts: Tensor,
    ends: Tensor,
    start_p: Tensor,
    start_before: Tensor,
    start_after: Tensor,
    end_p: Tensor,
    end_before: Tensor,
) -> tuple[Tensor, ...]:
    """:func:`_leaf` plus everything else a leaf does, as one fixed-shape tensor function
    (``compile=True`` compiles a loop of them, :func:`_subtree_loop`, or blocks of them,
    :func:`_leaf_block`): the generalised U-turn checks of every balanced sub-tree ending at
    this leaf and the stopping masks.

    The Python loop of the eager path keeps the U-turn bookkeeping in lists indexed by sub-tree
    size; here slot ``k - 1`` of the ``[J, C, D]`` stacks ``start_p``, ``start_before``,
    ``start_after``, ``end_p`` and ``end_before`` holds the same tensors, and the boolean
    ``[J]`` rows ``starts`` (``n % 2**k == 0``: a sub-tree of ``2**k`` leaves starts here) and
    ``ends`` (``(n + 1) % 2**k == 0``: one ends here) select which slots this leaf updates and
    which checks count, so every leaf runs the same graph: ``3 J`` dot products instead of the
    few that apply, negligible next to the potential. ``real`` (a 0-d bool) is false for a
    padding leaf (a block of four leaves standing in for a sub-tree of one or two): it is
    computed but changes nothing (no sums, no choice, no stop, the state passes through).

    Returns:
        ``z, r, g`` (the new leaf where the chain still builds, else unchanged), ``r'``, ``p♯'``,
        ``building``, ``sub_diverged``, ``sum_metro``, ``num_steps``, ``sub_log_w``, ``sub``,
        ``sub_rho`` and the five stacks, updated.
    """
    before, log_w_before = sub_rho, sub_log_w
    live = building & real
    # a padding leaf never replaces the proposal (+inf < x is false, NaN included)
    log_u = torch.where(real, log_u, math.inf)
    (z_new, r_new, g_new, p, divergent, sum_metro, num_steps, sub_log_w, sub, sub_rho) = _leaf(
        value_and_grad, max_delta_energy, batch, z, r, g, half, step_mass, inv_mass, h0,
        sub_log_w, sub, log_u, sub_rho, live, sum_metro, num_steps,
    )  # fmt: skip
    sub_log_w = torch.where(real, sub_log_w, log_w_before)
    sub_rho = torch.where(real, sub_rho, before)
    s = starts.view(-1, 1, 1)
    start_p = torch.where(s, p, start_p)
    start_before = torch.where(s, before, start_before)
    start_after = torch.where(s, sub_rho, start_after)
    # slot k - 1 for every k: the sub-tree of 2**k leaves ending here, then (k >= 2) Stan's
    # checks across its halves; a span turns unless both its ends move along its momentum sum
    rho1 = sub_rho - start_before
    turn1 = ~((_dot(start_p, rho1) > 0) & (_dot(p, rho1) > 0))
    rho2 = start_after[:-1] - start_before[1:]
    turn2 = ~((_dot(start_p[1:], rho2) > 0) & (_dot(start_p[:-1], rho2) > 0))
    rho3 = sub_rho - end_before[:-1]
    turn3 = ~((_dot(end_p[:-1], rho3) > 0) & (_dot(p, rho3) > 0))
    e = ends.unsqueeze(-1)
    turning = (turn1 & e).any(0) | ((turn2 | turn3) & e[1:]).any(0)
    e3 = ends.view(-1, 1, 1)
    end_p = torch.where(e3, p, end_p)
    end_before = torch.where(e3, before, end_before)
    sub_diverged = sub_diverged | (live & divergent)
    building = building & ~(real & (divergent | turning))
    # chains that stopped keep their last valid state, and every chain its state at padding
    mask = (building & real).unsqueeze(-1)
    z = torch.where(mask, z_new, z)
    r = torch.where(mask, r_new, r)
    g = torch.where(mask, g_new, g)
    return (
        z,
        r,
        g,
        r_new,
        p,
        building,
        sub_diverged,
        sum_metro,
        num_steps,
        sub_log_w,
        sub,
        sub_rho,
        start_p,
        start_before,
        start_after,
        end_p,
        end_before,
    )


def _leaf_block(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]],
    max_delta_energy: float,
    batch: Batch | None,
    z: Tensor,
    r: Tensor,
    g: Tensor,
    half: Tensor,
    step_mass: Tensor,
    inv_mass: Tensor,
    h0: Tensor,
    sub_log_w: Tensor,
    sub: Tensor,
    log_u: Tensor,
    sub_rho: Tensor,
    building: Tensor,
    sum_metro: Tensor,
    num_steps: Tensor,
    sub_diverged: Tensor,
    real: Tensor,
    starts: Tensor,
    ends: Tensor,
    *stacks: Tensor,
) -> tuple[Tensor, ...]:
    """``K`` consecutive leaves (:func:`_leaf_and_checks`) in one function, so a compiled
    kernel pays its per-call cost (guards, argument and output handling) once per ``K``
    leaves. ``log_u [K, C]``, ``real [K]``, ``starts`` and ``ends [K, J]`` hold the leaves'
    rows; the first leaf is always real, padding leaves (``real`` false) come last.

    A chain that stops inside the block keeps its state (the leaf masks it out, as between
    calls), so a block gives the same draws as ``K`` single leaves; only the leaves after all
    chains stopped, and the padding, are computed in vain.

    Returns:
        what :func:`_leaf_and_checks` returns for the last real leaf, without ``r'``, then
        ``r'`` and ``p♯'`` of the block's *first* leaf (the trajectory merge needs them).
    """
    first: tuple[Tensor, Tensor] | None = None
    p_last = z
    for k in range(log_u.shape[0]):
        (z, r, g, r_new, p, building, sub_diverged, sum_metro, num_steps, sub_log_w, sub,
         sub_rho, *rest) = _leaf_and_checks(
            value_and_grad, max_delta_energy, batch, z, r, g, half, step_mass, inv_mass, h0,
            sub_log_w, sub, log_u[k], sub_rho, building, sum_metro, num_steps, sub_diverged,
            real[k], starts[k], ends[k], *stacks,
        )  # fmt: skip
        stacks = tuple(rest)
        if first is None:
            first = (r_new, p)
            p_last = p
        else:
            p_last = torch.where(real[k], p, p_last)
    assert first is not None
    return (z, r, g, p_last, building, sub_diverged, sum_metro, num_steps, sub_log_w, sub,
            sub_rho, first[0], first[1], *stacks)  # fmt: skip


def _subtree_loop(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]],
    max_delta_energy: float,
    batch: Batch | None,
    z: Tensor,
    r: Tensor,
    g: Tensor,
    half: Tensor,
    step_mass: Tensor,
    inv_mass: Tensor,
    h0: Tensor,
    sub_log_w: Tensor,
    sub: Tensor,
    log_u_all: Tensor,
    sub_rho: Tensor,
    building: Tensor,
    sum_metro: Tensor,
    num_steps: Tensor,
    sub_diverged: Tensor,
    num_leaves: Tensor,
    starts_all: Tensor,
    ends_all: Tensor,
    *stacks: Tensor,
) -> tuple[Tensor, ...]:
    """A whole sub-tree of ``num_leaves`` (a 0-d long tensor) leaves as one
    ``torch._higher_order_ops.while_loop`` over :func:`_leaf_and_checks`, which stops after
    the last leaf or as soon as no chain builds (the eager loop's test on CPU). Leaf ``n``
    reads its uniform from row ``num_leaves - 1 + n`` of ``log_u_all [2**depth, C]`` and its
    slot masks from row ``n`` of ``starts_all``, ``ends_all`` (:func:`_slot_masks`), so one
    graph, compiled once, serves every depth, and a compiled call costs its per-call overhead
    once per sub-tree instead of once per leaf or block.

    Returns:
        what :func:`_leaf_block` returns (``z, r, g, p♯`` of the last leaf, ..., the first
        leaf's ``r'`` and ``p♯'``, the stacks).
    """
    real = torch.ones((), dtype=torch.bool, device=z.device)
    offset = num_leaves - 1

    def cond(n: Tensor, z: Tensor, r: Tensor, g: Tensor, p: Tensor, building: Tensor,
             *rest: Tensor) -> Tensor:  # fmt: skip
        return (n < num_leaves) & building.any()

    def body(n: Tensor, z: Tensor, r: Tensor, g: Tensor, p: Tensor, building: Tensor,
             sub_diverged: Tensor, sum_metro: Tensor, num_steps: Tensor, sub_log_w: Tensor,
             sub: Tensor, sub_rho: Tensor, first_r: Tensor, first_p: Tensor,
             *stacks: Tensor) -> tuple[Tensor, ...]:  # fmt: skip
        at = n.view(1)
        log_u = log_u_all.index_select(0, at + offset).squeeze(0)
        starts = starts_all.index_select(0, at).squeeze(0)
        ends = ends_all.index_select(0, at).squeeze(0)
        (z, r, g, r_new, p, building, sub_diverged, sum_metro, num_steps, sub_log_w, sub,
         sub_rho, *stacks) = _leaf_and_checks(
            value_and_grad, max_delta_energy, batch, z, r, g, half, step_mass, inv_mass, h0,
            sub_log_w, sub, log_u, sub_rho, building, sum_metro, num_steps, sub_diverged,
            real, starts, ends, *stacks,
        )  # fmt: skip
        first = n == 0
        first_r = torch.where(first, r_new, first_r)
        first_p = torch.where(first, p, first_p)
        return (n + 1, z, r, g, p, building, sub_diverged, sum_metro, num_steps, sub_log_w,
                sub, sub_rho, first_r, first_p, *stacks)  # fmt: skip

    n0 = torch.zeros((), dtype=torch.long, device=z.device)
    out = run_while_loop(
        cond,
        body,
        # distinct tensors for p♯, r', p♯' of the first leaf: carries must not alias
        # (z, r, g arrive as views of one tensor)
        (n0, z.clone(), r.clone(), g.clone(), torch.zeros_like(z), building, sub_diverged,
         sum_metro, num_steps, sub_log_w, sub, sub_rho, torch.zeros_like(z),
         torch.zeros_like(z), *stacks),
    )  # fmt: skip
    return tuple(out[1:])


def _merge(
    j: int | Tensor,
    valid: Tensor,
    forward: Tensor,
    active: Tensor,
    log_u: Tensor,
    sub_log_w: Tensor,
    sub: Tensor,
    sub_rho: Tensor,
    sub_diverged: Tensor,
    outer: Tensor,
    first_r: Tensor,
    first_p: Tensor,
    p_far: Tensor,
    p_near: Tensor,
    r_near: Tensor,
    prop: Tensor,
    log_w: Tensor,
    rho: Tensor,
    left: Tensor,
    right: Tensor,
    diverging: Tensor,
    depth: Tensor,
) -> tuple[Tensor, ...]:
    """Merge the sub-tree of doubling ``j`` (an int, or a 0-d tensor inside the compiled tree
    loop) into the trajectory, for chains whose sub-tree stayed ``valid``: Stan's biased
    progressive choice of the proposal (``log_u``: the merge uniform's log), the log weight,
    the momentum sum, the new end ``outer = (z, r, grad, p♯)`` ``[4, C, D]`` on each chain's
    side, and the U-turn checks of the whole trajectory and, from the second doubling on,
    the two across the merge (old trajectory plus the sub-tree's first leaf, ``first_r`` /
    ``first_p``; old near end, ``p_near`` / ``r_near``, plus the sub-tree).

    Returns:
        ``prop, log_w, rho, left, right, diverging, depth, active``, updated.
    """
    diverging = diverging | sub_diverged
    depth = torch.where(active, j + 1, depth)
    take = valid & (log_u < sub_log_w - log_w)
    prop = torch.where(take.unsqueeze(-1), sub, prop)
    log_w = torch.where(valid, torch.logaddexp(log_w, sub_log_w), log_w)
    rho = torch.where(valid.unsqueeze(-1), rho + sub_rho, rho)
    right = torch.where((valid & forward).view(1, -1, 1), outer, right)
    left = torch.where((valid & ~forward).view(1, -1, 1), outer, left)
    checks = [(left[3], right[3], rho)]
    across = [(p_far, first_p, rho - sub_rho + first_r), (p_near, outer[3], sub_rho + r_near)]
    if isinstance(j, Tensor):  # traced: the checks across the merge count from j = 1
        turning = _turning(checks) | ((j >= 1) & _turning(across))
    else:
        turning = _turning(checks + across if j >= 1 else checks)
    return prop, log_w, rho, left, right, diverging, depth, valid & ~turning


def _tree_loop(
    value_and_grad: Callable[..., tuple[Tensor, Tensor]],
    max_delta_energy: float,
    max_tree_depth: int,
    batch: Batch | None,
    ends: Tensor,
    prop: Tensor,
    h0: Tensor,
    step: Tensor,
    inv_mass: Tensor,
    forward_all: Tensor,
    log_u_merge: Tensor,
    log_u_leaf: Tensor,
    starts_all: Tensor,
    ends_all: Tensor,
    *stacks: Tensor,
) -> tuple[Tensor, ...]:
    """A whole NUTS trajectory, every chain at once, as one ``while_loop`` over the tree
    doublings whose body builds the sub-tree (:func:`_subtree_loop`, a ``while_loop`` over its
    leaves) and merges it (:func:`_merge`): the steps of the Python loop over doublings in
    :meth:`NUTS._transition`, so one compiled call per iteration replaces a call and some
    twenty small eager operations per doubling (on CPU ~7 us of a 66 us leaf of
    ``benchmarks/nuts_bnn.py``'s network).

    ``ends [4, C, D]`` = ``(z, r, grad, p♯)`` and ``prop [C, 2D + 2]`` are the start of the
    trajectory (both of its ends) and the initial proposal, as :meth:`NUTS._transition` builds
    them; ``forward_all [C, J]`` and ``log_u_merge [C, J]`` hold each doubling's direction and
    merge uniform, ``log_u_leaf [2**J, C]`` the leaves' uniforms, ``step [C, 1]`` the step sizes.

    Returns:
        the proposal ``[z | grad | U | H]`` ``[C, 2D + 2]``, ``diverging``, ``depth``,
        ``num_steps``, ``sum_metro`` ``[C]`` and the number of leaves computed for all chains
        together (a 0-d long tensor: the loop runs a leaf while any chain builds).
    """
    z0 = ends[0]
    num_chains, device = z0.shape[0], z0.device
    one = torch.ones((), dtype=torch.long, device=device)

    def cond(j: Tensor, left: Tensor, right: Tensor, rho: Tensor, log_w: Tensor,
             prop: Tensor, active: Tensor, *rest: Tensor) -> Tensor:  # fmt: skip
        return (j < max_tree_depth) & active.any()

    def body(j: Tensor, left: Tensor, right: Tensor, rho: Tensor, log_w: Tensor, prop: Tensor,
             active: Tensor, diverging: Tensor, depth: Tensor, num_steps: Tensor,
             sum_metro: Tensor, leaves: Tensor, *stacks: Tensor) -> tuple[Tensor, ...]:  # fmt: skip
        at = j.view(1)
        forward = forward_all.index_select(1, at).squeeze(1)
        fwd3 = forward.view(1, -1, 1)
        start = torch.where(fwd3, right, left)
        p_far = torch.where(fwd3, left, right)[3]
        z, r, g, p_near = start.unbind(0)
        signed_step = torch.where(forward.unsqueeze(-1), step, -step)
        num_leaves = torch.bitwise_left_shift(one, j)
        steps_before = num_steps
        (z, r, g, p, valid, sub_diverged, sum_metro, num_steps, sub_log_w, sub, sub_rho,
         first_r, first_p, *stacks) = _subtree_loop(
            value_and_grad, max_delta_energy, batch, z, r, g, 0.5 * signed_step,
            signed_step * inv_mass, inv_mass, h0, torch.full_like(h0, -math.inf), prop,
            log_u_leaf, torch.zeros_like(z0), active, sum_metro, num_steps,
            torch.zeros_like(active), num_leaves, starts_all, ends_all, *stacks,
        )  # fmt: skip
        leaves = leaves + (num_steps - steps_before).max()
        prop, log_w, rho, left, right, diverging, depth, active = _merge(
            j, valid, forward, active, log_u_merge.index_select(1, at).squeeze(1), sub_log_w,
            sub, sub_rho, sub_diverged, torch.stack([z, r, g, p]), first_r, first_p, p_far,
            p_near, start[1], prop, log_w, rho, left, right, diverging, depth,
        )  # fmt: skip
        return (j + 1, left, right, rho, log_w, prop, active, diverging, depth, num_steps,
                sum_metro, leaves, *stacks)  # fmt: skip

    active = torch.ones(num_chains, dtype=torch.bool, device=device)
    zeros_long = torch.zeros(num_chains, dtype=torch.long, device=device)
    # distinct tensors for every carry (left and right start as the same ends; rho is r0)
    out = run_while_loop(
        cond,
        body,
        (torch.zeros_like(one), ends.clone(), ends.clone(), ends[1].clone(),
         torch.zeros_like(h0), prop.clone(), active, torch.zeros_like(active), zeros_long,
         zeros_long.clone(), torch.zeros_like(h0), torch.zeros_like(one),
         *(s.clone() for s in stacks)),
    )  # fmt: skip
    _, _, _, _, _, prop, _, diverging, depth, num_steps, sum_metro, leaves = out[:12]
    return prop, diverging, depth, num_steps, sum_metro, leaves


@lru_cache(maxsize=16)
def _loop_constants(depth: int, device: torch.device) -> tuple[Tensor, Tensor, list[Tensor]]:
    """:func:`_slot_masks` on ``device`` and the sub-tree sizes ``2**j`` as 0-d long tensors,
    the inputs of :func:`_subtree_loop` that do not change between iterations."""
    starts, ends = (t.to(device) for t in _slot_masks(depth))
    return starts, ends, [torch.tensor(2**j, device=device) for j in range(depth)]


@lru_cache(maxsize=16)
def _slot_masks(depth: int) -> tuple[Tensor, Tensor]:
    """``starts[n, k - 1] = n % 2**k == 0`` and ``ends[n, k - 1] = (n + 1) % 2**k == 0`` for
    leaves ``n < 2**(depth - 1)`` and ``k = 1..depth`` (CPU bool tensors ``[2**(depth-1), depth]``)."""
    n = torch.arange(2 ** (depth - 1)).unsqueeze(-1)
    size = 2 ** torch.arange(1, depth + 1)
    return n % size == 0, (n + 1) % size == 0


def _block_rows(
    depth: int, block: int, device: torch.device
) -> tuple[tuple[Tensor, Tensor, Tensor], ...]:
    """The ``(real [K], starts [K, J], ends [K, J])`` rows of every compiled call of a tree of
    at most ``depth`` doublings, ``K = block`` leaves per call, on ``device``: entry ``i`` is
    for leaves ``i K .. (i + 1) K - 1`` of a sub-tree of at least ``K`` leaves, entry
    ``-1 - j`` for the whole sub-tree of ``2**j < K`` leaves, padded with rows that are not
    ``real`` (and start and end nothing)."""
    return _block_rows_cached(depth, block, str(device))


@lru_cache(maxsize=16)
def _block_rows_cached(
    depth: int, block: int, device: str
) -> tuple[tuple[Tensor, Tensor, Tensor], ...]:
    starts, ends = _slot_masks(depth)
    rows = []
    for i in range(starts.shape[0] // block):
        part = slice(i * block, (i + 1) * block)
        rows.append((torch.ones(block, dtype=torch.bool), starts[part], ends[part]))
    small = []
    for j in range(block.bit_length() - 1):  # 2**j < block
        n = 2**j
        real = torch.arange(block) < n
        pad = torch.zeros(block - n, depth, dtype=torch.bool)
        small.append((real, torch.cat([starts[:n], pad]), torch.cat([ends[:n], pad])))
    rows.extend(reversed(small))
    return tuple(tuple(t.to(device) for t in row) for row in rows)


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
        compile: ``True`` compiles each leaf's work (the leapfrog step with the potential's
            forward and backward passes, taken by ``torch.func.grad_and_value``, the energy,
            acceptance sums, multinomial choice and U-turn checks) with ``torch.compile``
            (inductor), one graph per chain count and dtype: on CPU each iteration's whole
            trajectory is one call, a compiled ``while_loop`` over the tree doublings whose
            body builds a sub-tree by a ``while_loop`` over its leaves (stopping when every
            chain has stopped building) and merges it; elsewhere (or when the loop cannot be
            compiled, e.g. a potential with a graph break) four leaves per call (the first sub-trees, of one
            and two leaves, run as padded calls of the same graph). Either way several times
            fewer kernel launches and Python dispatches per gradient, which is what a small
            network costs (on CPU, with inductor's C++ wrapper and ``tanh`` in its
            decomposed, faster form). Pyro's and ``torch.distributions``' validation is
            switched off (process-wide) during compiled calls, as Pyro's JIT inference does
            (the eager start still validates): where an eager step would raise on an invalid
            value (a NaN network output, say) the compiled one sees a non-finite energy, a
            divergence. The first iteration waits for compilation (seconds, longer the first
            time on a machine; :attr:`compile_time_s` reports it apart from sampling); draws
            equal the eager ones up to floating-point round-off (so individual trajectories
            may part after many iterations). Needs a potential whose
            ``_value`` is traceable (:class:`~bayesdl.infer.mcmc.FunctionPotential`,
            :class:`~bayesdl.infer.mcmc.BNNPotential`; a Pyro-traced
            :class:`~bayesdl.infer.mcmc.ModelPotential` usually is not) and a C++ compiler on
            CPU; ``True`` raises :class:`RuntimeError` when compilation is impossible or
            fails, ``"auto"`` warns and runs eagerly instead. Default ``False`` (eager).

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
        self.max_tree_depth = _check_int(max_tree_depth, "max_tree_depth", low=1, high=16)

    #: leaves per compiled call (``compile=True``): sub-trees of ``2**j >= 4`` leaves are built
    #: 4 leaves per graph call (the per-call cost, not the arithmetic, is most of a small
    #: network's leaf), smaller ones in one padded call of the same graph (one graph to
    #: compile instead of three: ~40% less compile time); at most 3 wasted leaves per
    #: sub-tree (5 padding leaves per iteration)
    _leaves_per_call: int = 4

    #: build each sub-tree in one compiled ``while_loop`` call (:func:`_subtree_loop`):
    #: ``None`` does so on CPU when torch has the operator, ``True`` / ``False`` force it. Not
    #: the default on CUDA: the loop's condition is read on the host every leaf (a sync per
    #: leaf, where the block path syncs at power-of-two leaf counts), and it is untested there
    _subtree_loop: bool | None = None

    #: where the sub-tree loop runs, build the whole trajectory in one compiled call
    #: (:func:`_tree_loop`: a ``while_loop`` over the doublings around the sub-tree loop)
    #: instead of one call per sub-tree merged in Python. One core of a 2-core AVX-512 CPU,
    #: ``benchmarks/nuts_bnn.py``'s network, depth-8 trees: 66 -> 56 us per leaf for one
    #: chain, 388 -> 361 us for eight (the per-doubling Python work and calls were ~7 us of
    #: a one-chain leaf)
    _whole_tree: bool = True

    def _use_subtree_loop(self, device: torch.device, potential: Potential | None = None) -> bool:
        return self._use_loop(self._subtree_loop, device, potential)

    def _leaf_builder(self, value_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        max_delta = self.max_delta_energy

        def leaf(*args: Any) -> tuple[Tensor, ...]:
            return _leaf(value_and_grad, max_delta, *args)

        return leaf

    def _fused_builder(self, value_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        max_delta = self.max_delta_energy

        def leaves(*args: Any) -> tuple[Tensor, ...]:
            return _leaf_block(value_and_grad, max_delta, *args)

        return leaves

    def _tree_builder(self, value_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        max_delta, max_depth = self.max_delta_energy, self.max_tree_depth

        def tree(*args: Any) -> tuple[Tensor, ...]:
            return _tree_loop(value_and_grad, max_delta, max_depth, *args)

        return tree

    def _subtree_builder(self, value_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        max_delta = self.max_delta_energy

        def subtree(*args: Any) -> tuple[Tensor, ...]:
            return _subtree_loop(value_and_grad, max_delta, *args)

        return subtree

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
        # [leaves, C]: each leaf's row is a contiguous [C] tensor (a compiled step is
        # specialised to its inputs' strides)
        log_u_leaf = uniforms[:, 2 * depth_max :].log().t().contiguous()

        p0 = inv_mass * r0
        h0 = torch.add(u0, _dot(p0, r0), alpha=0.5)
        # trajectory ends [4, C, D] = (z, r, grad, p♯), momentum sum, log weight, and the
        # proposal packed as [z | grad | U | H]  [C, 2D + 2]
        left = right = torch.stack([z0, r0, g0, p0])
        rho = r0
        log_w = torch.zeros_like(u0)
        prop = torch.cat([z0, g0, u0.unsqueeze(-1), h0.unsqueeze(-1)], -1)
        active = torch.ones(num_chains, dtype=torch.bool, device=z0.device)
        diverging = torch.zeros_like(active)
        depth = torch.zeros(num_chains, dtype=torch.long, device=z0.device)
        num_steps = torch.zeros_like(depth)
        sum_metro = torch.zeros_like(u0)
        step = state.step_size.unsqueeze(-1)
        doublings = depth_max
        if self.compile is False:
            leaf_step = self._step_function(potential, z0.device, self._leaf_builder)
            stacks = None
        else:
            # U-turn bookkeeping stacks [J, C, D] (see _leaf_and_checks), reused across depths
            stacks = [z0.new_zeros(depth_max, num_chains, dim) for _ in range(5)]
            use_loop = self._use_subtree_loop(z0.device, potential)
            if use_loop:
                starts_all, ends_all, sizes = _loop_constants(depth_max, z0.device)
            if use_loop and self._whole_tree:  # the whole trajectory in one call
                tree_step = self._step_function(
                    potential, z0.device, self._tree_builder, reraise=True
                )
                try:
                    prop, diverging, depth, num_steps, sum_metro, _ = tree_step(
                        batch, left, prop, h0, step, inv_mass, forward_all, log_u_merge,
                        log_u_leaf, starts_all, ends_all, *stacks,
                    )  # fmt: skip
                    doublings = 0  # built: the loop over depths below has nothing to do
                except CompileFailed as error:
                    # see the sub-tree loop's fallback below
                    _log.info("NUTS: %s; building sub-trees in blocks of leaves", error)
                    self._loop_failed_for = potential
                    use_loop = False
            if use_loop and doublings:
                subtree_step = self._step_function(
                    potential, z0.device, self._subtree_builder, reraise=True
                )
            leaf_step = None if use_loop else self._step_function(
                potential, z0.device, self._fused_builder
            )  # fmt: skip
            block = min(self._leaves_per_call, 2 ** (depth_max - 1))
            block_rows = _block_rows(depth_max, block, z0.device)

        for j in range(doublings):
            forward = forward_all[:, j]
            fwd3 = forward.view(1, -1, 1)
            start = torch.where(fwd3, right, left)
            p_far = torch.where(fwd3, left, right)[3]
            z, r, g, p_near = start.unbind(0)
            r_near = r
            signed_step = torch.where(forward.unsqueeze(-1), step, -step)
            half = 0.5 * signed_step
            step_mass = signed_step * inv_mass
            # the sub-tree of 2**j leaves, built leaf by leaf
            building = active.clone()
            sub_diverged = torch.zeros_like(active)
            sub_rho = torch.zeros_like(z)
            sub_log_w = torch.full_like(u0, -math.inf)
            sub = prop
            first_r = first_p = p = r_new = z_new = g_new = z
            num_leaves = 2**j
            looped = False
            if stacks is not None and use_loop:  # compiled: the sub-tree in one call
                try:
                    (z, r, g, p, building, sub_diverged, sum_metro, num_steps, sub_log_w, sub,
                     sub_rho, first_r, first_p, *stacks) = subtree_step(
                        batch, z, r, g, half, step_mass, inv_mass, h0, sub_log_w, sub,
                        log_u_leaf, sub_rho, building, sum_metro, num_steps, sub_diverged,
                        sizes[j], starts_all, ends_all, *stacks,
                    )  # fmt: skip
                    looped = True
                except CompileFailed as error:
                    # the loop did not compile (a graph break in the potential, an operator
                    # it cannot lower); the call changed nothing, so this and later sub-trees
                    # of this potential are built block by block (blocks allow graph breaks)
                    _log.info("NUTS: %s; building sub-trees in blocks of leaves", error)
                    self._loop_failed_for = potential
                    use_loop = False
                    leaf_step = self._step_function(potential, z0.device, self._fused_builder)
            if looped:
                pass  # the whole sub-tree is built
            elif stacks is not None:  # compiled: one fused graph per block of leaves
                for n in range(0, num_leaves, block):
                    # a sub-tree smaller than a block runs as one padded block
                    real, starts, ends = block_rows[n // block if num_leaves >= block else -1 - j]
                    (z, r, g, p, building, sub_diverged, sum_metro, num_steps, sub_log_w,
                     sub, sub_rho, block_r, block_p, *stacks) = leaf_step(
                        batch, z, r, g, half, step_mass, inv_mass, h0, sub_log_w, sub,
                        log_u_leaf[num_leaves - 1 + n : num_leaves - 1 + n + block], sub_rho,
                        building, sum_metro, num_steps, sub_diverged, real, starts, ends,
                        *stacks,
                    )  # fmt: skip
                    if n == 0:
                        first_r, first_p = block_r, block_p
                    done = n + block
                    if done < num_leaves and (on_cpu or done & (done - 1) == 0):
                        if not bool(building.any()):
                            break
            else:
                all_building = on_cpu and bool(building.all())
                # slot k-1 holds the first leaf of the current balanced sub-tree of 2**k leaves
                # (p♯, momentum sum before / after it) and the last leaf of the previous one
                start_p: list[Tensor] = [z] * (j + 1)
                start_before: list[Tensor] = [z] * (j + 1)
                start_after: list[Tensor] = [z] * (j + 1)
                end_p: list[Tensor] = [z] * (j + 1)
                end_before: list[Tensor] = [z] * (j + 1)
                for n in range(num_leaves):
                    # leapfrog, energy, acceptance sums and progressive (unbiased) multinomial
                    # sampling inside the sub-tree; leaf n of depth j is leaf 2**j - 1 + n of the
                    # trajectory, for every chain
                    before = sub_rho
                    (z_new, r_new, g_new, p, divergent, sum_metro, num_steps, sub_log_w, sub,
                     sub_rho) = leaf_step(
                        batch, z, r, g, half, step_mass, inv_mass, h0, sub_log_w, sub,
                        log_u_leaf[num_leaves - 1 + n], sub_rho, building, sum_metro, num_steps,
                    )  # fmt: skip
                    # generalised U-turn checks on the balanced sub-trees ending at this leaf
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
            prop, log_w, rho, left, right, diverging, depth, active = _merge(
                j, building, forward, active, log_u_merge[:, j], sub_log_w, sub, sub_rho,
                sub_diverged, torch.stack([z, r, g, p]), first_r, first_p, p_far, p_near,
                r_near, prop, log_w, rho, left, right, diverging, depth,
            )  # fmt: skip
            if not bool(active.any()):
                break

        # fresh tensors, not strided views of prop: the next iteration passes them (or [C]
        # inputs derived from them) to compiled functions, and a stride change (from the
        # initial state's to a view's) would compile those again
        z1, g1, u1, h1 = (
            t.clone(memory_format=torch.contiguous_format)
            for t in (prop[:, :dim], prop[:, dim : 2 * dim], prop[:, 2 * dim], prop[:, 2 * dim + 1])
        )
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

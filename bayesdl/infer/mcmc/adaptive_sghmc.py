"""Adaptive SGHMC: SGHMC with a burn-in-adapted diagonal preconditioner (Springenberg et al.)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bayesdl.infer.mcmc._sg_kernel import GibbsFn, SGKernel, StepSize, _check_number
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG


class AdaptiveSGHMCState(NamedTuple):
    """State of :class:`AdaptiveSGHMC` (every field ``[C, D]``).

    Attributes:
        z: positions.
        v: momenta (the next displacement).
        tau: adaptive averaging window length.
        g_mean: running mean of the gradient.
        g2_mean: running mean of the squared gradient.
    """

    z: Tensor
    v: Tensor
    tau: Tensor
    g_mean: Tensor
    g2_mean: Tensor


class AdaptiveSGHMC(SGKernel):
    """SGHMC whose diagonal inverse mass ``M⁻¹ = 1 / (√v̂ + ε)`` is adapted during burn-in.

    During the first ``num_warmup`` steps, per coordinate (``g = ∇Ũ / T``)::

        r  = 1 / (τ + 1)
        τ ← τ − τ ḡ² / (v̂ + ε) + 1
        ḡ ← (1 − r) ḡ + r g
        v̂ ← (1 − r) v̂ + r g²

    starting from ``τ = ḡ = v̂ = 1``; after it ``M⁻¹`` stays frozen. Every step::

        σ² = max(2 lr² mdecay M⁻¹ − lr⁴, 1e-16)
        v ← v − lr² M⁻¹ g − mdecay v + N(0, σ²)
        θ ← θ + v

    This is the SGD form of :class:`SGHMC` with ``η = lr² M⁻¹``, friction ``α = mdecay`` and the
    leading discretisation correction ``−lr⁴`` in place of ``β̂``. The gradient is that of the
    full-data potential (the minibatch likelihood is scaled by ``N/B`` by the model's plate),
    so ``lr`` does not depend on ``N`` (the convention of the PyTorch implementations; the
    original Theano code used per-datapoint gradients and ``lr/√N``). ``T`` divides the
    gradient, so the stationary law is ``∝ exp(−U/T)``.

    Args:
        model: Pyro model (only to run under ``pyro.infer.MCMC``).
        step_size: ``lr`` (float or schedule); 0.01 in the BOHAMIANN and functional-prior code.
        mdecay: friction in ``(0, 1]``.
        eps: the preconditioner's ``ε``.
        temperature: ``T > 0``.
        gibbs_fn, gibbs_every, gibbs_sites, init_strategy: see :class:`SGKernel`.
        compile: ``False`` (default), ``True`` or ``"auto"``: the update after the gradient
            as one compiled kernel with counter-based noise, as for
            :class:`~bayesdl.infer.mcmc.SGHMC` (compiled and eager runs draw different,
            equally distributed noise).

    Example:
        >>> from bayesdl.infer.mcmc import FunctionPotential, ChainRNG
        >>> u = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)
        >>> kernel = AdaptiveSGHMC(step_size=0.01, mdecay=0.05)
        >>> rng = ChainRNG.from_seed(0, num_chains=2)
        >>> state = kernel.init_state(torch.zeros(2, 2), u, rng, num_warmup=10)
        >>> state, info = kernel.step(state, u, rng, None, iteration=0, num_warmup=10)
        >>> state.g2_mean.shape
        torch.Size([2, 2])

    References:
        J. T. Springenberg, A. Klein, S. Falkner, F. Hutter, *Bayesian Optimization with Robust
        Bayesian Neural Networks*, NeurIPS 2016.
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: StepSize = 0.01,
        mdecay: float = 0.05,
        eps: float = 1e-10,
        temperature: float = 1.0,
        gibbs_fn: GibbsFn | None = None,
        gibbs_every: int = 1,
        gibbs_sites: Sequence[str] = (),
        init_strategy: str | dict[str, Tensor] = "uniform",
        compile: bool | str = False,
    ):
        super().__init__(
            model,
            step_size=step_size,
            temperature=temperature,
            gibbs_fn=gibbs_fn,
            gibbs_every=gibbs_every,
            gibbs_sites=gibbs_sites,
            init_strategy=init_strategy,
            compile=compile,
        )
        self.mdecay = _check_number(mdecay, "mdecay", low=0.0, high=1.0)
        self.eps = _check_number(eps, "eps", low=0.0)

    def init_state(
        self, z: Tensor, potential: Potential, rng: ChainRNG, *, num_warmup: int
    ) -> AdaptiveSGHMCState:
        ones = torch.ones_like(z)
        return AdaptiveSGHMCState(z.clone(), torch.zeros_like(z), ones, ones.clone(), ones.clone())

    def inverse_mass(self, state: AdaptiveSGHMCState) -> Tensor:
        """The diagonal preconditioner ``M⁻¹`` ``[C, D]``."""
        return 1.0 / (state.g2_mean.sqrt() + self.eps)

    def step(
        self,
        state: AdaptiveSGHMCState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
        *,
        iteration: int,
        num_warmup: int,
        donate: bool = False,
    ) -> tuple[AdaptiveSGHMCState, dict[str, Tensor]]:
        """One step of every chain; ``donate`` as for :meth:`SGHMC.step` (used by the compiled
        update; the eager one always makes new tensors)."""
        lr = self.current_step_size(iteration)
        z = state.z
        u, g = potential.value_and_grad(z, batch)
        args = (
            g,
            lr if self.compile is False else self._scalars(lr)[0],
            self.temperature,
            self.mdecay,
            self.eps,
            iteration < num_warmup,
            self._dynamic_mask(potential, z),
        )
        new = self._update(_adaptive_sghmc_update, tuple(state), args, rng, donate=donate)
        z, v, tau, g_mean, g2_mean = new
        z = self._gibbs(z, potential, rng, iteration)
        info = {"potential_energy": u, "step_size": u.new_full(u.shape, lr)}
        return AdaptiveSGHMCState(z, v, tau, g_mean, g2_mean), info


def _adaptive_sghmc_update(
    z: Tensor,
    v: Tensor,
    tau: Tensor,
    g_mean: Tensor,
    g2_mean: Tensor,
    noise: Tensor,
    g: Tensor,
    lr: float | Tensor,
    temperature: float,
    mdecay: float,
    eps: float,
    adapt: bool,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One :class:`AdaptiveSGHMC` update from the gradient ``g`` and standard-normal ``noise``
    (eager, or compiled with the noise drawn inside): the new ``(z, v, τ, ḡ, v̂)``."""
    if temperature != 1.0:
        g = g / temperature
    if adapt:
        r = 1.0 / (tau + 1.0)
        tau = tau - tau * g_mean.square() / (g2_mean + eps) + 1.0
        g_mean = torch.lerp(g_mean, g, r)
        g2_mean = torch.lerp(g2_mean, g.square(), r)
    inv_mass = 1.0 / (g2_mean.sqrt() + eps)
    var = (2 * lr * lr * mdecay) * inv_mass - lr**4
    v = v * (1 - mdecay) - (lr * lr) * inv_mass * g + noise * var.clamp(min=1e-16).sqrt()
    if mask is not None:
        v = v * mask
    return z + v, v, tau, g_mean, g2_mean


__all__ = ["AdaptiveSGHMC", "AdaptiveSGHMCState"]

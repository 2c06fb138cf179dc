"""Stochastic-gradient Langevin dynamics, optionally preconditioned (Welling and Teh; Li et al.)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bayesdl.infer.mcmc._sg_kernel import GibbsFn, SGKernel, StepSize, _check_number
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG

ADAPT_MODES = ("warmup", "always")


class SGLDState(NamedTuple):
    """State of :class:`SGLD`.

    Attributes:
        z: positions ``[C, D]``.
        g2_mean: running mean of squared gradients ``[C, D]`` (preconditioned SGLD; an empty
            tensor otherwise).
    """

    z: Tensor
    g2_mean: Tensor


class SGLD(SGKernel):
    """SGLD: ``θ ← θ − (ε/2) P ∇Ũ(θ) + N(0, ε P T)``.

    Without preconditioning ``P = 1``. With ``preconditioned=True``, ``P = 1 / (λ + √V)`` where
    ``V`` is an exponential moving average (decay ``rms_decay``) of squared gradients (pSGLD).
    By default ``V`` adapts only during warm-up and is frozen afterwards, which keeps the
    sampling phase an exact Langevin discretisation with a constant preconditioner; with
    ``adapt_preconditioner="always"`` it keeps adapting (the original pSGLD, which drops the
    small ``Γ(θ)`` correction term). A cyclical step size is a schedule:
    ``step_size=cyclical_step_size(...)``.

    Args:
        model: Pyro model (only to run under ``pyro.infer.MCMC``).
        step_size: ``ε`` (float or schedule ``iteration -> ε``).
        preconditioned: use the RMSprop preconditioner.
        rms_decay: decay of ``V`` in ``[0, 1)``.
        precond_eps: ``λ > 0``.
        adapt_preconditioner: ``"warmup"`` or ``"always"``.
        temperature: ``T > 0``.
        gibbs_fn, gibbs_every, gibbs_sites, init_strategy: see :class:`SGKernel`.
        compile: ``False`` (default), ``True`` or ``"auto"``: the update after the gradient
            as one compiled kernel with counter-based noise, as for
            :class:`~bayesdl.infer.mcmc.SGHMC` (compiled and eager runs draw different,
            equally distributed noise).

    Example:
        >>> from bayesdl.infer.mcmc import FunctionPotential, ChainRNG
        >>> u = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=3)
        >>> rng = ChainRNG.from_seed(0, num_chains=2)
        >>> kernel = SGLD(step_size=0.1, preconditioned=True)
        >>> state = kernel.init_state(torch.zeros(2, 3), u, rng, num_warmup=5)
        >>> kernel.step(state, u, rng, None, iteration=0, num_warmup=5)[0].z.shape
        torch.Size([2, 3])

    References:
        M. Welling, Y. W. Teh, *Bayesian Learning via Stochastic Gradient Langevin Dynamics*,
        ICML 2011; C. Li, C. Chen, D. Carlson, L. Carin, *Preconditioned Stochastic Gradient
        Langevin Dynamics for Deep Neural Networks*, AAAI 2016.
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: StepSize,
        preconditioned: bool = False,
        rms_decay: float = 0.99,
        precond_eps: float = 1e-5,
        adapt_preconditioner: str = "warmup",
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
        if not isinstance(preconditioned, bool):
            raise TypeError(f"preconditioned must be a bool, got {type(preconditioned).__name__}")
        self.preconditioned = preconditioned
        self.rms_decay = _check_number(
            rms_decay, "rms_decay", low=0.0, high=1.0, low_open=False, high_open=True
        )
        self.precond_eps = _check_number(precond_eps, "precond_eps", low=0.0)
        if adapt_preconditioner not in ADAPT_MODES:
            raise ValueError(
                f"adapt_preconditioner must be one of {ADAPT_MODES}, got {adapt_preconditioner!r}"
            )
        self.adapt_preconditioner = adapt_preconditioner

    def init_state(
        self, z: Tensor, potential: Potential, rng: ChainRNG, *, num_warmup: int
    ) -> SGLDState:
        g2 = torch.zeros_like(z) if self.preconditioned else z.new_empty(0)
        return SGLDState(z.clone(), g2)

    def preconditioner(self, state: SGLDState) -> Tensor | None:
        """``P`` ``[C, D]`` (``None`` without preconditioning)."""
        if not self.preconditioned:
            return None
        return 1.0 / (self.precond_eps + state.g2_mean.sqrt())

    def step(
        self,
        state: SGLDState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
        *,
        iteration: int,
        num_warmup: int,
        donate: bool = False,
    ) -> tuple[SGLDState, dict[str, Tensor]]:
        """One step of every chain; ``donate`` as for :meth:`SGHMC.step` (used by the compiled
        update; the eager one always makes new tensors)."""
        eps = self.current_step_size(iteration)
        z = state.z
        u, g = potential.value_and_grad(z, batch)
        adapt = self.preconditioned and (
            self.adapt_preconditioner == "always" or iteration < num_warmup
        )
        args = (
            g,
            eps if self.compile is False else self._scalars(eps)[0],
            self.temperature,
            1 - self.rms_decay,
            self.precond_eps,
            self.preconditioned,
            adapt,
            self._dynamic_mask(potential, z),
        )
        z, g2 = self._update(_sgld_update, tuple(state), args, rng, donate=donate)
        z = self._gibbs(z, potential, rng, iteration)
        info = {"potential_energy": u, "step_size": u.new_full(u.shape, eps)}
        return SGLDState(z, g2), info


def _sgld_update(
    z: Tensor,
    g2: Tensor,
    noise: Tensor,
    g: Tensor,
    eps: float | Tensor,
    temperature: float,
    rms_rate: float,
    precond_eps: float,
    preconditioned: bool,
    adapt: bool,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """One :class:`SGLD` update from the gradient ``g`` and standard-normal ``noise`` (eager, or
    compiled with the noise drawn inside): the new ``(z, g2)``."""
    if preconditioned:
        if adapt:
            g2 = torch.lerp(g2, g.square(), rms_rate)
        p = 1.0 / (precond_eps + g2.sqrt())
        delta = (-eps / 2) * p * g + noise * (eps * temperature * p).sqrt()
    else:
        delta = noise * (eps * temperature) ** 0.5 - (eps / 2) * g
    if mask is not None:
        delta = delta * mask
    return z + delta, g2


__all__ = ["ADAPT_MODES", "SGLD", "SGLDState"]

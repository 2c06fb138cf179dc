"""Stochastic-gradient Hamiltonian Monte Carlo with friction (Chen, Fox and Guestrin, 2014)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from bayesdl.infer.mcmc._sg_kernel import GibbsFn, SGKernel, SGState, StepSize, _check_number
from bayesdl.infer.mcmc.potential import Batch, Potential
from bayesdl.infer.mcmc.rng import ChainRNG

PARAMETERIZATIONS = ("sgd", "hamiltonian")


class SGHMC(SGKernel):
    """SGHMC with friction, on minibatch gradients ``∇Ũ`` (prior + ``N/B``-scaled likelihood).

    Two equivalent parameterisations:

    * ``"sgd"`` (default; Chen et al.'s practical form): with learning rate ``η = step_size``,
      friction ``α = friction`` in ``(0, 1]`` and noise estimate ``β̂ = noise_estimate``::

          v ← (1 − α) v − η ∇Ũ(θ) + N(0, 2 (α − β̂) η T)
          θ ← θ + v

      i.e. SGD with momentum ``1 − α`` plus Gaussian noise.
    * ``"hamiltonian"``: step ``ε = step_size``, friction ``C = friction > 0``, scalar mass
      ``M = mass`` and ``B̂ = noise_estimate``, run as the form above with ``η = ε²/M``,
      ``α = εC/M`` (which must be ``<= 1``) and ``β̂ = εB̂/M``.

    ``T = temperature`` scales the injected noise; the stationary law is ``∝ exp(−U/T)``.
    ``β̂ = 0`` (the default) ignores the minibatch noise; it is harmless when
    ``η · Var[∇Ũ] ≪ 2α`` and otherwise heats the chain (choose ``η`` small, e.g. ``γ / N``).

    Args:
        model: Pyro model (only to run under ``pyro.infer.MCMC``).
        step_size: ``η`` (``"sgd"``) or ``ε`` (``"hamiltonian"``); float or schedule.
        friction: ``α`` in ``(0, 1]`` (``"sgd"``) or ``C > 0`` (``"hamiltonian"``).
        temperature: ``T > 0``.
        noise_estimate: ``β̂`` (``"sgd"``, in ``[0, α)``) or ``B̂ >= 0`` (``"hamiltonian"``).
        parameterization: ``"sgd"`` or ``"hamiltonian"``.
        mass: ``M > 0`` (``"hamiltonian"`` only).
        resample_momentum_every: redraw ``v ~ N(0, ηT)`` every this many steps (``None``: never).
        gibbs_fn, gibbs_every, gibbs_sites, init_strategy: see :class:`SGKernel`.
        compile: ``False`` (default), ``True`` or ``"auto"``. With ``True`` the update after
            the gradient (noise, momentum, position) runs as one compiled kernel per step,
            its Gaussian noise drawn inside it by the counter-based generator of
            :mod:`~bayesdl.infer.mcmc.counter_rng` (keyed from the chains' generators: same
            seed, same draws; per-chain streams; exact resume) instead of torch's generator,
            so compiled and eager runs draw different, equally distributed noise. On one CPU
            core the whole step of a 784-1200-1200-10 MLP then costs 1.02-1.09 SGD steps on
            an AVX-512 CPU and 1.00-1.04 on an AVX2-only one (eager: 1.2-1.6;
            ``benchmarks/sghmc_step.py``). ``"auto"`` runs the same update
            eagerly (same draws, slower) where compiling is impossible or fails; ``True``
            raises there. The first step compiles (seconds), counted in
            :attr:`compile_time_s`.

    Example:
        >>> from bayesdl.infer.mcmc import FunctionPotential, ChainRNG
        >>> u = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)
        >>> kernel = SGHMC(step_size=0.05, friction=0.1)
        >>> rng = ChainRNG.from_seed(0, num_chains=4)
        >>> state = kernel.init_state(torch.zeros(4, 2), u, rng, num_warmup=0)
        >>> state, info = kernel.step(state, u, rng, None, iteration=0, num_warmup=0)
        >>> state.z.shape, info["potential_energy"].shape
        (torch.Size([4, 2]), torch.Size([4]))

    References:
        T. Chen, E. Fox, C. Guestrin, *Stochastic Gradient Hamiltonian Monte Carlo*, ICML 2014.
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: StepSize,
        friction: float = 0.05,
        temperature: float = 1.0,
        noise_estimate: float = 0.0,
        parameterization: str = "sgd",
        mass: float = 1.0,
        resample_momentum_every: int | None = None,
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
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.parameterization = parameterization
        self.mass = _check_number(mass, "mass", low=0.0)
        if parameterization == "sgd":
            self.friction = _check_number(friction, "friction", low=0.0, high=1.0)
            self.noise_estimate = _check_number(
                noise_estimate,
                "noise_estimate",
                low=0.0,
                high=self.friction,
                low_open=False,
                high_open=True,
            )
        else:
            self.friction = _check_number(friction, "friction", low=0.0)
            self.noise_estimate = _check_number(
                noise_estimate, "noise_estimate", low=0.0, low_open=False
            )
            if not callable(self.step_size):
                self._sgd_form(self.step_size)  # validates εC/M <= 1 now
        if resample_momentum_every is not None and (
            isinstance(resample_momentum_every, bool)
            or not isinstance(resample_momentum_every, int)
            or resample_momentum_every < 1
        ):
            raise ValueError(
                f"resample_momentum_every must be a positive int or None, "
                f"got {resample_momentum_every!r}"
            )
        self.resample_momentum_every = resample_momentum_every

    def _sgd_form(self, step: float) -> tuple[float, float, float]:
        """``(η, α, β̂)`` of the SGD form at step size ``step``."""
        if self.parameterization == "sgd":
            return step, self.friction, self.noise_estimate
        eta = step * step / self.mass
        alpha = step * self.friction / self.mass
        beta = step * self.noise_estimate / self.mass
        if alpha > 1:
            raise ValueError(
                f"friction * step_size / mass = {alpha:.4g} must be <= 1 (the momentum would "
                "flip sign each step); lower step_size or friction"
            )
        if beta >= alpha:
            raise ValueError(
                f"noise_estimate ({self.noise_estimate}) must be smaller than friction "
                f"({self.friction}): the injected noise variance 2(C - B̂)ε must be positive"
            )
        return eta, alpha, beta

    def init_state(
        self, z: Tensor, potential: Potential, rng: ChainRNG, *, num_warmup: int
    ) -> SGState:
        eta, _, _ = self._sgd_form(self.current_step_size(0))
        v = rng.normal((z.shape[-1],), dtype=z.dtype) * math.sqrt(eta * self.temperature)
        mask = self._dynamic_mask(potential, z)
        if mask is not None:
            v = v * mask
        return SGState(z.clone(), v)

    def step(
        self,
        state: SGState,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
        *,
        iteration: int,
        num_warmup: int,
        donate: bool = False,
    ) -> tuple[SGState, dict[str, Tensor]]:
        """One SGHMC step of every chain.

        With ``donate=True`` the new state is written into ``state``'s own tensors (no new
        ``[C, D]`` buffers: on one CPU core, allocating the two fresh ones cost ~5 ms of a
        ~25 ms step for a 2.4 M-weight network, in page faults), so ``state`` must not be used
        afterwards; :func:`~bayesdl.infer.mcmc.sample` donates, as it copies kept draws out.
        Otherwise ``state`` is left as it was.
        """
        step = self.current_step_size(iteration)
        eta, alpha, beta = self._sgd_form(step)
        z, v = state.z, state.v
        dim = z.shape[-1]
        if self.resample_momentum_every and iteration % self.resample_momentum_every == 0:
            v = rng.normal((dim,), dtype=z.dtype) * math.sqrt(eta * self.temperature)
        u, g = potential.value_and_grad(z, batch)
        sd = math.sqrt(2 * (alpha - beta) * eta * self.temperature)
        mask = self._dynamic_mask(potential, z)
        if self.compile is not False:
            scalars = self._scalars(1 - alpha, -eta, sd)
            z, v = self._update(_sghmc_update, (z, v), (g, *scalars, mask), rng, donate=donate)
        else:  # eager: the same update in place, into the donated v or the fresh noise
            noise = rng.normal((dim,), dtype=z.dtype)
            if donate:
                v = v.mul_(1 - alpha).add_(g, alpha=-eta).add_(noise, alpha=sd)
            else:
                v = noise.mul_(sd).add_(g, alpha=-eta).add_(v, alpha=1 - alpha)
            if mask is not None:
                v.mul_(mask)
            z = z.add_(v) if donate else z + v
        z = self._gibbs(z, potential, rng, iteration)
        info = {"potential_energy": u, "step_size": u.new_full(u.shape, step)}
        return SGState(z, v), info


def _sghmc_update(
    z: Tensor,
    v: Tensor,
    noise: Tensor,
    g: Tensor,
    decay: Tensor,
    neg_eta: Tensor,
    sd: Tensor,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``v ← (1 − α) v − η g + sd ξ`` (masked) and ``z ← z + v``: the compiled update of
    :class:`SGHMC` (one pass over ``z``, ``v`` and ``g``, the noise drawn inside)."""
    v = decay * v + neg_eta * g + sd * noise
    if mask is not None:
        v = v * mask
    return z + v, v


__all__ = ["SGHMC"]

"""What the stochastic-gradient kernels share: minibatch use, step-size schedules, Gibbs steps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from bayesdl.infer.mcmc._compile import CompiledStep, check_compile
from bayesdl.infer.mcmc.counter_rng import block_counters, counter_normal, key_words
from bayesdl.infer.mcmc.kernel import MCMCKernel
from bayesdl.infer.mcmc.potential import ModelPotential, Potential
from bayesdl.infer.mcmc.rng import ChainRNG

StepSize = float | Callable[[int], float]
GibbsFn = Callable[[dict[str, Tensor], ChainRNG], Mapping[str, Tensor]]


def _check_number(
    value: Any,
    name: str,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    ok_low = value > low if low_open else value >= low
    ok_high = True if high is None else (value < high if high_open else value <= high)
    if not (ok_low and ok_high):
        lo = "(" if low_open else "["
        hi = "" if high is None else (f"{high})" if high_open else f"{high}]")
        interval = f"{lo}{low}, {hi or 'inf)'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


def check_step_size(step_size: Any, name: str = "step_size") -> StepSize:
    """A positive float, or a callable ``iteration -> step size`` (checked when called)."""
    if callable(step_size):
        return step_size
    return _check_number(step_size, name, low=0.0)


def cyclical_step_size(
    step_size: float, *, num_steps: int, num_cycles: int
) -> Callable[[int], float]:
    """The cyclical cosine schedule of cyclical SG-MCMC.

    ``ε_k = step_size / 2 · (cos(π · (k mod L) / L) + 1)`` with cycle length
    ``L = ceil(num_steps / num_cycles)``: each cycle starts large (exploration) and decays to
    near zero (sampling).

    References:
        R. Zhang et al., *Cyclical Stochastic Gradient MCMC for Bayesian Deep Learning*,
        ICLR 2020.

    Example:
        >>> schedule = cyclical_step_size(0.1, num_steps=100, num_cycles=4)
        >>> round(schedule(0), 3), round(schedule(12), 3), round(schedule(25), 3)
        (0.1, 0.052, 0.1)
    """
    _check_number(step_size, "step_size", low=0.0)
    for argname, value in (("num_steps", num_steps), ("num_cycles", num_cycles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argname} must be a positive int, got {value!r}")
    length = math.ceil(num_steps / num_cycles)

    def schedule(k: int) -> float:
        return step_size / 2 * (math.cos(math.pi * (k % length) / length) + 1)

    return schedule


class SGKernel(MCMCKernel):
    """Base of the stochastic-gradient kernels (no Metropolis test, minibatches allowed).

    Args:
        model: a Pyro model, needed only to run under ``pyro.infer.MCMC``.
        step_size: a positive float or a schedule ``iteration -> float``.
        temperature: the target is ``p(θ | data)^(1/T)``; ``T < 1`` is a cold posterior.
        gibbs_fn: optional ``fn(values, rng) -> {site: new value}``, called every
            ``gibbs_every`` steps with the constrained values ``{site: [C, *shape]}`` of every
            latent site; the returned sites are set to the new values and are otherwise held
            fixed by the gradient dynamics (a Gibbs block, e.g. a conjugate Gamma update of
            per-layer prior precisions).
        gibbs_every: steps between Gibbs updates.
        gibbs_sites: the sites ``gibbs_fn`` updates (required with ``gibbs_fn``).
        init_strategy: see :meth:`ModelPotential.initial`.
        compile: ``False``, ``True`` or ``"auto"``, for the kernels that take it (see
            :class:`~bayesdl.infer.mcmc.SGHMC`); the others leave it ``False``.
    """

    full_batch: ClassVar[bool] = False
    #: :meth:`step` takes ``donate=True`` (the runner passes it): the new state may then be
    #: written into the old state's tensors, which the caller must not use afterwards
    accepts_donated_state: ClassVar[bool] = True

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        step_size: StepSize,
        temperature: float = 1.0,
        gibbs_fn: GibbsFn | None = None,
        gibbs_every: int = 1,
        gibbs_sites: Sequence[str] = (),
        init_strategy: str | dict[str, Tensor] = "uniform",
        compile: bool | str = False,
    ):
        super().__init__(model, init_strategy=init_strategy)
        self.compile = check_compile(compile)
        self._fused_steps: dict[tuple[torch.device, bool], CompiledStep] = {}
        self.step_size = check_step_size(step_size)
        self.temperature = _check_number(temperature, "temperature", low=0.0)
        if gibbs_fn is not None and not callable(gibbs_fn):
            raise TypeError(f"gibbs_fn must be callable, got {type(gibbs_fn).__name__}")
        if isinstance(gibbs_every, bool) or not isinstance(gibbs_every, int) or gibbs_every < 1:
            raise ValueError(f"gibbs_every must be a positive int, got {gibbs_every!r}")
        gibbs_sites = tuple(gibbs_sites)
        if gibbs_fn is not None and not gibbs_sites:
            raise ValueError("gibbs_sites must name the sites gibbs_fn updates")
        if gibbs_sites and gibbs_fn is None:
            raise ValueError("gibbs_sites was given without a gibbs_fn")
        self.gibbs_fn = gibbs_fn
        self.gibbs_every = gibbs_every
        self.gibbs_sites = gibbs_sites

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fused_steps"] = {}  # compiled graphs are rebuilt on first use, never pickled
        return state

    @property
    def compile_time_s(self) -> float:
        """Seconds spent compiling the fused update so far (0 when ``compile=False``)."""
        return sum(step.compile_time_s for step in self._fused_steps.values())

    def _update(
        self,
        update: Callable[..., tuple[Tensor, ...]],
        tensors: tuple[Tensor, ...],
        args: tuple[Any, ...],
        rng: ChainRNG,
        *,
        donate: bool,
    ) -> tuple[Tensor, ...]:
        """The kernel's pure update ``update(*tensors, noise, *args) -> new tensors`` (``noise``
        standard normal, ``[C, D]`` like ``tensors[0]``, the positions).

        Eagerly with ``compile=False``: noise from ``rng.normal``. Otherwise compiled (once per
        device and donation) with counter-based noise keyed by ``rng.keys()`` drawn inside the
        kernel; with ``donate`` the results are written into ``tensors`` themselves, which are
        returned (no new ``[C, D]`` buffers). Per-step numbers in ``args`` should be 0-d
        tensors (:meth:`_scalars`) so that a changing value does not recompile."""
        z = tensors[0]
        if self.compile is False:
            return update(*tensors, rng.normal((z.shape[-1],), dtype=z.dtype), *args)
        key = (z.device, donate)
        step = self._fused_steps.get(key)
        if step is None:
            step = CompiledStep(
                _with_counter_noise(update, len(tensors), donate),
                mode=self.compile,
                what=f"the {type(self).__name__} update",
                device=z.device,
            )
            self._fused_steps[key] = step
        keys = key_words(rng.keys())
        blocks = block_counters(z.shape[-1], z.device)
        out = step(*tensors, keys, blocks, *args)
        return tensors if donate else out

    @staticmethod
    def _scalars(*values: float) -> tuple[Tensor, ...]:
        """Per-step numbers as 0-d float64 CPU tensors: inputs of the compiled update, which a
        changing value (a step-size schedule) would otherwise recompile as a constant."""
        return tuple(torch.tensor(float(v), dtype=torch.float64) for v in values)

    def current_step_size(self, iteration: int) -> float:
        """The step size at ``iteration`` (checked positive and finite)."""
        if callable(self.step_size):
            return _check_number(self.step_size(iteration), "step_size(iteration)", low=0.0)
        return self.step_size

    def _dynamic_mask(self, potential: Potential, like: Tensor) -> Tensor | None:
        """``[D]`` mask, 0 on Gibbs-updated coordinates; ``None`` when there are none."""
        if not self.gibbs_sites:
            return None
        if not isinstance(potential, ModelPotential):
            raise TypeError("Gibbs steps need a ModelPotential (a model with named sites)")
        mask = torch.ones(potential.dim, dtype=like.dtype, device=like.device)
        names = {s.name: s for s in potential.sites}
        for name in self.gibbs_sites:
            if name not in names:
                raise ValueError(
                    f"gibbs_sites names {name!r}, which is not a latent site of the model "
                    f"(sites: {sorted(names)})"
                )
            s = names[name]
            mask[s.offset : s.offset + s.numel] = 0
        return mask

    def _gibbs(self, z: Tensor, potential: Potential, rng: ChainRNG, iteration: int) -> Tensor:
        if self.gibbs_fn is None or (iteration + 1) % self.gibbs_every:
            return z
        assert isinstance(potential, ModelPotential)
        new = self.gibbs_fn(potential.unpack(z), rng)
        unknown = set(new) - set(self.gibbs_sites)
        if unknown:
            raise ValueError(f"gibbs_fn returned sites {sorted(unknown)} not in gibbs_sites")
        z = z.clone()
        names = {s.name: s for s in potential.sites}
        c = z.shape[0]
        for name, value in new.items():
            s = names[name]
            value = torch.as_tensor(value, dtype=z.dtype, device=z.device).expand(c, *s.shape)
            z[:, s.offset : s.offset + s.numel] = s.transform.inv(value).reshape(c, -1)
        return z


def _with_counter_noise(
    update: Callable[..., tuple[Tensor, ...]], num_tensors: int, donate: bool
) -> Callable[..., tuple[Tensor, ...] | None]:
    """``(*tensors, keys, blocks, *args) -> update(*tensors, noise, *args)`` with the noise
    drawn by :func:`counter_normal` (the function :class:`CompiledStep` compiles); with
    ``donate`` it writes the results into ``tensors`` and returns nothing."""

    def fused(*inputs: Any) -> tuple[Tensor, ...] | None:
        tensors = inputs[:num_tensors]
        keys, blocks = inputs[num_tensors : num_tensors + 2]
        z = tensors[0]
        noise = counter_normal(keys, blocks, z.shape[-1], z.dtype)
        out = update(*tensors, noise, *inputs[num_tensors + 2 :])
        if not donate:
            return out
        for old, new in zip(tensors, out, strict=True):
            if new is not old:  # an unchanged tensor (e.g. a frozen preconditioner) stays
                old.copy_(new)
        return None

    return fused


class SGState(NamedTuple):
    """State of :class:`~bayesdl.infer.mcmc.SGHMC`.

    Attributes:
        z: positions ``[C, D]``.
        v: momenta in the SGD-with-momentum form (the next displacement), ``[C, D]``.
    """

    z: Tensor
    v: Tensor


__all__ = ["SGKernel", "SGState", "check_step_size", "cyclical_step_size"]

"""Base class of bayesdl's MCMC kernels: a pure ``init_state`` / ``step`` pair over chains, plus
Pyro's ``MCMCKernel`` interface on top of it (so ``pyro.infer.MCMC`` can run any of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel as _PyroMCMCKernel
from torch import Tensor

from bayesdl.infer.mcmc.potential import Batch, ModelPotential, Potential
from bayesdl.infer.mcmc.rng import ChainRNG


class MCMCKernel(_PyroMCMCKernel):
    """A transition kernel over ``C`` chains held as one flat unconstrained tensor ``[C, D]``.

    Subclasses implement

    * :meth:`init_state` ``(z, potential, rng, *, num_warmup) -> state``: the kernel's state, a
      ``NamedTuple`` of tensors with a field ``z`` (positions ``[C, D]``) and *every* piece of
      adaptation state (step sizes, running moments, counters), so that saving
      ``state._asdict()`` and the random streams is a complete checkpoint;
    * :meth:`step` ``(state, potential, rng, batch, *, iteration, num_warmup) -> (state, info)``:
      one transition; ``iteration`` counts from 0 over warm-up and sampling, adaptation runs
      while ``iteration < num_warmup`` and is finalised at ``iteration == num_warmup - 1``;
      ``info`` maps names (``potential_energy``, ``accept_prob``, ``step_size``, ``diverging``,
      ``num_steps``, ``tree_depth``, ...) to ``[C]`` tensors left on the device.

    Randomness comes only from ``rng`` (one generator per chain), and a chain draws the same
    shapes every iteration whatever the other chains do, so vectorised and sequential chains
    agree.

    Pyro's interface (``setup`` / ``sample`` / ``initial_params`` / ``transforms`` /
    ``logging`` / ``diagnostics``) runs one chain full-batch on ``model``.

    Attributes:
        full_batch: whether the kernel needs the exact full-data potential (HMC/NUTS, which
            have a Metropolis test) and so refuses a subsampled model.
    """

    full_batch: ClassVar[bool] = True
    #: the kernel's state type
    State: ClassVar[type] = NamedTuple

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        *,
        init_strategy: str | dict[str, Tensor] = "uniform",
    ):
        if model is not None and not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        self.model = model
        self.init_strategy = init_strategy
        self._pyro: dict[str, Any] | None = None
        self._initial_params: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ functional API
    def init_state(
        self, z: Tensor, potential: Potential, rng: ChainRNG, *, num_warmup: int
    ) -> NamedTuple:
        """The state of chains starting at ``z`` ``[C, D]``."""
        raise NotImplementedError

    def step(
        self,
        state: NamedTuple,
        potential: Potential,
        rng: ChainRNG,
        batch: Batch | None,
        *,
        iteration: int,
        num_warmup: int,
    ) -> tuple[NamedTuple, dict[str, Tensor]]:
        """One transition of every chain."""
        raise NotImplementedError

    def sample_every(self) -> int:
        """Steps per kept draw before thinning (1 for every kernel here)."""
        return 1

    # ------------------------------------------------------------------ Pyro interface
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        if self.model is None:
            raise ValueError(
                f"{type(self).__name__} was built without a model; pass model= to use it "
                "with pyro.infer.MCMC"
            )
        potential = ModelPotential(self.model, args, kwargs=kwargs)
        if self.full_batch and potential.subsampled:
            raise ValueError(
                f"{type(self).__name__} needs the full-data potential but the model subsamples "
                "its data plate; use a stochastic-gradient kernel (SGHMC, SGLD) for minibatches"
            )
        seed = int(torch.randint(0, 2**62, (1,)).item())
        rng = ChainRNG.from_seed(seed, 1, potential.device)
        if self._initial_params is not None:
            z = torch.cat(
                [
                    torch.as_tensor(self._initial_params[s.name], dtype=potential.dtype).reshape(
                        1, -1
                    )
                    for s in potential.sites
                ],
                dim=-1,
            ).to(potential.device)
        else:
            z = potential.initial(1, self.init_strategy, generator=rng.generators[0])
        state = self.init_state(z, potential, rng, num_warmup=warmup_steps)
        self._pyro = {
            "potential": potential,
            "rng": rng,
            "state": state,
            "iteration": 0,
            "num_warmup": warmup_steps,
            "info": {},
            "num_divergences": 0,
        }
        self._initial_params = self._params_of(state.z)

    def _params_of(self, z: Tensor) -> dict[str, Tensor]:
        potential = self._pyro["potential"]
        return {
            s.name: z[0, s.offset : s.offset + s.numel].reshape(s.unconstrained_shape)
            for s in potential.sites
        }

    @property
    def transforms(self) -> dict[str, Any] | None:
        """Per-site maps from constrained to unconstrained values (Pyro's convention)."""
        if self._pyro is None:
            return None
        return {s.name: s.transform.inv for s in self._pyro["potential"].sites}

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        self._initial_params = params

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._pyro is None:
            raise RuntimeError("call setup() before sample()")
        p = self._pyro
        state, info = self.step(
            p["state"],
            p["potential"],
            p["rng"],
            None,
            iteration=p["iteration"],
            num_warmup=p["num_warmup"],
        )
        p["state"], p["info"] = state, info
        p["iteration"] += 1
        if "diverging" in info and p["iteration"] > p["num_warmup"]:
            p["num_divergences"] += int(info["diverging"].sum())
        return self._params_of(state.z)

    def logging(self) -> dict[str, Any]:
        if self._pyro is None:
            return {}
        out = {}
        for key in ("step_size", "accept_prob"):
            if key in self._pyro["info"]:
                out[key] = f"{float(self._pyro['info'][key].mean()):.3g}"
        return out

    def diagnostics(self) -> dict[str, Any]:
        if self._pyro is None:
            return {}
        return {"divergences": self._pyro["num_divergences"]}


__all__ = ["MCMCKernel"]

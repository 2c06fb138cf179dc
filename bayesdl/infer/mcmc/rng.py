"""Per-chain random streams, so a chain's draws do not depend on how many chains run beside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_CHAIN_STRIDE = (
    1_000_003  # a prime: seed s, chain c -> s * stride + c never collides for c < stride
)


def chain_seed(seed: int, chain: int) -> int:
    """The generator seed of chain ``chain`` in a run seeded with ``seed``."""
    return (int(seed) * _CHAIN_STRIDE + int(chain)) % (2**63 - 1)


class ChainRNG:
    """One ``torch.Generator`` per chain.

    Chain ``c`` draws only from its own generator, so running chains side by side (vectorised)
    or one after another (sequentially) gives every chain the same random numbers, as long as a
    kernel draws the same shapes per iteration for each chain whatever the others do.

    Args:
        seeds: one integer seed per chain.
        device: where the draws are made (a CUDA generator for a CUDA device).

    Example:
        >>> rng = ChainRNG.from_seed(0, num_chains=3)
        >>> rng.normal((2,), dtype=torch.float64).shape
        torch.Size([3, 2])
        >>> both = ChainRNG.from_seed(0, 2).normal((4,), dtype=torch.float64)
        >>> second = ChainRNG.from_seed(0, 2).subset([1]).normal((4,), dtype=torch.float64)
        >>> torch.equal(both[1], second[0])
        True
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None):
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed (one per chain)")
        self.device = torch.device("cpu" if device is None else device)
        self.generators = []
        for s in seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(s)
            self.generators.append(g)

    @classmethod
    def from_seed(
        cls, seed: int, num_chains: int, device: torch.device | str | None = None
    ) -> ChainRNG:
        """Generators for chains ``0 .. num_chains - 1`` of a run seeded with ``seed``."""
        return cls([chain_seed(seed, c) for c in range(num_chains)], device)

    @property
    def num_chains(self) -> int:
        """Number of chains ``C``."""
        return len(self.generators)

    def subset(self, chains: Sequence[int]) -> ChainRNG:
        """A ``ChainRNG`` over some of the chains, sharing their generators."""
        out = object.__new__(ChainRNG)
        out.device = self.device
        out.generators = [self.generators[c] for c in chains]
        return out

    def _per_chain(self, draw: Callable[[torch.Generator], Tensor]) -> Tensor:
        """``draw(generator)`` for every chain, stacked along a leading chain dimension."""
        if len(self.generators) == 1:
            return draw(self.generators[0]).unsqueeze(0)
        return torch.stack([draw(g) for g in self.generators])

    def normal(self, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        """Standard normal draws ``[C, *shape]``."""
        shape = tuple(shape)
        return self._per_chain(
            lambda g: torch.randn(shape, generator=g, dtype=dtype, device=self.device)
        )

    def uniform(self, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        """Uniform draws on ``[0, 1)``, ``[C, *shape]``."""
        shape = tuple(shape)
        return self._per_chain(
            lambda g: torch.rand(shape, generator=g, dtype=dtype, device=self.device)
        )

    def keys(self) -> Tensor:
        """One uniformly random int64 per chain, ``[C]``: the per-step keys of the
        counter-based noise (:func:`~bayesdl.infer.mcmc.counter_rng.counter_normal`)."""
        return self._per_chain(
            lambda g: torch.randint(
                -(2**63), 2**63 - 1, (), generator=g, dtype=torch.int64, device=self.device
            )
        )

    def get_state(self) -> list[Tensor]:
        """The generators' states (CPU byte tensors), for checkpoints."""
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[Tensor]) -> None:
        """Restore states saved by :meth:`get_state`."""
        if len(states) != len(self.generators):
            raise ValueError(
                f"states holds {len(states)} generator states but there are "
                f"{len(self.generators)} chains"
            )
        for g, s in zip(self.generators, states, strict=True):
            g.set_state(s)


__all__ = ["ChainRNG", "chain_seed"]

"""Targets and checks shared by the HMC and NUTS tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bayesdl.infer.mcmc import ChainRNG, FunctionPotential, MCMCKernel, Potential
from tests.infer.mcmc._targets import ess


@dataclass
class GaussianTarget:
    """A correlated Gaussian ``N(mean, cov)``: scales 0.1 to 10 (condition number 1e4, so the
    mass matrix must adapt) and correlation 0.5 between every pair of coordinates.

    The potential is written with elementwise products and sums only, so every chain's value
    depends on its own row alone, bit for bit, whatever the number of rows (a batched matmul
    may round rows differently for different batch sizes).
    """

    mean: Tensor
    cov: Tensor

    @classmethod
    def make(
        cls, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> GaussianTarget:
        scales = torch.tensor([0.1, 1.0, 3.0, 10.0, 0.5], dtype=dtype, device=device)
        d = scales.numel()
        corr = 0.5 * torch.eye(d, dtype=dtype, device=device) + 0.5
        cov = scales[:, None] * corr * scales[None, :]
        return cls(torch.arange(d, dtype=dtype, device=device) - 2.0, cov)

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def potential(self) -> FunctionPotential:
        prec = torch.linalg.inv(self.cov)

        def u(z: Tensor) -> Tensor:
            d = z - self.mean
            return 0.5 * (d.unsqueeze(-1) * prec * d.unsqueeze(-2)).sum((-2, -1))

        return FunctionPotential(u, self.dim)

    def draw(self, num: int, seed: int) -> Tensor:
        """Exact independent draws ``[num, D]``."""
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(num, self.dim, generator=g, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + eps @ torch.linalg.cholesky(self.cov).T


def banana_potential(curvature: float = 0.5, scale: float = 0.5) -> FunctionPotential:
    """``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(curvature * x1², scale²)``: a curved, non-Gaussian target
    that can be drawn from exactly (see :func:`banana_draws`)."""

    def u(z: Tensor) -> Tensor:
        x1, x2 = z[:, 0], z[:, 1]
        return 0.5 * x1**2 + 0.5 * ((x2 - curvature * x1**2) / scale) ** 2

    return FunctionPotential(u, 2)


def banana_draws(num: int, seed: int, curvature: float = 0.5, scale: float = 0.5) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(num, generator=g, dtype=torch.float64)
    x2 = curvature * x1**2 + scale * torch.randn(num, generator=g, dtype=torch.float64)
    return torch.stack([x1, x2], -1)


def run_chains(
    kernel: MCMCKernel,
    potential: Potential,
    z0: Tensor,
    rng: ChainRNG,
    *,
    num_warmup: int,
    num_samples: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Drive ``kernel`` directly: returns the kept draws ``[C, S, D]`` and info ``{k: [C, S]}``."""
    state = kernel.init_state(z0, potential, rng, num_warmup=num_warmup)
    draws, infos = [], []
    for t in range(num_warmup + num_samples):
        state, info = kernel.step(state, potential, rng, None, iteration=t, num_warmup=num_warmup)
        if t >= num_warmup:
            draws.append(state.z)
            infos.append(info)
    stats = {k: torch.stack([i[k] for i in infos], 1) for k in infos[0]}
    return torch.stack(draws, 1), stats


def assert_mean_and_variance(draws: Tensor, mean: Tensor, cov: Tensor, *, z: float) -> None:
    """Per coordinate, the Monte-Carlo standard-error bounds of the first two moments:
    ``|mean(x) − μ| < z·sd(x)/√ESS(x)`` and, with ``q = (x − μ)²``,
    ``|mean(q) − σ²| < z·sd(q)/√ESS(q)`` (ESS: ArviZ's bulk ESS over all chains)."""
    flat = draws.reshape(-1, draws.shape[-1])
    ess_x = torch.as_tensor(ess(draws), dtype=flat.dtype)
    assert torch.all(ess_x > 100), f"too few effective samples for a meaningful test: {ess_x}"
    err = (flat.mean(0) - mean).abs()
    bound = z * cov.diagonal().sqrt() / ess_x.sqrt()
    assert torch.all(err < bound), f"mean errors {err} exceed {bound} (ESS {ess_x})"
    q = (draws - mean) ** 2
    ess_q = torch.as_tensor(ess(q), dtype=flat.dtype)
    q_flat = q.reshape(-1, q.shape[-1])
    err_q = (q_flat.mean(0) - cov.diagonal()).abs()
    bound_q = z * q_flat.std(0) / ess_q.sqrt()
    assert torch.all(err_q < bound_q), (
        f"variance errors {err_q} exceed {bound_q} (ESS of squares {ess_q})"
    )


def assert_stationary_gaussian(z: Tensor, mean: Tensor, cov: Tensor, *, zscore: float) -> None:
    """``z`` ``[C, D]`` from independent chains started at exact draws: whitened, each
    coordinate must be ``N(0, 1)``. The sample mean of ``C`` independent ``N(0, 1)`` has sd
    ``1/√C``; the sample variance has sd ``√(2/(C−1))``."""
    c = z.shape[0]
    w = torch.linalg.solve_triangular(
        torch.linalg.cholesky(cov), (z - mean).T, upper=False
    ).T  # [C, D]
    m = w.mean(0)
    v = w.var(0)
    assert torch.all(m.abs() < zscore / math.sqrt(c)), f"whitened means {m}"
    assert torch.all((v - 1).abs() < zscore * math.sqrt(2 / (c - 1))), f"whitened variances {v}"

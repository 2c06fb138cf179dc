"""Exact targets shared by the MCMC tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bayesdl.infer.mcmc import FunctionPotential, MCMCResult


@dataclass
class ConjugateRegression:
    """``y = X w + ε``, ``ε ~ N(0, σ²)``, prior ``w ~ N(0, I)``: posterior ``N(m, Λ⁻¹)`` with
    ``Λ = I + XᵀX / σ²`` and ``m = Λ⁻¹ Xᵀ y / σ²``."""

    x: Tensor
    y: Tensor
    noise: float
    mean: Tensor
    cov: Tensor

    @classmethod
    def make(
        cls, n: int = 1000, d: int = 3, noise: float = 1.0, seed: int = 0
    ) -> ConjugateRegression:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        y = x @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
        prec = torch.eye(d, dtype=torch.float64) + x.T @ x / noise**2
        cov = torch.linalg.inv(prec)
        mean = cov @ (x.T @ y) / noise**2
        return cls(x, y, noise, mean, cov)

    def potential(self) -> FunctionPotential:
        """``U(w) = |w|²/2 + (N/B) Σ_batch (y − x·w)² / (2σ²)``; the full data without a batch."""
        n = self.x.shape[0]

        def u(z: Tensor, batch: tuple[Tensor, Tensor] | None) -> Tensor:
            xb, yb = (self.x, self.y) if batch is None else batch
            resid = yb - z @ xb.T  # [C, B]
            return (
                0.5 * (z**2).sum(-1) + (n / xb.shape[0]) * 0.5 * (resid**2).sum(-1) / self.noise**2
            )

        return FunctionPotential(u, self.x.shape[1], takes_batch=True)


def ess(draws: Tensor) -> np.ndarray:
    """Bulk ESS of ``[C, S, *shape]`` draws (ArviZ), elementwise."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        return az.ess(az.convert_to_dataset({"x": draws.detach().cpu().numpy()}))["x"].values


def assert_moments(
    result: MCMCResult | Tensor,
    mean: Tensor,
    cov: Tensor,
    *,
    z: float = 4.0,
    var_band: tuple[float, float] = (0.8, 1.25),
) -> None:
    """Per coordinate: ``|mean − truth| < z·sd/√ESS`` (the Monte-Carlo standard error bound;
    ``z = 4`` has a two-sided false-alarm rate of 6e-5 per coordinate) and the variance ratio
    inside ``var_band`` (the issue's acceptance band)."""
    draws = result.z if isinstance(result, MCMCResult) else result
    flat = draws.reshape(-1, draws.shape[-1])
    est_mean = flat.mean(0)
    est_var = flat.var(0)
    true_sd = cov.diagonal().sqrt()
    n_eff = torch.as_tensor(ess(draws), dtype=flat.dtype)
    assert torch.all(n_eff > 100), f"too few effective samples for the test to mean much: {n_eff}"
    err = (est_mean - mean).abs()
    bound = z * true_sd / n_eff.sqrt()
    assert torch.all(err < bound), f"mean error {err} exceeds the MCSE bound {bound} (ESS {n_eff})"
    ratio = est_var / cov.diagonal()
    assert torch.all((ratio > var_band[0]) & (ratio < var_band[1])), (
        f"variance ratios {ratio} outside {var_band} (ESS {n_eff})"
    )

"""A linear-Gaussian VAE (probabilistic PCA) whose log p(x) and posterior are exact.

With ``x = W z + b + sigma * noise`` and ``z ~ N(0, I)``, ``p(x) = N(b, W W^T + sigma^2 I)``.
When the columns of ``W`` are orthogonal, ``M = W^T W + sigma^2 I`` is diagonal and the exact
posterior ``N(M^-1 W^T (x - b), sigma^2 M^-1)`` is a linear encoder with a constant diagonal
scale, so a VAE guide can represent it exactly (every importance weight then equals p(x)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bayesdl.vae import VAE


class LinearEncoder(nn.Module):
    """``x -> (A x + c, exp(log_scale))``."""

    def __init__(self, a: Tensor, c: Tensor, log_scale: Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.c = nn.Parameter(c.clone())
        self.log_scale = nn.Parameter(log_scale.clone())
        self.input_shape = (a.shape[1],)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc = x @ self.a.T + self.c
        return loc, self.log_scale.exp().expand_as(loc)


class LinearDecoder(nn.Module):
    """``z -> W z + b`` (any leading dims)."""

    def __init__(self, w: Tensor, b: Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.w.T + self.b


def make_ppca(
    *,
    num_data: int = 8,
    dim: int = 5,
    latent_dim: int = 2,
    sigma: float = 0.5,
    exact: bool = False,
    perturb: float = 0.3,
    dataset_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[VAE, Tensor, Tensor]:
    """``(vae, x [N, D], exact log p(x_n) [N])`` in float64 on ``device``.

    ``exact=True`` gives the guide the true posterior; otherwise its weights, offsets and
    log-scales are perturbed by ``perturb * N(0, 1)``.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    q, _ = torch.linalg.qr(torch.randn(dim, latent_dim, generator=g, dtype=dt))
    w = q * torch.linspace(2.0, 1.0, latent_dim, dtype=dt)  # orthogonal columns
    b = 0.3 * torch.randn(dim, generator=g, dtype=dt)
    z = torch.randn(num_data, latent_dim, generator=g, dtype=dt)
    x = z @ w.T + b + sigma * torch.randn(num_data, dim, generator=g, dtype=dt)
    m = (w.T @ w).diagonal() + sigma**2  # diagonal of M
    a = w.T / m.unsqueeze(-1)
    c = -a @ b
    log_scale = 0.5 * torch.log(sigma**2 / m)
    if not exact:
        a = a + perturb * torch.randn(a.shape, generator=g, dtype=dt)
        c = c + perturb * torch.randn(c.shape, generator=g, dtype=dt)
        log_scale = log_scale + perturb * torch.randn(log_scale.shape, generator=g, dtype=dt)
    vae = VAE(
        LinearEncoder(a, c, log_scale),
        LinearDecoder(w, b),
        latent_dim,
        "gaussian",
        scale=sigma,
        dataset_size=dataset_size,
    )
    vae = vae.to(device=device, dtype=dt)
    cov = w @ w.T + sigma**2 * torch.eye(dim, dtype=dt)
    log_px = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    return vae, x.to(device), log_px.to(device)

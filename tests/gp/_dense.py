"""Dense Gaussian references for the GP tests: every quantity by plain float64 linear algebra."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor


def dense_log_marginal(K: Tensor, y: Tensor, r: Tensor, mask: Tensor) -> Tensor:
    """``log N(y_obs | 0, K_oo + diag(r_obs))`` for each batch entry; ``K [..., T, T]``."""
    K, y, r, mask = torch.broadcast_tensors(K, y.unsqueeze(-1), r.unsqueeze(-1), mask.unsqueeze(-1))
    y, r, mask = y[..., 0], r[..., 0], mask[..., 0]
    out = torch.zeros(y.shape[:-1], dtype=y.dtype)
    for idx in itertools.product(*(range(n) for n in y.shape[:-1])):
        o = mask[idx]
        n = int(o.sum())
        if n == 0:
            continue
        S = K[idx][o][:, o] + torch.diag(r[idx][o])
        L = torch.linalg.cholesky(S)
        z = torch.linalg.solve_triangular(L, y[idx][o].unsqueeze(-1), upper=False).squeeze(-1)
        out[idx] = (
            -0.5 * z.square().sum() - L.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
        )
    return out


def dense_posterior(K: Tensor, y: Tensor, r: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean ``[..., T]`` and covariance ``[..., T, T]`` of ``f ~ N(0, K)`` given
    ``y_obs = f_obs + N(0, r_obs)`` (textbook form ``K - K_:o (K_oo + R)^{-1} K_o:``)."""
    K, y, r, mask = torch.broadcast_tensors(K, y.unsqueeze(-1), r.unsqueeze(-1), mask.unsqueeze(-1))
    y, r, mask = y[..., 0], r[..., 0], mask[..., 0]
    means = torch.zeros(y.shape, dtype=y.dtype)
    covs = K.clone()
    for idx in itertools.product(*(range(n) for n in y.shape[:-1])):
        o = mask[idx]
        if int(o.sum()) == 0:
            continue
        Ko = K[idx][:, o]
        S = K[idx][o][:, o] + torch.diag(r[idx][o])
        means[idx] = Ko @ torch.linalg.solve(S, y[idx][o])
        covs[idx] = K[idx] - Ko @ torch.linalg.solve(S, Ko.T)
    return means, covs


def gaussian_kl(mu: Tensor, Sigma: Tensor, K: Tensor) -> Tensor:
    """Closed-form ``KL(N(mu, Sigma) || N(0, K))`` over the last dims."""
    T = mu.shape[-1]
    LK = torch.linalg.cholesky(K)
    trace = torch.cholesky_solve(Sigma, LK).diagonal(dim1=-2, dim2=-1).sum(-1)
    quad = torch.cholesky_solve(mu.unsqueeze(-1), LK).squeeze(-1).mul(mu).sum(-1)
    logdet_k = 2 * LK.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_s = torch.linalg.slogdet(Sigma)[1]
    return 0.5 * (trace + quad - T + logdet_k - logdet_s)


def state_space(kernel, times: Tensor):
    """``(A, Q, H, m0, P0)`` of a kernel on a time grid ``[T]`` (float64)."""
    A, Q = kernel.transition(times.diff())
    P0 = kernel.stationary_covariance(times.dtype)
    H = kernel.observation_vector(times.dtype)
    m0 = torch.zeros(P0.shape[:-1], dtype=times.dtype)
    return A, Q, H, m0, P0

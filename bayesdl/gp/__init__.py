"""Gaussian processes over time: Matérn kernels, Kalman filtering and smoothing, GP distributions.

One kernel vocabulary (:class:`MaternKernel`, ν ∈ {1/2, 3/2, 5/2}, and :class:`SumKernel`)
serves two interchangeable Pyro distributions: :class:`GP` (dense Cholesky, ``O(T^3)``) and
:class:`MarkovGP` (the kernels' state-space form with Kalman filtering and RTS smoothing,
``O(T)``, sequential or parallel-scan). Both have ``log_prob``, ``rsample`` and
``posterior(pseudo_obs, pseudo_var, mask)``, which returns a :class:`GPPosterior` (marginal
moments, log normaliser, joint draws, ``KL(q || p)``). The pure-math Kalman routines are in
:mod:`bayesdl.gp.kalman`.
"""

from bayesdl.gp import kalman
from bayesdl.gp.dense_gp import GP
from bayesdl.gp.kalman import (
    FilterResult,
    SmootherResult,
    ffbs_sample,
    kalman_filter,
    kalman_log_marginal,
    rts_smoother,
    sample_linear_gaussian,
)
from bayesdl.gp.markov_gp import MarkovGP
from bayesdl.gp.matern_kernel import MaternKernel, SumKernel
from bayesdl.gp.posterior import GPPosterior

__all__ = [
    "FilterResult",
    "GP",
    "GPPosterior",
    "MarkovGP",
    "MaternKernel",
    "SmootherResult",
    "SumKernel",
    "ffbs_sample",
    "kalman",
    "kalman_filter",
    "kalman_log_marginal",
    "rts_smoother",
    "sample_linear_gaussian",
]

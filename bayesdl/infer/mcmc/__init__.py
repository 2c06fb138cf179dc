"""MCMC: fast vectorised HMC/NUTS, stochastic-gradient kernels (SGHMC, adaptive SGHMC, SGLD) and
a runner with checkpoints, resume and ArviZ export."""

from bayesdl.infer.mcmc._hamiltonian import HamiltonianState
from bayesdl.infer.mcmc._sg_kernel import SGKernel, SGState, cyclical_step_size
from bayesdl.infer.mcmc.adaptive_sghmc import AdaptiveSGHMC, AdaptiveSGHMCState
from bayesdl.infer.mcmc.hmc import HMC
from bayesdl.infer.mcmc.kernel import MCMCKernel
from bayesdl.infer.mcmc.mcmc_result import MCMCResult
from bayesdl.infer.mcmc.nuts import NUTS
from bayesdl.infer.mcmc.potential import (
    BNNPotential,
    FunctionPotential,
    LatentSite,
    ModelPotential,
    Potential,
    potential_of,
)
from bayesdl.infer.mcmc.rng import ChainRNG, chain_seed
from bayesdl.infer.mcmc.runner import CHAIN_METHODS, NonFiniteSampleError, sample
from bayesdl.infer.mcmc.sghmc import SGHMC
from bayesdl.infer.mcmc.sgld import SGLD, SGLDState

__all__ = [
    "CHAIN_METHODS",
    "HMC",
    "NUTS",
    "SGHMC",
    "SGLD",
    "AdaptiveSGHMC",
    "AdaptiveSGHMCState",
    "BNNPotential",
    "ChainRNG",
    "FunctionPotential",
    "HamiltonianState",
    "LatentSite",
    "MCMCKernel",
    "MCMCResult",
    "ModelPotential",
    "NonFiniteSampleError",
    "Potential",
    "SGKernel",
    "SGLDState",
    "SGState",
    "chain_seed",
    "cyclical_step_size",
    "potential_of",
    "sample",
]

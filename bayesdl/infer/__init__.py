"""Inference: the SVI fit loop, MCMC sampling (:mod:`bayesdl.infer.mcmc`), predictions and
checkpoints."""

from bayesdl.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesdl.infer.fit import FitResult, FitState, NonFiniteLossError, fit, kl_warmup
from bayesdl.infer.info_vae import InfoVAE
from bayesdl.infer.iwae import IWAE
from bayesdl.infer.local_elbo import LocalELBO
from bayesdl.infer.mcmc import MCMCResult, sample
from bayesdl.infer.mean_field_elbo import MeanFieldELBO
from bayesdl.infer.predictive import predict, sample_posterior
from bayesdl.infer.ssvi import SubspaceScheduler, tempered_kl_warmup
from bayesdl.likelihoods.prediction import Prediction

__all__ = [
    "FitResult",
    "FitState",
    "IWAE",
    "InfoVAE",
    "LocalELBO",
    "MCMCResult",
    "MeanFieldELBO",
    "NonFiniteLossError",
    "Prediction",
    "SubspaceScheduler",
    "fit",
    "kl_warmup",
    "load_checkpoint",
    "predict",
    "sample",
    "sample_posterior",
    "save_checkpoint",
    "tempered_kl_warmup",
]

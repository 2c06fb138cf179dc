"""Inference: the SVI fit loop, predictions and checkpoints."""

from bayesdl.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesdl.infer.fit import FitResult, FitState, NonFiniteLossError, fit, kl_warmup
from bayesdl.infer.mean_field_elbo import MeanFieldELBO
from bayesdl.infer.predictive import predict, sample_posterior
from bayesdl.likelihoods.prediction import Prediction

__all__ = [
    "FitResult",
    "FitState",
    "MeanFieldELBO",
    "NonFiniteLossError",
    "Prediction",
    "fit",
    "kl_warmup",
    "load_checkpoint",
    "predict",
    "sample_posterior",
    "save_checkpoint",
]

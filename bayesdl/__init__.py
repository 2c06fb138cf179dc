"""bayesdl: Bayesian deep learning on Pyro.

Take a plain ``torch.nn.Module``, pick a prior and a likelihood, and fit it with variational
inference (or, later, MCMC); predictions are vectorised over posterior samples.
"""

from bayesdl import data, guides, handlers, infer, likelihoods, metrics, nn, priors
from bayesdl.guides import DeltaGuide, MeanFieldGuide
from bayesdl.infer import fit, predict
from bayesdl.nn import BNN

__version__ = "0.1.0"

__all__ = [
    "BNN",
    "DeltaGuide",
    "MeanFieldGuide",
    "__version__",
    "data",
    "fit",
    "guides",
    "handlers",
    "infer",
    "likelihoods",
    "metrics",
    "nn",
    "predict",
    "priors",
]

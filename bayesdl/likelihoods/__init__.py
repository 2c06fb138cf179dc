"""Likelihoods: each owns the data plate and scales minibatches by N/B in one place."""

from bayesdl.likelihoods.bernoulli_likelihood import BernoulliLikelihood
from bayesdl.likelihoods.categorical_likelihood import CategoricalLikelihood
from bayesdl.likelihoods.gaussian_likelihood import GaussianLikelihood
from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.likelihoods.poisson_likelihood import PoissonLikelihood
from bayesdl.likelihoods.prediction import Prediction

__all__ = [
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "PoissonLikelihood",
    "Prediction",
]

"""Functional priors: fit a network's weight prior so its functions match a Gaussian process.

The pieces of Tran et al.'s GP-matched priors (JMLR 2022): GP targets (:class:`GPTarget`,
optionally hierarchical), measurement sets, distance estimators (a Lipschitz critic for ``W₁``,
sliced Wasserstein, closed-form Gaussian ``W₂``), fittable priors in the scaled parameterisation
(:class:`ScaledLinear`), and :func:`fit_functional_prior`, which returns an ordinary
:class:`~bayesdl.priors.Prior` for any :class:`~bayesdl.nn.BNN`.
"""

from bayesdl.priors.functional.estimator import DistanceEstimator
from bayesdl.priors.functional.fit_functional_prior import fit_functional_prior
from bayesdl.priors.functional.gaussian_w2 import GaussianW2, gaussian_w2
from bayesdl.priors.functional.gaussian_weight_prior import GaussianWeightPrior
from bayesdl.priors.functional.gp_target import GPTarget
from bayesdl.priors.functional.lipschitz_critic import (
    LipschitzCritic,
    gradient_penalty,
    make_critic,
)
from bayesdl.priors.functional.measurement import (
    DataMeasurement,
    GridMeasurement,
    MeasurementSet,
    MinibatchMeasurement,
)
from bayesdl.priors.functional.plots import plot_function_samples
from bayesdl.priors.functional.sample_functions import prior_functions
from bayesdl.priors.functional.scaled_linear import ScaledLinear, scaled_mlp
from bayesdl.priors.functional.sliced_wasserstein import (
    SlicedWasserstein,
    random_directions,
    sliced_wasserstein,
)

__all__ = [
    "DataMeasurement",
    "DistanceEstimator",
    "GPTarget",
    "GaussianW2",
    "GaussianWeightPrior",
    "GridMeasurement",
    "LipschitzCritic",
    "MeasurementSet",
    "MinibatchMeasurement",
    "ScaledLinear",
    "SlicedWasserstein",
    "fit_functional_prior",
    "gaussian_w2",
    "gradient_penalty",
    "make_critic",
    "plot_function_samples",
    "prior_functions",
    "random_directions",
    "scaled_mlp",
    "sliced_wasserstein",
]

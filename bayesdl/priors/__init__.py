"""Weight-space priors for Bayesian networks."""

from bayesdl.priors._fittable import FittablePrior
from bayesdl.priors.hierarchical_gamma_prior import HierarchicalGammaPrior
from bayesdl.priors.iid_prior import IIDPrior
from bayesdl.priors.layerwise_normal_prior import LayerwiseNormalPrior
from bayesdl.priors.prior import Prior, WeightSite
from bayesdl.priors.scale_mixture_prior import ScaleMixturePrior

__all__ = [
    "FittablePrior",
    "HierarchicalGammaPrior",
    "IIDPrior",
    "LayerwiseNormalPrior",
    "Prior",
    "ScaleMixturePrior",
    "WeightSite",
]

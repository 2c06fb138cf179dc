"""Guides for Bayesian networks: mean-field Normal, sparse mean-field (SSVI), point mass (MAP)."""

from bayesdl.guides.delta_guide import DeltaGuide
from bayesdl.guides.mean_field_guide import MeanFieldGuide
from bayesdl.guides.site_guide import LatentSite, SiteGuide
from bayesdl.guides.sparse_mean_field_guide import SparseMeanFieldGuide
from bayesdl.guides.sparse_normal import SparseNormal

__all__ = [
    "DeltaGuide",
    "LatentSite",
    "MeanFieldGuide",
    "SiteGuide",
    "SparseMeanFieldGuide",
    "SparseNormal",
]

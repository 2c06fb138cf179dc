"""Guides for Bayesian networks: mean-field Normal and point mass (MAP)."""

from bayesdl.guides.delta_guide import DeltaGuide
from bayesdl.guides.mean_field_guide import MeanFieldGuide
from bayesdl.guides.site_guide import LatentSite, SiteGuide

__all__ = ["DeltaGuide", "LatentSite", "MeanFieldGuide", "SiteGuide"]

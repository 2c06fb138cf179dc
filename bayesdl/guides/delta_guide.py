"""A point-mass guide: MAP estimation of a BNN's latent sites."""

from __future__ import annotations

import pyro.distributions as dist
from pyro.distributions.transforms import biject_to

from bayesdl.guides.site_guide import LatentSite, SiteGuide


class DeltaGuide(SiteGuide):
    """``q(w) = delta(w - w_hat)``: with ``Trace_ELBO`` the loss is ``-log p(y, w_hat)``, so
    fitting gives the MAP estimate (in the constrained parameterisation).

    Args:
        bnn: the :class:`~bayesdl.nn.BNN` model.
        init_loc: see :class:`~bayesdl.guides.MeanFieldGuide`.

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import DeltaGuide
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> bnn = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(10))
        >>> DeltaGuide(bnn)()["bias"].shape
        torch.Size([1])
    """

    def site_distribution(self, site: LatentSite) -> dist.Distribution:
        value = biject_to(site.support)(self.loc(site.name))
        return dist.Delta(value, event_dim=len(site.shape))

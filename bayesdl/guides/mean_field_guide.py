"""The mean-field Normal guide over a BNN's latent sites."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import biject_to
from torch import Tensor, nn

from bayesdl._validation import check_positive
from bayesdl.guides.site_guide import LatentSite, SiteGuide, _key, constrain
from bayesdl.nn.bnn import BNN


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class MeanFieldGuide(SiteGuide):
    """Fully factorised Normal guide ``q(w) = prod_i Normal(w_i | mu_i, sigma_i^2)``.

    Each latent site gets a mean ``mu`` and a scale ``sigma = softplus(rho)``. Weights with real
    support are sampled as ``Normal(mu, sigma).to_event(...)``, so with Normal priors
    :class:`pyro.infer.TraceMeanField_ELBO` uses the closed-form KL. Constrained hyper-latents
    (variances, noise scales) get a Normal in unconstrained space pushed through
    ``biject_to(support)`` (e.g. a LogNormal for positive sites).

    Args:
        bnn: the :class:`~bayesdl.nn.BNN` model.
        init_loc: ``"net"`` (the network's current values: a trained net, or PyTorch's fan-in
            initialisation of a fresh one), ``"fan_in"`` (redraw weights from
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, biases zero) or ``"prior"`` (a prior draw).
        init_scale: initial ``sigma`` of every site (``> 0``).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import MeanFieldGuide
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> bnn = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(10))
        >>> guide = MeanFieldGuide(bnn, init_scale=0.01)
        >>> sorted(guide()["weight"].shape)
        [1, 2]

    References:
        C. Blundell et al., *Weight Uncertainty in Neural Networks*, ICML 2015.
    """

    def __init__(self, bnn: BNN, *, init_loc: str = "net", init_scale: float = 1e-2):
        super().__init__(bnn, init_loc=init_loc)
        check_positive(init_scale, "init_scale")
        self.raw_scales = nn.ParameterDict()
        for site in self._sites:
            loc = self.loc(site.name)
            self.raw_scales[_key(site.name)] = nn.Parameter(
                _softplus_inverse(torch.full_like(loc, float(init_scale)))
            )

    def scale(self, name: str) -> Tensor:
        """The (unconstrained-space) standard deviation of site ``name``."""
        return F.softplus(self.raw_scales[_key(name)])

    def site_distribution(self, site: LatentSite) -> dist.Distribution:
        # the scale is a softplus (positive by construction) and fit() stops on non-finite
        # values, so per-step argument validation is skipped
        base = dist.Normal(
            self.loc(site.name), self.scale(site.name), validate_args=False
        ).to_event(len(site.shape))
        return constrain(base, site.support)

    def get_posterior(self, name: str) -> dist.Distribution:
        """The guide's distribution of site ``name``."""
        for site in self._sites:
            if site.name == name:
                return self.site_distribution(site)
        raise KeyError(f"no latent site named {name!r}; sites: {self.site_names}")

    @torch.no_grad()
    def mean(self) -> dict[str, Tensor]:
        """Posterior means of real-valued sites and medians of constrained ones."""
        out = {}
        for s in self._sites:
            out[s.name] = biject_to(s.support)(self.loc(s.name)).detach()
        return out

"""Hierarchical Normal weights with a Gamma precision per parameter tensor (layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bayesdl._validation import check_positive
from bayesdl.priors._fittable import FittablePrior, SiteFilter, softplus_inverse
from bayesdl.priors.prior import WeightSite

if TYPE_CHECKING:  # bayesdl.infer imports bayesdl.nn, which imports bayesdl.priors
    from bayesdl.infer.mcmc.rng import ChainRNG


_GAMMA_PROPOSALS = 16


def _gamma_per_chain(concentration: Tensor, rate: Tensor, rng: ChainRNG) -> Tensor:
    """``Gamma(concentration[c], rate[c])`` draws ``[C]``, chain ``c`` from its own generator.

    Marsaglia–Tsang squeeze on ``Gamma(a + 1)`` with the boost ``U^{1/a}`` (valid for every
    ``a > 0``), with a fixed number of proposals per chain so every chain draws the same
    shapes (vectorised = sequential); the acceptance rate exceeds 95 %, so all 16 proposals are
    rejected with probability below ``1e-20`` (then the mode ``d`` is used).

    References:
        G. Marsaglia, W. W. Tsang, *A Simple Method for Generating Gamma Variables*, ACM TOMS
        2000.
    """
    dtype = concentration.dtype
    a = concentration.reshape(-1, 1)
    d = a + 1.0 - 1.0 / 3.0
    c = (9.0 * d).rsqrt()
    z = rng.normal((_GAMMA_PROPOSALS,), dtype=dtype).to(a.device)
    u = rng.uniform((_GAMMA_PROPOSALS,), dtype=dtype).to(a.device)
    boost = rng.uniform((1,), dtype=dtype).to(a.device)
    v = (1.0 + c * z).clamp(min=0).pow(3)
    ok = (v > 0) & (
        u.clamp(min=1e-300).log() < 0.5 * z.square() + d - d * v + d * v.clamp(min=1e-300).log()
    )
    first = torch.where(
        ok.any(-1), ok.float().argmax(-1), torch.zeros_like(ok[:, 0], dtype=torch.long)
    )
    g = (d * v).gather(-1, first.unsqueeze(-1))
    g = torch.where(ok.any(-1, keepdim=True), g, d)
    g = g * boost.clamp(min=1e-300).pow(1.0 / a)
    return g.reshape(-1) / rate.reshape(-1)


class HierarchicalGammaPrior(FittablePrior):
    """``λ_l ~ Gamma(α_l, β_l)``, ``w ~ N(0, c_l² / λ_l)`` for every parameter tensor ``l``.

    Each random parameter tensor (the weight and the bias of each layer separately) has its own
    precision ``λ_l``, a latent sample site named ``"<parameter>.precision"`` (for example
    ``"0.weight.precision"``); ``c_l`` is the fan-in factor (see
    :class:`~bayesdl.priors.FittablePrior`). With ``α = β = 1`` this is the "fixed
    hierarchical" prior of Tran et al.; their GP-matched version fits ``α_l, β_l`` (stored
    through softplus) by :func:`~bayesdl.priors.functional.fit_functional_prior`, drawing
    ``λ`` reparameterised and **independently for every function sample** (the reference code
    shares one draw per call, which biases the fitted prior).

    For posterior sampling, :meth:`gibbs_fn` is the conjugate update
    ``λ_l | w ~ Gamma(α_l + n_l/2, β_l + Σ w²/(2 c_l²))`` to pass to
    :class:`~bayesdl.infer.mcmc.AdaptiveSGHMC` (``**prior.gibbs_kwargs()``).

    Args:
        net: the plain network (or a BNN).
        concentration: initial ``α`` (``> 0``), the same for every tensor.
        rate: initial ``β`` (``> 0``).
        site_filter, fan_in_scaling: see :class:`~bayesdl.priors.FittablePrior`.

    Example:
        >>> import torch
        >>> from bayesdl.priors import HierarchicalGammaPrior
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> prior = HierarchicalGammaPrior(net)
        >>> prior.gibbs_sites[:2]
        ['0.weight.precision', '0.bias.precision']
        >>> prior.rsample_weights(5)["0.weight"].shape
        torch.Size([5, 8, 1])

    References:
        R. M. Neal, *Bayesian Learning for Neural Networks*, 1996; B.-H. Tran et al., *All You
        Need is a Good Functional Prior for Bayesian Deep Learning*, JMLR 2022.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        concentration: float = 1.0,
        rate: float = 1.0,
        site_filter: SiteFilter | None = None,
        fan_in_scaling: bool | str = "auto",
    ):
        super().__init__(net, site_filter=site_filter, fan_in_scaling=fan_in_scaling)
        check_positive(concentration, "concentration")
        check_positive(rate, "rate")
        a0, b0 = softplus_inverse(float(concentration)), softplus_inverse(float(rate))
        self.raw_concentration = nn.ParameterDict(
            {s.key: nn.Parameter(torch.tensor(a0, dtype=self._dtype)) for s in self.specs}
        )
        self.raw_rate = nn.ParameterDict(
            {s.key: nn.Parameter(torch.tensor(b0, dtype=self._dtype)) for s in self.specs}
        )

    def concentration(self, name: str) -> Tensor:
        """``α`` of parameter ``name`` (a scalar tensor)."""
        return F.softplus(self.raw_concentration[self.spec(name).key])

    def rate(self, name: str) -> Tensor:
        """``β`` of parameter ``name`` (a scalar tensor)."""
        return F.softplus(self.raw_rate[self.spec(name).key])

    @staticmethod
    def precision_site(name: str) -> str:
        """The sample-site name of parameter ``name``'s precision."""
        return f"{name}.precision"

    @property
    def gibbs_sites(self) -> list[str]:
        """The precision sites (what :meth:`gibbs_fn` updates)."""
        return [self.precision_site(s.name) for s in self.specs]

    def distribution(self, site: WeightSite) -> dist.Distribution:
        raise TypeError(
            "HierarchicalGammaPrior couples each parameter with its precision site; it has no "
            "per-parameter marginal distribution (use it through BNN / Prior.sample)"
        )

    def sample(self, sites: list[WeightSite]) -> dict[str, Tensor]:
        values = {}
        for site in sites:
            spec = self.spec(site)
            p = site.param
            alpha = self.concentration(spec.name).to(p)
            beta = self.rate(spec.name).to(p)
            lam = pyro.sample(self.precision_site(spec.name), dist.Gamma(alpha, beta))
            shape = p.shape
            std = (spec.factor * lam.rsqrt()).reshape(lam.shape + (1,) * len(shape))
            prior = dist.Normal(p.new_zeros(shape), std.expand(lam.shape + shape))
            values[site.name] = pyro.sample(site.name, prior.to_event(len(shape)))
        return values

    def rsample_weights(self, num_samples: int) -> dict[str, Tensor]:
        out = {}
        for spec in self.specs:
            alpha = self.concentration(spec.name)
            beta = self.rate(spec.name)
            lam = torch.distributions.Gamma(alpha, beta).rsample((num_samples,))  # [S]
            eps = torch.randn(num_samples, *spec.shape, dtype=alpha.dtype, device=alpha.device)
            std = spec.factor * lam.rsqrt()
            out[spec.name] = eps * std.reshape(num_samples, *([1] * len(spec.shape)))
        return out

    def gibbs_fn(self, values: dict[str, Tensor], rng: ChainRNG) -> dict[str, Tensor]:
        """Conjugate draw of every precision given the weights, per chain.

        Args:
            values: constrained site values ``{name: [C, *shape]}`` (weights included).
            rng: a :class:`~bayesdl.infer.mcmc.ChainRNG` (chain ``c`` draws from its own
                generator).

        Returns:
            ``{"<name>.precision": [C]}``.
        """
        out = {}
        for spec in self.specs:
            w = values[spec.name]
            c = w.shape[0]
            n = spec.shape.numel()
            ss = (w.reshape(c, -1) / spec.factor).square().sum(-1)
            alpha = (self.concentration(spec.name).detach().to(w) + 0.5 * n).expand(c)
            beta = self.rate(spec.name).detach().to(w) + 0.5 * ss
            if rng.num_chains != c:
                raise ValueError(f"rng has {rng.num_chains} chain(s) but the values have {c}")
            out[self.precision_site(spec.name)] = _gamma_per_chain(alpha, beta, rng)
        return out

    def conditional_normal_sites(self) -> dict[str, tuple[str, float]]:
        """``{parameter: (precision site, c_l)}``: each parameter is ``N(0, c_l² / λ)`` given
        its precision site's value ``λ``. :class:`~bayesdl.infer.mcmc.BNNPotential` uses it
        to evaluate the prior in closed form instead of tracing the model."""
        return {s.name: (self.precision_site(s.name), float(s.factor)) for s in self.specs}

    def gibbs_kwargs(self, every: int = 1) -> dict:
        """``dict(gibbs_fn=..., gibbs_every=every, gibbs_sites=...)`` for an SG-MCMC kernel."""
        return {"gibbs_fn": self.gibbs_fn, "gibbs_every": every, "gibbs_sites": self.gibbs_sites}

    def extra_repr(self) -> str:
        return f"sites={len(self.specs)}"


__all__ = ["HierarchicalGammaPrior"]

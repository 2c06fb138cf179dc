"""Potential energies on a flat unconstrained vector, vectorised over chains.

A kernel sees a model only through a :class:`Potential`: ``U(z)`` and ``∇U(z)`` for a batch of
chains ``z`` of shape ``[C, D]``. :class:`ModelPotential` builds one from any Pyro model whose
latent sites are global (outside subsampled plates); a minibatch changes only the data the
model is called with, and the model's own data plate scales its log-likelihood by ``N / B``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Transform

Batch = tuple[Any, ...]


class Potential:
    """``U(z) = -log p(z, data)`` over unconstrained chains ``z`` of shape ``[C, D]``.

    Subclasses implement :meth:`_value` (a differentiable ``[C, D] -> [C]`` map).

    Attributes:
        dim: the flat dimension ``D``.
    """

    dim: int

    def _value(self, z: Tensor, batch: Batch | None) -> Tensor:
        raise NotImplementedError

    def __call__(self, z: Tensor, batch: Batch | None = None) -> Tensor:
        """``U`` at ``z`` (``[C, D]``), shape ``[C]``, without a gradient graph."""
        with torch.no_grad():
            return self._value(z, batch)

    def value_and_grad(self, z: Tensor, batch: Batch | None = None) -> tuple[Tensor, Tensor]:
        """``U(z)`` ``[C]`` and ``∇U(z)`` ``[C, D]``, both detached.

        Chains are independent, so the gradient of ``U.sum()`` is each chain's own gradient.
        Both are fresh tensors: kernels may update them in place, so a subclass that overrides
        this must not return tensors it keeps.
        """
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            u = self._value(z, batch)
            (g,) = torch.autograd.grad(u.sum(), z)
        return u.detach(), g


class FunctionPotential(Potential):
    """A potential given as a plain function ``fn(z: [C, D]) -> [C]``.

    Args:
        fn: differentiable map from chains ``[C, D]`` to potentials ``[C]``; it may take the
            minibatch as a second argument (``fn(z, batch)``) when ``takes_batch=True``.
        dim: ``D``.
        takes_batch: pass the minibatch to ``fn``.

    Example:
        >>> u = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=3)
        >>> value, grad = u.value_and_grad(torch.ones(2, 3))
        >>> value.tolist(), grad.shape
        ([1.5, 1.5], torch.Size([2, 3]))
    """

    def __init__(self, fn: Callable[..., Tensor], dim: int, *, takes_batch: bool = False):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.fn = fn
        self.dim = dim
        self.takes_batch = takes_batch

    def _value(self, z: Tensor, batch: Batch | None) -> Tensor:
        return self.fn(z, batch) if self.takes_batch else self.fn(z)


@dataclass(frozen=True)
class LatentSite:
    """Layout of one latent site in the flat vector.

    Attributes:
        name: sample-site name.
        shape: constrained value shape (the site's batch + event shape, without chains).
        unconstrained_shape: shape of its slice of ``z`` once reshaped.
        batch_rank: number of the site's batch dims (they sit right of the chain dim).
        offset: start of the slice in ``z``.
        numel: length of the slice.
        transform: ``biject_to(support)``, unconstrained -> constrained.
    """

    name: str
    shape: torch.Size
    unconstrained_shape: torch.Size
    batch_rank: int
    offset: int
    numel: int
    transform: Transform


def _max_plate_nesting(trace: poutine.Trace) -> int:
    nesting = 0
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
        if not site_is_subsample(site) and not site["is_observed"]:
            nesting = max(nesting, len(site["fn"].batch_shape))
    return nesting


class ModelPotential(Potential):
    """The potential of a Pyro model, with chains vectorised by a plate.

    The model is run under ``pyro.plate("_chains", C, dim=-(max_plate_nesting + 1))`` and
    conditioned on every latent site, so it must broadcast over that leading dim, exactly as
    Pyro's ``vectorize_particles=True`` requires (a :class:`~bayesdl.nn.BNN` does). ``U`` is
    minus the sum of every site's scaled log-density (latents and observations) minus the
    log-Jacobian of the map from unconstrained ``z`` to each site's support.

    Args:
        model: a Pyro model called as ``model(*batch, **kwargs)``.
        data: the full data, a tuple of model arguments (used when no minibatch is passed and
            to find the latent sites).
        kwargs: keyword arguments passed to every call of the model.
        max_plate_nesting: the model's plate nesting (found from a trace when ``None``).

    Raises:
        ValueError: a latent site inside a subsampled plate (a local latent variable), or a
            model with no latent site.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> u = ModelPotential(model, (torch.zeros(3),))
        >>> u.dim, u.site_names
        (1, ['mu'])
    """

    def __init__(
        self,
        model: Callable[..., Any],
        data: Sequence[Any] = (),
        *,
        kwargs: Mapping[str, Any] | None = None,
        max_plate_nesting: int | None = None,
    ):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.data = tuple(data)
        self.kwargs = dict(kwargs or {})
        with poutine.block(hide_types=["param"]), torch.no_grad():
            trace = poutine.trace(model).get_trace(*self.data, **self.kwargs)
        self.max_plate_nesting = (
            _max_plate_nesting(trace) if max_plate_nesting is None else int(max_plate_nesting)
        )
        sites: list[LatentSite] = []
        offset = 0
        self.subsampled = False
        self.dtype = None
        self.device = None
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site_is_subsample(site):
                continue
            scale = site["scale"]
            if not isinstance(scale, Tensor) and scale != 1.0:
                self.subsampled = True
            if site["is_observed"]:
                continue
            subsampled_frames = [
                f.name
                for f in site["cond_indep_stack"]
                if f.vectorized
                and f.size is not None
                and site["value"].dim() >= -f.dim
                and site["value"].shape[f.dim] != f.size
            ]
            if subsampled_frames:
                raise ValueError(
                    f"latent site {name!r} lies inside the subsampled plate(s) "
                    f"{subsampled_frames}; MCMC here samples global latent variables only"
                )
            value = site["value"]
            transform = biject_to(site["fn"].support)
            shape = value.shape
            ushape = transform.inv.forward_shape(shape)
            numel = math.prod(ushape)
            sites.append(
                LatentSite(
                    name,
                    shape,
                    torch.Size(ushape),
                    len(site["fn"].batch_shape),
                    offset,
                    numel,
                    transform,
                )
            )
            offset += numel
            if self.dtype is None and value.is_floating_point():
                self.dtype, self.device = value.dtype, value.device
        if not sites:
            raise ValueError("the model has no latent sample site to sample")
        self.sites = sites
        self.dim = offset
        if self.dtype is None:
            self.dtype, self.device = torch.get_default_dtype(), torch.device("cpu")
        self._prototype = {s.name: trace.nodes[s.name]["value"] for s in sites}

    @property
    def site_names(self) -> list[str]:
        """Names of the latent sites, in their order in ``z``."""
        return [s.name for s in self.sites]

    # ------------------------------------------------------------------ layout
    def _split(self, z: Tensor) -> list[Tensor]:
        if z.dim() != 2 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape [C, {self.dim}], got {tuple(z.shape)}")
        c = z.shape[0]
        # one split (its backward is one cat), not a slice per site (a full-size zero-fill each)
        parts = z.split([s.numel for s in self.sites], dim=-1)
        return [
            p.reshape(c, *s.unconstrained_shape) for s, p in zip(self.sites, parts, strict=True)
        ]

    def unpack(self, z: Tensor) -> dict[str, Tensor]:
        """Constrained site values ``{name: [C, *shape]}`` at chains ``z`` ``[C, D]``."""
        return {s.name: s.transform(u) for s, u in zip(self.sites, self._split(z), strict=True)}

    def pack(self, values: Mapping[str, Tensor]) -> Tensor:
        """Unconstrained ``z`` ``[C, D]`` from constrained values ``{name: [C, *shape]}``."""
        missing = [s.name for s in self.sites if s.name not in values]
        if missing:
            raise ValueError(f"values lack the latent site(s) {missing}")
        parts = []
        c = None
        for s in self.sites:
            v = torch.as_tensor(values[s.name], dtype=self.dtype, device=self.device)
            if v.shape[1:] != s.shape:
                raise ValueError(
                    f"value of site {s.name!r} must have shape [C, *{tuple(s.shape)}], "
                    f"got {tuple(v.shape)}"
                )
            c = v.shape[0] if c is None else c
            parts.append(s.transform.inv(v).reshape(c, -1))
        return torch.cat(parts, dim=-1)

    def initial(
        self,
        num_chains: int,
        strategy: str | Mapping[str, Tensor] = "uniform",
        *,
        generator: torch.Generator | None = None,
        radius: float = 2.0,
    ) -> Tensor:
        """Initial chains ``[C, D]``.

        Args:
            num_chains: ``C``.
            strategy: ``"uniform"`` (each unconstrained coordinate uniform on
                ``(-radius, radius)``, Pyro's and NumPyro's default), ``"prior"`` (a draw from
                the model for each chain), ``"prototype"`` (the value the model drew when the
                potential was built, for every chain), ``"module"`` (for a
                :class:`~bayesdl.nn.BNN` model: the network's own current weights, e.g. its
                PyTorch initialisation or a fitted point estimate, for every chain; other
                latent sites such as a noise scale take the prototype's value) or a dict of
                constrained values ``{name: [C, *shape]}`` or ``{name: shape}`` (the same for
                every chain).
            generator: random stream for ``"uniform"``.
            radius: half-width for ``"uniform"``.
        """
        if strategy == "uniform":
            u = torch.rand(
                num_chains, self.dim, generator=generator, dtype=self.dtype, device=self.device
            )
            return (2 * u - 1) * radius
        if strategy in ("prototype", "module"):
            values = dict(self._prototype)
            if strategy == "module":
                net = getattr(self.model, "net", None)
                names = getattr(self.model, "site_names", None)
                if not isinstance(net, torch.nn.Module) or names is None:
                    raise ValueError(
                        "init strategy 'module' needs a bayesdl BNN model (it starts the chains "
                        "at the network's weights); got a model of type "
                        f"{type(self.model).__name__}"
                    )
                values.update((name, net.get_buffer(name)) for name in names if name in values)
            z = self.pack({k: v.unsqueeze(0) for k, v in values.items()})
            return z.expand(num_chains, -1).clone()
        if strategy == "prior":
            draws = []
            for _ in range(num_chains):
                with poutine.block(hide_types=["param"]), torch.no_grad():
                    tr = poutine.trace(self.model).get_trace(*self.data, **self.kwargs)
                draws.append(
                    self.pack({s.name: tr.nodes[s.name]["value"].unsqueeze(0) for s in self.sites})
                )
            return torch.cat(draws)
        if isinstance(strategy, Mapping):
            values = {}
            for s in self.sites:
                if s.name not in strategy:
                    raise ValueError(f"init values lack the latent site {s.name!r}")
                v = torch.as_tensor(strategy[s.name], dtype=self.dtype, device=self.device)
                values[s.name] = v.expand(num_chains, *s.shape) if v.shape == s.shape else v
            return self.pack(values)
        raise ValueError(
            "init strategy must be 'uniform', 'prior', 'prototype', 'module' or a dict of "
            f"values, got {strategy!r}"
        )

    # ------------------------------------------------------------------ value
    def _value(self, z: Tensor, batch: Batch | None) -> Tensor:
        args = self.data if batch is None else tuple(batch)
        c = z.shape[0]
        mpn = self.max_plate_nesting
        values: dict[str, Tensor] = {}
        log_jac = z.new_zeros(c)
        for s, u in zip(self.sites, self._split(z), strict=True):
            x = s.transform(u)
            ladj = s.transform.log_abs_det_jacobian(u, x)
            log_jac = log_jac + ladj.reshape(c, -1).sum(-1)
            pad = mpn - s.batch_rank
            values[s.name] = x.reshape(c, *([1] * pad), *s.shape)
        with poutine.block(hide_types=["param"]):
            with pyro.plate("_chains", c, dim=-(mpn + 1)):
                trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                    *args, **self.kwargs
                )
        log_p = z.new_zeros(c)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["fn"].log_prob(site["value"])
            lp = scale_and_mask(lp, site["scale"], site["mask"])
            if lp.dim() == mpn + 1:
                log_p = log_p + lp.reshape(lp.shape[0], -1).sum(-1)
            else:
                log_p = log_p + lp.sum()
        return -(log_p + log_jac)


class BNNPotential(ModelPotential):
    """The potential of a :class:`~bayesdl.nn.BNN`, computed without tracing the model.

    Same layout, values and gradients as :class:`ModelPotential` on the same network, but each
    evaluation calls the network once (``vmap`` over chains) and evaluates the prior and the
    likelihood densities directly, skipping Pyro's per-call tracing (several times faster on
    small networks). Used when the prior draws each weight from its own distribution
    (``Prior.sample`` not overridden, as for :class:`~bayesdl.priors.IIDPrior` and
    :class:`~bayesdl.priors.LayerwiseNormalPrior`), or when the prior says which weights are
    ``N(0, c² / λ)`` given another latent site ``λ`` (a ``conditional_normal_sites()`` method,
    as :class:`~bayesdl.priors.HierarchicalGammaPrior` has); :func:`potential_of` falls back
    to :class:`ModelPotential` otherwise.

    Args:
        bnn: the network.
        data: ``(x, y)``, the full training data.
    """

    def __init__(self, bnn: Any, data: Sequence[Any]):
        from bayesdl.nn.bnn import BNN
        from bayesdl.priors.prior import Prior

        if not isinstance(bnn, BNN):
            raise TypeError(f"bnn must be a bayesdl.nn.BNN, got {type(bnn).__name__}")
        conditional = getattr(bnn.prior, "conditional_normal_sites", None)
        if type(bnn.prior).sample is not Prior.sample and conditional is None:
            raise ValueError(
                f"{type(bnn.prior).__name__} couples its sites (it overrides Prior.sample); "
                "use ModelPotential"
            )
        data = tuple(data)
        if len(data) != 2:
            raise ValueError(f"data must be (x, y) for a BNN, got {len(data)} item(s)")
        super().__init__(bnn, data)
        self.bnn = bnn
        with poutine.block(hide_types=["param"]), torch.no_grad():
            trace = poutine.trace(bnn).get_trace(*data)
        self._fns = {s.name: trace.nodes[s.name]["fn"] for s in self.sites}
        # sites drawn N(0, c² / λ) given another latent site λ (HierarchicalGammaPrior): their
        # traced distribution holds the initial λ, so their density is written out below
        self._conditional: dict[str, tuple[str, float]] = (
            {} if conditional is None else dict(conditional())
        )
        names = {s.name for s in self.sites}
        for name, (precision, _) in self._conditional.items():
            if name not in names or precision not in names:
                raise ValueError(
                    f"{type(bnn.prior).__name__}.conditional_normal_sites names {name!r} / "
                    f"{precision!r}, which are not latent sites of the model"
                )
        # sites whose prior is a Normal with one loc and one scale for all entries (IIDPrior,
        # LayerwiseNormalPrior): their log-density is a sum of squares, two passes over the
        # weights (forward and backward) instead of Normal.log_prob's dozen
        self._scalar_normal = {
            name: params
            for name, fn in self._fns.items()
            if name not in self._conditional and (params := _scalar_normal_params(fn)) is not None
        }
        # LogNormal sites with one loc and scale (e.g. a noise-scale prior), reached from z by
        # v = exp(u): log p(v) + log|dv/du| is the Normal(loc, scale) log-density of u (the
        # Jacobian cancels the 1/v), so they join the sum of squares below
        self._lognormal = {
            name: params
            for name, fn in self._fns.items()
            if name not in self._scalar_normal
            and (params := _scalar_lognormal_params(fn)) is not None
        }
        # these prior terms as one vector op over z: 0.5 |prec^½ (z - loc)|² + const
        prec = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        loc = torch.zeros_like(prec)
        const = 0.0
        for site in self.sites:
            params = self._scalar_normal.get(site.name) or self._lognormal.get(site.name)
            if params is not None:
                mean, scale = params
                prec[site.offset : site.offset + site.numel] = 1.0 / scale**2
                loc[site.offset : site.offset + site.numel] = mean
                const += site.numel * (math.log(scale) + _HALF_LOG_2PI)
        self._closed_form_prior = bool(self._scalar_normal or self._lognormal)
        self._prior_prec = prec
        self._prior_loc = loc if bool((loc != 0).any()) else None
        # one precision for every coordinate and zero locations (an IIDPrior(Normal(0, s))
        # without other sites): the prior terms are a scalar times z, no [C, D] product
        self._uniform_prec = (
            float(prec[0])
            if self._prior_loc is None
            and prec.numel()
            and bool((prec == prec[0]).all())
            and float(prec[0]) > 0
            else None
        )
        self._prior_const = const
        self._weights = set(bnn.site_names)
        # a plain MLP (nn.Sequential of Linear layers and elementwise activations, every
        # parameter random) runs as batched matmuls over chains: no functional_call, no vmap
        self._mlp = _mlp_layers(bnn.net, self._weights)
        # one chain of such an MLP with scalar-Normal priors on all its weights: the
        # backward pass is written out (:meth:`_mlp_value_and_grad`)
        self._manual_backward = (
            self._mlp is not None
            and not self._conditional
            and self._weights <= set(self._scalar_normal)
        )
        likelihood = bnn.likelihood
        likelihood.check_targets(data[1], trace.nodes["_RETURN"]["value"])
        self._likelihood = likelihood
        from bayesdl.likelihoods import GaussianLikelihood

        # its Normal log-density written out: no distribution object (argument validation,
        # broadcasting) per evaluation
        self._gaussian = type(likelihood) is GaussianLikelihood

    def _value(self, z: Tensor, batch: Batch | None) -> Tensor:
        return self._value_parts(z, batch, scalar_normal_priors=True)

    def value_and_grad(self, z: Tensor, batch: Batch | None = None) -> tuple[Tensor, Tensor]:
        """``U(z)`` ``[C]`` and ``∇U(z)`` ``[C, D]``, both detached.

        Autograd runs through the network and the likelihood; the scalar-Normal prior terms
        (``|w - loc|² / (2 scale²)``, gradient ``(w - loc) / scale²``; a scalar LogNormal site
        is the same in its unconstrained value) are added in closed form afterwards, one
        vector pass over ``z`` instead of a graph.
        """
        if not self._closed_form_prior:
            return super().value_and_grad(z, batch)
        if self._manual_backward and z.dim() == 2 and z.shape[0] == 1:
            x, y = self.data if batch is None else tuple(batch)
            if x.dim() == 2:
                return self._mlp_value_and_grad(z.detach(), x, y)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            u = self._value_parts(z, batch, scalar_normal_priors=False)
            (g,) = torch.autograd.grad(u.sum(), z)
        z = z.detach()
        if self._uniform_prec is not None:
            prec = self._uniform_prec
            u = torch.add(u.detach() + self._prior_const, _rowdot(z, z), alpha=0.5 * prec)
            return u, g.add_(z, alpha=prec)
        prec_d, d = self._prior_terms(z)
        u = torch.add(u.detach() + self._prior_const, _rowdot(prec_d, d), alpha=0.5)
        return u, g.add_(prec_d)

    def _prior_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``prec * (z - loc)`` and ``z - loc`` over the scalar-Normal coordinates (``prec`` is 0
        elsewhere), ``[C, D]`` each."""
        prec, loc = self._prior_prec, self._prior_loc
        if prec.dtype != z.dtype or prec.device != z.device:
            prec = prec.to(z)
            loc = None if loc is None else loc.to(z)
        d = z if loc is None else z - loc
        return prec * d, d

    def _value_parts(self, z: Tensor, batch: Batch | None, *, scalar_normal_priors: bool) -> Tensor:
        x, y = self.data if batch is None else tuple(batch)
        c = z.shape[0]
        log_p = z.new_zeros(c)
        if scalar_normal_priors and self._closed_form_prior:
            prec_d, d = self._prior_terms(z)
            log_p = torch.sub(log_p - self._prior_const, torch.linalg.vecdot(prec_d, d), alpha=0.5)
        log_p, weights, latents = self._site_values(self._split(z), log_p)
        if self._mlp is not None and x.dim() == 2:
            f = _mlp_forward(self._mlp, weights, x)
        elif c == 1:
            f = self.bnn.forward_with({k: v[0] for k, v in weights.items()}, x).unsqueeze(0)
        else:
            f = self.bnn.forward_with(weights, x)
        return -(log_p + self._log_likelihood(f, latents, y))

    def _site_values(
        self, parts: Sequence[Tensor], log_p: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """From the unconstrained site values ``parts`` (``[C, *shape]`` each): ``log_p`` plus
        the prior and Jacobian terms not in the closed-form sum of squares, the network's
        weights ``{name: [C, *shape]}`` and the other latent values (shaped for the
        likelihood's plates)."""
        c = log_p.shape[0]
        pad = self.max_plate_nesting
        weights: dict[str, Tensor] = {}
        latents: dict[str, Tensor] = {}
        values: dict[str, Tensor] = {}
        for s, u in zip(self.sites, parts, strict=True):
            if s.name in self._scalar_normal or s.name in self._conditional:  # real support
                v = u
            elif s.name in self._lognormal:  # its prior term is in the sum of squares
                v = u.exp()
            else:
                v = s.transform(u)
                ladj = s.transform.log_abs_det_jacobian(u, v)
                log_p = log_p + ladj.reshape(c, -1).sum(-1)
                log_p = log_p + self._fns[s.name].log_prob(v).reshape(c, -1).sum(-1)
            values[s.name] = v
            if s.name in self._weights:
                weights[s.name] = v
            else:
                latents[s.name] = v.reshape(c, *([1] * (pad - s.batch_rank)), *s.shape)
        for name, (precision, factor) in self._conditional.items():
            # log N(w | 0, c² / λ) summed over the n entries of w, per chain
            w = values[name].reshape(c, -1)
            lam = values[precision].reshape(c)
            n = w.shape[-1]
            log_p = log_p + (
                0.5 * n * lam.log()
                - (0.5 / factor**2) * lam * _rowdot(w, w)
                - n * (math.log(factor) + _HALF_LOG_2PI)
            )
        return log_p, weights, latents

    def _log_likelihood(self, f: Tensor, latents: dict[str, Tensor], y: Tensor) -> Tensor:
        """The plate-scaled log-likelihood ``[C]`` of targets ``y`` at network outputs ``f``
        ``[C, B, ...]``."""
        c = f.shape[0]
        n = self._likelihood.dataset_size
        scale = 1.0 if n is None else n / f.shape[1]
        if self._gaussian:
            ll = _gaussian_log_prob(self._likelihood, f, latents, y)
        else:
            ll = self._likelihood.distribution(f, latents).log_prob(y).reshape(c, -1).sum(-1)
        return scale * ll

    def _mlp_value_and_grad(self, z: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`value_and_grad` of one chain of a plain MLP whose weights all have
        scalar-Normal priors, with the network's backward pass written out: each weight
        gradient ``factor · δᵀ h + prec · (w − loc)`` is one ``addmm`` into its slice of the
        flat gradient, so there is no autograd graph over the weights, no per-site gradient
        tensors and no concatenation of them (nor a separate pass for the prior's gradient).
        Autograd runs only from the likelihood back to the outputs and the non-weight sites
        (a noise scale)."""
        g = torch.empty_like(z)
        parts = self._split(z)
        grad_parts = dict(zip(self.site_names, self._split(g), strict=True))
        with torch.enable_grad():
            leaves = [
                u if s.name in self._weights else u.detach().requires_grad_(True)
                for s, u in zip(self.sites, parts, strict=True)
            ]
            log_p, weights, latents = self._site_values(leaves, z.new_zeros(1))
            with torch.no_grad():
                f, saved = _mlp_forward_saving(self._mlp, weights, x)
            f = f.requires_grad_(True)
            u = -(log_p + self._log_likelihood(f, latents, y))
            others = [
                (s, leaf) for s, leaf in zip(self.sites, leaves, strict=True) if leaf.requires_grad
            ]
            grads = torch.autograd.grad(
                u.sum(), [f] + [leaf for _, leaf in others], allow_unused=True
            )
        for (s, _), gu in zip(others, grads[1:], strict=True):
            if gu is None:
                grad_parts[s.name].zero_()
            else:
                grad_parts[s.name].copy_(gu)
        u = u.detach() + self._prior_const
        delta = grads[0][0]  # [B, out]
        for i in reversed(range(len(self._mlp))):
            weight, bias, activation, factor = self._mlp[i]
            h_in, pre, out = saved[i]
            if activation is not None:
                delta = delta * _activation_grad(activation, pre, out)
            w = weights[weight][0]
            if i > 0:  # the input layer's δ W is not needed
                delta_in = torch.mm(delta, w)
                if factor != 1.0:
                    delta_in = delta_in.mul_(factor)
            u = u + self._prior_add_grad(weight, w, grad_parts[weight][0], delta, h_in, factor)
            if bias is not None:
                b = weights[bias][0]
                u = u + self._prior_add_grad(bias, b, grad_parts[bias][0], delta, None, factor)
            if i > 0:
                delta = delta_in
        for s, part in zip(self.sites, parts, strict=True):
            # closed-form prior terms of the other sites (a LogNormal noise scale)
            params = None
            if s.name not in self._weights:
                params = self._scalar_normal.get(s.name) or self._lognormal.get(s.name)
            if params is not None:
                d = part.reshape(-1) - params[0]
                prec = 1.0 / params[1] ** 2
                u = u + 0.5 * prec * torch.dot(d, d)
                grad_parts[s.name].reshape(-1).add_(d, alpha=prec)
        return u, g

    def _prior_add_grad(
        self, name: str, w: Tensor, out: Tensor, delta: Tensor, h_in: Tensor | None, factor: float
    ) -> Tensor:
        """Write the gradient of a weight (``h_in`` given; ``δᵀ h_in``) or bias (``Σ_b δ``)
        plus its scalar-Normal prior's gradient into ``out``; returns the prior term."""
        loc, scale = self._scalar_normal[name]
        prec = 1.0 / scale**2
        d = w if loc == 0 else w - loc
        if h_in is None:
            torch.add(delta.sum(0), d, alpha=prec, out=out)
        else:
            torch.addmm(d, delta.t(), h_in, beta=prec, alpha=factor, out=out)
        flat = d.reshape(-1)
        return 0.5 * prec * torch.dot(flat, flat)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products ``[C, D] x [C, D] -> [C]`` as one batched matrix product (no
    ``[C, D]`` temporary, which ``torch.linalg.vecdot`` makes on CPU)."""
    return torch.matmul(a.unsqueeze(-2), b.unsqueeze(-1)).reshape(a.shape[:-1])


def _gaussian_log_prob(likelihood: Any, f: Tensor, latents: dict[str, Tensor], y: Tensor) -> Tensor:
    """``GaussianLikelihood.distribution(f, latents).log_prob(y)`` summed per chain ``[C]``,
    without building the distribution (same ``loc`` / ``scale`` layout). With one noise scale
    per chain (a ``scale_prior`` site, or a fixed scale) it is
    ``-|y - f|² / (2 σ²) - n (log σ + log(2π) / 2)``: two passes over the outputs."""
    c = f.shape[0]
    scale = likelihood.noise_scale(latents, f)
    loc = f.squeeze(-1) if f.shape[-1] == 1 else f
    if scale.numel() in (1, c):
        sigma = scale.reshape(-1)  # [C] or [1]
        r = (y - loc).reshape(c, -1)
        count = r.shape[-1]
        return torch.linalg.vecdot(r, r) * (-0.5 / sigma**2) - count * (sigma.log() + _HALF_LOG_2PI)
    if f.shape[-1] != 1 and scale.dim():
        scale = scale.unsqueeze(-1)
    r = (y - loc) / scale
    return (-0.5 * r * r - scale.log() - _HALF_LOG_2PI).reshape(c, -1).sum(-1)


# elementwise activations the MLP fast path evaluates directly (default arguments only)
_ACTIVATIONS: dict[type, Callable[[Tensor], Tensor]] = {
    torch.nn.Tanh: torch.tanh,
    torch.nn.ReLU: torch.relu,
    torch.nn.Sigmoid: torch.sigmoid,
    torch.nn.SiLU: torch.nn.functional.silu,
}

# (weight site, bias site or None, activation or None, factor on W x): nn.Linear has factor 1,
# the functional priors' ScaledLinear 1 / sqrt(in_features)
_MLPLayer = tuple[str, str | None, Callable[[Tensor], Tensor] | None, float]


def _linear_factor(module: Any) -> float | None:
    """The factor on ``x Wᵀ`` of a plain ``nn.Linear`` (1) or a ``ScaledLinear``
    (``1 / √in_features``); ``None`` for any other module."""
    if type(module) is torch.nn.Linear:
        return 1.0
    from bayesdl.priors.functional.scaled_linear import ScaledLinear

    if type(module) is ScaledLinear:
        return 1.0 / math.sqrt(module.in_features)
    return None


def _mlp_layers(net: Any, random: set[str]) -> list[_MLPLayer] | None:
    """``[(weight site, bias site or None, activation or None, factor), ...]`` when ``net`` is
    exactly an ``nn.Sequential`` of ``nn.Linear`` / ``ScaledLinear`` layers (all parameters
    random) and default-argument elementwise activations / ``nn.Identity`` with no hooks, else
    ``None``."""
    if type(net) is not torch.nn.Sequential:
        return None
    layers: list[_MLPLayer] = []
    names: set[str] = set()
    children = list(net._modules.items())
    if len({id(m) for _, m in children}) != len(children):
        return None  # a module used twice (named_children would skip its repeats)
    for name, module in children:
        if module._forward_hooks or module._forward_pre_hooks:
            return None
        kind = type(module)
        if kind is torch.nn.Identity:
            continue
        factor = _linear_factor(module)
        if factor is not None:
            bias = f"{name}.bias" if module.bias is not None else None
            layers.append((f"{name}.weight", bias, None, factor))
            names.update(n for n in (f"{name}.weight", bias) if n is not None)
        elif kind in _ACTIVATIONS and layers and layers[-1][2] is None:
            w, b, _, factor = layers[-1]
            layers[-1] = (w, b, _ACTIVATIONS[kind], factor)
        else:
            return None
    if not layers or names != random or net._forward_hooks or net._forward_pre_hooks:
        return None
    return layers


def _mlp_forward(layers: list[_MLPLayer], weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Outputs ``[C, B, out]`` of the MLP at per-chain weights ``{name: [C, *shape]}`` and
    shared inputs ``x [B, in]``: ``h <- act(factor · h Wᵀ + b)`` as batched matmuls."""
    # one chain: F.linear uses each weight matrix in place, where bmm would copy its transpose
    one = x.dim() == 2 and next(iter(weights.values())).shape[0] == 1
    h = x
    for weight, bias, activation, factor in layers:
        w = weights[weight]
        # squeeze, not [0]: its backward is a view, where select's fills a zero tensor
        h = F.linear(h, w.squeeze(0)) if one else torch.matmul(h, w.transpose(-1, -2))
        if bias is not None:  # [1, out] with one chain, else [C, 1, out]
            b = weights[bias] if one else weights[bias].unsqueeze(-2)
            h = torch.add(b, h, alpha=factor)
        elif factor != 1.0:
            h = h * factor
        if activation is not None:
            h = activation(h)
    return h.unsqueeze(0) if one else h


def _mlp_forward_saving(
    layers: list[_MLPLayer], weights: Mapping[str, Tensor], x: Tensor
) -> tuple[Tensor, list[tuple[Tensor, Tensor | None, Tensor]]]:
    """One chain's :func:`_mlp_forward` (outputs ``[1, B, out]``), keeping per layer its input,
    its pre-activation (only where the activation's derivative needs it) and its output."""
    saved = []
    h = x
    for weight, bias, activation, factor in layers:
        w = weights[weight][0]
        if bias is not None:
            a = torch.addmm(weights[bias][0], h, w.t(), alpha=factor)
        else:
            a = torch.mm(h, w.t())
            if factor != 1.0:
                a = a.mul_(factor)
        out = a if activation is None else activation(a)
        saved.append((h, a if activation is torch.nn.functional.silu else None, out))
        h = out
    return h.unsqueeze(0), saved


def _activation_grad(
    activation: Callable[[Tensor], Tensor], pre: Tensor | None, out: Tensor
) -> Tensor:
    """``act'(a)`` from the saved pre-activation ``a`` or output ``act(a)``."""
    if activation is torch.relu:
        return out > 0
    if activation is torch.tanh:
        return 1 - out * out
    if activation is torch.sigmoid:
        return out * (1 - out)
    if activation is torch.nn.functional.silu:
        sig = torch.sigmoid(pre)
        return sig * (1 + pre * (1 - sig))
    raise AssertionError(f"no derivative for {activation}")


def _scalar_lognormal_params(fn: Any) -> tuple[float, float] | None:
    """``(loc, scale)`` of a (possibly ``Independent``) LogNormal with a single loc and scale
    and no gradient through them (its support maps to ``z`` by ``exp``), else ``None``."""
    base = fn
    while isinstance(base, (dist.Independent, torch.distributions.Independent)):
        base = base.base_dist
    if type(base) not in (dist.LogNormal, torch.distributions.LogNormal):
        return None
    if not isinstance(biject_to(base.support), torch.distributions.transforms.ExpTransform):
        return None
    return _scalar_normal_params(dist.Normal(base.loc, base.scale))


def _scalar_normal_params(fn: Any) -> tuple[float, float] | None:
    """``(loc, scale)`` when ``fn`` is a (possibly ``Independent``) Normal with a single loc and
    scale value for all entries and no gradient through them, else ``None``."""
    base = fn
    while isinstance(base, (dist.Independent, torch.distributions.Independent)):
        base = base.base_dist
    if type(base) not in (dist.Normal, torch.distributions.Normal):
        return None
    loc, scale = base.loc, base.scale
    if loc.requires_grad or scale.requires_grad or loc.numel() == 0:
        return None
    lo, sc = loc.reshape(-1), scale.reshape(-1)
    if not (bool((lo == lo[0]).all()) and bool((sc == sc[0]).all())):
        return None
    return float(lo[0]), float(sc[0])


def potential_of(
    model: Callable[..., Any], data: Sequence[Any] = (), **kwargs: Any
) -> ModelPotential:
    """The fastest exact potential for ``model``: :class:`BNNPotential` for a
    :class:`~bayesdl.nn.BNN` whose prior allows it, :class:`ModelPotential` otherwise."""
    from bayesdl.nn.bnn import BNN
    from bayesdl.priors.prior import Prior

    if isinstance(model, BNN) and not kwargs:
        prior = model.prior
        if type(prior).sample is Prior.sample or hasattr(prior, "conditional_normal_sites"):
            return BNNPotential(model, data)
    return ModelPotential(model, data, **kwargs)


__all__ = [
    "BNNPotential",
    "FunctionPotential",
    "LatentSite",
    "ModelPotential",
    "Potential",
    "potential_of",
]

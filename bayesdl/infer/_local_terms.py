"""Per-data-point log-densities of a model with local latents, for the VAE-family objectives.

The objectives (:class:`~bayesdl.infer.LocalELBO`, :class:`~bayesdl.infer.IWAE`,
:class:`~bayesdl.infer.InfoVAE`) all need, for ``K`` particles and a minibatch of ``B`` data
points, the tensors ``log p(x_b | z_kb)``, ``log p(z_kb)`` and ``log q(z_kb | x_b)`` of shape
``[K, B]``, *unscaled*, plus the minibatch scale ``N / B``. Two routes give them:

* a fast path: a model that provides ``local_terms(x, num_particles, ...)`` (such as
  :class:`bayesdl.vae.VAE`) computes them in one batched pass, with no Pyro trace;
* a generic path (:func:`trace_local_terms`) for any Pyro model/guide pair whose latent sites
  all sit in one subsampled data plate: guide and model are traced once with a vectorised
  particle plate and each site's ``log_prob`` is read off the trace.

The fast path is taken only when no Pyro handler is active, so handlers (``poutine.scale``,
``condition``, ...) always see the real model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch import Tensor, nn
from torch.distributions import kl_divergence

_PARTICLE_PLATE = "num_particles_vectorized"


@dataclass
class LocalTerms:
    """Per-particle, per-data-point log-densities of one minibatch.

    Attributes:
        log_lik: ``log p(x_b | z_kb)``, ``[K, B]`` (summed over observed sites).
        log_prior: ``log p(z_kb)``, ``[K, B]`` (summed over latent sites).
        log_q: ``log q(z_kb | x_b)``, ``[K, B]``; with ``detach_guide_params=True`` the guide's
            parameters are held constant (the gradient reaches them only through ``z``).
        scale: ``N / B``, the factor that turns the minibatch sum into a data-set estimate.
        latents: the reparameterised latent values ``[K, B, ...]`` (for gradient hooks).
        kl: analytic ``KL(q(z | x_b) || p(z))``, ``[B]`` or ``[K, B]``, when asked for and
            available, else ``None``.
        z: the single latent site's values flattened to ``[K, B, D]`` (``None`` if there are
            several latent sites).
        prior_sample: ``m -> [m, D]`` draws from the prior of that site (``None`` likewise).
    """

    log_lik: Tensor
    log_prior: Tensor
    log_q: Tensor
    scale: float
    latents: list[Tensor] = field(default_factory=list)
    kl: Tensor | None = None
    z: Tensor | None = None
    prior_sample: Callable[[int], Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.log_lik.shape[-1])

    @property
    def dataset_size(self) -> float:
        """``N``: the minibatch size times the scale."""
        return self.scale * self.batch_size


def fast_owner(model: Any, guide: Any) -> Any | None:
    """The object computing :class:`LocalTerms` directly, or ``None`` to trace instead.

    The fast path applies when ``model`` is (a bound method of) an object with a
    ``local_terms`` method, ``guide`` is that object's ``guide``, and no Pyro handler is active.
    """
    if _PYRO_STACK:
        return None
    owner = model if hasattr(model, "local_terms") else getattr(model, "__self__", None)
    if owner is None or not hasattr(owner, "local_terms"):
        return None
    if getattr(owner, "guide", None) is not guide:
        return None
    return owner


def _vectorize(fn: Callable, num_particles: int, dim: int) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(_PARTICLE_PLATE, num_particles, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _data_frame(site: dict, name: str, kind: str):
    frames = [f for f in site["cond_indep_stack"] if f.name != _PARTICLE_PLATE and f.vectorized]
    if len(frames) != 1:
        raise ValueError(
            f"the VAE-family objectives need every sample site inside exactly one data plate "
            f"(local latents, as in a VAE); {kind} site {name!r} is in "
            f"{[f.name for f in frames] or 'no plate'}"
        )
    return frames[0]


def _site_scale(site: dict, name: str) -> float:
    scale = site["scale"]
    if isinstance(scale, Tensor):
        if scale.numel() != 1:
            raise ValueError(f"site {name!r} has a tensor scale; the objectives need one number")
        scale = float(scale)
    if site["mask"] is not None:
        raise ValueError(f"site {name!r} is masked; the VAE-family objectives do not support masks")
    return float(scale)


def _log_prob(site: dict, shape: tuple[int, int]) -> Tensor:
    return site["fn"].log_prob(site["value"]).expand(shape)


def trace_local_terms(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    *,
    max_plate_nesting: int = 1,
    detach_guide_params: bool = False,
    analytic_kl: bool = False,
) -> LocalTerms:
    """:class:`LocalTerms` of any Pyro model/guide pair with local latents, by tracing.

    Guide and model run once under a vectorised particle plate at dim
    ``-max_plate_nesting - 1``. Every sample site must sit in one data plate (the one that
    subsamples the minibatch) and carry the same scale ``N / B`` (sites scaled differently,
    e.g. by ``poutine.scale`` on the latents only, are rejected: a scale inside a
    log-sum-exp does not give a bound).

    Args:
        model, guide: the Pyro model and guide, called as ``fn(*args, **kwargs)``.
        args, kwargs: their arguments.
        num_particles: ``K``.
        max_plate_nesting: plates nested inside the particle plate (1 for a data plate).
        detach_guide_params: evaluate ``log q`` with the guide's parameters held constant
            (for DReG). The guide must then be an ``nn.Module``; it is re-run on the sampled
            values with detached parameters (``torch.func.functional_call``).
        analytic_kl: also return the closed-form ``KL(q || p)`` per point where
            :func:`torch.distributions.kl_divergence` knows the pair.

    Raises:
        ValueError: if a site is outside the data plate, scaled differently or masked, or if
            ``detach_guide_params`` is asked for a guide that is not an ``nn.Module``.
    """
    dim = -max_plate_nesting - 1
    guide_tr = poutine.trace(_vectorize(guide, num_particles, dim)).get_trace(*args, **kwargs)
    model_tr = poutine.trace(
        poutine.replay(_vectorize(model, num_particles, dim), trace=guide_tr)
    ).get_trace(*args, **kwargs)
    if is_validation_enabled():
        check_model_guide_match(model_tr, guide_tr, max_plate_nesting)
    guide_tr = prune_subsample_sites(guide_tr)
    model_tr = prune_subsample_sites(model_tr)

    if detach_guide_params:
        if not isinstance(guide, nn.Module):
            raise ValueError(
                "gradient='dreg' on a traced model needs the guide to be an nn.Module (log q is "
                f"re-evaluated with its parameters detached); got {type(guide).__name__}"
            )
        detached = {n: p.detach() for n, p in guide.named_parameters()}

        def frozen_guide(*a: Any, **k: Any) -> Any:
            return torch.func.functional_call(guide, detached, a, k)

        q_tr = poutine.trace(
            poutine.replay(_vectorize(frozen_guide, num_particles, dim), trace=guide_tr)
        ).get_trace(*args, **kwargs)
        q_tr = prune_subsample_sites(q_tr)
    else:
        q_tr = guide_tr

    sites = [
        (name, site, kind)
        for kind, tr in (("model", model_tr), ("guide", guide_tr))
        for name, site in tr.nodes.items()
        if site["type"] == "sample"
    ]
    if not sites:
        raise ValueError("the model and guide have no sample sites")
    frames = {(name, kind): _data_frame(site, name, kind) for name, site, kind in sites}
    frame = next(iter(frames.values()))
    scales = {(name, kind): _site_scale(site, name) for name, site, kind in sites}
    scale = next(iter(scales.values()))
    for (name, kind), s in scales.items():
        if not math.isclose(s, scale, rel_tol=1e-6):
            raise ValueError(
                f"{kind} site {name!r} has scale {s} but other sites have {scale}; the "
                "VAE-family objectives scale the per-point bound by N/B outside the log-sum-exp "
                "and cannot weight sites differently"
            )
    for (name, kind), f in frames.items():
        if f.name != frame.name:
            raise ValueError(
                f"{kind} site {name!r} is in plate {f.name!r}, others in {frame.name!r}; "
                "all sites must share one data plate"
            )
    shape = (num_particles, int(frame.size))

    zero = None
    log_lik: Any = 0.0
    log_prior: Any = 0.0
    log_q: Any = 0.0
    latents: list[Tensor] = []
    kl: Any = 0.0 if analytic_kl else None
    latent_names = []
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample":
            continue
        lp = _log_prob(site, shape)
        zero = lp.new_zeros(shape)
        if site["is_observed"]:
            log_lik = log_lik + lp
        else:
            log_prior = log_prior + lp
            latent_names.append(name)
    for name, site in q_tr.nodes.items():
        if site["type"] != "sample":
            continue
        log_q = log_q + _log_prob(site, shape)
        value = guide_tr.nodes[name]["value"]
        if value.requires_grad:
            latents.append(value)
    if analytic_kl:
        for name in latent_names:
            try:
                term = kl_divergence(guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"])
            except NotImplementedError:
                kl = None
                break
            kl = kl + term.expand(shape)
    if zero is None:
        raise ValueError("the model has no sample sites")
    log_lik = zero + log_lik
    log_prior = zero + log_prior
    log_q = zero + log_q

    z = prior_sample = None
    if len(latent_names) == 1:
        name = latent_names[0]
        value = guide_tr.nodes[name]["value"]
        z = value.reshape(shape + (-1,))
        prior = model_tr.nodes[name]["fn"]

        def prior_sample(m: int) -> Tensor:
            per_draw = max(prior.batch_shape.numel(), 1)  # one per (particle, data point)
            with torch.no_grad():
                draws = prior.sample((-(-m // per_draw),))
            return draws.reshape(-1, z.shape[-1])[:m]

    return LocalTerms(
        log_lik=log_lik,
        log_prior=log_prior,
        log_q=log_q,
        scale=scale,
        latents=latents,
        kl=kl,
        z=z,
        prior_sample=prior_sample,
    )


def local_terms(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    *,
    max_plate_nesting: int = 1,
    detach_guide_params: bool = False,
    analytic_kl: bool = False,
) -> LocalTerms:
    """:class:`LocalTerms` by the fast path when it applies, else by tracing."""
    owner = fast_owner(model, guide)
    if owner is not None:
        return owner.local_terms(
            *args,
            num_particles=num_particles,
            detach_guide_params=detach_guide_params,
            analytic_kl=analytic_kl,
            **kwargs,
        )
    return trace_local_terms(
        model,
        guide,
        args,
        kwargs,
        num_particles,
        max_plate_nesting=max_plate_nesting,
        detach_guide_params=detach_guide_params,
        analytic_kl=analytic_kl,
    )

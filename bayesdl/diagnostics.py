"""Export posterior samples and predictions to ArviZ."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from bayesdl._validation import check_positive_int
from bayesdl.infer.predictive import sample_posterior
from bayesdl.nn.bnn import BNN

if TYPE_CHECKING:
    import arviz as az


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def to_inference_data(
    model: BNN,
    guide: Any,
    x: Tensor,
    y: Tensor | None = None,
    *,
    num_samples: int = 100,
    num_chains: int = 1,
) -> az.InferenceData:
    """Posterior (guide) samples, posterior-predictive draws and observed data as ArviZ data.

    The ``S = num_chains * num_draws`` samples are drawn independently from the guide, so the
    ``chain`` dimension only groups them (useful to compare with MCMC output).

    Args:
        model: the :class:`~bayesdl.nn.BNN`.
        guide: a fitted guide.
        x: inputs ``[N, ...]``.
        y: observed targets ``[N, ...]`` (added as ``observed_data``).
        num_samples: total draws ``S`` (must be divisible by ``num_chains``).
        num_chains: chains to split the draws into.

    Returns:
        ``arviz.InferenceData`` with groups ``posterior`` (every latent site),
        ``posterior_predictive`` (the observed site) and, with ``y``, ``observed_data``.

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import MeanFieldGuide
        >>> from bayesdl.diagnostics import to_inference_data
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> bnn = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(8))
        >>> idata = to_inference_data(bnn, MeanFieldGuide(bnn), torch.randn(8, 2), num_samples=20)
        >>> idata.posterior["weight"].shape
        (1, 20, 1, 2)
    """
    check_positive_int(num_samples, "num_samples")
    check_positive_int(num_chains, "num_chains")
    if num_samples % num_chains:
        raise ValueError(f"num_samples={num_samples} must be divisible by num_chains={num_chains}")
    draws = num_samples // num_chains
    _, latents, trace = sample_posterior(model, guide, x, num_samples=num_samples)

    posterior = {}
    for name, value in latents.items():
        # values carry the particle plate's dims [S, 1] before the site's own shape
        value = value.reshape((num_samples,) + value.shape[2:])
        posterior[name] = _numpy(value.reshape((num_chains, draws) + value.shape[1:]))
    site = model.likelihood.site_name
    obs = trace.nodes[site]["value"]
    predictive = {site: _numpy(obs.reshape((num_chains, draws) + obs.shape[1:]))}
    kwargs: dict[str, Any] = {"posterior": posterior, "posterior_predictive": predictive}
    if y is not None:
        kwargs["observed_data"] = {site: _numpy(y)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz's notice about its refactor
        import arviz as az

        return az.from_dict(**kwargs)


__all__ = ["to_inference_data"]

"""Posterior predictions of a BNN, vectorised over posterior samples."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor

from bayesdl._validation import check_positive_int, check_tensor
from bayesdl.infer._module_local import prepare_module_local
from bayesdl.likelihoods.prediction import Prediction
from bayesdl.nn.bnn import BNN

_PARTICLE_PLATE = "_num_predictive_samples"


def sample_posterior(
    model: BNN, guide: Any | None, x: Tensor, *, num_samples: int
) -> tuple[Tensor, dict[str, Tensor], poutine.Trace]:
    """Draw ``num_samples`` latent sets from the guide (or the prior when ``guide is None``) and
    evaluate the network on ``x`` for all of them in one vectorised pass.

    Returns:
        ``(f, latents, model_trace)`` with ``f`` of shape ``[S, B, *out]`` and each latent of
        shape ``[S, 1, *site_shape]``.
    """
    prepare_module_local(model, guide)
    with torch.no_grad(), pyro.settings.context(module_local_params=True), poutine.block():
        with pyro.plate(_PARTICLE_PLATE, num_samples, dim=-2):
            if guide is None:
                model_tr = poutine.trace(model).get_trace(x)
            else:
                guide_tr = poutine.trace(guide).get_trace(x)
                model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    f = model_tr.nodes["_RETURN"]["value"]
    latents = {
        name: node["value"]
        for name, node in model_tr.nodes.items()
        if node["type"] == "sample"
        and not node["is_observed"]
        and name != model.likelihood.site_name
        and not isinstance(node["fn"], _Subsample)
    }
    return f, latents, model_tr


def predict(
    model: BNN,
    guide: Any | None,
    x: Tensor,
    *,
    num_samples: int = 100,
    batch_size: int | None = None,
) -> Prediction:
    """Posterior predictive summary at inputs ``x``.

    All ``S`` posterior samples are evaluated in one batched forward pass (a particle plate at
    dim -2 and a ``vmap`` over weight particles), not a Python loop. With ``batch_size`` the
    inputs are processed in chunks that share the same ``S`` weight samples.

    Args:
        model: the :class:`~bayesdl.nn.BNN`.
        guide: a fitted guide, or ``None`` for the prior predictive.
        x: inputs ``[N, ...]``.
        num_samples: posterior samples ``S``.
        batch_size: inputs per chunk (bounds memory; default all at once).

    Returns:
        a :class:`~bayesdl.likelihoods.Prediction` (mean / variance for regression and counts,
        class probabilities for classification, and the sampled outputs).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.infer import predict
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> bnn = BNN(torch.nn.Linear(2, 1), LayerwiseNormalPrior(), GaussianLikelihood(8))
        >>> predict(bnn, None, torch.randn(8, 2), num_samples=50).mean.shape
        torch.Size([8])
    """
    if not isinstance(model, BNN):
        raise TypeError(f"model must be a bayesdl.nn.BNN, got {type(model).__name__}")
    check_tensor(x, "x")
    check_positive_int(num_samples, "num_samples")
    check_positive_int(batch_size, "batch_size", allow_none=True)
    if batch_size is None or batch_size >= x.shape[0]:
        f, latents, _ = sample_posterior(model, guide, x, num_samples=num_samples)
    else:
        # draw the weights once, then replay them over chunks of the inputs
        f0, latents, trace = sample_posterior(model, guide, x[:batch_size], num_samples=num_samples)
        chunks = [f0]
        weights_only = trace.copy()
        for name, node in trace.nodes.items():
            if node["type"] == "sample" and name not in latents:
                weights_only.remove_node(name)  # the sampled targets of the first chunk
        replayed = poutine.replay(model, trace=weights_only)
        with torch.no_grad(), pyro.settings.context(module_local_params=True), poutine.block():
            with pyro.plate(_PARTICLE_PLATE, num_samples, dim=-2):
                for start in range(batch_size, x.shape[0], batch_size):
                    chunks.append(replayed(x[start : start + batch_size]))
        f = torch.cat(chunks, dim=1)
    with torch.no_grad():
        return model.likelihood.summarize(f, latents)

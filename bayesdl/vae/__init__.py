"""Variational autoencoders as Pyro models and guides, their networks and their evaluation.

:class:`VAE` is a Pyro model (``vae(x)``) with an amortised guide (``vae.guide(x)``); train it
with :func:`bayesdl.infer.fit` and one of :class:`~bayesdl.infer.LocalELBO`,
:class:`~bayesdl.infer.IWAE` or :class:`~bayesdl.infer.InfoVAE`, and score it with
:mod:`bayesdl.vae.evaluate` (importance-sampled log-likelihood, active units, MMD).
"""

from bayesdl.vae import evaluate
from bayesdl.vae.evaluate import (
    active_units,
    held_out_mmd,
    image_grid,
    log_likelihood,
    reconstructions,
    samples,
)
from bayesdl.vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, burda_mlp
from bayesdl.vae.pixel_likelihood import PIXEL_LIKELIHOODS, PixelLikelihood
from bayesdl.vae.vae import VAE, VAEGuide

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "PIXEL_LIKELIHOODS",
    "PixelLikelihood",
    "VAE",
    "VAEGuide",
    "active_units",
    "burda_mlp",
    "evaluate",
    "held_out_mmd",
    "image_grid",
    "log_likelihood",
    "reconstructions",
    "samples",
]

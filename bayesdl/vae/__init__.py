"""Variational autoencoders as Pyro models and guides, their networks and their evaluation.

:class:`VAE` is a Pyro model (``vae(x)``) with an amortised guide (``vae.guide(x)``); train it
with :func:`bayesdl.infer.fit` and one of :class:`~bayesdl.infer.LocalELBO`,
:class:`~bayesdl.infer.IWAE` or :class:`~bayesdl.infer.InfoVAE`, and score it with
:mod:`bayesdl.vae.evaluate` (importance-sampled log-likelihood, active units, MMD).
:class:`GPVAE` and :class:`MarkovianGPVAE` model sequences with a Gaussian-process prior over
each latent channel (dense, or Markovian by Kalman smoothing), with missing data.
"""

from bayesdl.vae import evaluate
from bayesdl.vae._gp_sequence_vae import GPVAEGuide
from bayesdl.vae.evaluate import (
    active_units,
    held_out_mmd,
    image_grid,
    log_likelihood,
    reconstructions,
    samples,
)
from bayesdl.vae.gp_vae import GPVAE
from bayesdl.vae.markovian_gp_vae import MarkovianGPVAE
from bayesdl.vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, burda_mlp
from bayesdl.vae.pixel_likelihood import PIXEL_LIKELIHOODS, PixelLikelihood
from bayesdl.vae.sequence_encoder import SequenceEncoder
from bayesdl.vae.vae import VAE, VAEGuide

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "GPVAE",
    "GPVAEGuide",
    "MLPDecoder",
    "MLPEncoder",
    "MarkovianGPVAE",
    "PIXEL_LIKELIHOODS",
    "PixelLikelihood",
    "SequenceEncoder",
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

"""Bayesian networks from any ``nn.Module`` and the vectorised particle forward pass."""

from bayesdl.nn.bnn import BNN, bnn_forward
from bayesdl.nn.vectorized_forward import particle_batch_shape, vectorized_forward

__all__ = ["BNN", "bnn_forward", "particle_batch_shape", "vectorized_forward"]

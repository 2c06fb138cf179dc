"""Base class of likelihoods: the data plate, minibatch scaling and target checks live here."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from bayesdl._validation import check_finite, check_positive_int
from bayesdl.likelihoods.prediction import Prediction


class Likelihood(nn.Module):
    """Maps network outputs ``f`` and targets ``y`` to an observed sample site.

    The observe site sits inside ``pyro.plate("data", dataset_size, subsample=...)``, so a
    minibatch of ``B`` points is scaled by ``dataset_size / B`` here and nowhere else.

    Args:
        dataset_size: number of training points ``N`` (``None``: every batch is the full data).
        name: name of the observed sample site.

    Subclasses implement :meth:`distribution` (and :meth:`summarize` for predictions).
    """

    #: number of trailing output dims of ``f`` that belong to one data point
    output_dims: int = 1

    def __init__(self, dataset_size: int | None = None, *, name: str = "obs"):
        super().__init__()
        check_positive_int(dataset_size, "dataset_size", allow_none=True)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.dataset_size = dataset_size
        self.site_name = name

    # ----------------------------------------------------------------- interface
    def sample_latents(self) -> dict[str, Tensor]:
        """Draw the likelihood's own latent sites (e.g. a sampled noise scale). None by default."""
        return {}

    def distribution(self, f: Tensor, latents: dict[str, Tensor]) -> dist.Distribution:
        """Distribution of ``y`` given outputs ``f`` of shape ``[*batch, B, *out]``; its batch
        shape is ``[*batch, B]``."""
        raise NotImplementedError

    def check_targets(self, y: Tensor, f: Tensor) -> None:
        """Validate the targets' dtype, shape and range against outputs ``f``."""
        check_finite(y, "y")

    def summarize(self, f: Tensor, latents: dict[str, Tensor]) -> Prediction:
        """Posterior-predictive summary from ``f`` of shape ``[S, B, *out]``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- plumbing
    def num_data(self, f: Tensor) -> int:
        """The batch size ``B`` encoded in ``f``'s shape."""
        if f.dim() < self.output_dims + 1:
            raise ValueError(
                f"network output must have shape [B, ...] with {self.output_dims} output dim(s), "
                f"got {tuple(f.shape)}"
            )
        return int(f.shape[-1 - self.output_dims])

    def plate(self, batch_size: int, device: torch.device, *, observed: bool = True) -> pyro.plate:
        """The data plate for a batch of ``batch_size`` points.

        When targets are observed the plate has ``dataset_size`` points (scale ``N / B``); when
        they are sampled (predictions at new inputs, possibly more than ``N`` of them) the
        scale does not matter and the plate covers at least the batch.
        """
        size = batch_size if self.dataset_size is None else self.dataset_size
        if not observed:
            size = max(size, batch_size)
        if batch_size > size:
            raise ValueError(
                f"dataset_size={size} is smaller than the batch of {batch_size} points; "
                "pass the number of training points as dataset_size"
            )
        subsample = torch.arange(batch_size, device=device)
        return pyro.plate("data", size, subsample=subsample, dim=-1)

    def forward(
        self, f: Tensor, y: Tensor | None = None, latents: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Observe (or sample, when ``y is None``) the targets under the data plate.

        Args:
            f: network outputs ``[*batch, B, *out]``.
            y: targets ``[B, ...]`` or ``None``.
            latents: values returned by :meth:`sample_latents`.

        Returns:
            the observed ``y`` or sampled targets ``[*batch, B, ...]``.
        """
        latents = {} if latents is None else latents
        batch_size = self.num_data(f)
        if y is not None:
            if not isinstance(y, Tensor):
                raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
            if y.dim() == 0 or y.shape[0] != batch_size:
                raise ValueError(
                    f"y has shape {tuple(y.shape)} but the network produced outputs for "
                    f"{batch_size} inputs (shape {tuple(f.shape)}); x and y must have the same "
                    "number of rows"
                )
            if not y.is_cuda:  # a finiteness check on CUDA would sync every step
                self.check_targets(y, f)
        with self.plate(batch_size, f.device, observed=y is not None):
            return pyro.sample(self.site_name, self.distribution(f, latents), obs=y)

"""Gaussian likelihood with a fixed, learned or sampled noise scale."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesdl._validation import check_positive
from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.likelihoods.prediction import Prediction


class GaussianLikelihood(Likelihood):
    """``y ~ Normal(f, scale^2)`` for regression.

    Outputs ``f`` of shape ``[*batch, B, 1]`` pair with targets ``[B]``; ``[*batch, B, D]``
    with ``D > 1`` pair with ``[B, D]`` (independent outputs, one event).

    The noise ``scale`` (a standard deviation) is fixed by default, learned by maximum
    likelihood with ``learn_scale=True`` (an ``nn.Parameter`` through a softplus), or given a prior with
    ``scale_prior=`` (a latent site ``"<name>.scale"`` inferred with the weights).

    Args:
        dataset_size: number of training points (minibatch scaling).
        scale: fixed value, or initial value when learned (``> 0``).
        learn_scale: learn the scale as a point estimate.
        scale_prior: a distribution with positive support over the scale (e.g.
            ``dist.LogNormal(-1., 1.)``); mutually exclusive with ``learn_scale``.
        name: observed site name.

    Example:
        >>> import torch
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> lik = GaussianLikelihood(dataset_size=100, scale=0.1)
        >>> lik.distribution(torch.zeros(5, 1), {}).batch_shape
        torch.Size([5])
    """

    def __init__(
        self,
        dataset_size: int | None = None,
        *,
        scale: float | Tensor = 1.0,
        learn_scale: bool = False,
        scale_prior: dist.Distribution | None = None,
        name: str = "obs",
    ):
        super().__init__(dataset_size, name=name)
        check_positive(scale, "scale")
        if learn_scale and scale_prior is not None:
            raise ValueError("give either learn_scale=True or scale_prior=..., not both")
        if scale_prior is not None:
            if not isinstance(scale_prior, torch.distributions.Distribution):
                raise TypeError(
                    f"scale_prior must be a Distribution, got {type(scale_prior).__name__}"
                )
            if scale_prior.batch_shape or scale_prior.event_shape:
                raise ValueError("scale_prior must be a scalar distribution")
        scale = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        self.learn_scale = bool(learn_scale)
        self.scale_prior = scale_prior
        if self.learn_scale:
            # softplus parameterisation keeps the learned scale positive
            self.raw_scale = nn.Parameter(scale + torch.log(-torch.expm1(-scale)))
        else:
            self.register_buffer("_fixed_scale", scale.clone())

    @property
    def scale(self) -> Tensor:
        """The current noise standard deviation (fixed or learned).

        Raises:
            AttributeError: when the scale is a latent site (``scale_prior``); read its
                posterior from the guide instead.
        """
        if self.scale_prior is not None:
            raise AttributeError(
                f"the noise scale is the latent site {self.scale_site!r}; read it from the guide"
            )
        return F.softplus(self.raw_scale) if self.learn_scale else self._fixed_scale

    @property
    def scale_site(self) -> str:
        """Name of the sampled-scale site (used only with ``scale_prior``)."""
        return f"{self.site_name}.scale"

    def sample_latents(self) -> dict[str, Tensor]:
        if self.scale_prior is None:
            return {}
        return {self.scale_site: pyro.sample(self.scale_site, self.scale_prior)}

    def noise_scale(self, latents: dict[str, Tensor], like: Tensor) -> Tensor:
        """The noise standard deviation: the sampled value (batch shape of the latent site, e.g.
        ``[K, 1]`` under a particle plate) or a scalar."""
        if self.scale_prior is not None:
            return latents[self.scale_site]
        s = F.softplus(self.raw_scale) if self.learn_scale else self._fixed_scale
        return s.to(device=like.device, dtype=like.dtype)

    def distribution(self, f: Tensor, latents: dict[str, Tensor]) -> dist.Distribution:
        scale = self.noise_scale(latents, f)
        if f.shape[-1] == 1:
            return dist.Normal(f.squeeze(-1), scale)
        s = scale.unsqueeze(-1) if scale.dim() else scale
        return dist.Normal(f, s).to_event(1)

    def check_targets(self, y: Tensor, f: Tensor) -> None:
        super().check_targets(y, f)
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor for a Gaussian likelihood, got {y.dtype}")
        want = (f.shape[-2],) if f.shape[-1] == 1 else tuple(f.shape[-2:])
        if tuple(y.shape) != want:
            raise ValueError(
                f"y must have shape {want} to match network outputs {tuple(f.shape)}, "
                f"got {tuple(y.shape)}"
            )

    def summarize(self, f: Tensor, latents: dict[str, Tensor]) -> Prediction:
        means = f.squeeze(-1) if f.shape[-1] == 1 else f
        noise_var = self.noise_scale(latents, f) ** 2
        if noise_var.dim() and means.dim() > noise_var.dim():
            noise_var = noise_var.reshape(noise_var.shape + (1,) * (means.dim() - noise_var.dim()))
        sample_vars = noise_var.expand_as(means)
        epistemic = means.var(0, unbiased=False)
        aleatoric = sample_vars.mean(0)
        return Prediction(
            f_samples=f,
            mean=means.mean(0),
            variance=epistemic + aleatoric,
            epistemic_variance=epistemic,
            aleatoric_variance=aleatoric,
            sample_means=means,
            sample_variances=sample_vars,
        )

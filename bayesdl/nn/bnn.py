"""A Bayesian network built from any plain ``nn.Module``, a prior and a likelihood."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro.nn import PyroModule
from pyro.poutine.runtime import effectful
from torch import Tensor, nn

from bayesdl._validation import check_finite
from bayesdl.likelihoods.likelihood import Likelihood
from bayesdl.nn.vectorized_forward import particle_batch_shape, vectorized_forward
from bayesdl.priors.prior import Prior, WeightSite

SiteFilter = Callable[[str, nn.Module], bool]


def _default_site_filter(name: str, module: nn.Module) -> bool:
    return True


def _bnn_forward(bnn: BNN, params: dict[str, Tensor], x: Tensor) -> Tensor:
    return bnn.forward_with(params, x)


#: the effectful forward op: handlers such as ``local_reparam`` implement ``_pyro_bnn_forward``
bnn_forward = effectful(_bnn_forward, type="bnn_forward")


class BNN(nn.Module):
    """A Bayesian neural network: ``net × prior × likelihood`` as one Pyro model.

    Every parameter of ``net`` selected by ``site_filter(name, module)`` becomes a Pyro sample
    site named by its dotted path (``"0.weight"``) with the prior's distribution; the others
    stay deterministic ``nn.Parameter`` s, trained by point estimation in :func:`bayesdl.infer.fit`.
    The network is never subclassed; each selected parameter is turned into a buffer of the
    same name holding its current value (the initial mean for guides, and what
    ``state_dict`` saves), so ``net.parameters()`` lists only the deterministic ones.

    The model ``bnn(x, y=None)`` samples the weights outside the data plate, evaluates the
    network, and observes ``y`` through the likelihood's data plate. When weight values carry
    leading particle dims (inside a particle plate at dim ``<= -2``, or under
    ``vectorize_particles=True``), all particles are evaluated in one ``vmap``-ed call.

    Args:
        net: any ``torch.nn.Module`` mapping inputs ``[B, ...]`` to outputs ``[B, *out]``.
        prior: a :class:`~bayesdl.priors.Prior`.
        likelihood: a :class:`~bayesdl.likelihoods.Likelihood`.
        site_filter: ``(name, module) -> bool`` selecting which parameters are random
            (``module`` is the parameter's owner). Default: all parameters.
        chunk_size: evaluate at most this many particles at once (bounds memory).
        name: prefix under which deterministic parameters are registered in Pyro's global param
            store when the model runs outside module-local mode (classic ``pyro.infer.SVI``).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import GaussianLikelihood
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        >>> bnn = BNN(net, LayerwiseNormalPrior(), GaussianLikelihood(dataset_size=10, scale=0.1))
        >>> bnn.site_names
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> bnn(torch.randn(10, 1)).shape
        torch.Size([10, 1])
    """

    def __init__(
        self,
        net: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        *,
        site_filter: SiteFilter | None = None,
        chunk_size: int | None = None,
        name: str = "bnn",
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if isinstance(net, PyroModule):
            raise TypeError(
                "net must be a plain nn.Module, not a PyroModule; BNN adds the sample sites itself"
            )
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a bayesdl.priors.Prior, got {type(prior).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be a bayesdl.likelihoods.Likelihood, got {type(likelihood).__name__}"
            )
        site_filter = _default_site_filter if site_filter is None else site_filter
        if not callable(site_filter):
            raise TypeError("site_filter must be a callable (name, module) -> bool")
        self.net = net
        self.prior = prior
        self.likelihood = likelihood
        self.chunk_size = chunk_size
        selected = []
        for pname, _param in net.named_parameters():
            module = net.get_submodule(pname.rpartition(".")[0])
            if site_filter(pname, module):
                selected.append(pname)
        if not selected:
            names = [n for n, _ in net.named_parameters()]
            raise ValueError(
                f"site_filter selected no parameter of the network (parameters: {names}); "
                "a BNN needs at least one random parameter"
            )
        self._site_names = selected
        for pname in selected:
            prefix, _, local = pname.rpartition(".")
            owner = net.get_submodule(prefix)
            value = owner._parameters.pop(local)
            owner.register_buffer(local, value.detach().clone())
        self.name = name
        # fixed at construction: owners and shapes (buffers themselves are looked up on use,
        # since .to(device) replaces them)
        self._owners = [
            (n, net.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in selected
        ]
        self._shapes = {n: net.get_buffer(n).shape for n in selected}
        self._batchnorms = [
            (n, m) for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    # ------------------------------------------------------------------ sites
    @property
    def site_names(self) -> list[str]:
        """Dotted names of the random parameters (also their sample-site names)."""
        return list(self._site_names)

    @property
    def sites(self) -> list[WeightSite]:
        """The random parameters as :class:`~bayesdl.priors.WeightSite` s."""
        return [WeightSite(n, owner._buffers[local], owner) for n, owner, local in self._owners]

    @property
    def param_shapes(self) -> dict[str, torch.Size]:
        """Shape of each random parameter."""
        return dict(self._shapes)

    def sample_latents(self) -> dict[str, Tensor]:
        """Sample every latent site: the weights (via the prior) and the likelihood's latents."""
        values = dict(self.prior.sample(self.sites))
        values.update(self.likelihood.sample_latents())
        return values

    # ------------------------------------------------------------------ forward
    def forward_with(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        *,
        unbatched: dict[str, Tensor] | None = None,
        batch_shape: torch.Size | None = None,
    ) -> Tensor:
        """Evaluate the network at given weight values (no sample sites).

        Args:
            params: values of (a subset of) the random parameters, ``[*batch, *shape]``.
            x: inputs ``[B, ...]``.
            unbatched: extra parameter tensors shared by all particles.
            batch_shape: force this particle batch shape.

        Returns:
            ``[*batch, B, *out]``.
        """
        if batch_shape or particle_batch_shape(params, self._shapes):
            for name, module in self._batchnorms:
                if module.training and module.track_running_stats:
                    raise ValueError(
                        f"BatchNorm layer {name!r} is in training mode and would update its "
                        "running statistics once per weight particle; call .eval() on it (or on "
                        "the network), or build it with track_running_stats=False, before "
                        "evaluating several particles"
                    )
        return vectorized_forward(
            self.net,
            params,
            x,
            shapes=self._shapes,
            unbatched=unbatched,
            batch_shape=batch_shape,
            chunk_size=self.chunk_size,
        )

    def _check_inputs(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1:
            raise ValueError(
                f"x must have a leading batch dimension [B, ...], got shape {tuple(x.shape)}"
            )
        template = self.net.get_buffer(self._site_names[0])
        if x.device != template.device:
            raise ValueError(
                f"x is on {x.device} but the network is on {template.device}; move one of them"
            )
        if x.is_floating_point() and x.dtype != template.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the network's parameters are {template.dtype}; "
                f"convert with x.to({template.dtype})"
            )
        if not x.is_cuda:  # a finiteness check on CUDA would sync every step
            check_finite(x, "x")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The Pyro model: sample weights, evaluate the network, observe ``y``.

        Args:
            x: inputs ``[B, ...]``.
            y: targets ``[B, ...]`` or ``None`` (then targets are sampled).

        Returns:
            network outputs ``[*batch, B, *out]``.
        """
        self._check_inputs(x)
        if not pyro.settings.get("module_local_params") and any(
            p.requires_grad for p in self.parameters()
        ):
            pyro.module(self.name, self)  # classic global-param-store inference
        latents = self.sample_latents()
        weights = {n: latents[n] for n in self._site_names}
        f = bnn_forward(self, weights, x)
        f = _drop_data_slot(f, weights, self._shapes)
        self.likelihood(f, y, latents)
        return f

    model = forward


def _drop_data_slot(f: Tensor, weights: dict[str, Tensor], shapes: dict[str, torch.Size]) -> Tensor:
    """Remove the size-1 dim that particle-batched weights carry at the data plate's position.

    Inside a particle plate at dim -2 (as under ``vectorize_particles`` with one data plate)
    weights have batch shape ``[K, 1]``; the trailing 1 is where the data plate's ``B`` goes, so
    outputs ``[K, 1, B, *out]`` become ``[K, B, *out]``. Weights batched without that slot
    (``[K]``, as ``pyro.infer.Predictive(parallel=True)`` passes them) already give
    ``[K, B, *out]``.
    """
    batch = len(particle_batch_shape(weights, shapes))
    if batch == 0 or f.shape[batch - 1] != 1:
        return f
    return f.squeeze(batch - 1)


__all__ = ["BNN", "bnn_forward"]

"""The sparse mean-field guide of SSVI: a Normal over an active subset of each layer's weights."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesdl.guides.mean_field_guide import MeanFieldGuide
from bayesdl.guides.site_guide import LatentSite, _key
from bayesdl.guides.sparse_normal import SparseNormal, scatter_active
from bayesdl.nn.bnn import BNN

_LAYERS = (nn.Linear, nn.Conv2d)
_SPARSE_INIT_LOCS = ("net", "fan_in", "prior", "sparse_fan_in")


def _check_density(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(value).__name__}")
    if not 0.0 < float(value) <= 1.0 or math.isnan(float(value)):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


class SparseMeanFieldGuide(MeanFieldGuide):
    """Mean-field Normal guide that keeps only an active subset of each layer's weights random.

    Every ``nn.Linear`` / ``nn.Conv2d`` weight site ``W_l`` with ``n_l`` entries gets a fixed
    number ``s_l = floor(density * n_l)`` of active entries; the guide is

        ``q(W_l) = prod_{i active} N(mu_i, softplus(rho_i)^2) prod_{i inactive} delta_0``,

    a :class:`~bayesdl.guides.SparseNormal`. Only the active entries are stored: ``mu`` and
    ``rho`` are parameters of length ``s_l`` (``locs`` / ``raw_scales``) and a buffer holds their
    flat positions (``active_index``), so the optimiser, the KL and the softplus work on
    ``s_l`` numbers, not ``n_l``; the dense mean and scale are scattered into zeros once per
    step for the layer's (dense) kernels. Inactive entries are exactly zero in every sample and
    every dense view. Which entries are active changes only through :meth:`replace_active`,
    called by :class:`bayesdl.infer.SubspaceScheduler`; the initial active set is uniformly
    random (global torch RNG; none is drawn when ``s_l = n_l``).

    Storage is compact, compute is dense: the optimiser state, the KL and the scale transform
    cost ``O(s_l)``, and the guide's state is ``s_l`` means, scales and int64 positions
    (0.2 of a dense guide's bytes at density 0.1), but the layers multiply by the zero-padded
    ``n_l``-entry weights with PyTorch's dense kernels. On CPU, at density 0.1, torch's CSR
    sparse-dense products were slower than the dense kernels for both sparse layers of the
    benchmark CNN (``benchmarks/ssvi_fmnist.py``, summary key ``kernels_d010``), so training
    time does not shrink with the FLOP count; the dense kernel also yields, for free, the
    gradient at inactive positions that the subspace update needs.

    Other sites (biases, hyper-latents) and layers kept dense (``first_layer_dense``,
    ``dense_sites``) are treated exactly as by :class:`~bayesdl.guides.MeanFieldGuide`.

    Under :func:`bayesdl.handlers.local_reparam` the sparse layers are evaluated with the local
    reparameterisation trick like dense ones (``mean = x * M``, ``var = x^2 * S^2`` with the
    dense, zero-padded ``M`` and ``S``). Sparse sites are sampled under ``poutine.mask(True)``
    (a no-op mask) so that :class:`~bayesdl.infer.MeanFieldELBO` sends them to
    :func:`torch.distributions.kl_divergence`, where the active-set KL is registered.

    Args:
        bnn: the :class:`~bayesdl.nn.BNN` model.
        density: fraction of active entries per sparse layer, in ``(0, 1]``; a float for all
            layers or a mapping from site name to density (sites not named get 1.0).
        first_layer_dense: keep the first Linear/Conv2d weight (in ``bnn.site_names`` order)
            fully mean-field, as the SSVI paper does.
        dense_sites: further weight sites to keep fully mean-field.
        init_loc: ``"net"``, ``"fan_in"``, ``"prior"`` (as for
            :class:`~bayesdl.guides.MeanFieldGuide`) or ``"sparse_fan_in"``: sparse weights
            redrawn from ``U(-b, b)`` with ``b = 1 / sqrt(density * fan_in)`` (PyTorch's default
            bound with the fan-in the sparse layer actually has), the rest as ``"net"``.
        init_scale: initial ``sigma`` of every entry (``> 0``).

    Example:
        >>> import torch
        >>> from bayesdl.nn import BNN
        >>> from bayesdl.guides import SparseMeanFieldGuide
        >>> from bayesdl.priors import LayerwiseNormalPrior
        >>> from bayesdl.likelihoods import CategoricalLikelihood
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 50), torch.nn.ReLU(),
        ...                           torch.nn.Linear(50, 3))
        >>> bnn = BNN(net, LayerwiseNormalPrior(), CategoricalLikelihood(10))
        >>> guide = SparseMeanFieldGuide(bnn, density=0.1)
        >>> guide.sparse_site_names, guide.num_active("2.weight")
        (['2.weight'], 15)
        >>> int((guide()["2.weight"] != 0).sum())
        15

    References:
        J. Li, Z. Miao, Q. Qiu, R. Zhang, *Training Bayesian Neural Networks with Sparse
        Subspace Variational Inference*, ICLR 2024.
    """

    def __init__(
        self,
        bnn: BNN,
        *,
        density: float | Mapping[str, float] = 0.1,
        first_layer_dense: bool = True,
        dense_sites: Iterable[str] = (),
        init_loc: str = "net",
        init_scale: float = 1e-2,
    ):
        if init_loc not in _SPARSE_INIT_LOCS:
            raise ValueError(f"init_loc must be one of {_SPARSE_INIT_LOCS}, got {init_loc!r}")
        self._sparse: dict[str, torch.Size] = {}  # read by loc() during the parent's set-up
        super().__init__(
            bnn, init_loc="net" if init_loc == "sparse_fan_in" else init_loc, init_scale=init_scale
        )
        if not isinstance(first_layer_dense, bool):
            raise TypeError(
                f"first_layer_dense must be a bool, got {type(first_layer_dense).__name__}"
            )
        if isinstance(dense_sites, str):
            raise TypeError("dense_sites must be an iterable of site names, not a single str")
        dense = set(dense_sites)
        layer_weights = [
            s.name
            for s in bnn.sites
            if s.is_weight
            and s.name.rpartition(".")[2] == "weight"
            and isinstance(s.module, _LAYERS)
        ]
        unknown = dense - set(layer_weights)
        if unknown:
            raise ValueError(
                f"dense_sites names {sorted(unknown)}, which are not Linear/Conv2d weight sites; "
                f"those are {layer_weights}"
            )
        if first_layer_dense and layer_weights:
            dense.add(layer_weights[0])
        if isinstance(density, Mapping):
            unknown = set(density) - set(layer_weights)
            if unknown:
                raise ValueError(
                    f"density names {sorted(unknown)}, which are not Linear/Conv2d weight "
                    f"sites; those are {layer_weights}"
                )
            densities = {n: _check_density(d, f"density[{n!r}]") for n, d in density.items()}
        else:
            d = _check_density(density, "density")
            densities = {n: d for n in layer_weights}
        sites = {s.name: s for s in self._sites}
        fan_in = {s.name: s.fan_in for s in bnn.sites}
        self._density: dict[str, float] = {}
        self.active_index = nn.Module()
        for name in layer_weights:
            if name in dense or name not in densities:
                continue
            shape = sites[name].shape
            n = math.prod(shape)
            s = math.floor(densities[name] * n)
            if s < 1:
                raise ValueError(
                    f"density {densities[name]} leaves no active entry in site {name!r} "
                    f"({n} entries); use a density >= {1.0 / n:.3g} or keep it dense"
                )
            key = _key(name)
            loc = self.locs[key]
            if s == n:
                index = torch.arange(n, device=loc.device)
            else:
                index = torch.randperm(n, device=loc.device)[:s].sort().values
            with torch.no_grad():
                dense_loc = loc.detach().reshape(-1)
                if init_loc == "sparse_fan_in":
                    bound = 1.0 / math.sqrt(densities[name] * fan_in[name])
                    active = torch.empty(s, dtype=loc.dtype, device=loc.device)
                    active.uniform_(-bound, bound)
                else:
                    active = dense_loc[index].clone()
                raw = self.raw_scales[key].detach().reshape(-1)[index].clone()
            self.locs[key] = nn.Parameter(active)
            self.raw_scales[key] = nn.Parameter(raw)
            self.active_index.register_buffer(key, index)
            self._sparse[name] = shape
            self._density[name] = densities[name]
        #: keep the dense means of the last forward pass (and so their gradients after
        #: ``backward``) for :meth:`dense_loc_grad`; set by the subspace scheduler
        self.retain_dense_grad = False
        self._dense_locs: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ structure
    @property
    def sparse_site_names(self) -> list[str]:
        """Names of the weight sites with an active subset (in site order)."""
        return list(self._sparse)

    def is_sparse(self, name: str) -> bool:
        """Whether site ``name`` is sparse (has an active subset)."""
        return name in self._sparse

    def _check_sparse(self, name: str) -> str:
        if name not in self._sparse:
            raise KeyError(f"{name!r} is not a sparse site; sparse sites: {self.sparse_site_names}")
        return _key(name)

    def active_indices(self, name: str) -> Tensor:
        """Flat positions ``[s]`` of the active entries of sparse site ``name``."""
        return self.active_index.get_buffer(self._check_sparse(name))

    def num_active(self, name: str) -> int:
        """Number of random entries of site ``name`` (``s_l``; all entries for dense sites)."""
        if name in self._sparse:
            return int(self.active_indices(name).shape[0])
        return self.locs[_key(name)].numel()

    def num_entries(self, name: str) -> int:
        """Number of entries ``n_l`` of site ``name``."""
        for site in self._sites:
            if site.name == name:
                return math.prod(site.shape)
        raise KeyError(f"no latent site named {name!r}; sites: {self.site_names}")

    def density(self, name: str) -> float:
        """Fraction ``s_l / n_l`` of active entries of site ``name`` (1.0 for dense sites)."""
        return self.num_active(name) / self.num_entries(name)

    def mask(self, name: str) -> Tensor:
        """Dense boolean mask of the active entries of site ``name`` (all True if dense)."""
        shape = next(s.shape for s in self._sites if s.name == name)
        if name not in self._sparse:
            return torch.ones(shape, dtype=torch.bool, device=self.locs[_key(name)].device)
        index = self.active_indices(name)
        mask = torch.zeros(math.prod(shape), dtype=torch.bool, device=index.device)
        return mask.index_fill_(0, index, True).view(shape)

    def active_loc(self, name: str) -> Tensor:
        """The stored means ``mu`` of site ``name``: ``[s]`` for sparse sites (a parameter)."""
        return self.locs[_key(name)]

    def active_raw_scale(self, name: str) -> Tensor:
        """The stored unconstrained scales ``rho`` of site ``name`` (a parameter)."""
        return self.raw_scales[_key(name)]

    # ------------------------------------------------------------------ dense views
    def loc(self, name: str) -> Tensor:
        """The dense (unconstrained) mean of site ``name``; zeros at inactive entries."""
        key = _key(name)
        if name in self._sparse:
            index = self.active_index.get_buffer(key)
            return scatter_active(self.locs[key], index, self._sparse[name])
        return self.locs[key]

    def scale(self, name: str) -> Tensor:
        """The dense standard deviation of site ``name``; zeros at inactive entries."""
        key = _key(name)
        if name in self._sparse:
            index = self.active_index.get_buffer(key)
            return scatter_active(F.softplus(self.raw_scales[key]), index, self._sparse[name])
        return F.softplus(self.raw_scales[key])

    def site_distribution(self, site: LatentSite) -> dist.Distribution:
        if site.name not in self._sparse:
            return super().site_distribution(site)
        key = _key(site.name)
        index = self.active_index.get_buffer(key)
        shape = self._sparse[site.name]
        active_loc = self.locs[key]
        active_scale = F.softplus(self.raw_scales[key])
        loc = scatter_active(active_loc, index, shape)
        if self.retain_dense_grad and loc.requires_grad:
            loc.retain_grad()
            self._dense_locs[site.name] = loc
        q = SparseNormal(active_loc, active_scale, index, shape, loc=loc)
        return q.to_event(len(shape))

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        """Sample every latent site (the model's arguments are accepted and ignored)."""
        out = {}
        for s in self._sites:
            if s.name in self._sparse:
                # a no-op mask routes the site to kl_divergence in MeanFieldELBO (see above)
                with poutine.mask(mask=True):
                    out[s.name] = pyro.sample(s.name, self.site_distribution(s))
            else:
                out[s.name] = pyro.sample(s.name, self.site_distribution(s))
        return out

    def dense_loc_grad(self, name: str) -> Tensor:
        """``dL/dM`` of the last backward pass at every entry (active or not) of the dense mean
        ``M`` of sparse site ``name``, shape of the site.

        Raises:
            RuntimeError: ``retain_dense_grad`` was off, or no backward pass has run since.
        """
        self._check_sparse(name)
        loc = self._dense_locs.get(name)
        if loc is None or loc.grad is None:
            raise RuntimeError(
                f"no dense gradient recorded for site {name!r}: set guide.retain_dense_grad = "
                "True and run a forward and backward pass first"
            )
        return loc.grad

    def clear_dense_grads(self) -> None:
        """Drop the dense means (and gradients) kept by ``retain_dense_grad``."""
        self._dense_locs.clear()

    # ------------------------------------------------------------------ subspace moves
    @torch.no_grad()
    def replace_active(
        self, name: str, slots: Tensor, positions: Tensor, *, raw_scale: Tensor | float
    ) -> None:
        """Move active slots of sparse site ``name`` to new positions.

        The entry stored in each slot ``slots[j]`` stops being active and the (inactive or
        just-dropped) flat position ``positions[j]`` becomes active in its place, starting at
        ``mu = 0`` and ``rho = raw_scale``. The number of active entries is unchanged.

        Args:
            name: a sparse site.
            slots: slot numbers ``[m]`` (in ``0 .. s - 1``), distinct.
            positions: flat positions ``[m]`` (in ``0 .. n - 1``), distinct, none of them
                active after the move except through this call.
            raw_scale: initial unconstrained scale of the new entries (a scalar).
        """
        key = self._check_sparse(name)
        index = self.active_index.get_buffer(key)
        index[slots] = positions
        self.locs[key][slots] = 0.0
        self.raw_scales[key][slots] = raw_scale

    # ------------------------------------------------------------------ accounting
    def num_parameters(self) -> int:
        """Number of stored variational parameters (two per random entry)."""
        return sum(p.numel() for p in self.parameters())

    def num_bytes(self) -> int:
        """Bytes of the guide's state: parameters plus the int64 index buffers."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


__all__ = ["SparseMeanFieldGuide"]

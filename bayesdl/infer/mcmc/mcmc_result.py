"""What :func:`~bayesdl.infer.mcmc.sample` returns: draws, sampler statistics, diagnostics,
predictions and ArviZ export."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from bayesdl.infer.mcmc.potential import ModelPotential, Potential

if TYPE_CHECKING:
    import arviz as az

    from bayesdl.likelihoods.prediction import Prediction

#: sampler statistics renamed to ArviZ's ``sample_stats`` conventions
_ARVIZ_STATS = {
    "potential_energy": "lp",
    "accept_prob": "acceptance_rate",
    "step_size": "step_size",
    "diverging": "diverging",
    "tree_depth": "tree_depth",
    "num_steps": "n_steps",
    "energy": "energy",
}


def _arviz() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import arviz as az
    return az


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


@dataclass(eq=False)
class MCMCResult:
    """Draws and statistics of an MCMC run.

    Attributes:
        z: kept unconstrained positions ``[C, S, D]`` (on the device, the host, or backed by a
            memory-mapped ``.npy`` file, as the run's ``store`` chose).
        sample_stats: per-draw kernel statistics ``{name: [C, S]}`` (``potential_energy``,
            ``accept_prob``, ``step_size``, ``diverging``, ``num_steps``, ``tree_depth``, ...).
        potential: the target's :class:`~bayesdl.infer.mcmc.Potential`.
        model: the model (``None`` when a plain potential was sampled).
        data: the model arguments the run used.
        num_warmup: warm-up iterations.
        thin: thinning.
        kernel_name: the kernel's class name.
        warmup_divergences: divergent transitions during warm-up, per chain ``[C]``.
        elapsed: seconds of this call (after a resume: of the resumed part).
        resumed_from: the iteration a resumed run continued from (``None``: a fresh run).
    """

    z: Tensor
    sample_stats: dict[str, Tensor]
    potential: Potential
    model: Any = None
    data: tuple[Any, ...] = ()
    num_warmup: int = 0
    thin: int = 1
    kernel_name: str = ""
    warmup_divergences: Tensor | None = None
    elapsed: float = 0.0
    resumed_from: int | None = None
    _samples: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def num_chains(self) -> int:
        """``C``."""
        return int(self.z.shape[0])

    @property
    def num_samples(self) -> int:
        """Kept draws per chain ``S``."""
        return int(self.z.shape[1])

    # ------------------------------------------------------------------ draws
    @property
    def samples(self) -> dict[str, Tensor]:
        """Constrained draws ``{site: [C, S, *shape]}`` (``{"z": [C, S, D]}`` for a plain
        potential)."""
        if self._samples is None:
            if isinstance(self.potential, ModelPotential):
                c, s, d = self.z.shape
                flat = self.z.reshape(c * s, d).to(self.potential.device)
                values = self.potential.unpack(flat)
                self._samples = {k: v.reshape(c, s, *v.shape[1:]) for k, v in values.items()}
            else:
                self._samples = {"z": self.z}
        return self._samples

    def get_samples(self, group_by_chain: bool = False) -> dict[str, Tensor]:
        """Draws ``{site: [C, S, *shape]}``, or ``[C * S, *shape]`` when not grouped."""
        if group_by_chain:
            return dict(self.samples)
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    # ------------------------------------------------------------------ diagnostics
    @property
    def num_divergences(self) -> Tensor:
        """Divergent transitions after warm-up, per chain ``[C]`` (zeros for kernels without a
        divergence notion)."""
        if "diverging" not in self.sample_stats:
            return torch.zeros(self.num_chains, dtype=torch.long)
        return self.sample_stats["diverging"].long().sum(-1)

    def diagnostics(self) -> dict[str, Any]:
        """Per-chain divergences, mean acceptance rate and final step size, plus the worst
        R-hat and smallest bulk/tail ESS over every scalar of every site."""
        out: dict[str, Any] = {"divergences": self.num_divergences.tolist()}
        if self.warmup_divergences is not None:
            out["warmup_divergences"] = self.warmup_divergences.tolist()
        if "accept_prob" in self.sample_stats:
            out["accept_prob"] = self.sample_stats["accept_prob"].float().mean(-1).tolist()
        if "step_size" in self.sample_stats:
            out["step_size"] = self.sample_stats["step_size"][:, -1].tolist()
        if "num_steps" in self.sample_stats:
            out["mean_num_steps"] = self.sample_stats["num_steps"].float().mean(-1).tolist()
        table = self.summary()
        out["max_r_hat"] = float(max(np.nanmax(v["r_hat"]) for v in table.values()))
        out["min_ess_bulk"] = float(min(np.nanmin(v["ess_bulk"]) for v in table.values()))
        out["min_ess_tail"] = float(min(np.nanmin(v["ess_tail"]) for v in table.values()))
        return out

    def summary(self, sites: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Mean, sd, rank-normalised split R-hat and bulk/tail ESS (Vehtari et al. 2021, as
        computed by ArviZ) of each site, elementwise: ``{site: {stat: array of site shape}}``.

        References:
            A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner, *Rank-Normalization,
            Folding, and Localization: An Improved R-hat for Assessing Convergence of MCMC*,
            Bayesian Analysis 2021.
        """
        az = _arviz()
        samples = self.samples
        names = list(samples) if sites is None else list(sites)
        unknown = [n for n in names if n not in samples]
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}; sites: {list(samples)}")
        out = {}
        for name in names:
            draws = _numpy(samples[name])
            ds = az.convert_to_dataset({"x": draws})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: nan R-hat
                out[name] = {
                    "mean": draws.mean(axis=(0, 1)),
                    "sd": draws.std(axis=(0, 1), ddof=1)
                    if draws.shape[0] * draws.shape[1] > 1
                    else np.zeros(draws.shape[2:]),
                    "r_hat": az.rhat(ds)["x"].values,
                    "ess_bulk": az.ess(ds, method="bulk")["x"].values,
                    "ess_tail": az.ess(ds, method="tail")["x"].values,
                }
        return out

    # ------------------------------------------------------------------ predictions
    def _bnn(self) -> Any:
        from bayesdl.nn.bnn import BNN

        if not isinstance(self.model, BNN):
            raise TypeError(
                "predictions need the model to be a bayesdl.nn.BNN, "
                f"got {type(self.model).__name__}"
            )
        return self.model

    def predictive_outputs(
        self, x: Tensor, *, max_samples: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Network outputs ``[C * S, B, *out]`` at inputs ``x`` for the kept draws (the last
        ``max_samples`` per chain when given) and the likelihood's latent draws."""
        bnn = self._bnn()
        samples = self.samples
        if max_samples is not None:
            samples = {k: v[:, -max_samples:] for k, v in samples.items()}
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}
        weights = {k: v.to(x.device) for k, v in flat.items() if k in bnn.site_names}
        with torch.no_grad():
            f = bnn.forward_with(weights, x)
        latents = {
            k: v.to(x.device).reshape(v.shape[0], 1, *v.shape[1:])
            for k, v in flat.items()
            if k not in bnn.site_names
        }
        return f, latents

    def predict(self, x: Tensor, *, max_samples: int | None = None) -> Prediction:
        """The posterior predictive at inputs ``x`` as a
        :class:`~bayesdl.likelihoods.Prediction` (every chain's kept draws pooled)."""
        bnn = self._bnn()
        f, latents = self.predictive_outputs(x, max_samples=max_samples)
        return bnn.likelihood.summarize(f, latents)

    # ------------------------------------------------------------------ ArviZ
    def to_inference_data(
        self,
        *,
        x: Tensor | None = None,
        y: Tensor | None = None,
        posterior_predictive: dict[str, Tensor] | None = None,
    ) -> az.InferenceData:
        """The run as ``arviz.InferenceData``.

        Groups: ``posterior`` (every site, ``(chain, draw, *shape)``), ``sample_stats`` (ArviZ
        names: ``lp`` is minus the potential energy, ``acceptance_rate``, ``step_size``,
        ``diverging``, ``tree_depth``, ``n_steps``), and, when asked, ``posterior_predictive``:
        either given as ``{name: [C, S, ...]}`` or, for a BNN and inputs ``x``, targets drawn from
        the likelihood at every kept draw (site name of the likelihood); ``y`` adds
        ``observed_data``.
        """
        az = _arviz()
        c, s = self.num_chains, self.num_samples
        posterior = {k: _numpy(v) for k, v in self.samples.items()}
        stats: dict[str, np.ndarray] = {}
        for key, value in self.sample_stats.items():
            name = _ARVIZ_STATS.get(key, key)
            arr = _numpy(value)
            stats[name] = -arr if key == "potential_energy" else arr
        kwargs: dict[str, Any] = {"posterior": posterior, "sample_stats": stats}
        predictive = dict(posterior_predictive or {})
        site = None
        if x is not None:
            bnn = self._bnn()
            site = bnn.likelihood.site_name
            f, latents = self.predictive_outputs(x)
            with torch.no_grad():
                draws = bnn.likelihood.distribution(f, latents).sample()
            predictive[site] = draws.reshape(c, s, *draws.shape[1:])
        if predictive:
            kwargs["posterior_predictive"] = {
                k: _numpy(torch.as_tensor(v)) for k, v in predictive.items()
            }
        if y is not None:
            name = site or (next(iter(predictive)) if predictive else "y")
            kwargs["observed_data"] = {name: _numpy(y)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return az.from_dict(**kwargs)


__all__ = ["MCMCResult"]

"""The MCMC runner: vectorised or sequential chains, minibatch streaming for SG kernels, thinning,
samples kept on the device, on the host or on disk, atomic checkpoints and exact resume."""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch
from torch import Tensor

from bayesdl._progress import progress_bar, progress_enabled
from bayesdl._validation import check_positive_int
from bayesdl.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesdl.infer.mcmc._cpu_cache import caching_cpu_allocator
from bayesdl.infer.mcmc.kernel import MCMCKernel
from bayesdl.infer.mcmc.mcmc_result import MCMCResult
from bayesdl.infer.mcmc.potential import ModelPotential, Potential, potential_of
from bayesdl.infer.mcmc.rng import ChainRNG, chain_seed

CHAIN_METHODS = ("vectorized", "sequential")
_FORMAT = "bayesdl.mcmc/1"
_BATCH_SEED_OFFSET = 0x5EED_BA7C


class NonFiniteSampleError(RuntimeError):
    """A chain's position became NaN or infinite (usually a step size that is too large)."""


class _Minibatches:
    """Minibatch ``i`` of a seeded stream: epoch ``e = i // (N // B)`` uses its own permutation
    (seeded by ``seed`` and ``e``), so any iteration's batch is known without replaying."""

    def __init__(self, data: tuple[Tensor, ...], batch_size: int | None, seed: int):
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.n = int(data[0].shape[0]) if data else 0
        self._epoch = -1
        self._perm: Tensor | None = None

    @property
    def full(self) -> bool:
        return self.batch_size is None or self.batch_size >= self.n

    def __call__(self, iteration: int) -> tuple[Tensor, ...] | None:
        if self.full:
            return None
        per_epoch = self.n // self.batch_size
        epoch, k = divmod(iteration, per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(chain_seed(self.seed + _BATCH_SEED_OFFSET, epoch))
            self._perm = torch.randperm(self.n, generator=g).to(self.data[0].device)
            self._epoch = epoch
        idx = self._perm[k * self.batch_size : (k + 1) * self.batch_size]
        return tuple(t.index_select(0, idx) for t in self.data)


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _initial(
    potential: Potential, init: Any, num_chains: int, seed: int, device: Any, dtype: Any
) -> Tensor:
    """Starting points ``[C, D]``; chain ``c`` depends only on ``seed`` and ``c``."""
    if isinstance(init, Tensor):
        z = init.to(device=device, dtype=dtype)
        if z.dim() == 1:
            z = z.expand(num_chains, -1)
        if z.shape != (num_chains, potential.dim):
            raise ValueError(
                f"init must have shape [{potential.dim}] or [{num_chains}, {potential.dim}], "
                f"got {tuple(init.shape)}"
            )
        return z.clone()
    rows = []
    for c in range(num_chains):
        g = torch.Generator(device=device).manual_seed(chain_seed(seed + 1, c))
        if isinstance(potential, ModelPotential):
            if init == "prior":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(chain_seed(seed + 2, c))
                    rows.append(potential.initial(1, "prior"))
            else:
                rows.append(potential.initial(1, init, generator=g))
        elif init == "uniform":
            u = torch.rand(1, potential.dim, generator=g, dtype=dtype, device=device)
            rows.append(4 * u - 2)
        else:
            raise ValueError(
                "init must be a tensor or 'uniform' when the target is a plain Potential, "
                f"got {init!r}"
            )
    return torch.cat(rows)


def _infer_device_dtype(potential: Potential, data: tuple[Any, ...]) -> tuple[Any, Any]:
    device = getattr(potential, "device", None)
    dtype = getattr(potential, "dtype", None)
    for t in data:
        if isinstance(t, Tensor):
            device = device or t.device
            if dtype is None and t.is_floating_point():
                dtype = t.dtype
    return device or torch.device("cpu"), dtype or torch.get_default_dtype()


class _Store:
    """Kept positions ``[C, S, D]`` on a device, on the host, or in a memory-mapped file."""

    def __init__(self, store: Any, shape: tuple[int, int, int], dtype: torch.dtype, device: Any):
        self.path = None
        if store in ("device", "cpu"):
            where = device if store == "device" else "cpu"
            self.z = torch.zeros(shape, dtype=dtype, device=where)
        elif isinstance(store, (str, os.PathLike)) and os.fspath(store).endswith(".npy"):
            self.path = os.fspath(store)
            np_dtype = np.dtype(str(dtype).replace("torch.", ""))
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            mode = "r+" if os.path.exists(self.path) else "w+"
            mm = np.lib.format.open_memmap(self.path, mode=mode, dtype=np_dtype, shape=shape)
            if mm.shape != shape or mm.dtype != np_dtype:
                raise ValueError(
                    f"store file {self.path} holds {mm.shape} {mm.dtype}, expected {shape} "
                    f"{np_dtype}; remove it or choose another path"
                )
            self._mm = mm
            self.z = torch.from_numpy(mm)
        else:
            raise ValueError(
                f"store must be 'device', 'cpu' or a path ending in .npy, got {store!r}"
            )

    def flush(self) -> None:
        if self.path is not None:
            self._mm.flush()


def sample(
    model: Callable[..., Any] | Potential,
    kernel: MCMCKernel,
    data: Sequence[Any] = (),
    *,
    num_samples: int,
    warmup: int = 0,
    thin: int = 1,
    num_chains: int = 1,
    chain_method: str = "vectorized",
    batch_size: int | None = None,
    init: str | dict[str, Tensor] | Tensor = "uniform",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    store: str | os.PathLike = "device",
    progress: bool | None = None,
) -> MCMCResult:
    """Run ``kernel`` on ``model`` and keep ``num_samples`` draws per chain.

    Args:
        model: a Pyro model called as ``model(*data)`` (a :class:`~bayesdl.nn.BNN`, or any model
            whose latent sites are global), or a :class:`Potential`.
        kernel: an :class:`~bayesdl.infer.mcmc.MCMCKernel` (``NUTS``, ``HMC``, ``SGHMC``,
            ``AdaptiveSGHMC``, ``SGLD``).
        data: model arguments (e.g. ``(x, y)``); tensors sharing the leading size ``N`` are
            split into minibatches.
        num_samples: draws kept per chain.
        warmup: warm-up (burn-in, adaptation) iterations, not kept.
        thin: keep one draw every ``thin`` iterations after warm-up.
        num_chains: ``C``.
        chain_method: ``"vectorized"`` (all chains step together in one batched call) or
            ``"sequential"`` (one chain after the other; same numbers per chain).
        batch_size: minibatch size for stochastic-gradient kernels (``None``: full data).
            Epoch ``e`` visits the data in a permutation seeded by ``seed`` and ``e``; the last
            ``N mod batch_size`` points of each permutation are skipped so every minibatch has
            the same size.
        init: ``"uniform"`` (unconstrained coordinates uniform on ``(-2, 2)``), ``"prior"``,
            ``"prototype"``, ``"module"`` (a BNN's own weights), a dict of constrained values, or a
            tensor ``[D]`` / ``[C, D]``.
        seed: the seed of every random stream (chain ``c`` draws from its own generator).
        checkpoint: file to write atomic checkpoints to (``None``: no checkpoints).
        checkpoint_every: iterations between checkpoints.
        resume: continue from ``checkpoint`` if it exists (the run must have the same
            settings); the result equals that of an uninterrupted run with the same seed.
        store: where kept draws live: ``"device"``, ``"cpu"``, or a ``.npy`` file path
            (memory-mapped; written as the run goes).
        progress: show progress bars (``None``: when on a TTY and ``BAYESDL_PROGRESS != 0``).

    On CPU the sampling loop runs under
    :func:`~bayesdl.infer.mcmc._cpu_cache.caching_cpu_allocator` (process-wide while it
    runs; ``BAYESDL_CPU_CACHE=0`` turns it off): every step allocates the same buffers (the
    gradient, the network's activations and weight gradients), and for a network of millions
    of weights, taking them fresh from the system each step cost page faults of a few ms per
    step on the machines measured (``benchmarks/sghmc_step.py``).

    Returns:
        an :class:`MCMCResult`.

    Raises:
        ValueError: bad settings, a full-batch kernel (HMC/NUTS) with ``batch_size`` or with a
            model that subsamples its data, a checkpoint from a different run.
        NonFiniteSampleError: a chain's position became NaN or infinite; the last checkpoint
            (all finite) is kept.

    Example:
        >>> import torch
        >>> from bayesdl.infer.mcmc import FunctionPotential, SGLD, sample
        >>> target = FunctionPotential(lambda z: 0.5 * (z**2).sum(-1), dim=2)
        >>> result = sample(target, SGLD(step_size=0.1), num_samples=50, num_chains=3)
        >>> result.z.shape
        torch.Size([3, 50, 2])
    """
    if not isinstance(kernel, MCMCKernel):
        raise TypeError(
            f"kernel must be a bayesdl.infer.mcmc kernel (NUTS, HMC, SGHMC, AdaptiveSGHMC, SGLD), "
            f"got {type(kernel).__name__}"
        )
    num_samples = _check_int(num_samples, "num_samples", minimum=1)
    warmup = _check_int(warmup, "warmup", minimum=0)
    thin = _check_int(thin, "thin", minimum=1)
    num_chains = _check_int(num_chains, "num_chains", minimum=1)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    check_positive_int(batch_size, "batch_size", allow_none=True)
    tensors = [t for t in data if isinstance(t, Tensor)]
    if batch_size is not None:
        if not tensors or any(t.dim() == 0 for t in tensors):
            raise ValueError("batch_size needs data tensors with a leading data dimension")
        n = int(tensors[0].shape[0])
        if any(int(t.shape[0]) != n for t in tensors):
            shapes = [tuple(t.shape) for t in tensors]
            raise ValueError(f"data tensors must share their leading size N, got shapes {shapes}")
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} data points")
        if not all(isinstance(t, Tensor) for t in data):
            raise ValueError("with batch_size, every item of data must be a tensor")

    potential = model if isinstance(model, Potential) else potential_of(model, data)
    batches = _Minibatches(tuple(data), batch_size, seed) if batch_size is not None else None
    subsampled = (batches is not None and not batches.full) or getattr(
        potential, "subsampled", False
    )
    if kernel.full_batch and subsampled:
        raise ValueError(
            f"{type(kernel).__name__} needs the exact full-data potential (it has a Metropolis "
            "test), but "
            + (
                f"batch_size={batch_size} subsamples the data"
                if batch_size is not None
                else "the model subsamples its data plate"
            )
            + "; use SGHMC, AdaptiveSGHMC or SGLD for minibatches, or drop batch_size"
        )
    device, dtype = _infer_device_dtype(potential, data)
    total_iters = warmup + num_samples * thin
    config = {
        "kernel": type(kernel).__name__,
        "dim": potential.dim,
        "num_samples": num_samples,
        "warmup": warmup,
        "thin": thin,
        "num_chains": num_chains,
        "chain_method": chain_method,
        "batch_size": batch_size,
        "seed": seed,
    }
    groups = (
        [list(range(num_chains))]
        if chain_method == "vectorized"
        else [[c] for c in range(num_chains)]
    )
    rng_all = ChainRNG.from_seed(seed, num_chains, device)
    out = _Store(store, (num_chains, num_samples, potential.dim), dtype, device)
    stats: dict[str, Tensor] = {}
    warmup_divergences = torch.zeros(num_chains, dtype=torch.long, device=device)
    kept = [0] * num_chains
    group_index, start_iter, state = 0, 0, None
    resumed_from = None
    if resume and os.path.exists(os.fspath(checkpoint)):
        ckpt = load_checkpoint(checkpoint, map_location=device)
        if ckpt.get("format") != _FORMAT or ckpt["config"] != config:
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)} is from a different run: it has settings "
                f"{ckpt.get('config')} but this run has {config}"
            )
        group_index, start_iter = ckpt["group"], ckpt["iteration"]
        kept = list(ckpt["kept"])
        if out.path is None:
            for c in range(num_chains):
                out.z[c, : kept[c]] = ckpt["samples"][c].to(out.z.device)
        for key, values in ckpt["stats"].items():
            stats[key] = torch.zeros(
                (num_chains, num_samples), dtype=values[0].dtype, device=device
            )
            for c in range(num_chains):
                stats[key][c, : kept[c]] = values[c]
        warmup_divergences = ckpt["warmup_divergences"].to(device)
        rng_all.set_state(ckpt["rng"])
        state = ckpt["state"]
        resumed_from = group_index * total_iters + start_iter

    def save(group_i: int, next_iter: int, state_now: Any) -> None:
        if not bool(torch.isfinite(state_now.z).all()):
            bad = (~torch.isfinite(state_now.z)).any(-1).nonzero().flatten().tolist()
            chains_now = groups[group_i]
            raise NonFiniteSampleError(
                f"chain(s) {[chains_now[i] for i in bad]} reached a non-finite position by "
                f"iteration {next_iter}; lower the step size. The last checkpoint "
                "(all finite) is kept."
            )
        if checkpoint is None:
            return
        out.flush()
        payload = {
            "format": _FORMAT,
            "config": config,
            "group": group_i,
            "iteration": next_iter,
            "kept": list(kept),
            "state": {"__type__": type(state_now).__name__, **state_now._asdict()},
            "rng": rng_all.get_state(),
            "stats": {
                k: [v[c, : kept[c]].clone() for c in range(num_chains)] for k, v in stats.items()
            },
            "warmup_divergences": warmup_divergences,
        }
        if out.path is None:
            payload["samples"] = [out.z[c, : kept[c]].clone() for c in range(num_chains)]
        save_checkpoint(payload, checkpoint)

    # kernels that can write a step into the old state's tensors are allowed to: the runner
    # keeps no old state (kept draws and checkpoints are copies)
    donate = {"donate": True} if getattr(kernel, "accepts_donated_state", False) else {}
    t0 = time.perf_counter()
    show = progress_enabled(progress)
    for gi in range(group_index, len(groups)):
        chains = groups[gi]
        rng = rng_all.subset(chains)
        chain_idx = torch.tensor(chains, device=device)
        if state is None or gi != group_index:
            z0 = _initial(potential, init, num_chains, seed, device, dtype)[chains]
            state = kernel.init_state(z0, potential, rng, num_warmup=warmup)
            first = 0
        else:
            state = _restore_state(kernel, state, potential, rng, warmup, device)
            first = start_iter
        desc = "chains" if len(chains) > 1 else f"chain {chains[0]}"
        bar = progress_bar(
            total_iters, desc=f"{type(kernel).__name__} {desc}", progress=progress, initial=first
        )
        with bar, poutine.block(), _loop_allocator(device):
            for it in range(first, total_iters):
                batch = batches(it) if batches is not None else None
                state, info = kernel.step(
                    state, potential, rng, batch, iteration=it, num_warmup=warmup, **donate
                )
                if it < warmup:
                    if "diverging" in info:
                        warmup_divergences[chain_idx] += info["diverging"].long()
                elif (it - warmup + 1) % thin == 0:
                    k = (it - warmup + 1) // thin - 1
                    if len(chains) == num_chains:
                        out.z[:, k] = state.z.to(out.z.device)
                    else:
                        out.z[chains[0], k] = state.z[0].to(out.z.device)
                    for key, value in info.items():
                        if key not in stats:
                            stats[key] = torch.zeros(
                                (num_chains, num_samples), dtype=value.dtype, device=device
                            )
                        stats[key][chain_idx, k] = value
                    for c in chains:
                        kept[c] = k + 1
                if (it + 1) % checkpoint_every == 0 and it + 1 < total_iters:
                    save(gi, it + 1, state)
                bar.update(1)
                if show and it % 100 == 0 and "accept_prob" in info:
                    bar.set_postfix(accept=f"{float(info['accept_prob'].mean()):.2f}")
        save(gi + 1, 0, state) if gi + 1 < len(groups) else save(gi, total_iters, state)
        state = None
    out.flush()
    return MCMCResult(
        z=out.z,
        sample_stats=stats,
        potential=potential,
        model=None if isinstance(model, Potential) else model,
        data=data,
        num_warmup=warmup,
        thin=thin,
        kernel_name=type(kernel).__name__,
        warmup_divergences=warmup_divergences,
        elapsed=time.perf_counter() - t0,
        resumed_from=resumed_from,
    )


def _loop_allocator(device: Any) -> Any:
    """The caching CPU allocator for a sampling loop on CPU, else nothing."""
    return (
        caching_cpu_allocator(quiet=True) if torch.device(device).type == "cpu" else nullcontext()
    )


def _restore_state(
    kernel: MCMCKernel, saved: Any, potential: Potential, rng: ChainRNG, warmup: int, device: Any
) -> Any:
    """Rebuild the kernel's state type from a checkpoint's field dict."""
    if not isinstance(saved, dict):
        return saved
    fields = {k: v for k, v in saved.items() if k != "__type__"}
    # learn the state type from a throwaway state built without consuming random draws
    template = kernel.init_state(fields["z"].clone(), potential, _NoRNG(rng), num_warmup=warmup)
    return type(template)(
        **{k: v.to(device) if isinstance(v, Tensor) else v for k, v in fields.items()}
    )


class _NoRNG:
    """A stand-in ``ChainRNG`` for building a state template without consuming random draws."""

    def __init__(self, rng: ChainRNG):
        self.num_chains = rng.num_chains
        self.device = rng.device

    def normal(self, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        return torch.zeros((self.num_chains, *shape), dtype=dtype, device=self.device)

    def uniform(self, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        return torch.zeros((self.num_chains, *shape), dtype=dtype, device=self.device)


__all__ = ["CHAIN_METHODS", "NonFiniteSampleError", "sample"]

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse subspace variational inference (SSVI) on Fashion-MNIST
#
# Mean-field VI doubles a network's parameters (a mean and a scale per weight) and trains all
# of them. SSVI (Li et al., ICLR 2024) keeps only a small, fixed number of each layer's
# weights random from the very first step, `q(w_i) = N(mu_i, sigma_i^2)` on an active set and
# `w_i = 0` exactly elsewhere, and every few hundred steps swaps part of the active set:
# the active weights with the lowest removal score (by default the signal-to-noise ratio of
# `|w|`) go, and as many inactive weights with the largest gradient of the loss come in.
#
# This tutorial
#
# 1. builds a small CNN for Fashion-MNIST and fits dense mean-field VI as the reference,
# 2. fits SSVI at several densities with `SparseMeanFieldGuide` + `SubspaceScheduler`,
# 3. looks inside: what is stored, what the scheduler moved,
# 4. compares accuracy, NLL, ECE, model size, training FLOPs and time, and plots accuracy
#    against density.
#
# Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`
# (`/usr/share/datasets/fashion-mnist`). Figures go to `$TUTORIAL_OUT`; `SMOKE_TEST=1` runs
# everything on a few hundred images for a few steps (and on random images if the package is
# missing), so its numbers mean nothing.

# %%
import math
import os
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # write PNG files; never open a window
import matplotlib.pyplot as plt
import pyro
import torch
from torch import nn

from bayesdl.data import load_fashion_mnist
from bayesdl.guides import MeanFieldGuide, SparseMeanFieldGuide
from bayesdl.handlers.local_reparam_messenger import LocalReparamMessenger
from bayesdl.infer import SubspaceScheduler, fit, predict, tempered_kl_warmup
from bayesdl.infer.accounting import layer_costs, model_size, training_flops
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.metrics import classification_metrics
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior

SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"
OUT = os.environ.get("TUTORIAL_OUT") or tempfile.mkdtemp(prefix="bayesdl_tutorial04_")
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(1)

# Budgets: the full run (4 fits of 2 epochs on 20,000 images) takes about 10 minutes on one
# CPU core.
NUM_TRAIN = 512 if SMOKE_TEST else 20_000
NUM_TEST = 256 if SMOKE_TEST else 10_000
EPOCHS = 1 if SMOKE_TEST else 2
BATCH_SIZE = 128
UPDATE_EVERY = 2 if SMOKE_TEST else 100
DENSITIES = [0.2, 0.1, 0.05]
NUM_SAMPLES = 4 if SMOKE_TEST else 16

# %% [markdown]
# ## Data and network
#
# Images are scaled to [0, 1], shape `[N, 1, 28, 28]`. The network is a plain PyTorch CNN:
# two 3x3 convolutions with max-pooling and two linear layers, 421,642 weights and biases.

# %%
try:
    x_train, y_train = load_fashion_mnist("train", limit=NUM_TRAIN)
    x_test, y_test = load_fashion_mnist("test", limit=NUM_TEST)
except FileNotFoundError:
    if not SMOKE_TEST:
        raise
    print("Fashion-MNIST is not installed; the smoke run uses random images")
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.rand(NUM_TRAIN, 1, 28, 28, generator=g), torch.arange(NUM_TRAIN) % 10
    x_test, y_test = torch.rand(NUM_TEST, 1, 28, 28, generator=g), torch.arange(NUM_TEST) % 10
print("train", tuple(x_train.shape), "test", tuple(x_test.shape))


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


STEPS = EPOCHS * math.ceil(len(x_train) / BATCH_SIZE)
LAYERS = layer_costs(make_net(), x_train[:1])
for layer in LAYERS:
    print(f"{layer.name:10s} {layer.num_entries:7d} weights x {layer.positions:4d} positions")

# %% [markdown]
# ## One recipe for dense and sparse VI
#
# Both methods share everything but the guide: the prior `N(0, 1/fan_in)`, a categorical
# likelihood, Adam, one weight sample per step with the local reparameterisation trick, and
# the KL tempered by 0.1 and warmed up linearly over the first half of training
# (`tempered_kl_warmup`; the paper tempers by 0.01 with a much tighter prior).
#
# For SSVI the guide is a `SparseMeanFieldGuide`: every Linear/Conv2d weight except the
# first layer's (kept dense, as in the paper) stores `floor(density * n)` means and scales
# and the flat positions they sit at. The `SubspaceScheduler` is a `fit` callback: every
# `update_every` steps until 3/4 of training it drops a fraction `zeta_t` of each layer's
# active weights (0.3 at the start, cosine-decayed to 0) and grows as many.


# %%
def train(density: float, seed: int = 0) -> dict:
    pyro.set_rng_seed(seed)
    bnn = BNN(make_net(), LayerwiseNormalPrior("radford"), CategoricalLikelihood(len(x_train)))
    callbacks = []
    if density == 1.0:
        guide = MeanFieldGuide(bnn, init_scale=1e-3)
    else:
        guide = SparseMeanFieldGuide(
            bnn, density=density, init_loc="sparse_fan_in", init_scale=1e-3
        )
        callbacks.append(SubspaceScheduler(guide, STEPS, update_every=UPDATE_EVERY))
    t0 = time.perf_counter()
    fit(
        bnn,
        guide,
        (x_train, y_train),
        num_steps=STEPS,
        batch_size=BATCH_SIZE,
        lr=1e-3,
        kl_weight=tempered_kl_warmup(STEPS, kl_scale=0.1),
        handlers=[LocalReparamMessenger(conv="independent")],
        callbacks=callbacks,
        seed=seed,
    )
    fit_time = time.perf_counter() - t0
    pred = predict(bnn, guide, x_test, num_samples=NUM_SAMPLES, batch_size=500)
    scores = classification_metrics(pred.probs, y_test)
    num_updates = len(callbacks[0].history) if callbacks else 0
    active = {n: guide.num_active(n) for n in guide.sparse_site_names} if callbacks else None
    flops = training_flops(
        LAYERS, num_steps=STEPS, batch_size=BATCH_SIZE, active=active, num_updates=num_updates
    )
    size = model_size(guide, bnn)
    return {
        "density": density,
        "guide": guide,
        "scheduler": callbacks[0] if callbacks else None,
        "accuracy": scores["accuracy"],
        "nll": scores["nll"],
        "ece": scores["ece"],
        "random": size.num_random,
        "kib": size.num_bytes / 1024,
        "gflops": flops.total / 1e9,
        "time": fit_time,
    }


runs = [train(1.0)] + [train(d) for d in DENSITIES]

# %% [markdown]
# ## Inside the sparse guide
#
# The sparse layers store only their active entries: the parameters are vectors of length
# `s`, and `active_indices` says where they sit. The dense views (`loc`, `scale`) are zero
# everywhere else, in every sample too. The scheduler's history records how many weights it
# moved per layer at each update.

# %%
sparse = runs[2]  # density 0.1
guide = sparse["guide"]
for name in guide.site_names:
    if name.endswith("weight"):
        print(
            f"{name:10s} active {guide.num_active(name):6d} / {guide.num_entries(name):6d}"
            f"  stored mean shape {tuple(guide.active_loc(name).shape)}"
        )
mask = guide.mask("7.weight")
print(
    "inactive entries of the dense mean all zero:", bool((guide.loc("7.weight")[~mask] == 0).all())
)
for h in sparse["scheduler"].history[:3]:
    print(f"step {h['step']:5d}  drop fraction {h['drop_fraction']:.3f}  moved {h['moved']}")

# %% [markdown]
# ## Results
#
# Model size counts the bytes of the guide's state (parameters plus the int64 positions) and
# the network's deterministic parameters. Training FLOPs count the weight multiplications of
# both local-reparameterisation paths (mean and variance), forward and backward, plus one
# dense gradient per subspace update (`bayesdl.infer.accounting`). Wall time is that of
# `fit` on this machine: the sparse layers run PyTorch's dense kernels on zero-padded
# weights, so the FLOP savings are what a sparse kernel could exploit, not what this run
# saves in time.

# %%
print(f"{'method':12s} {'acc':>6s} {'NLL':>6s} {'ECE':>6s} {'random w':>9s} {'KiB':>7s}"
      f" {'GFLOPs':>8s} {'time s':>7s}")  # fmt: skip
for r in runs:
    label = "dense MFVI" if r["density"] == 1.0 else f"SSVI {r['density']:g}"
    print(
        f"{label:12s} {r['accuracy']:6.3f} {r['nll']:6.3f} {r['ece']:6.3f} {r['random']:9d}"
        f" {r['kib']:7.0f} {r['gflops']:8.0f} {r['time']:7.1f}"
    )

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
dens = [r["density"] for r in runs]
axes[0].plot(dens, [100 * r["accuracy"] for r in runs], "o-")
axes[0].set_xscale("log")
axes[0].set_xlabel("density (fraction of random weights)")
axes[0].set_ylabel("test accuracy [%]")
axes[0].set_title("accuracy vs density")
axes[1].plot(dens, [r["gflops"] / runs[0]["gflops"] for r in runs], "s-", label="training FLOPs")
axes[1].plot(dens, [r["kib"] / runs[0]["kib"] for r in runs], "^-", label="model size")
axes[1].set_xscale("log")
axes[1].set_yscale("log")
axes[1].set_xlabel("density")
axes[1].set_ylabel("relative to dense MFVI")
axes[1].legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "ssvi_accuracy_vs_density.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# The drop fraction follows `zeta_t = alpha / 2 (1 + cos(pi t / T_end))`: large swaps early,
# while the means are still moving, and a frozen subspace for the last quarter of training.

# %%
sched = sparse["scheduler"]
steps = list(range(STEPS))
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps, [sched.drop_fraction_at(t) for t in steps], label="zeta_t")
ax.plot([h["step"] for h in sched.history], [h["drop_fraction"] for h in sched.history], "o",
        label="updates")  # fmt: skip
ax.set_xlabel("step")
ax.set_ylabel("drop fraction")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "ssvi_drop_schedule.png"), dpi=120)
plt.close(fig)
print("figures in", OUT)

# %% [markdown]
# ## Where next
#
# * `SubspaceScheduler(removal_score=...)` takes any of the six scores of the paper
#   (`bayesdl.infer.removal_scores.REMOVAL_SCORES`) or your own `(loc, scale) -> score`.
# * `bayesdl compare --methods mfvi,ssvi` runs SSVI next to the other methods on any task.
# * `benchmarks/ssvi_fmnist.py` is the three-seed version of this comparison at densities
#   0.1 and 0.05.

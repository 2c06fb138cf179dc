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
# # GP-VAEs: imputing missing pixels, and linear-time training on long sequences
#
# A GP-VAE gives each latent channel a Gaussian-process prior over time, so a frame whose
# pixels are mostly missing borrows strength from its neighbours. This tutorial
#
# 1. generates Healing-Fashion-MNIST (`bayesdl.data.healing_fashion_mnist`): rotating,
#    binarised Fashion-MNIST sequences with 60% of the pixels missing at random,
# 2. trains the GP-VAE of Fortuin et al. (`bayesdl.vae.GPVAE`, banded posterior, masked
#    likelihood) with `bayesdl.infer.fit` and imputes the missing pixels,
# 3. checks that the Markovian GP-VAE (`bayesdl.vae.MarkovianGPVAE`, Kalman smoothing) has
#    exactly the dense model's KL for the same encoder outputs,
# 4. trains the Markovian GP-VAE on a long sequence with half of its frames missing
#    (`bayesdl.data.gp_trajectories`) and recovers the latent path,
# 5. times a training step of both models against the sequence length.
#
# Figures go to the folder named by `TUTORIAL_OUT` (a temporary folder by default);
# `SMOKE_TEST=1` shrinks everything so the script runs in seconds.

# %%
import os
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # write PNG files; never open a window
import matplotlib.pyplot as plt
import pyro
import torch
from torch import nn

from bayesdl.data import gp_trajectories, healing_fashion_mnist
from bayesdl.gp import MaternKernel
from bayesdl.infer import LocalELBO, fit
from bayesdl.vae import GPVAE, MarkovianGPVAE, MLPDecoder, SequenceEncoder

SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"
OUT = os.environ.get("TUTORIAL_OUT") or tempfile.mkdtemp(prefix="bayesdl_tutorial05_")
os.makedirs(OUT, exist_ok=True)

# Budgets: the full run takes about 7 minutes on one CPU core.
NUM_TRAIN = 64 if SMOKE_TEST else 3000
NUM_TEST = 16 if SMOKE_TEST else 200
EPOCHS = 1 if SMOKE_TEST else 10
HIDDEN = [64] if SMOKE_TEST else [256, 256]
LATENT = 4 if SMOKE_TEST else 16
LONG_T = 300 if SMOKE_TEST else 2000
LONG_STEPS = 5 if SMOKE_TEST else 200
LENGTHS = [30, 100, 300] if SMOKE_TEST else [30, 100, 300, 1000, 3000, 10000]
DENSE_MAX = 100 if SMOKE_TEST else 1000

torch.set_num_threads(1)
pyro.set_rng_seed(0)
print(f"figures go to {OUT}")

# %% [markdown]
# ## Healing-Fashion-MNIST
#
# Each sequence starts from one Fashion-MNIST image; every frame rotates the previous one by an
# angle drawn from `N(0, 15°²)`, frames are binarised at 127/255, and each pixel is then
# missing with probability 0.6 (as Fortuin et al. built Healing MNIST). The generator returns
# the observed sequences `x` (missing pixels set to 0), the boolean `mask` (`True` =
# observed) and the complete sequences `x_full`, deterministically from a seed.

# %%
train = healing_fashion_mnist(NUM_TRAIN, split="train", flatten=True, seed=0)
test = healing_fashion_mnist(NUM_TEST, split="test", flatten=True, seed=1)
print(
    "train", tuple(train.x.shape), "observed fraction", round(train.mask.float().mean().item(), 3)
)

# %% [markdown]
# ## The GP-VAE
#
# `GPVAE` is a Pyro model `gpvae(x, mask)` with an amortised guide `gpvae.guide(x, mask)`:
# the latent paths `"z" [B, L, T]` and the observations sit in one subsampled data plate, and
# only observed pixels enter the likelihood. Each latent channel has a Matérn-3/2 GP prior
# over the frame index (lengthscale 2, fixed here as in the paper). The encoder is a
# `SequenceEncoder`: a per-frame MLP, a 1-D convolution over 3 neighbouring frames, and three
# heads giving the mean and the bidiagonal precision factor of the banded posterior. The KL
# is in closed form (`LocalELBO(analytic_kl=True)`) and weighted by `beta = 0.8` (the paper's
# HMNIST setting).

# %%
torch.manual_seed(0)
encoder = SequenceEncoder(784, HIDDEN, LATENT, num_heads=3, window=3)
decoder = MLPDecoder(LATENT, HIDDEN[::-1], 784, activation=nn.ReLU)
kernel = MaternKernel(1.5, lengthscale=torch.full((LATENT,), 2.0), variance=1.0)
kernel.requires_grad_(False)
gpvae = GPVAE(encoder, decoder, LATENT, kernel, "bernoulli", posterior="banded",
              dataset_size=NUM_TRAIN, beta=0.8)  # fmt: skip
t0 = time.perf_counter()
result = fit(gpvae, gpvae.guide, (train.x, train.mask), num_epochs=EPOCHS, batch_size=64,
             loss=LocalELBO(analytic_kl=True), lr=1e-3, seed=0)  # fmt: skip
print(f"GP-VAE: {result.num_steps} steps in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Imputation
#
# `gpvae.impute(x, mask)` decodes the posterior mean path and fills the missing pixels with
# the Bernoulli means, leaving the observed ones alone. We score the squared error on the
# missing pixels against mean imputation (each pixel's mean over the observed training
# pixels); on the MNIST version (HMNIST) Fortuin et al. found the GP-VAE well below mean
# imputation.

# %%
missing = ~test.mask
imputed = gpvae.impute(test.x, test.mask)
pixel_mean = (train.x * train.mask).sum((0, 1)) / train.mask.sum((0, 1)).clamp_min(1)
mse_gpvae = (imputed - test.x_full)[missing].square().mean().item()
mse_mean = (pixel_mean.expand_as(test.x) - test.x_full)[missing].square().mean().item()
print(f"MSE on missing pixels: GP-VAE {mse_gpvae:.4f}, mean imputation {mse_mean:.4f}")

fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
rows = {"original": test.x_full[0], "observed (grey = missing)": None, "imputed": imputed[0]}
for r, (title, frames) in enumerate(rows.items()):
    for t in range(10):
        if frames is None:  # show missing pixels in grey
            img = torch.where(test.mask[0, t], test.x[0, t], torch.tensor(0.5))
        else:
            img = frames[t]
        axes[r, t].imshow(img.reshape(28, 28).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[r, t].set_axis_off()
    axes[r, 0].set_title(title, fontsize=8, loc="left")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "gpvae_imputation.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## The Markovian GP-VAE: same posterior, linear time
#
# A Matérn GP is a linear SDE, so its path is a Markov chain of small states. The
# `MarkovianGPVAE`'s encoder emits, from separate mean and variance heads, a Gaussian
# pseudo-observation `N(y_t | z_t, v_t)` of each latent channel per frame; the posterior
# `q(z) ∝ p(z) Π_t N(y_t | z_t, v_t)` comes from a Kalman filter and RTS smoother, and
# `KL(q || p) = Σ_t E_q log N(y_t | z_t, v_t) - log Z` with `log Z` the filter's marginal
# likelihood. A `GPVAE(posterior="pseudo")` computes the same posterior densely. With the same
# weights (in float64) the two KLs agree to round-off, on an irregular grid with missing
# frames:

# %%
torch.manual_seed(1)
small = dict(latent_dim=3, likelihood="gaussian")
enc_small, dec_small = SequenceEncoder(8, [16], 3), MLPDecoder(3, [16], 8)
markov = MarkovianGPVAE(enc_small, dec_small, kernel=MaternKernel(1.5, 3.0), **small).double()
dense = GPVAE(enc_small, dec_small, kernel=MaternKernel(1.5, 3.0), posterior="pseudo",
              **small).double()  # fmt: skip
x_small = torch.randn(2, 40, 8, dtype=torch.float64)
times = torch.cumsum(0.5 + torch.rand(40, dtype=torch.float64), 0)
frames_kept = torch.rand(2, 40) > 0.3
kl_markov = markov.kl(x_small, frames_kept, times)
kl_dense = dense.kl(x_small, frames_kept, times)
print("KL (Kalman):", kl_markov.tolist())
print("KL (dense): ", kl_dense.tolist())
print("max relative difference:", ((kl_markov - kl_dense).abs() / kl_dense).max().item())

# %% [markdown]
# ## A long sequence with missing frames
#
# `gp_trajectories` draws 2-channel Matérn-3/2 latent paths (lengthscale 20 steps) and
# observes them through a fixed random `tanh` network with Gaussian noise; here half of the
# frames are missing. Missing frames carry no pseudo-observation: the smoother steps over
# them with the longer time step. We fit a Markovian GP-VAE with a Gaussian likelihood (the
# GP hyperparameters are learned) and compare its posterior mean path with the truth after
# the best affine map (the latent space is identifiable only up to such a map, and the
# emission is nonlinear).

# %%
long = gp_trajectories(4, LONG_T, latent_dim=2, observed_dim=8, lengthscale=20.0,
                       noise_scale=0.1, missing_frame_rate=0.5, seed=0)  # fmt: skip
torch.manual_seed(0)
mgpvae = MarkovianGPVAE(SequenceEncoder(8, [64], 2), MLPDecoder(2, [64], 8), 2,
                        MaternKernel(1.5, lengthscale=torch.full((2,), 10.0)), "gaussian",
                        dataset_size=4, scale=0.1)  # fmt: skip
t0 = time.perf_counter()
result = fit(mgpvae, mgpvae.guide, (long.x, long.mask), num_steps=LONG_STEPS, batch_size=4,
             loss=LocalELBO(analytic_kl=True), lr=1e-2, seed=0)  # fmt: skip
print(
    f"Markovian GP-VAE, T = {LONG_T}: {result.num_steps} steps in {time.perf_counter() - t0:.1f} s"
)
print("learned lengthscales:", mgpvae.kernel.lengthscale.tolist())

path = mgpvae.posterior_mean(long.x, long.mask)  # [N, T, 2]
design = torch.cat([path.reshape(-1, 2), torch.ones(path[..., :1].numel(), 1)], 1)
coef = torch.linalg.lstsq(design, long.latent.reshape(-1, 2)).solution
aligned = (design @ coef).reshape(long.latent.shape)
err = ((aligned - long.latent).square().mean().sqrt() / long.latent.std()).item()
print(f"latent path RMSE after affine alignment: {err:.3f} (in units of the path's sd)")

fig, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
span = slice(0, min(LONG_T, 400))
steps = long.times[span]
for c, ax in enumerate(axes):
    ax.plot(steps, long.latent[0, span, c], color="k", lw=1, label="true path")
    ax.plot(steps, aligned[0, span, c].detach(), color="C1", lw=1, label="posterior mean (aligned)")
    kept = long.mask[0, span]
    rug = torch.full((int(kept.sum()),), long.latent[0, span, c].min().item() - 0.4)
    ax.plot(steps[kept], rug, "|", color="C0", ms=5, label="observed frames")
    ax.set_ylabel(f"channel {c}")
axes[0].legend(fontsize=7, ncol=3)
axes[1].set_xlabel("time step")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "mgpvae_long_sequence.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## Time per training step against the sequence length
#
# The dense GP-VAE factorises a `T x T` matrix per channel and sequence (`O(T^3)`); the
# Markovian one runs a parallel-scan Kalman smoother (`O(T)` work). We time one training step
# (forward and backward, 4 sequences, 4 latent channels, banded dense posterior) for growing
# `T`; the dense model stops at `T = 1000`. On a busy CPU the numbers are indicative only.

# %%


def step_seconds(model, x, repeats=3):
    loss = LocalELBO(analytic_kl=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss.differentiable_loss(model, model.guide, x).backward()
        times.append(time.perf_counter() - t0)
    return min(times)


timings = {"GP-VAE (dense, banded)": {}, "Markovian GP-VAE": {}}
for t in LENGTHS:
    x_t = torch.randn(4, t, 8)
    torch.manual_seed(0)
    models = {
        "Markovian GP-VAE": MarkovianGPVAE(
            SequenceEncoder(8, [32], 4), MLPDecoder(4, [32], 8), 4, likelihood="gaussian"
        ),  # fmt: skip
    }
    if t <= DENSE_MAX:
        models["GP-VAE (dense, banded)"] = GPVAE(
            SequenceEncoder(8, [32], 4, num_heads=3), MLPDecoder(4, [32], 8), 4,
            likelihood="gaussian", posterior="banded",
        )  # fmt: skip
    for name, model in models.items():
        timings[name][t] = step_seconds(model, x_t)
        print(f"T = {t:6d}  {name:24s} {timings[name][t] * 1e3:9.1f} ms per step")

fig, ax = plt.subplots(figsize=(5, 3.5))
for name, values in timings.items():
    ax.loglog(list(values), list(values.values()), "o-", label=name)
ax.set_xlabel("sequence length T")
ax.set_ylabel("seconds per training step")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "gpvae_time_vs_length.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## Where to go next
#
# * `posterior="diagonal"` gives the mean-field GP-VAE, `posterior="pseudo"` the dense twin of
#   the Markovian model; `beta` weights the KL.
# * `MarkovianGPVAE(method="sequential")` runs the Kalman recursions as a loop (the parallel
#   scan is the default); the GP machinery itself is in `bayesdl.gp`.
# * `benchmarks/gpvae_tasks.py` scores latent recovery on moving-ball videos, imputation on
#   Healing-Fashion-MNIST, and time per epoch against the sequence length.

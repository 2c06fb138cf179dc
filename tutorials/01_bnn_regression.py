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
# # Bayesian neural network regression
#
# This tutorial takes a plain PyTorch network and makes it Bayesian with bayesdl. We
#
# 1. load a 1-D regression toy with a gap in its training inputs,
# 2. turn a 3 x 50 tanh MLP into a Bayesian network: `net × prior × likelihood`,
# 3. fit it by MAP (a point estimate) and by mean-field variational inference,
# 4. predict with a few hundred posterior samples in one vectorised pass, score and plot,
# 5. save and reload the fitted guide, and export posterior samples to ArviZ,
# 6. repeat the recipe on a UCI benchmark with a learned noise level.
#
# The script runs top to bottom (`python tutorials/01_bnn_regression.py`). Figures go to the
# folder named by the `TUTORIAL_OUT` environment variable (a fresh temporary folder by
# default). `SMOKE_TEST=1` shrinks every loop so the whole script runs in seconds; the tests
# use it to check that the tutorial still works.

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

from bayesdl.data import load_toy1d, load_uci
from bayesdl.diagnostics import to_inference_data
from bayesdl.guides import DeltaGuide, MeanFieldGuide
from bayesdl.infer import fit, kl_warmup, predict
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.metrics import regression_metrics
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior

SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"
OUT = os.environ.get("TUTORIAL_OUT") or tempfile.mkdtemp(prefix="bayesdl_tutorial01_")
os.makedirs(OUT, exist_ok=True)

# Budgets: the full run takes about a minute on one CPU core.
MAP_STEPS = 20 if SMOKE_TEST else 3000
VI_STEPS = 20 if SMOKE_TEST else 3000
UCI_STEPS = 20 if SMOKE_TEST else 2000
NUM_SAMPLES = 10 if SMOKE_TEST else 500

# Networks this small run fastest on one CPU thread: there is too little work per operation
# to share out.
torch.set_num_threads(1)
pyro.set_rng_seed(0)
print(f"figures go to {OUT}")

# %% [markdown]
# ## The data: a 1-D toy with a gap
#
# `load_toy1d` draws one function from a Gaussian process with an RBF kernel and observes it
# with Gaussian noise of variance 0.1: 64 training points on `[-10, 10]` with a gap of width 8,
# and a test grid on `[-15, 15]` that continues the same function into the gap and beyond the
# data. Inputs and targets come standardised with the training statistics; `x_mean`, `x_std`,
# `y_mean` and `y_std` map them back.

# %%
data = load_toy1d(seed=0)
N = data.num_train
gap_lo, gap_hi = data.extra["gap"]
print(f"{N} training points, {data.num_test} test points, gap = ({gap_lo:.2f}, {gap_hi:.2f})")


def to_original_x(x: torch.Tensor) -> torch.Tensor:
    return (x * data.x_std + data.x_mean).squeeze(-1)


def to_original_y(y: torch.Tensor) -> torch.Tensor:
    return y * data.y_std + data.y_mean


x_train, x_test = to_original_x(data.x_train), to_original_x(data.x_test)
y_train, y_test = to_original_y(data.y_train), to_original_y(data.y_test)

fig, ax = plt.subplots(figsize=(7, 3))
ax.axvspan(gap_lo, gap_hi, color="0.92", label="gap")
ax.plot(x_test, y_test, ".", color="tab:green", ms=4, label="test targets")
ax.plot(x_train, y_train, "k.", label="training data")
ax.set(xlabel="x", ylabel="y", title="The 1-D gap toy")
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "toy1d_data.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## A plain network, made Bayesian
#
# The network is an ordinary `nn.Sequential`; bayesdl never asks you to subclass anything.
# `BNN(net, prior, likelihood)` turns each of its parameters into a Pyro sample site named by
# its dotted path (`"0.weight"`, `"0.bias"`, ...):
#
# * the prior `LayerwiseNormalPrior("radford")` gives every weight a `Normal(0, 1/fan_in)`
#   prior (Neal's scaling, whose infinite-width limit is a Gaussian process) and every bias a
#   `Normal(0, 1)`;
# * the likelihood `GaussianLikelihood(N, scale=...)` observes `y ~ Normal(f(x), scale²)`
#   inside a data plate of size `N`, so minibatches would be rescaled by `N / B` in one place.
#   We know the noise of this toy (variance 0.1 in the original units), so we fix the scale;
#   the targets are standardised, hence the division by `y_std`.


# %%
def make_mlp() -> nn.Module:
    """A plain 1 -> 50 -> 50 -> 50 -> 1 tanh MLP."""
    return nn.Sequential(
        nn.Linear(1, 50),
        nn.Tanh(),
        nn.Linear(50, 50),
        nn.Tanh(),
        nn.Linear(50, 50),
        nn.Tanh(),
        nn.Linear(50, 1),
    )


noise_scale = math.sqrt(data.extra["noise_variance"]) / float(data.y_std)


def make_bnn() -> BNN:
    likelihood = GaussianLikelihood(N, scale=noise_scale)
    return BNN(make_mlp(), LayerwiseNormalPrior("radford"), likelihood)


bnn = make_bnn()
print("random sites:", bnn.site_names)
print("network outputs for 5 inputs:", tuple(bnn(data.x_train[:5]).shape))

# %% [markdown]
# `bnn(x, y)` is a Pyro model: calling it outside inference draws weights from the prior and
# returns the network outputs `[B, 1]`. With `guide=None`, `predict` samples from the prior,
# which shows what the model believes before it sees any data: functions of about the right
# amplitude, but much smoother than the data (the prior's lengthscale is longer than the
# toy's). The data will have to pull the posterior towards wigglier functions.

# %%
prior_pred = predict(bnn, None, data.x_test, num_samples=NUM_SAMPLES)
fig, ax = plt.subplots(figsize=(7, 3))
for f in prior_pred.sample_means[:10]:
    ax.plot(x_test, to_original_y(f), lw=1)
ax.plot(x_train, y_train, "k.", label="training data")
ax.set(xlabel="x", ylabel="y", title="Ten functions drawn from the prior")
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "toy1d_prior.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## MAP: a point estimate
#
# `DeltaGuide` places a point mass on each weight, so maximising the ELBO maximises the log
# joint density `log p(y | w) + log p(w)`: a MAP estimate, i.e. weight decay set by the prior.
# `fit` runs the optimisation loop (Adam by default) with module-local parameters: the guide
# is an `nn.Module` and its `state_dict` holds all it learned.

# %%
map_bnn = make_bnn()
map_guide = DeltaGuide(map_bnn)
map_result = fit(map_bnn, map_guide, (data.x_train, data.y_train), num_steps=MAP_STEPS, seed=0)
print(f"MAP: {map_result.num_steps} steps in {map_result.elapsed:.1f} s")

# %% [markdown]
# ## Mean-field variational inference
#
# `MeanFieldGuide` fits an independent Normal `q(w_i) = Normal(mu_i, sigma_i²)` to every
# weight by maximising the ELBO,
# `E_q[log p(y | w)] - KL(q(w) || p(w))`. Three standard tricks help it train:
#
# * `reparam="local"` samples the *pre-activations* of each linear layer instead of its
#   weights (the local reparameterisation trick), which lowers the gradient variance;
# * `kl_weight=kl_warmup(n)` ramps the KL term from ~0 to 1 over the first `n` steps, so the
#   means can fit the data before the KL pulls them towards the prior;
# * the KL term is computed in closed form (Normal guide, Normal prior).

# %%
vi_bnn = make_bnn()
vi_guide = MeanFieldGuide(vi_bnn, init_scale=1e-2)
vi_result = fit(
    vi_bnn,
    vi_guide,
    (data.x_train, data.y_train),
    num_steps=VI_STEPS,
    reparam="local",
    kl_weight=kl_warmup(VI_STEPS // 4),
    seed=0,
)
print(f"MFVI: {vi_result.num_steps} steps in {vi_result.elapsed:.1f} s")

# %% [markdown]
# ## Predictions, vectorised over posterior samples
#
# `predict(bnn, guide, x, num_samples=S)` draws `S` weight sets from the guide and evaluates
# the network for all of them in *one* batched forward pass (`torch.func.vmap` over the
# sample dimension), not in a Python loop. The returned `Prediction` holds the predictive
# `mean` and `variance` `[B]`, split into `epistemic_variance` (spread of the sampled
# networks: what more data would remove) and `aleatoric_variance` (observation noise), and the
# per-sample means `[S, B]`.
#
# For large inputs, `batch_size=` evaluates them in chunks that share the same `S` weight
# samples, which bounds memory.

# %%
t0 = time.perf_counter()
vi_pred = predict(vi_bnn, vi_guide, data.x_test, num_samples=NUM_SAMPLES)
print(
    f"{NUM_SAMPLES} posterior samples at {data.num_test} inputs in {time.perf_counter() - t0:.3f} s"
)
print("mean", tuple(vi_pred.mean.shape), "per-sample means", tuple(vi_pred.sample_means.shape))

# a point mass gives the same network for every sample: one is enough
map_pred = predict(map_bnn, map_guide, data.x_test, num_samples=1)

# %% [markdown]
# ## Metrics
#
# `regression_metrics` scores a predictive by RMSE, the Gaussian negative log-likelihood
# (NLL, per point) of the moment-matched predictive, and the fraction of targets inside the
# central 95 % interval. Passing the per-sample means and noise variances adds the NLL of the
# full mixture predictive. We score in the original units of `y`: scale the mean by `y_std`
# and the variance by `y_std²`.


# %%
def score(pred, y: torch.Tensor) -> dict[str, float]:
    """Regression metrics in the original units of ``y`` (``y`` standardised)."""
    s = data.y_std
    return regression_metrics(
        pred.mean * s,
        pred.variance * s**2,
        y * s,
        samples_mean=pred.sample_means * s,
        samples_var=pred.sample_variances * s**2,
    )


def in_gap_std(pred) -> float:
    """Mean epistemic standard deviation (original units) on the test grid inside the gap."""
    inside = (x_test > gap_lo) & (x_test < gap_hi)
    return float(pred.epistemic_variance[inside].sqrt().mean() * data.y_std)


train_fit = {}
for name, b, g in [("MAP", map_bnn, map_guide), ("MFVI", vi_bnn, vi_guide)]:
    train_fit[name] = score(predict(b, g, data.x_train, num_samples=NUM_SAMPLES), data.y_train)
test_scores = {"MAP": score(map_pred, data.y_test), "MFVI": score(vi_pred, data.y_test)}
for name, m in test_scores.items():
    print(
        f"{name:5s} train RMSE {train_fit[name]['rmse']:.3f} | test RMSE {m['rmse']:.3f} "
        f"NLL {m['nll']:.3f} coverage {m['coverage_95']:.2f}"
    )
print(f"MFVI epistemic sd inside the gap: {in_gap_std(vi_pred):.3f}")

# %% [markdown]
# The mean-field fit hardly moves from the prior: its training RMSE is close to the standard
# deviation of `y` itself, and its predictive is a flat band. This is not a bug in the
# optimiser. With Neal-scaled Normal priors, the KL term of a mean-field posterior over a
# wide network outweighs what 64 data points can pay for, and the optimum of the ELBO ignores
# the data (Coker et al., *Wide mean-field Bayesian neural networks ignore the data*,
# AISTATS 2022). A common remedy is to *temper* the KL: weigh it by `kl_weight < 1`, as if the
# data set were larger. `kl_weight` accepts any `step -> weight` function, so we keep the
# warm-up and cap it at 0.1.

# %%
tempered_bnn = make_bnn()
tempered_guide = MeanFieldGuide(tempered_bnn, init_scale=1e-2)
warmup = kl_warmup(VI_STEPS // 4)
tempered_result = fit(
    tempered_bnn,
    tempered_guide,
    (data.x_train, data.y_train),
    num_steps=VI_STEPS,
    reparam="local",
    kl_weight=lambda step: 0.1 * warmup(step),
    seed=0,
)
tempered_pred = predict(tempered_bnn, tempered_guide, data.x_test, num_samples=NUM_SAMPLES)
train_fit["MFVI-T"] = score(
    predict(tempered_bnn, tempered_guide, data.x_train, num_samples=NUM_SAMPLES), data.y_train
)
test_scores["MFVI-T"] = score(tempered_pred, data.y_test)
m = test_scores["MFVI-T"]
print(
    f"MFVI-T train RMSE {train_fit['MFVI-T']['rmse']:.3f} | test RMSE {m['rmse']:.3f} "
    f"NLL {m['nll']:.3f} coverage {m['coverage_95']:.2f}"
)
print(f"MFVI-T epistemic sd inside the gap: {in_gap_std(tempered_pred):.3f}")

# %% [markdown]
# ## Predictive bands
#
# Each panel shows the predictive mean, a ±2 sd band of the epistemic part alone (dark) and
# of the total predictive (light). The MAP network has no epistemic uncertainty at all; the
# tempered mean-field posterior fits the data and widens its band in the gap and outside the
# training range, where the data say nothing.

# %%
panels = [
    ("MAP", map_pred),
    ("MFVI (KL weight 1)", vi_pred),
    ("MFVI (KL weight 0.1)", tempered_pred),
]
fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
for ax, (title, pred) in zip(axes, panels, strict=True):
    mean = to_original_y(pred.mean)
    total_sd = pred.variance.sqrt() * data.y_std
    epistemic_sd = pred.epistemic_variance.sqrt() * data.y_std
    ax.axvspan(gap_lo, gap_hi, color="0.94")
    ax.fill_between(x_test, mean - 2 * total_sd, mean + 2 * total_sd, color="tab:blue", alpha=0.2)
    ax.fill_between(
        x_test, mean - 2 * epistemic_sd, mean + 2 * epistemic_sd, color="tab:blue", alpha=0.35
    )
    ax.plot(x_test, mean, color="tab:blue", label="predictive mean")
    ax.plot(x_test, y_test, ".", color="tab:green", ms=3, label="test targets")
    ax.plot(x_train, y_train, "k.", ms=4, label="training data")
    ax.set(title=title, xlabel="x")
axes[0].set_ylabel("y")
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "toy1d_predictive.png"), dpi=100)
plt.close(fig)

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(vi_result.losses, label="KL weight 1")
ax.plot(tempered_result.losses, label="KL weight 0.1")
ax.set(xlabel="step", ylabel="loss", title="MFVI training: (KL-weighted) negative ELBO")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "toy1d_losses.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## Save and load
#
# Everything a fitted model knows is in two `state_dict` s: the BNN's (the network's buffers
# and any deterministic parameters) and the guide's (`locs` and `raw_scales`). Nothing lives
# in Pyro's global parameter store. To reload, rebuild the same objects and load the states;
# with the same seed, the reloaded model gives the same predictions.

# %%
path = os.path.join(OUT, "toy1d_mfvi.pt")
torch.save({"bnn": tempered_bnn.state_dict(), "guide": tempered_guide.state_dict()}, path)

loaded_bnn = make_bnn()
loaded_guide = MeanFieldGuide(loaded_bnn)
state = torch.load(path)
loaded_bnn.load_state_dict(state["bnn"])
loaded_guide.load_state_dict(state["guide"])

pyro.set_rng_seed(1)
before = predict(tempered_bnn, tempered_guide, data.x_train, num_samples=NUM_SAMPLES)
pyro.set_rng_seed(1)
after = predict(loaded_bnn, loaded_guide, data.x_train, num_samples=NUM_SAMPLES)
assert torch.equal(before.mean, after.mean) and torch.equal(before.variance, after.variance)
print(f"saved to {path} ({os.path.getsize(path) / 1024:.0f} KiB); reloaded predictions match")

# %% [markdown]
# ## Export to ArviZ
#
# `to_inference_data` draws posterior samples from the guide and posterior-predictive draws
# of the targets, and packs them with the observed data into an `arviz.InferenceData`, the
# format shared with MCMC output. The samples are independent draws from the guide, so the
# `chain` dimension only groups them.

# %%
idata = to_inference_data(
    tempered_bnn, tempered_guide, data.x_train, data.y_train, num_samples=NUM_SAMPLES, num_chains=2
)
print(idata)
posterior_bias = idata.posterior["6.bias"]
print(
    f"output bias: dims {dict(posterior_bias.sizes)}, posterior mean {float(posterior_bias.mean()):.3f}"
)
print("posterior-predictive draws:", dict(idata.posterior_predictive["obs"].sizes))

# %% [markdown]
# ## A UCI benchmark with a learned noise level
#
# The same recipe on real data: the yacht hydrodynamics set (308 rows, 6 inputs, a 90/10
# train/test split), with the usual single hidden layer of 50 ReLU units. The noise level is
# unknown, so `GaussianLikelihood(..., learn_scale=True)` learns it as a point estimate
# alongside the variational posterior over the weights. The data are fed in minibatches of
# 64; the likelihood scales each minibatch log-likelihood by `N / 64`. With 277 training
# points and 401 weights the full KL is affordable, so no tempering here.

# %%
uci = load_uci("yacht", split=0)
n_uci, d_uci = uci.x_train.shape
uci_net = nn.Sequential(nn.Linear(d_uci, 50), nn.ReLU(), nn.Linear(50, 1))
uci_bnn = BNN(
    uci_net,
    LayerwiseNormalPrior("radford"),
    GaussianLikelihood(n_uci, scale=0.1, learn_scale=True),
)
uci_guide = MeanFieldGuide(uci_bnn)
uci_result = fit(
    uci_bnn,
    uci_guide,
    (uci.x_train, uci.y_train),
    num_steps=UCI_STEPS,
    batch_size=64,
    reparam="local",
    kl_weight=kl_warmup(UCI_STEPS // 4),
    seed=0,
)
uci_pred = predict(uci_bnn, uci_guide, uci.x_test, num_samples=NUM_SAMPLES)
s = uci.y_std
uci_scores = regression_metrics(uci_pred.mean * s, uci_pred.variance * s**2, uci.y_test * s)
with torch.no_grad():
    learned_noise = float(uci_bnn.likelihood.scale * s)
print(
    f"yacht ({n_uci} train / {uci.num_test} test, {uci_result.elapsed:.1f} s): "
    f"RMSE {uci_scores['rmse']:.3f}, NLL {uci_scores['nll']:.3f}, "
    f"95% coverage {uci_scores['coverage_95']:.2f}, learned noise sd {learned_noise:.3f}"
)

# %% [markdown]
# ## Next: compare inference methods from the command line
#
# `bayesdl compare` runs every registered inference method on one task and writes a report
# (a table, `results.json` and figures):
#
# ```console
# $ bayesdl compare --task toy1d --out reports/toy1d
# $ bayesdl compare --task yacht --methods map,mfvi --split 3
# $ bayesdl list      # the available tasks and methods
# ```
#
# `make run` does the first of these on a fresh checkout.

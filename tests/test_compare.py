"""bayesdl.compare: the method registry, tasks, metrics in original units, the report folder."""

from __future__ import annotations

import json
import math

import pytest
import torch

import bayesdl.compare as C
from bayesdl.compare import (
    CompareSettings,
    MethodOutput,
    available_methods,
    available_tasks,
    compare,
    get_method,
    load_task,
    register_method,
)
from bayesdl.likelihoods import GaussianLikelihood, Prediction

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the method registry, so test registrations do not leak."""
    monkeypatch.setattr(C, "_METHODS", dict(C._METHODS))
    return C._METHODS


@pytest.fixture(scope="module")
def toy_task():
    return load_task("toy1d")


def _oracle_output(task, *, variance=1.0):
    """A fake method's output: predicts the standardised test targets exactly."""
    y = task.data.y_test
    p = Prediction(
        f_samples=y[None, :, None],
        mean=y.clone(),
        variance=torch.full_like(y, variance),
        epistemic_variance=torch.zeros_like(y),
        aleatoric_variance=torch.full_like(y, variance),
        sample_means=y[None].clone(),
        sample_variances=torch.full_like(y, variance)[None],
    )
    return MethodOutput(p, fit_time=0.5, predict_time=0.25)


# ------------------------------------------------------------------------------ registry


def test_builtin_methods_registered_in_order():
    names = available_methods()
    assert names[:2] == ("map", "mfvi")
    assert callable(get_method("map")) and callable(get_method("mfvi"))


def test_register_method_decorator_and_direct(registry):
    @register_method("fake_a")
    def fake_a(task, *, seed, settings):
        return None

    def fake_b(task, *, seed, settings):
        return None

    assert register_method("fake_b", fake_b) is fake_b
    assert get_method("fake_a") is fake_a and get_method("fake_b") is fake_b
    assert available_methods()[-2:] == ("fake_a", "fake_b")


def test_register_duplicate_name_raises(registry):
    with pytest.raises(ValueError, match="'map' is already registered"):
        register_method("map", lambda task, *, seed, settings: None)
    with pytest.raises(ValueError, match="already registered"):

        @register_method("mfvi")
        def again(task, *, seed, settings):
            return None

    assert available_methods()[:2] == ("map", "mfvi")


@pytest.mark.parametrize("name", ["", "a,b", "two words", None])
def test_register_bad_name_raises(registry, name):
    with pytest.raises(ValueError, match="name must be"):
        register_method(name, lambda task, *, seed, settings: None)


def test_register_non_callable_raises(registry):
    with pytest.raises(TypeError, match="fn must be callable"):
        register_method("not_callable", 3)
    assert "not_callable" not in available_methods()


def test_unknown_method_lists_registered():
    with pytest.raises(ValueError, match=r"unknown method 'nope'; registered methods: map, mfvi"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        compare("toy1d", ["map", "nope"], smoke=True)


@pytest.mark.parametrize(
    ("methods", "error", "match"),
    [
        ([], ValueError, "methods is empty"),
        (" , ", ValueError, "methods is empty"),
        (["map", "map"], ValueError, "'map' more than once"),
        ([1], TypeError, "methods must be"),
    ],
)
def test_bad_methods_argument(methods, error, match):
    with pytest.raises(error, match=match):
        compare("toy1d", methods, smoke=True)


# ------------------------------------------------------------------------------ tasks


def test_available_tasks():
    names = available_tasks()
    assert names[0] == "toy1d"
    assert {"boston", "yacht", "breast_cancer", "digits", "banana"} <= set(names)


def test_unknown_task_lists_available():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; available tasks: toy1d, "):
        load_task("nope")
    with pytest.raises(ValueError, match="unknown task"):
        compare("nope", smoke=True)
    with pytest.raises(TypeError, match="task must be"):
        load_task(3)


def test_task_names_are_canonicalised():
    assert load_task("Breast-Cancer").name == "breast_cancer"


def test_toy_task_model(toy_task):
    task = toy_task
    assert task.kind == "regression" and task.is_1d_regression
    bnn = task.make_bnn()
    linears = [m for m in bnn.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (1, 50),
        (50, 50),
        (50, 50),
        (50, 1),
    ]
    assert sum(isinstance(m, torch.nn.Tanh) for m in bnn.net) == 3
    lik = bnn.likelihood
    assert isinstance(lik, GaussianLikelihood) and not lik.learn_scale
    assert lik.dataset_size == task.num_train
    # the toy's noise variance 0.1 is in original units; the targets are divided by y_std
    expected = math.sqrt(0.1) / float(task.data.y_std)
    assert float(lik.noise_scale({}, torch.zeros(1))) == pytest.approx(expected, rel=1e-6)
    # a fresh network on every call
    assert task.make_bnn().net is not bnn.net


def test_classification_task_model():
    task = load_task("breast_cancer")
    assert task.kind == "classification" and not task.is_1d_regression
    bnn = task.make_bnn()
    linears = [m for m in bnn.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 100), (100, 2)]
    assert bnn(task.data.x_train[:4]).shape == (4, 2)


def test_uci_task_model():
    try:
        task = load_task("yacht")
    except ImportError as e:  # optional data package
        pytest.skip(str(e))
    bnn = task.make_bnn()
    linears = [m for m in bnn.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(task.input_dim, 50), (50, 1)]
    assert bnn.likelihood.learn_scale


def test_task_rejects_mismatched_kind(toy_task):
    with pytest.raises(ValueError, match="kind must be one of"):
        C.Task(
            "x",
            "ranking",
            toy_task.data,
            toy_task.net_fn,
            toy_task.prior_fn,
            toy_task.likelihood_fn,
        )
    with pytest.raises(TypeError, match="must be a ClassificationData"):
        C.Task(
            "x",
            "classification",
            toy_task.data,
            toy_task.net_fn,
            toy_task.prior_fn,
            toy_task.likelihood_fn,
        )


def test_settings_validation():
    with pytest.raises(ValueError, match="num_epochs must be a positive int"):
        CompareSettings(num_epochs=0)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        CompareSettings(num_samples=True)


# ------------------------------------------------------------------------------ metrics


def test_regression_metrics_are_in_original_units(registry, toy_task):
    """An oracle mean with standardised variance 1 has, in original units, RMSE 0, variance
    ``y_std**2`` and so NLL ``0.5 log(2 pi) + log(y_std)`` (the standardised NLL + log y_std)."""
    register_method("oracle", lambda task, *, seed, settings: _oracle_output(task))
    result = compare(toy_task, ["oracle"])
    row = result.rows[0]
    y_std = float(toy_task.data.y_std)
    expected_nll = 0.5 * math.log(2 * math.pi) + math.log(y_std)
    assert row["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert row["nll"] == pytest.approx(expected_nll, abs=1e-5)
    assert row["nll_mixture"] == pytest.approx(expected_nll, abs=1e-5)  # one component
    assert row["coverage_95"] == 1.0
    assert (row["fit_time"], row["predict_time"]) == (0.5, 0.25)


def test_method_must_return_method_output(registry, toy_task):
    register_method("broken", lambda task, *, seed, settings: {"mean": 0})
    with pytest.raises(TypeError, match="must return a MethodOutput"):
        compare(toy_task, ["broken"])


def test_method_prediction_shape_is_checked(registry, toy_task):
    def short(task, *, seed, settings):
        out = _oracle_output(task)
        out.prediction.mean = out.prediction.mean[:3]
        return out

    register_method("short", short)
    with pytest.raises(ValueError, match=r"shape \(100,\) for the 100 test points"):
        compare(toy_task, ["short"])


def test_method_receives_seed_and_settings(registry, toy_task):
    seen = {}

    def spy(task, *, seed, settings):
        seen.update(task=task, seed=seed, settings=settings)
        return _oracle_output(task)

    register_method("spy", spy)
    compare(toy_task, "spy", seed=7, smoke=True, num_epochs=3, num_samples=5, progress=False)
    assert seen["task"] is toy_task and seen["seed"] == 7
    assert seen["settings"] == CompareSettings(
        smoke=True, num_epochs=3, num_samples=5, progress=False
    )


def test_fit_receives_budget_and_progress(monkeypatch, toy_task):
    """The methods pass the budget, the MFVI recipe and the progress flag through to fit."""
    calls = []
    real_fit = C.fit

    def recording_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(C, "fit", recording_fit)
    result = compare(toy_task, "map,mfvi", num_epochs=2, progress=False, num_threads=1)
    map_kw, mfvi_kw = calls
    assert map_kw["num_epochs"] == 2 and map_kw["batch_size"] is None
    assert map_kw["progress"] is False and mfvi_kw["progress"] is False
    assert mfvi_kw["reparam"] == "local" and mfvi_kw["num_particles"] == 8
    assert callable(mfvi_kw["kl_weight"])
    # full batch on the 64-point toy: two epochs are two steps
    assert [result.outputs[m].info["num_steps"] for m in ("map", "mfvi")] == [2, 2]


# ------------------------------------------------------------------------------ runs and reports


def _check_finite_rows(result):
    for row in result.rows:
        for column in result.columns[1:]:
            assert math.isfinite(row[column]), (row["method"], column, row[column])


def test_compare_toy_smoke_writes_report(tmp_path, toy_task):
    out = tmp_path / "report"
    result = compare(
        toy_task, "map,mfvi", seed=0, out=out, smoke=True, progress=False, num_threads=1
    )

    assert [r["method"] for r in result.rows] == ["map", "mfvi"]
    assert result.columns == [
        "method", "rmse", "nll", "nll_mixture", "coverage_95", "fit_time", "predict_time"
    ]  # fmt: skip
    _check_finite_rows(result)
    for row in result.rows:
        assert row["rmse"] > 0 and 0 <= row["coverage_95"] <= 1
        assert row["fit_time"] > 0 and row["predict_time"] > 0
    # MAP predicts with the point estimate only: no epistemic variance
    map_pred = result.outputs["map"].prediction
    assert map_pred.num_samples == 1 and float(map_pred.epistemic_variance.abs().max()) == 0.0
    assert result.outputs["mfvi"].prediction.num_samples == C._SMOKE_SAMPLES
    assert result.outputs["mfvi"].info["num_steps"] == C._SMOKE_STEPS

    assert sorted(p.name for p in out.iterdir()) == ["bands.png", "report.md", "results.json"]
    assert (out / "bands.png").read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert result.to_markdown() in report
    assert "![bands](bands.png)" in report and "1→50→50→50→1" in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"]["name"] == "toy1d" and saved["seed"] == 0
    assert saved["settings"]["smoke"] is True
    assert [r["method"] for r in saved["rows"]] == ["map", "mfvi"]
    assert saved["rows"][1]["nll"] == pytest.approx(result.rows[1]["nll"])
    assert {"bayesdl", "torch", "pyro"} <= set(saved["versions"])
    assert result.out == out and result.figures == [out / "bands.png"]


def test_compare_is_reproducible(toy_task):
    a = compare(toy_task, "mfvi", seed=3, smoke=True, progress=False)
    b = compare(toy_task, "mfvi", seed=3, smoke=True, progress=False)
    c = compare(toy_task, "mfvi", seed=4, smoke=True, progress=False)
    assert a.rows[0]["nll"] == b.rows[0]["nll"]
    assert a.rows[0]["nll"] != c.rows[0]["nll"]


def test_compare_classification_smoke_writes_reliability(tmp_path):
    out = tmp_path / "bc"
    result = compare("breast_cancer", ["map", "mfvi"], out=out, smoke=True, progress=False)
    assert result.columns == [
        "method", "accuracy", "nll", "ece", "brier", "fit_time", "predict_time"
    ]  # fmt: skip
    _check_finite_rows(result)
    for row in result.rows:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and row["nll"] > 0
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert not (out / "bands.png").exists()
    assert "![reliability](reliability.png)" in (out / "report.md").read_text()


def test_failed_run_leaves_no_report(registry, tmp_path, toy_task):
    def crash(task, *, seed, settings):
        raise RuntimeError("boom")

    register_method("crash", crash)
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="boom"):
        compare(toy_task, ["crash"], out=out)
    assert not (out / "report.md").exists()


def test_report_files_are_replaced_atomically(registry, tmp_path, toy_task):
    """A second run replaces the files and leaves no temporary files behind."""
    register_method("oracle", lambda task, *, seed, settings: _oracle_output(task))
    out = tmp_path / "r"
    compare(toy_task, ["oracle"], out=out)
    first = (out / "results.json").read_text()
    compare(toy_task, ["oracle"], out=out, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["bands.png", "report.md", "results.json"]
    assert (out / "results.json").read_text() != first


def test_table_formats(registry, toy_task, capsys):
    register_method("oracle", lambda task, *, seed, settings: _oracle_output(task))
    result = compare(toy_task, ["oracle"])
    result.print()
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("toy1d: regression, 64 train / 100 test points")
    assert lines[1].split() == [
        "method", "RMSE", "NLL", "NLL", "(mixture)", "95%", "cover", "fit", "[s]", "predict", "[s]"
    ]  # fmt: skip
    assert lines[3].split()[0] == "oracle" and lines[3].split()[-2:] == ["0.50", "0.25"]
    # fixed width: every line of the table has the same length as the header rule
    assert len({len(line) for line in lines[1:3]}) == 1
    md = result.to_markdown().splitlines()
    assert md[0].startswith("| method | RMSE | NLL |") and md[1].startswith("|:---|---:|")
    assert md[2].startswith("| oracle | 0.0000 |")


def test_compare_restores_thread_count(toy_task):
    before = torch.get_num_threads()
    compare(toy_task, "map", smoke=True, num_threads=1, progress=False)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads must be"):
        compare(toy_task, "map", smoke=True, num_threads=0)
    with pytest.raises(ValueError, match="seed must be"):
        compare(toy_task, "map", smoke=True, seed=-1)


# ------------------------------------------------------------------------------ statistical


@pytest.fixture(scope="module")
def full_toy(tmp_path_factory):
    """The default ``bayesdl compare --task toy1d`` budgets for ``map`` and ``mfvi`` (about a
    minute on 2 cores; the samplers, NUTS above all, would add several minutes)."""
    out = tmp_path_factory.mktemp("toy")
    return out, compare("toy1d", "map,mfvi", out=out, seed=0, num_threads=1, progress=False)


@pytest.mark.slow
def test_full_toy_comparison_mfvi_beats_map_in_nll(full_toy):
    """On the toy's test grid (which spans the gap and extrapolates to [-15, 15]) a point
    estimate with only the noise variance is overconfident; MFVI's epistemic variance must give
    a lower test NLL (measured: MAP 15.2, MFVI 6.4 nats per point in original units, seed 0)."""
    out, result = full_toy
    assert (out / "bands.png").exists() and (out / "report.md").exists()
    rows = {r["method"]: r for r in result.rows}
    assert math.isfinite(rows["mfvi"]["nll"]) and math.isfinite(rows["mfvi"]["nll_mixture"])
    assert rows["mfvi"]["nll"] < rows["map"]["nll"]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="mean-field VI underfits this 3x50 tanh network on 64 points (the KL of ~5k weights "
    "outweighs the data term; a flat mean with epistemic variance at the data wins the ELBO, "
    "checked with 2000-particle ELBO estimates), so its std is not larger in the gap -- the "
    "known failure of wide/deep mean-field BNNs (Coker et al., AISTATS 2022). SG-MCMC and "
    "GP-matched priors (later issues) are the methods expected to pass this check.",
)
def test_full_toy_comparison_mfvi_is_more_uncertain_in_the_gap(full_toy):
    """The default ``bayesdl compare --task toy1d`` run, checked against a property every
    sensible Bayesian fit has on this toy.

    The toy's training inputs leave out an 8-unit gap (about 4.4 lengthscales of the GP that
    made the data), so the data say almost nothing about f inside it, while every training
    input is pinned down by itself and its neighbours. For any posterior that has learned from
    the data, Var[f(x) | data] in the gap must therefore exceed Var[f(x) | data] at the
    training inputs; with the same fixed noise added to both, the same holds for the predictive
    std. The check: the mean predictive std over the test-grid points strictly inside the gap
    (27 of the 100 points for the default data) is larger than the mean predictive std at the
    64 training inputs, both from 1000 posterior samples (Monte-Carlo error of a std estimate
    ~ std / sqrt(2 * 1000), about 2 %). MFVI's test NLL must be finite.
    """
    _, result = full_toy
    data = result.task.data
    fitted = result.outputs["mfvi"].fitted
    bnn, guide = fitted["bnn"], fitted["guide"]
    torch.manual_seed(0)
    at_train = C._predict(bnn, guide, data.x_train, num_samples=1000)
    on_grid = C._predict(bnn, guide, data.x_test, num_samples=1000)
    lo, hi = data.extra["gap"]
    x = data.x_test[:, 0] * data.x_std + data.x_mean
    in_gap = (x > lo) & (x < hi)
    assert int(in_gap.sum()) > 10
    std_gap = float(on_grid.std[in_gap].mean())
    std_train = float(at_train.std.mean())
    assert std_gap > std_train, (
        f"MFVI's mean predictive std in the gap ({std_gap:.3f}) is not larger than at the "
        f"training inputs ({std_train:.3f})"
    )


# ------------------------------------------------------------------------------ samplers


def test_sampler_methods_on_toy_smoke(toy_task):
    result = compare(toy_task, "sghmc,sgld,nuts", seed=0, smoke=True, progress=False)
    assert [r["method"] for r in result.rows] == ["sghmc", "sgld", "nuts"]
    _check_finite_rows(result)
    per_chain = C._SMOKE_SAMPLES // C._MCMC_CHAINS
    kernels = {"sghmc": "AdaptiveSGHMC", "sgld": "SGLD", "nuts": "NUTS"}
    for name, kernel in kernels.items():
        output = result.outputs[name]
        info = output.info
        assert info["kernel"] == kernel and info["num_chains"] == C._MCMC_CHAINS
        assert info["num_draws"] == C._MCMC_CHAINS * per_chain
        assert info["warmup"] == C._SMOKE_STEPS
        # every kept draw of every chain enters the prediction
        assert output.prediction.num_samples == C._MCMC_CHAINS * per_chain
        samples = output.fitted["result"].samples
        assert all(v.shape[:2] == (C._MCMC_CHAINS, per_chain) for v in samples.values())
    assert "mean_accept_prob" in result.outputs["nuts"].info


def test_samplers_put_a_prior_on_a_learned_noise_scale():
    """A task that learns its noise scale by point estimate is sampled with the scale as a
    latent site (LogNormal prior), so the draws carry noise-scale uncertainty."""
    try:
        task = load_task("yacht")
    except ImportError as e:  # optional data package
        pytest.skip(str(e))
    assert task.make_bnn().likelihood.learn_scale
    bnn = C._mcmc_bnn(task)
    assert not bnn.likelihood.learn_scale and bnn.likelihood.scale_prior is not None
    result = compare(task, "sgld", seed=0, smoke=True, progress=False, num_samples=8)
    _check_finite_rows(result)
    scales = [v for k, v in result.outputs["sgld"].fitted["result"].samples.items() if "scale" in k]
    assert len(scales) == 1 and bool((scales[0] > 0).all())


# ------------------------------------------------------------------------------ priors


def test_with_prior_names_and_errors(toy_task):
    assert C.with_prior(toy_task, "default") is toy_task
    fixed = C.with_prior(toy_task, "fixed-gaussian")
    assert type(fixed.make_bnn().prior).__name__ == "LayerwiseNormalPrior"
    assert "prior overridden: fixed-gaussian" in fixed.description
    with pytest.raises(ValueError, match="unknown prior 'laplace'"):
        C.with_prior(toy_task, "laplace")
    with pytest.raises(ValueError, match="only .* sample"):
        compare(toy_task, "map,sghmc", smoke=True, progress=False, prior="fixed-hierarchical")


def test_gp_matched_prior_with_sghmc_smoke(toy_task):
    """--prior gp-matched fits a GaussianWeightPrior (smoke budget) once and samples with it."""
    result = compare(toy_task, "sghmc", seed=0, smoke=True, progress=False, prior="gp-matched")
    _check_finite_rows(result)
    prior = result.outputs["sghmc"].fitted["bnn"].prior
    assert type(prior).__name__ == "GaussianWeightPrior" and len(prior.history) == 2
    assert not any(p.requires_grad for p in prior.parameters())


def test_hierarchical_prior_gets_gibbs_steps(toy_task):
    task = C.with_prior(toy_task, "fixed-hierarchical")
    kwargs = C._gibbs_kwargs(task)
    assert kwargs["gibbs_every"] == C._GIBBS_EVERY
    assert "0.weight.precision" in kwargs["gibbs_sites"]
    result = compare(toy_task, "sghmc", smoke=True, progress=False, prior="fixed-hierarchical")
    _check_finite_rows(result)
    samples = result.outputs["sghmc"].fitted["result"].samples
    assert bool((samples["0.weight.precision"] > 0).all())

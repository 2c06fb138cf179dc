"""Every benchmark runs in --quick mode and ends with its JSON summary line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_KEYS = {
    "bnn_svi_step.py": {"ratio_vs_torch_k1", "ratio_vs_torch_k8", "ratio_vs_pyro_k8"},
    # boston_wins_gp is also printed, but may be 0 in --quick mode (a count, not a ratio)
    "functional_prior_uci.py": {
        "boston_rmse_gp",
        "boston_rmse_fixed",
        "concrete_rmse_gp",
        "concrete_rmse_fixed",
    },
    "gp_scaling.py": {"t1e6_over_t1e5", "speedup_vs_gaussianhmm_t1e5"},
    "gpvae_tasks.py": {"moving_ball_error", "hmnist_imputation_mse", "seconds_per_epoch"},
    "hierarchical_sghmc.py": {"speedup"},
    "iwae_nll.py": {"digits_nll", "matches_reference"},
    "hmc_bnn.py": {"loop_speedup_vs_per_step", "loop_speedup_vs_eager", "speedup_vs_pyro"},
    "nuts_bnn.py": {"speedup_vs_pyro", "chains8_over_chains1_time"},
    "sghmc_step.py": {"ratio_vs_sgd"},
    # acc_drop_d010 is also printed, but may be <= 0 (a sign, not a ratio)
    "ssvi_fmnist.py": {"flops_ratio_d010", "time_ratio_d010", "table"},
    "vae_step.py": {"ratio_vs_torch_k1", "ratio_vs_torch_k50"},
}


def test_every_benchmark_is_covered():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED_KEYS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_benchmark_quick_run_prints_summary(name):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.strip().splitlines()]
    summary = lines[-1]
    assert EXPECTED_KEYS[name] <= summary.keys()
    # numbers (ratios) must be positive; tables (dicts of results) must be non-empty
    assert all(
        bool(summary[k]) if isinstance(summary[k], dict) else summary[k] > 0
        for k in EXPECTED_KEYS[name]
    )


def test_nuts_bnn_counts_the_gradients_of_every_compiled_path(monkeypatch):
    """``nuts_bnn.py``'s gradient counter (behind its gradients/s and ``speedup_vs_pyro``)
    counts, for the whole-trajectory loop, the per-sub-tree loop and the leaf blocks, as many
    chain-gradients as the eager kernel evaluates for the same draws (each compiled call's
    arguments are laid out differently: a miscounted chain axis once made it 4x too high)."""
    from bayesdl.infer.mcmc import NUTS, FunctionPotential, _compile, sample

    if not _compile.has_while_loop():
        pytest.skip("this torch has no while_loop operator")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nuts_bnn

    scales = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)

    def run(compile: bool) -> tuple[int, torch.Tensor]:
        potential = FunctionPotential(lambda z: 0.5 * ((z / scales) ** 2).sum(-1), 3)
        potential.dtype = torch.float64  # the runner's chains follow it
        count = nuts_bnn._count_gradients(potential)
        kernel = NUTS(max_tree_depth=4, compile=compile)
        if compile:
            nuts_bnn._count_compiled_gradients(kernel, count)
        result = sample(
            potential, kernel, num_samples=6, warmup=6, num_chains=3, seed=1, progress=False
        )
        return count[0], result.z

    eager_count, eager_z = run(False)
    modes = {"tree": (True, True), "subtree": (True, False), "blocks": (False, False)}
    for mode, (loop, whole_tree) in modes.items():
        monkeypatch.setattr(NUTS, "_subtree_loop", loop)
        monkeypatch.setattr(NUTS, "_whole_tree", whole_tree)
        count, z = run(True)
        # the same draws (up to round-off), so the same trees and the same leaves
        torch.testing.assert_close(z, eager_z, rtol=1e-9, atol=1e-9)
        assert count == eager_count, mode

"""Every benchmark runs in --quick mode and ends with its JSON summary line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

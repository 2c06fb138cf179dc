"""The ``bayesdl`` command: argument parsing, exit codes, ``list``, ``--version``, ``python -m``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bayesdl
from bayesdl.cli import build_parser, main


def test_parser_defaults():
    args = build_parser().parse_args(["compare", "--task", "toy1d"])
    assert (args.command, args.task, args.methods, args.out) == ("compare", "toy1d", None, None)
    assert (args.seed, args.split, args.smoke, args.epochs, args.samples) == (
        0,
        0,
        False,
        None,
        None,
    )
    assert args.threads == 1 and args.progress is None and args.device is None


def test_parser_options():
    args = build_parser().parse_args(
        "compare --task yacht --methods map,mfvi --out r --seed 3 --split 2 --smoke "
        "--epochs 7 --samples 9 --threads 2 --no-progress --quiet".split()
    )
    assert (args.task, args.methods, args.out, args.seed, args.split) == (
        "yacht",
        "map,mfvi",
        "r",
        3,
        2,
    )
    assert (args.smoke, args.epochs, args.samples, args.threads) == (True, 7, 9, 2)
    assert args.progress is False and args.quiet is True


def test_compare_smoke_run(tmp_path, capsys):
    out = tmp_path / "toy"
    code = main(
        [
            "compare",
            "--task",
            "toy1d",
            "--methods",
            "map,mfvi",
            "--out",
            str(out),
            "--smoke",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("toy1d: regression")
    assert lines[1].split()[:2] == ["method", "RMSE"]
    assert [line.split()[0] for line in lines[3:]] == ["map", "mfvi"]
    # progress lines and the report location go to stderr, not into the table
    assert "[1/2] map on toy1d" in captured.err and "report.md" in captured.err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["map", "mfvi"]
    assert (out / "report.md").exists() and (out / "bands.png").exists()


def test_compare_quiet_prints_only_the_table(capsys):
    code = main(["compare", "--task", "toy1d", "--methods", "map", "--smoke", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert len(captured.out.splitlines()) == 4


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy1d" in out and "breast_cancer" in out and "yacht" in out
    methods = out.split("methods:")[1].split()
    assert "map" in methods and "mfvi" in methods


def test_bad_task_exits_2_with_message(capsys):
    assert main(["compare", "--task", "nope", "--smoke"]) == 2
    err = capsys.readouterr().err
    assert "bayesdl compare: error: unknown task 'nope'" in err
    assert "available tasks: toy1d" in err


def test_bad_method_exits_2_with_message(capsys):
    assert main(["compare", "--task", "toy1d", "--methods", "map,nope", "--smoke"]) == 2
    assert "unknown method 'nope'; registered methods: map, mfvi" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["compare"],  # --task is required
        ["compare", "--task", "toy1d", "--epochs", "0"],
        ["compare", "--task", "toy1d", "--seed", "-1"],
        ["compare", "--task", "toy1d", "--threads", "many"],
        ["frobnicate"],
        [],  # no command
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip()


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bayesdl {bayesdl.__version__}"
    assert main(["compare", "--help"]) == 0
    assert "--smoke" in capsys.readouterr().out


def _env():
    root = str(Path(bayesdl.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_python_m_bayesdl_version():
    proc = subprocess.run(
        [sys.executable, "-m", "bayesdl", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bayesdl {bayesdl.__version__}"


def test_python_m_bayesdl_bad_task_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "bayesdl", "compare", "--task", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown task 'nope'" in proc.stderr


def test_console_script_installed():
    script = Path(sys.executable).parent / "bayesdl"
    if not script.exists():
        pytest.skip("the bayesdl console script is not installed in this environment")
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"bayesdl {bayesdl.__version__}"


def test_prior_option(capsys):
    assert build_parser().parse_args(["compare", "--task", "toy1d"]).prior == "default"
    args = build_parser().parse_args(["compare", "--task", "toy1d", "--prior", "gp-matched"])
    assert args.prior == "gp-matched"
    assert main(["compare", "--task", "toy1d", "--prior", "laplace", "--smoke"]) == 2
    assert "unknown prior 'laplace'" in capsys.readouterr().err
    code = main(
        "compare --task toy1d --methods sghmc --smoke --no-progress --quiet "
        "--prior fixed-hierarchical".split()
    )
    assert code == 0 and "sghmc" in capsys.readouterr().out

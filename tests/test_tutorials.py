"""Every tutorial runs end to end in smoke mode, and no tutorial goes untested.

The tests are parametrised over ``tutorials/*.py`` itself, so a new tutorial is run as soon as
it exists; :func:`test_tutorials_found` fails if the glob finds nothing (a moved folder would
otherwise make the suite pass vacuously).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))

# A smoke run takes a few seconds on one core; the limit only guards against a hang, and is
# generous because the suite may share the machine with other work.
_TIMEOUT_S = 600


def test_tutorials_found() -> None:
    assert TUTORIALS, f"no tutorials found under {ROOT / 'tutorials'}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_conventions(path: Path) -> None:
    """Named ``NN_topic.py``, percent format, with the SMOKE_TEST and TUTORIAL_OUT switches."""
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.py", path.name), (
        f"{path.name}: tutorials are named NN_topic.py"
    )
    text = path.read_text(encoding="utf-8")
    assert "# %% [markdown]" in text and re.search(r"^# %%$", text, re.M), (
        f"{path.name}: use percent-format cells (`# %%` code, `# %% [markdown]` text)"
    )
    assert 'os.environ.get("SMOKE_TEST") == "1"' in text, (
        f"{path.name}: needs the switch SMOKE_TEST = os.environ.get('SMOKE_TEST') == '1'"
    )
    assert "TUTORIAL_OUT" in text, f"{path.name}: write figures under $TUTORIAL_OUT"
    assert "plt.show(" not in text, f"{path.name}: save figures, never plt.show()"


@pytest.mark.tutorial
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path: Path, tmp_path: Path) -> None:
    """Run the script in a fresh interpreter, warnings as errors, as a reader would."""
    out = tmp_path / "out"
    env = dict(
        os.environ,
        SMOKE_TEST="1",
        TUTORIAL_OUT=str(out),
        BAYESDL_PROGRESS="0",
        MPLBACKEND="Agg",
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        cwd=tmp_path,  # nothing may depend on the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed (exit {proc.returncode})\n"
        f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n--- stderr (tail) ---\n{proc.stderr[-6000:]}"
    )
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures, f"{path.name} wrote no figure to TUTORIAL_OUT"
    for name in figures:
        assert (out / name).stat().st_size > 1000, f"{path.name}: {name} looks empty"

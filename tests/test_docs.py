"""The documentation: README quick start, coverage of the API and tutorials, the Sphinx build.

The Sphinx build itself is ``slow`` (``make test-slow``); the other checks are cheap and guard
against docs that silently fall behind the code (a new subpackage with no API page, a tutorial
with no docs page, a README example that no longer runs).
"""

from __future__ import annotations

import ast
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bayesdl
from bayesdl.data import CLASSIFICATION_DATASETS, UCI_DATASETS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
QUICKSTART = DOCS / "quickstart.py"


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.M | re.S)


def _public_modules() -> list[str]:
    """Top-level subpackages and modules of bayesdl that are not private."""
    names = [m.name for m in pkgutil.iter_modules(bayesdl.__path__)]
    return sorted(n for n in names if not n.startswith("_"))


def _toctree_entries(rst: Path) -> set[str]:
    entries, inside = set(), False
    for line in rst.read_text(encoding="utf-8").splitlines():
        if line.startswith(".. toctree::"):
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
        elif inside and line.strip() and not line.strip().startswith(":"):
            entries.add(line.strip())
    return entries


def test_readme_opens_with_make_run_and_make_test() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = _code_blocks(text, "console")[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
    # nothing but the title comes before it
    assert text.index("```console") < text.index("\n## ")
    assert text.lstrip().startswith("# bayesdl\n")


def test_readme_quickstart_is_docs_quickstart() -> None:
    blocks = _code_blocks(README.read_text(encoding="utf-8"), "python")
    assert blocks, "README.md has no python code block"
    assert blocks[0] == QUICKSTART.read_text(encoding="utf-8"), (
        "the README quick start and docs/quickstart.py differ; keep them identical"
    )


def test_quickstart_runs_and_learns(tmp_path: Path) -> None:
    env = dict(os.environ, BAYESDL_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(QUICKSTART)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    scores = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert set(scores) == {"rmse", "nll", "coverage_95"}
    # Targets are standardised, so predicting the training mean scores RMSE ~1; a fitted
    # model scores ~0.09 (published mean-field VI results on yacht are 1-1.6 in original units,
    # i.e. ~0.07-0.11 here). 0.3 separates "learned the data" from "did not" with a wide margin.
    assert scores["rmse"] < 0.3, scores
    assert 0.5 <= scores["coverage_95"] <= 1.0, scores


def test_every_public_module_has_an_api_page() -> None:
    api = DOCS / "api"
    listed = _toctree_entries(api / "index.rst")
    for name in _public_modules():
        page = api / f"{name}.rst"
        assert page.exists(), f"bayesdl.{name} has no API page docs/api/{name}.rst"
        assert f".. automodule:: bayesdl.{name}\n" in page.read_text(encoding="utf-8"), (
            f"docs/api/{name}.rst does not automodule bayesdl.{name}"
        )
        assert name in listed, f"docs/api/{name}.rst is not in the toctree of docs/api/index.rst"


def test_every_tutorial_has_a_docs_page() -> None:
    tutorials = sorted((ROOT / "tutorials").glob("*.py"))
    assert tutorials
    listed = _toctree_entries(DOCS / "tutorials" / "index.rst")
    for path in tutorials:
        page = DOCS / "tutorials" / f"{path.stem}.rst"
        assert page.exists(), f"{path.name} has no docs page docs/tutorials/{path.stem}.rst"
        text = page.read_text(encoding="utf-8")
        assert f".. literalinclude:: ../../tutorials/{path.name}\n" in text
        assert path.stem in listed, f"{page.name} is not in docs/tutorials/index.rst"


@pytest.mark.parametrize(
    "name, value",
    [("UCI_DATASETS", UCI_DATASETS), ("CLASSIFICATION_DATASETS", CLASSIFICATION_DATASETS)],
)
def test_data_page_lists_current_names(name: str, value: tuple[str, ...]) -> None:
    """docs/api/data.rst spells these tuples out by hand; they must follow the code."""
    text = (DOCS / "api" / "data.rst").read_text(encoding="utf-8")
    match = re.search(rf"\.\. py:data:: {name}\n(?:   :.*\n)*?   :value: (.*)\n", text)
    assert match, f"docs/api/data.rst does not describe {name}"
    assert ast.literal_eval(match.group(1)) == value


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    """The same build as ``make docs`` (warnings are errors), into a temporary folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + [str(DOCS), str(tmp_path / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stderr.strip() == "", proc.stderr[-6000:]
    assert (tmp_path / "html" / "index.html").exists()
    for page in ("api/nn.html", "tutorials/01_bnn_regression.html", "getting_started.html"):
        assert (tmp_path / "html" / page).exists(), page

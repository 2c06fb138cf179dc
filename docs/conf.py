"""Sphinx configuration of the bayesdl documentation.

Build with ``make docs`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``);
warnings are errors. The build is offline: no intersphinx, and tutorials are shown as source,
never executed.
"""

from __future__ import annotations

import os
import sys

# Document the checkout this file belongs to, even without ``pip install -e .``.
sys.path.insert(0, os.path.abspath(".."))

import bayesdl  # noqa: E402

project = "bayesdl"
author = "the bayesdl developers"
copyright = "2025, the bayesdl developers"
version = bayesdl.__version__
release = bayesdl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# Members follow each module's ``__all__``; signatures carry the type hints.
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
# Keep aliases such as ``SiteFilter`` short in rendered signatures.
autodoc_type_aliases = {}
autodoc_preserve_defaults = True

# No network at build time: no intersphinx. Unresolved cross-references to torch / pyro types
# are expected and not reported (nitpicky is off).
nitpicky = False

templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"bayesdl {release}"
html_theme_options = {
    "description": "Bayesian deep learning on Pyro",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []


def _skip_namedtuple_field_aliases(app, what, name, obj, skip, options):
    """Skip the ``Alias for field number N`` properties that ``typing.NamedTuple`` generates.

    Our NamedTuples (``WeightSite``, ``ReliabilityCurve``, ...) describe their fields in the
    class docstring's ``Attributes:`` section; documenting the generated aliases as well would
    describe every field twice (a duplicate-object warning under ``-W``).
    """
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_field_aliases)

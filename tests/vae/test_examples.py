"""The ``>>>`` examples in the docstrings of the VAE family run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "bayesdl.data.binarized_images",
    "bayesdl.infer.info_vae",
    "bayesdl.infer.iwae",
    "bayesdl.infer.local_elbo",
    "bayesdl.infer.mmd",
    "bayesdl.vae.evaluate",
    "bayesdl.vae.nets",
    "bayesdl.vae.pixel_likelihood",
    "bayesdl.vae.vae",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) in {name} failed (see output above)"

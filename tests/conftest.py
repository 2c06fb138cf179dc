"""Shared test set-up: seeds every test, clears Pyro state, enables validation, picks the device."""

from __future__ import annotations

import os

import pyro
import pytest
import torch

# small networks on a 2-core machine: one intra-op thread is faster and stabler
torch.set_num_threads(1)


def _device() -> torch.device:
    name = os.environ.get("BAYESDL_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.exit(f"BAYESDL_DEVICE={name} but CUDA is not available", returncode=2)
    return torch.device(name)


@pytest.fixture
def device() -> torch.device:
    """The device tests run on (``BAYESDL_DEVICE``, default ``cpu``)."""
    return _device()


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    os.environ.setdefault("BAYESDL_PROGRESS", "0")
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

"""The whole pipeline on CUDA (run with BAYESDL_DEVICE=cuda; skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from bayesdl.guides import MeanFieldGuide
from bayesdl.infer import fit, predict
from bayesdl.likelihoods import CategoricalLikelihood
from bayesdl.nn import BNN
from bayesdl.priors import LayerwiseNormalPrior

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("reparam", [None, "local", "flipout"])
def test_fit_and_predict_on_cuda(reparam):
    device = torch.device("cuda")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).to(device)
    bnn = BNN(net, LayerwiseNormalPrior("kaiming"), CategoricalLikelihood(64)).to(device)
    guide = MeanFieldGuide(bnn).to(device)
    x = torch.randn(64, 1, 8, 8, device=device)
    y = torch.randint(0, 3, (64,), device=device)
    result = fit(
        bnn,
        guide,
        (x, y),
        num_steps=20,
        batch_size=16,
        num_particles=4,
        reparam=reparam,
        sync_every=5,
    )
    assert all(torch.isfinite(torch.tensor(result.losses)))
    p = predict(bnn, guide, x, num_samples=8)
    assert p.probs.device.type == "cuda" and p.probs.shape == (64, 3)

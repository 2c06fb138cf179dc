"""Vectorised particle forward: ``K`` particles in one call equal ``K`` separate forwards.

Exactness by construction: inputs and weights are small integers stored in float64, and the
networks use only operations that keep every intermediate value a dyadic rational with far
fewer than 53 significant bits (matmul / conv sums of integer products, ReLU, max pooling,
2x2 average pooling = sum / 4, eval-mode BatchNorm with ``eps = 0`` and running variance 4).
Float64 arithmetic is then exact in any summation order or blocking, so the vmapped batched
kernels and the per-particle kernels must agree bit for bit: ``torch.equal``. One more test
uses Gaussian weights and ``tanh`` with a tolerance from a rounding-error bound.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch import nn
from torch.func import functional_call

from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.nn import BNN, particle_batch_shape, vectorized_forward
from bayesdl.priors import IIDPrior

U = 2.0**-53  # unit roundoff of float64


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _ints(*shape: int, bound: int = 2) -> torch.Tensor:
    return torch.randint(-bound, bound + 1, shape).double()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2),  # 8x8 -> 4x4
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 2x2
        nn.Conv2d(4, 3, 3, padding=1),
        nn.AvgPool2d(2),  # -> 1x1, sum / 4: exact
        nn.Flatten(),
        nn.Linear(3, 3),
    )


def _integer_params(net: nn.Module, batch: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {n: _ints(*batch, *p.shape) for n, p in net.named_parameters()}


def _shapes(net: nn.Module) -> dict[str, torch.Size]:
    return {n: p.shape for n, p in net.named_parameters()}


def _separate(net: nn.Module, params: dict[str, torch.Tensor], x, batch) -> torch.Tensor:
    """Reference: one plain forward per particle index, stacked to ``[*batch, B, *out]``."""
    outs = [
        functional_call(net, {n: v[tuple(idx)] for n, v in params.items()}, (x,))
        for idx in torch.cartesian_prod(*[torch.arange(k) for k in batch])
        .reshape(-1, len(batch))
        .tolist()
    ]
    return torch.stack(outs).reshape(*batch, *outs[0].shape)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_particles_equal_separate_forwards_exactly(kind):
    net = mlp() if kind == "mlp" else cnn()
    x = _ints(5, 4, bound=3) if kind == "mlp" else _ints(5, 2, 8, 8, bound=3)
    params = _integer_params(net, (7,))
    out = vectorized_forward(net, params, x, shapes=_shapes(net))
    assert out.shape == (7, 5, 3)
    assert torch.equal(out, _separate(net, params, x, (7,)))
    assert out.abs().max() < 2.0**40  # far from losing integer exactness (2^53)


@pytest.mark.parametrize("batch", [(2, 3), (2, 3, 1)])
def test_nested_particle_dims(batch):
    net = cnn()
    x = _ints(4, 2, 8, 8, bound=3)
    params = _integer_params(net, batch)
    out = vectorized_forward(net, params, x, shapes=_shapes(net))
    assert out.shape == (*batch, 4, 3)
    assert torch.equal(out, _separate(net, params, x, batch))


def test_particle_dims_broadcast_between_parameters():
    """Values ``[K1, 1, *shape]`` and ``[K2, *shape]`` broadcast to particles ``[K1, K2]``."""
    net = mlp()
    x = _ints(5, 4, bound=3)
    params = _integer_params(net, (2, 3))
    params["0.weight"] = params["0.weight"][:, :1]  # [2, 1, 8, 4]
    params["2.weight"] = params["2.weight"][0]  # [3, 8, 8]
    out = vectorized_forward(net, params, x, shapes=_shapes(net))
    full = {n: v.expand(2, 3, *_shapes(net)[n]) for n, v in params.items()}
    assert out.shape == (2, 3, 5, 3)
    assert torch.equal(out, _separate(net, full, x, (2, 3)))


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_chunk_size_gives_the_same_outputs(chunk_size):
    net = cnn()
    x = _ints(4, 2, 8, 8, bound=3)
    params = _integer_params(net, (8,))
    shapes = _shapes(net)
    out = vectorized_forward(net, params, x, shapes=shapes, chunk_size=chunk_size)
    assert torch.equal(out, vectorized_forward(net, params, x, shapes=shapes))
    assert torch.equal(out, _separate(net, params, x, (8,)))


def test_unbatched_parameters_and_forced_batch_shape():
    net = mlp()
    x = _ints(5, 4, bound=3)
    params = _integer_params(net, (4,))
    shared = {"4.weight": _ints(3, 8), "4.bias": _ints(3)}
    part = {n: v for n, v in params.items() if not n.startswith("4.")}
    out = vectorized_forward(net, part, x, shapes=_shapes(net), unbatched=shared)
    ref = _separate(net, {**part, **{n: v.expand(4, *v.shape) for n, v in shared.items()}}, x, (4,))
    assert torch.equal(out, ref)
    # no particle dims at all: a plain forward; a forced batch shape repeats it
    single = {n: v[0] for n, v in params.items()}
    plain = functional_call(net, single, (x,))
    assert torch.equal(vectorized_forward(net, single, x, shapes=_shapes(net)), plain)
    forced = vectorized_forward(
        net, {}, x, shapes=_shapes(net), unbatched=single, batch_shape=(3, 1)
    )
    assert forced.shape == (3, 1, 5, 3)
    assert torch.equal(forced, plain.expand(3, 1, 5, 3))


def test_randomness_differs_between_particles():
    """Dropout masks are drawn per particle (``randomness="different"``)."""
    net = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5), nn.Linear(64, 1))
    params = {n: p.detach().expand(6, *p.shape) for n, p in net.named_parameters()}
    out = vectorized_forward(net.train(), params, torch.randn(3, 4), shapes=_shapes(net))
    assert all(not torch.equal(out[0], out[k]) for k in range(1, 6))


def _rounding_bound(net: nn.Sequential, params: dict[str, torch.Tensor], x) -> torch.Tensor:
    """Forward error bound ``e`` with ``|fl(net(x)) - net(x)| <= e`` for Linear / Tanh / ReLU
    stacks in float64 (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1):

    * Linear, ``n`` inputs: ``e' = |W| e + g_{n+1} (|W| |h| + |b|)``, ``g_k = k u / (1 - k u)``,
      valid for any summation order, blocking or FMA use;
    * Tanh: 1-Lipschitz, evaluated to within 4 ulps (glibc and Sleef guarantee <= 2; doubled):
      ``e' = e + 4 u |tanh(h)|``; ReLU: 1-Lipschitz and exact, ``e' = e``.

    ``h`` are the computed activations (the O(u^2) difference between computed and exact
    activations in the bound is neglected)."""
    h, e = x, torch.zeros_like(x)
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            w, b = params[f"{i}.weight"], params[f"{i}.bias"]
            n = w.shape[1] + 1
            g = n * U / (1 - n * U)
            e = e @ w.abs().T + g * (h.abs() @ w.abs().T + b.abs())
            h = h @ w.T + b
        elif isinstance(layer, nn.Tanh):
            h = torch.tanh(h)
            e = e + 4 * U * h.abs()
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        else:  # pragma: no cover - the test nets use only these layers
            raise TypeError(type(layer))
    return e


def test_gaussian_weights_agree_to_rounding():
    net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.randn(9, 4)
    params = {n: torch.randn(6, *p.shape) for n, p in net.named_parameters()}
    out = vectorized_forward(net, params, x, shapes=_shapes(net))
    ref = _separate(net, params, x, (6,))
    bound = torch.stack(
        [_rounding_bound(net, {n: v[k] for n, v in params.items()}, x) for k in range(6)]
    )
    # both results are within the bound of the exact value, hence within twice it of each other
    assert ((out - ref).abs() <= 2 * bound).all()
    assert bound.max() < 1e-10  # the bound is ulp-level, not a loose tolerance


# ----------------------------------------------------------------------------- the BNN model
def _bnn(net, **kwargs) -> BNN:
    return BNN(net, IIDPrior(dist.Normal(0.0, 1.0)), GaussianLikelihood(None), **kwargs)


def _traced_values(bnn, fn, *args):
    trace = poutine.trace(fn).get_trace(*args)
    return trace, {n: trace.nodes[n]["value"] for n in bnn.site_names}


def _integer_prior_draws(bnn: BNN, batch: tuple[int, ...]):
    """A model conditioned on integer weight values ``[*batch, 1, *shape]`` for particle plates
    at dims ``-len(batch)-1 .. -2``."""
    values = {n: _ints(*batch, 1, *s) for n, s in bnn.param_shapes.items()}
    return poutine.condition(bnn, data=values), values


def test_bnn_particle_plate_returns_particles_by_data():
    bnn = _bnn(cnn())
    x = _ints(5, 2, 8, 8, bound=3)
    model, values = _integer_prior_draws(bnn, (6,))
    with pyro.plate("p", 6, dim=-2):
        f = model(x)
    assert f.shape == (6, 5, 3)
    flat = {n: v[:, 0] for n, v in values.items()}
    assert torch.equal(f, _separate(bnn.net, flat, x, (6,)))


def test_bnn_nested_particle_plates():
    bnn = _bnn(mlp())
    x = _ints(5, 4, bound=3)
    model, values = _integer_prior_draws(bnn, (2, 3))
    with pyro.plate("a", 2, dim=-3), pyro.plate("b", 3, dim=-2):
        trace = poutine.trace(model).get_trace(x)
    f = trace.nodes["_RETURN"]["value"]
    assert f.shape == (2, 3, 5, 3)
    assert trace.nodes["obs"]["value"].shape == (2, 3, 5, 3)
    flat = {n: v[:, :, 0] for n, v in values.items()}
    assert torch.equal(f, _separate(bnn.net, flat, x, (2, 3)))


def test_bnn_chunk_size_matches_unchunked():
    x = _ints(5, 2, 8, 8, bound=3)
    net = cnn()
    chunked, plain = _bnn(net, chunk_size=3), _bnn(cnn())
    plain.net.load_state_dict(chunked.net.state_dict())
    model, values = _integer_prior_draws(chunked, (8,))
    with pyro.plate("p", 8, dim=-2):
        f_chunked = model(x)
        f_plain = poutine.condition(plain, data=values)(x)
    assert torch.equal(f_chunked, f_plain)


def test_deterministic_parameters_via_site_filter():
    """An eval-mode BatchNorm kept deterministic: its parameters and running statistics are
    shared by all particles, only the Linear weights are particles."""
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, eps=0.0), nn.ReLU(), nn.Linear(8, 3))
    bn = net[1]
    with torch.no_grad():  # exact in float64: (h - m) / sqrt(4 + 0) * w + b
        bn.weight.copy_(_ints(8))
        bn.bias.copy_(_ints(8))
        bn.running_mean.copy_(_ints(8))
        bn.running_var.fill_(4.0)
    net.eval()
    bnn = _bnn(net, site_filter=lambda name, module: not isinstance(module, nn.BatchNorm1d))
    assert bnn.site_names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = _ints(6, 4, bound=3)
    model, values = _integer_prior_draws(bnn, (5,))
    with pyro.plate("p", 5, dim=-2):
        f = model(x)
    flat = {n: v[:, 0] for n, v in values.items()}
    assert torch.equal(f, _separate(net, flat, x, (5,)))
    assert torch.equal(bn.running_var, torch.full((8,), 4.0))  # eval mode: untouched


def test_bnn_particle_plate_at_data_dim_raises():
    bnn = _bnn(mlp())
    with pytest.raises(ValueError, match="collide at dim=-1"):
        with pyro.plate("p", 4, dim=-1):
            bnn(torch.randn(5, 4))


def test_particle_batch_shape():
    shapes = {"w": torch.Size([3, 2]), "b": torch.Size([3])}
    assert particle_batch_shape({"w": torch.zeros(3, 2), "b": torch.zeros(3)}, shapes) == ()
    assert particle_batch_shape({"w": torch.zeros(5, 1, 3, 2)}, shapes) == (5, 1)
    got = particle_batch_shape({"w": torch.zeros(5, 1, 3, 2), "b": torch.zeros(4, 3)}, shapes)
    assert got == (5, 4)
    assert particle_batch_shape({}, shapes) == ()


@pytest.mark.parametrize(
    "value, match",
    [
        (torch.zeros(5, 2, 3), r"'w' has shape \(5, 2, 3\).*\(3, 2\)"),
        (torch.zeros(2), r"'w' has shape \(2,\).*\(3, 2\)"),
    ],
)
def test_particle_batch_shape_rejects_values_not_ending_in_the_parameter_shape(value, match):
    with pytest.raises(ValueError, match=match):
        particle_batch_shape({"w": value}, {"w": torch.Size([3, 2])})


def test_particle_batch_shape_rejects_incompatible_particle_dims():
    """Particle dims ``[5]`` and ``[4]`` cannot broadcast: a ValueError that names the
    parameters, as bayesdl does for all bad input (not torch's RuntimeError)."""
    shapes = {"w": torch.Size([3, 2]), "b": torch.Size([3])}
    with pytest.raises(ValueError, match="'w'.*'b'|'b'.*'w'"):
        particle_batch_shape({"w": torch.zeros(5, 3, 2), "b": torch.zeros(4, 3)}, shapes)

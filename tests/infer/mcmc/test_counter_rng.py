"""The counter-based noise of the compiled SG-MCMC update.

* SplitMix64 against a pure-Python reference (integers mod 2^64) and its published first
  output for seed 0 (exact).
* Normals: Kolmogorov-Smirnov against N(0, 1), mean and variance, and the correlations that
  would reveal a broken construction (adjacent entries, the Box-Muller pair halves, two
  chains, two consecutive keys). With n draws, a sample correlation of independent variables
  has sd 1/√n, the mean sd 1/√n, the variance sd √(2/n): the bounds are 5 sd (false-alarm
  probability ~6e-7 each). The KS p-value bound 1e-4 is the test's false-alarm rate.
* Compiled equals eager: the same float expressions, fused by inductor (float64: a few ulps;
  float32: ~1e-6 relative, from vectorised log / sin / cos).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bayesdl.infer.mcmc import ChainRNG
from bayesdl.infer.mcmc.counter_rng import counter_normal, splitmix64, stream_offsets

_M = 2**64


def _splitmix_reference(x: int) -> int:
    z = x % _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % _M
    return z ^ (z >> 31)


def test_splitmix64_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**63), 2**63 - 1, (200,), generator=g, dtype=torch.int64)
    got = [int(v) % _M for v in splitmix64(x)]
    assert got == [_splitmix_reference(int(v)) for v in x]
    # SplitMix64 seeded with 0: its first three outputs (positions 1..3 of the stream)
    first = splitmix64(stream_offsets(3, "cpu"))
    assert [int(v) % _M for v in first] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counter_normal_is_standard_normal_and_independent(dtype):
    n = 200_001  # odd: the last pair loses its sine half
    keys = ChainRNG.from_seed(0, 2).keys()
    draws = counter_normal(keys, stream_offsets((n + 1) // 2, "cpu"), n, dtype)
    assert draws.shape == (2, n) and draws.dtype == dtype
    assert bool(torch.isfinite(draws).all())
    x = draws.double()
    for row in x:
        assert stats.kstest(row.numpy(), "norm").pvalue > 1e-4
        assert abs(float(row.mean())) < 5 / math.sqrt(n)
        assert abs(float(row.var()) - 1) < 5 * math.sqrt(2 / n)

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    h = (n + 1) // 2
    bound = 5 / math.sqrt(n // 2)
    assert abs(corr(x[0, :-1], x[0, 1:])) < bound  # neighbours
    assert abs(corr(x[0, : h - 1], x[0, h:])) < bound  # cosine and sine of one pair
    assert abs(corr(x[0, : h - 1] ** 2, x[0, h:] ** 2)) < bound  # ... and their radii
    assert abs(corr(x[0], x[1])) < bound  # two chains


def test_consecutive_keys_give_independent_draws():
    rng = ChainRNG.from_seed(3, 1)
    n = 100_000
    offsets = stream_offsets(n // 2, "cpu")
    a = counter_normal(rng.keys(), offsets, n, torch.float64)[0]
    b = counter_normal(rng.keys(), offsets, n, torch.float64)[0]
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(n)


def test_keys_follow_the_chain_generators():
    both = ChainRNG.from_seed(5, 3).keys()
    alone = ChainRNG.from_seed(5, 3).subset([2]).keys()
    assert both.shape == (3,) and both.dtype == torch.int64
    assert int(both[2]) == int(alone[0])
    assert len(set(both.tolist())) == 3


def test_stream_offsets_are_cached_per_size():
    assert stream_offsets(7, "cpu") is stream_offsets(7, "cpu")
    assert stream_offsets(8, "cpu").shape == (8,)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_compiled_equals_eager(dtype, tol):
    keys = torch.tensor([11, -7], dtype=torch.int64)
    n = 1001
    offsets = stream_offsets((n + 1) // 2, "cpu")
    eager = counter_normal(keys, offsets, n, dtype)
    compiled = torch.compile(counter_normal, dynamic=False)(keys, offsets, n, dtype)
    torch.testing.assert_close(compiled, eager, rtol=tol, atol=tol)

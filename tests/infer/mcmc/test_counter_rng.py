"""The counter-based noise of the compiled SG-MCMC update.

* Threefry-4x32-20 against the Random123 known-answer vectors (exact), eagerly and compiled.
* The float32 Box-Muller against the exact (float64) transform of the same bits: ~30 float32
  operations, each rounding by at most 2^-24 relative, so at most ~2e-6 of the radius.
* Normals: Kolmogorov-Smirnov against N(0, 1), mean and variance, and the correlations that
  would reveal a broken construction (adjacent entries, the Box-Muller pair halves, two
  chains, two consecutive keys). With n draws, a sample correlation of independent variables
  has sd 1/sqrt(n), the mean sd 1/sqrt(n), the variance sd sqrt(2/n): the bounds are 5 sd
  (false-alarm probability ~6e-7 each). The KS p-value bound 1e-4 is the test's false-alarm
  rate.
* Compiled equals eager (float64: a few ulps; float32: a few ulps of the radius).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bayesdl.infer.mcmc import ChainRNG
from bayesdl.infer.mcmc.counter_rng import (
    _box_muller32,
    block_counters,
    counter_normal,
    key_words,
    threefry4x32,
)

_KAT = [  # (counter, key, output) of Random123's kat_vectors for threefry4x32_20
    ([0] * 4, [0] * 4, [0x9C6CA96A, 0xE17EAE66, 0xFC10ECD4, 0x5256A7D8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 4, [0x2A881696, 0x57012287, 0xF6C7446E, 0xA16A6732]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0, 0x082EFA98, 0xEC4E6C89],
        [0x59CD1DBB, 0xB8879579, 0x86B5D00C, 0xAC8B6D84],
    ),
]


def _words(values):
    return tuple(torch.tensor(v - 2**32 if v >= 2**31 else v, dtype=torch.int32) for v in values)


@pytest.mark.parametrize("compiled", [False, True])
def test_threefry_matches_the_known_answers(compiled):
    fn = torch.compile(threefry4x32) if compiled else threefry4x32
    for counter, key, expected in _KAT:
        out = fn(_words(counter), _words(key))
        assert [int(w) % 2**32 for w in out] == expected


def test_key_words_split_int64_keys():
    keys = torch.tensor([0, -1, 2**62 + 5, -(2**63)], dtype=torch.int64)
    words = key_words(keys)
    assert words.dtype == torch.int32 and words.shape == (4, 2)
    for k, (lo, hi) in zip(keys.tolist(), words.tolist(), strict=True):
        assert (lo % 2**32) + (hi % 2**32) * 2**32 == k % 2**64
    with pytest.raises(TypeError, match="int64"):
        key_words(keys.to(torch.int32))


def test_float32_box_muller_is_the_exact_transform_to_rounding():
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randint(-(2**31), 2**31 - 1, (2, 200_000), generator=g, dtype=torch.int32)
    edges = torch.tensor([-1, -256, 0, 255, 2**31 - 1, -(2**31)], dtype=torch.int32)
    w1 = torch.cat([w1, edges])
    w2 = torch.cat([w2, edges.flip(0)])
    x, y = _box_muller32(w1, w2)
    u1 = (((w1.long() & 0xFFFFFFFF) >> 8) + 1).double() * 2.0**-24
    a = (w2.long() & 0xFFFFFF).double() * (math.pi * 2.0**-24) - 0.5 * math.pi
    radius = torch.sqrt(-2 * torch.log(u1)) * torch.where(w2 < 0, -1.0, 1.0).double()
    bound = 30 * 2.0**-24 * radius.abs() + 1e-30
    assert bool(((x.double() - radius * torch.cos(a)).abs() <= bound).all())
    assert bool(((y.double() - radius * torch.sin(a)).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counter_normal_is_standard_normal_and_independent(dtype):
    n = 200_001  # odd: the last pair loses its sine half
    keys = key_words(ChainRNG.from_seed(0, 2).keys())
    draws = counter_normal(keys, block_counters(n, "cpu"), n, dtype)
    assert draws.shape == (2, n) and draws.dtype == dtype
    assert bool(torch.isfinite(draws).all())
    x = draws.double()
    for row in x:
        assert stats.kstest(row.numpy(), "norm").pvalue > 1e-4
        assert abs(float(row.mean())) < 5 / math.sqrt(n)
        assert abs(float(row.var()) - 1) < 5 * math.sqrt(2 / n)

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    q = -(-n // 4)  # segment length: entries b, q + b, 2q + b, 3q + b come from block b
    bound = 5 / math.sqrt(q - 1)
    assert abs(corr(x[0, :-1], x[0, 1:])) < bound  # neighbours
    for s in range(1, 3):  # the other normals of the same block (the last segment is short)
        assert abs(corr(x[0, : q - 1], x[0, s * q : (s + 1) * q - 1])) < bound
        assert abs(corr(x[0, : q - 1] ** 2, x[0, s * q : (s + 1) * q - 1] ** 2)) < bound
    assert abs(corr(x[0], x[1])) < bound  # two chains


def test_consecutive_keys_give_independent_draws():
    rng = ChainRNG.from_seed(3, 1)
    n = 100_000
    blocks = block_counters(n, "cpu")
    a = counter_normal(key_words(rng.keys()), blocks, n, torch.float64)[0]
    b = counter_normal(key_words(rng.keys()), blocks, n, torch.float64)[0]
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(n)


def test_keys_follow_the_chain_generators():
    both = ChainRNG.from_seed(5, 3).keys()
    alone = ChainRNG.from_seed(5, 3).subset([2]).keys()
    assert both.shape == (3,) and both.dtype == torch.int64
    assert int(both[2]) == int(alone[0])
    assert len(set(both.tolist())) == 3


def test_block_counters_are_cached_per_size():
    assert block_counters(7, "cpu") is block_counters(8, "cpu")  # both 2 blocks
    assert block_counters(9, "cpu").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="num"):
        block_counters(0, "cpu")


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_compiled_equals_eager(dtype, tol):
    keys = key_words(torch.tensor([11, -7], dtype=torch.int64))
    n = 1001
    blocks = block_counters(n, "cpu")
    eager = counter_normal(keys, blocks, n, dtype)
    compiled = torch.compile(counter_normal, dynamic=False)(keys, blocks, n, dtype)
    torch.testing.assert_close(compiled, eager, rtol=tol, atol=tol)

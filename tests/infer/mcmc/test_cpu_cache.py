"""The caching CPU allocator the compiled steps run under on CPU (``_cpu_cache``): blocks are
reused by exact size inside the context, nothing is kept after it, tensors that outlive it stay
valid, and compiled draws are the same with and without it (bit for bit: the allocator changes
where buffers live, not what is computed)."""

from __future__ import annotations

import threading

import pytest
import torch

from bayesdl.infer.mcmc import NUTS, FunctionPotential, _compile, _cpu_cache, sample

pytestmark = pytest.mark.skipif(
    _compile.compile_unavailable_reason(torch.device("cpu")) is not None,
    reason="no C++ compiler",
)


def _stats():
    s = _cpu_cache.stats()
    assert s, "the allocator should build wherever inductor can compile"
    return s


def test_blocks_are_reused_by_size_inside_the_context_and_released_after_it():
    before = _stats()
    assert before["depth"] == 0 and before["cached_bytes"] == 0
    with _cpu_cache.caching_cpu_allocator() as on:
        assert on
        s0 = _stats()
        for _ in range(5):
            a = torch.full((3001,), 2.0)
            assert a.sum().item() == 6002.0
            del a
        s1 = _stats()
        # the first allocation of this size misses, the four after it reuse its block
        assert s1["hits"] - s0["hits"] >= 4
        assert s1["cached_bytes"] >= 3001 * 4
        kept = torch.arange(10_000.0)  # outlives the context
    after = _stats()
    assert after["depth"] == 0 and after["cached_bytes"] == 0
    assert not after["installed"] and after["default"]  # c10's default allocator is back
    # the surviving tensor's block is not handed out again: same-size tensors allocated and
    # overwritten in a new context land elsewhere and leave it intact
    with _cpu_cache.caching_cpu_allocator():
        others = [torch.full((10_000,), -1.0) for _ in range(3)]
        assert all(o.data_ptr() != kept.data_ptr() for o in others)
        del others
    assert torch.equal(kept, torch.arange(10_000.0))
    # outside, allocations do not pass through it
    misses = _stats()["misses"]
    torch.empty(777)
    assert _stats()["misses"] == misses


def test_contexts_from_several_threads():
    """Threads entering and leaving contexts at once: every tensor keeps its own values, and
    when the last context exits the default allocator is back with nothing cached."""

    def work(k):
        for i in range(200):
            with _cpu_cache.caching_cpu_allocator():
                a = torch.full((500 + k,), float(k * 1000 + i))
                b = a + 1.0
                assert b.sum().item() == (500 + k) * (k * 1000 + i + 1.0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = _stats()
    assert s["depth"] == 0 and s["cached_bytes"] == 0 and s["default"]


def test_contexts_nest_and_only_the_outermost_exit_restores_the_default():
    with _cpu_cache.caching_cpu_allocator():
        with _cpu_cache.caching_cpu_allocator() as inner:
            assert inner and _stats()["depth"] == 2
        assert _stats()["depth"] == 1
        torch.empty(1234)  # still served (and cached) by the outer context
        assert _stats()["cached_bytes"] >= 1234 * 4
    assert _stats()["depth"] == 0 and _stats()["cached_bytes"] == 0


def test_switched_off_the_context_does_nothing(monkeypatch):
    monkeypatch.setattr(_cpu_cache, "enabled", False)
    with _cpu_cache.caching_cpu_allocator() as on:
        assert not on
        assert _stats()["depth"] == 0


def test_without_a_compiler_it_warns_once_and_does_nothing(monkeypatch):
    monkeypatch.setattr(_cpu_cache, "_lib", None)
    monkeypatch.setattr(_cpu_cache, "_unavailable", None)
    monkeypatch.setattr(_cpu_cache, "_warned", False)
    monkeypatch.setattr(_cpu_cache, "find_cxx", lambda: None)
    with pytest.warns(RuntimeWarning, match="caching CPU allocator is unavailable"):
        with _cpu_cache.caching_cpu_allocator() as on:
            assert not on
    with _cpu_cache.caching_cpu_allocator() as on:  # no second warning
        assert not on


def test_a_failed_build_warns_once_and_does_nothing(monkeypatch):
    """A compiler that exits with an error (``false``): one warning naming the failure."""
    monkeypatch.setattr(_cpu_cache, "_lib", None)
    monkeypatch.setattr(_cpu_cache, "_unavailable", None)
    monkeypatch.setattr(_cpu_cache, "_warned", False)
    monkeypatch.setattr(_cpu_cache, "find_cxx", lambda: "false")
    with pytest.warns(RuntimeWarning, match="false failed"):
        with _cpu_cache.caching_cpu_allocator() as on:
            assert not on


def test_compiled_nuts_draws_the_same_with_and_without_the_cache(monkeypatch):
    """A compiled whole-trajectory NUTS run (float32, the benchmark's dtype) with the cache
    and without it: same draws, bit for bit; and the loop's allocations did hit the cache."""
    if not _compile.has_while_loop():
        pytest.skip("this torch has no while_loop operator")
    prec = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])

    def run():
        potential = FunctionPotential(lambda z: 0.5 * ((z @ prec) * z).sum(-1), dim=3)
        kernel = NUTS(max_tree_depth=5, compile=True)
        return sample(potential, kernel, num_samples=8, warmup=8, num_chains=2, seed=5,
                      progress=False)  # fmt: skip

    hits = _stats()["hits"]
    cached = run()
    assert _stats()["hits"] > hits
    monkeypatch.setattr(_cpu_cache, "enabled", False)
    hits = _stats()["hits"]
    plain = run()
    assert _stats()["hits"] == hits
    assert torch.equal(cached.z, plain.z)


def test_sample_runs_its_cpu_loop_under_the_cache_and_leaves_it_after_an_error(monkeypatch):
    """``sample`` on CPU: an eager SGHMC run's steps hit the cache, its draws equal those of a
    run without it, and the default allocator is back afterwards, also when a step raises."""
    from bayesdl.infer.mcmc import SGHMC

    def run(potential):
        return sample(potential, SGHMC(step_size=0.01), num_samples=20, warmup=5, num_chains=2,
                      seed=3, progress=False)  # fmt: skip

    quadratic = FunctionPotential(lambda z: 0.5 * (z * z).sum(-1), dim=4)
    hits = _stats()["hits"]
    cached = run(quadratic)
    assert _stats()["hits"] > hits
    assert _stats()["depth"] == 0 and _stats()["cached_bytes"] == 0
    calls = {"n": 0}

    def failing(z):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("boom")
        return 0.5 * (z * z).sum(-1)

    with pytest.raises(RuntimeError, match="boom"):
        run(FunctionPotential(failing, dim=4))
    assert _stats()["depth"] == 0 and _stats()["installed"] == 0
    monkeypatch.setattr(_cpu_cache, "enabled", False)
    assert torch.equal(run(quadratic).z, cached.z)


def test_quiet_without_a_compiler_records_nothing_and_warns_nothing(monkeypatch, recwarn):
    """``sample``'s loop (``quiet``): no compiler found means no build, no warning and no
    recorded failure, so a compiled step later still builds the allocator (and warns)."""
    monkeypatch.setattr(_cpu_cache, "_lib", None)
    monkeypatch.setattr(_cpu_cache, "_unavailable", None)
    monkeypatch.setattr(_cpu_cache, "_warned", False)
    monkeypatch.setattr(_cpu_cache, "find_cxx", lambda: None)
    with _cpu_cache.caching_cpu_allocator(quiet=True) as on:
        assert not on
    assert _cpu_cache._unavailable is None and not recwarn.list
    monkeypatch.setattr(_cpu_cache, "find_cxx", lambda: "false")  # a compiler that fails
    with _cpu_cache.caching_cpu_allocator(quiet=True) as on:
        assert not on
    assert "false failed" in _cpu_cache._unavailable and not recwarn.list
    with pytest.warns(RuntimeWarning, match="false failed"):  # the compiled steps' use warns
        with _cpu_cache.caching_cpu_allocator() as on:
            assert not on

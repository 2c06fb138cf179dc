"""``compile=`` of HMC and NUTS: argument checks, the fallback when ``torch.compile`` is
unavailable or fails, and compiled draws equal to eager ones up to round-off.

Tolerances: the compiled step computes the same float64 expressions as the eager one, but
inductor may fuse and reorder them (a different summation order in the dot products and the
network's reductions), so values differ by a few ulps per leapfrog step. Over the few dozen
steps of these short runs on well-conditioned targets that stays far below ``1e-9``; a
discrete decision (U-turn, multinomial choice, Metropolis test) flipping on such a
difference is a probability-~1e-12 event per decision.
"""

from __future__ import annotations

import pickle
import shutil

import pyro.distributions as dist
import pytest
import torch

from bayesdl.infer.mcmc import (
    HMC,
    NUTS,
    BNNPotential,
    ChainRNG,
    FunctionPotential,
    _compile,
    sample,
)
from bayesdl.infer.mcmc import hmc as hmc_module
from bayesdl.infer.mcmc.hmc import _leapfrog_builder

KERNELS = {
    "nuts": lambda **kw: NUTS(max_tree_depth=5, **kw),
    "hmc": lambda **kw: HMC(num_steps=7, **kw),
}
# a correlated Gaussian in 3 dimensions, float64
_PRECISION = torch.tensor(
    [[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64
)


@pytest.fixture(params=["tree", "subtree", "blocks"])
def subtree_loop(request, monkeypatch):
    """Compiled kernels every way they run on CPU: NUTS builds its whole trajectory as one
    ``while_loop`` call (over doublings, around a ``while_loop`` over a sub-tree's leaves), or
    one such call per sub-tree, and HMC each trajectory as one ``while_loop`` call; or (the
    path taken on other devices) NUTS in padded blocks of four leaves and HMC one compiled call
    per leapfrog step. The value: which NUTS builder must have run (``"tree"``, ``"subtree"``
    or ``"blocks"``); truthy when the loops are on."""
    loops = request.param != "blocks"
    if loops and not _compile.has_while_loop():
        pytest.skip("this torch has no while_loop operator")
    monkeypatch.setattr(NUTS, "_subtree_loop", loops)
    monkeypatch.setattr(NUTS, "_whole_tree", request.param == "tree")
    monkeypatch.setattr(HMC, "_trajectory_loop", loops)
    return request.param


def _builder(kernel):
    """The builder of the kernel's cached compiled step."""
    return kernel._compiled[2]


def _nuts_builder(mode):
    """The builder a compiled NUTS kernel must have used (no silent fallback to blocks)."""
    return {
        "tree": NUTS._tree_builder,
        "subtree": NUTS._subtree_builder,
        "blocks": NUTS._fused_builder,
    }[mode]


def _hmc_builder(mode):
    """The builder a compiled HMC kernel must have used."""
    return _leapfrog_builder if mode == "blocks" else HMC._trajectory_builder


def _skip_hmc_repeat(mode):
    """HMC has one loop: its runs under ``"subtree"`` would repeat those under ``"tree"``."""
    if mode == "subtree":
        pytest.skip("HMC runs the same trajectory loop as under 'tree'")


def _gaussian() -> FunctionPotential:
    potential = FunctionPotential(lambda z: 0.5 * ((z @ _PRECISION) * z).sum(-1), dim=3)
    potential.dtype = torch.float64  # the runner's chains follow it
    return potential


def _run(kernel, potential=None, *, num_chains: int = 2, seed: int = 3):
    potential = _gaussian() if potential is None else potential
    return sample(
        potential,
        kernel,
        num_samples=6,
        warmup=6,
        num_chains=num_chains,
        seed=seed,
        progress=False,
    )


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("value", ["yes", 1, None, "True"])
def test_compile_argument_is_checked(name, value):
    with pytest.raises(ValueError, match="compile must be False, True or 'auto'"):
        KERNELS[name](compile=value)


def _no_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compile_true_without_a_compiler_is_a_clear_error(name, monkeypatch):
    _no_compiler(monkeypatch)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler.*compile=False"):
        _run(KERNELS[name](compile=True))


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compile_auto_without_a_compiler_runs_eagerly(name, monkeypatch):
    eager = _run(KERNELS[name]())
    _no_compiler(monkeypatch)
    kernel = KERNELS[name](compile="auto")
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compiler.*running eagerly"):
        auto = _run(kernel)
    # the very same eager computation: equal bit for bit
    assert torch.equal(auto.z, eager.z)
    assert kernel.compile_time_s == 0.0


def _failing_compile(fn, **kwargs):
    def compiled(*args):
        raise RuntimeError("inductor exploded")

    return compiled


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_a_failed_compilation(name, monkeypatch):
    eager = _run(KERNELS[name]())
    monkeypatch.setattr(_compile.torch, "compile", _failing_compile)
    with pytest.raises(RuntimeError, match="inductor exploded.*compile=False"):
        _run(KERNELS[name](compile=True))
    kernel = KERNELS[name](compile="auto")
    with pytest.warns(RuntimeWarning, match="failed.*running eagerly"):
        auto = _run(kernel)
    assert torch.equal(auto.z, eager.z)
    # a kernel that holds a compiled step still pickles (the step is dropped, rebuilt on use)
    clone = pickle.loads(pickle.dumps(kernel))
    assert clone._compiled is None and clone.compile == "auto"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compiled_draws_equal_eager_draws(name, subtree_loop):
    if name == "hmc":
        _skip_hmc_repeat(subtree_loop)
    eager_kernel, compiled_kernel = KERNELS[name](), KERNELS[name](compile=True)
    eager = _run(eager_kernel)
    compiled = _run(compiled_kernel)
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    for key in ("num_steps", "diverging"):
        assert torch.equal(compiled.sample_stats[key], eager.sample_stats[key])
    assert eager_kernel.compile_time_s == 0.0
    assert compiled_kernel.compile_time_s > 0.0
    step = compiled_kernel._compiled[-1]
    compiles = step.num_compiles
    # one shape: a handful of graphs (inductor's output strides differ from fresh tensors'),
    # then no recompilation however long the run
    assert 1 <= compiles <= 4
    _run(compiled_kernel, seed=4)
    assert step.num_compiles == compiles
    expected = {"nuts": _nuts_builder, "hmc": _hmc_builder}[name](subtree_loop)
    assert _builder(compiled_kernel) is expected


@pytest.mark.slow
def test_compiled_hmc_masked_steps_match_eager(subtree_loop):
    """Jittered trajectory lengths (a different number of steps per chain) and a large step
    with a low divergence threshold (a third of the trajectories stop at a divergence): the
    masking of chains that stopped, and the loop's early exit once none moves, leave the draws
    equal to the eager ones."""
    _skip_hmc_repeat(subtree_loop)
    kw = {"step_size": 1.2, "trajectory_length": 6.0, "jitter": 0.6, "max_delta_energy": 2.0}
    kw.update(adapt_step_size=False, adapt_mass_matrix=False)
    eager = _run(HMC(**kw), num_chains=4)
    kernel = HMC(compile=True, **kw)
    compiled = _run(kernel, num_chains=4)
    stats = eager.sample_stats
    assert bool(stats["diverging"].any()) and not bool(stats["diverging"].all())
    steps = stats["num_steps"][~stats["diverging"]]
    assert int(steps.min()) < int(steps.max())  # chains ran trajectories of different lengths
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    for key in ("num_steps", "diverging", "accept_prob"):
        torch.testing.assert_close(compiled.sample_stats[key], stats[key])
    assert _builder(kernel) is _hmc_builder(subtree_loop)
    # no recompiles per trajectory length (the longest one is a tensor of the loop)
    assert kernel._compiled[-1].num_compiles <= 4


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_compiled_nuts_short_trees_match_eager(depth, subtree_loop):
    """Trees of at most 1, 3 and 7 leaves (loop: sub-trees of 1, 2 and 4 leaves; blocks: of 1,
    2 and 4 leaves per call, the sub-trees of 1 and 2 leaves of ``max_tree_depth=3`` padded):
    the draws must still equal the eager ones."""
    eager = _run(NUTS(max_tree_depth=depth))
    kernel = NUTS(max_tree_depth=depth, compile=True)
    compiled = _run(kernel)
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    for key in ("num_steps", "tree_depth", "diverging", "accept_prob"):
        torch.testing.assert_close(compiled.sample_stats[key], eager.sample_stats[key])
    assert 1 <= kernel._compiled[-1].num_compiles <= depth
    assert _builder(kernel) is _nuts_builder(subtree_loop)


@pytest.mark.slow
def test_compiled_nuts_divergences_and_padding(subtree_loop):
    """A large step with a low divergence threshold makes about half the iterations diverge,
    some trees after one or two leaves. Loop: a sub-tree must stop at the diverging leaf, and
    the loop end as soon as no chain builds. Blocks: sub-trees of one and two leaves run as
    padded calls of the four-leaf graph, and the padding leaves (diverging too) must count for
    nothing. Either way the draws and statistics equal the eager ones, from one graph."""
    kw = {"max_tree_depth": 4, "step_size": 1.3, "max_delta_energy": 2.0}
    kw.update(adapt_step_size=False, adapt_mass_matrix=False)
    eager = _run(NUTS(**kw), num_chains=4)
    kernel = NUTS(compile=True, **kw)
    compiled = _run(kernel, num_chains=4)
    stats = eager.sample_stats
    assert bool(stats["diverging"].any()) and not bool(stats["diverging"].all())
    assert bool((stats["tree_depth"] <= 2).any())  # trajectories that ended in padded blocks
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    for key in ("num_steps", "tree_depth", "diverging", "accept_prob"):
        torch.testing.assert_close(compiled.sample_stats[key], stats[key])
    assert kernel._compiled[-1].num_compiles == 1
    assert _builder(kernel) is _nuts_builder(subtree_loop)


@pytest.mark.slow
def test_compiled_nuts_deep_trees_match_eager(subtree_loop):
    """A fixed small step makes trees of up to 63 leaves: the loop runs up to 32 iterations, and
    sub-trees span several compiled blocks whose U-turn checks use the bookkeeping carried
    from one call to the next."""
    kw = {"max_tree_depth": 6, "step_size": 0.05}
    kw.update(adapt_step_size=False, adapt_mass_matrix=False)
    eager = _run(NUTS(**kw))
    kernel = NUTS(compile=True, **kw)
    compiled = _run(kernel)
    assert _builder(kernel) is _nuts_builder(subtree_loop)
    depth = eager.sample_stats["tree_depth"]
    assert int(depth.max()) >= 5  # sub-trees of 16 or more leaves were built
    assert bool((depth < 6).any())  # and some trajectories ended by a U-turn, not the cap
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    for key in ("num_steps", "tree_depth", "diverging", "accept_prob"):
        torch.testing.assert_close(compiled.sample_stats[key], eager.sample_stats[key])


@pytest.mark.slow
def test_compiled_nuts_on_a_bnn_potential_matches_eager(subtree_loop):
    """A network potential built from Pyro distributions, with validation on (conftest): the
    compiled step runs with it off, so even the ``while_loop`` (which admits no graph break)
    compiles."""
    from bayesdl.likelihoods import GaussianLikelihood
    from bayesdl.nn import BNN
    from bayesdl.priors import IIDPrior

    torch.manual_seed(0)
    x = torch.randn(30, 2, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(30, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    noise = dist.LogNormal(torch.tensor(-1.0, dtype=torch.float64), 1.0)
    bnn = BNN(
        net.double(),
        IIDPrior(dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)),
        GaussianLikelihood(30, scale_prior=noise),
    )
    potential = BNNPotential(bnn, (x, y))
    eager = _run(NUTS(max_tree_depth=4), potential)
    kernel = NUTS(max_tree_depth=4, compile=True)
    compiled = _run(kernel, potential)
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    assert _builder(kernel) is _nuts_builder(subtree_loop)


@pytest.mark.slow
def test_compiled_hmc_falls_back_to_single_steps_when_the_loop_cannot_compile():
    """A potential with a graph break cannot be traced inside a ``while_loop``: the kernel
    runs that potential's trajectories as separate compiled leapfrog steps (which tolerate
    graph breaks), with the same draws as the eager kernel, and still loops for another
    potential."""
    if not _compile.has_while_loop():
        pytest.skip("this torch has no while_loop operator")

    def broken(z):
        torch._dynamo.graph_break()
        return 0.5 * ((z @ _PRECISION) * z).sum(-1)

    potential = FunctionPotential(broken, dim=3)
    potential.dtype = torch.float64
    eager = _run(KERNELS["hmc"](), potential)
    kernel = KERNELS["hmc"](compile=True)
    assert kernel._use_loop(kernel._trajectory_loop, torch.device("cpu"), potential)
    compiled = _run(kernel, potential)
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    assert kernel._loop_failed_for is potential and _builder(kernel) is _leapfrog_builder
    # the failed loop's compile time, moved aside when the single step replaced it
    assert kernel._compile_time_before > 0.0
    _run(kernel)  # a traceable potential: the loop again
    assert _builder(kernel) is HMC._trajectory_builder
    clone = pickle.loads(pickle.dumps(kernel))  # a resumed run tries the loop again
    assert clone._loop_failed_for is None


def test_hmc_trajectory_loop_equals_the_step_loop_and_stops_early():
    """The trajectory function run eagerly (``run_while_loop`` falls back to a Python loop
    outside compilation) equals the per-step loop of :func:`_masked_step`, and stops once no
    chain moves: a divergence after the first step of every chain ends it there."""
    torch.manual_seed(0)
    potential = _gaussian()
    vg = potential.value_and_grad
    z = torch.randn(3, 3, dtype=torch.float64)
    u, g = vg(z, None)
    r = torch.randn(3, 3, dtype=torch.float64)
    inv_mass = torch.ones(3, 3, dtype=torch.float64)
    h0 = u + 0.5 * (r**2).sum(-1)
    steps = torch.tensor([2, 5, 7])
    step = torch.full((3, 1), 0.3, dtype=torch.float64)
    flags = (torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
             torch.zeros(3, dtype=torch.long))  # fmt: skip

    def step_loop(max_delta, step):
        leapfrog = _leapfrog_builder(vg)
        state = (z, r, u, g, *flags)
        for n in range(7):
            out = leapfrog(None, state[0], state[1], state[3], step, inv_mass)
            state = hmc_module._masked_step(out, max_delta, h0, steps, n, *state)
        return state

    calls = [0]

    def counted(z, batch):
        calls[0] += 1
        return vg(z, batch)

    for max_delta, step_, want in ((1000.0, step, [2, 5, 7]), (0.0, 40 * step, [1, 1, 1])):
        trajectory = hmc_module._trajectory_builder(counted, max_delta)
        calls[0] = 0
        got = trajectory(None, z, r, u, g, step_, inv_mass, h0, steps, torch.tensor(7), *flags)
        assert calls[0] == max(want)  # the loop ends with the last moving chain
        expected = step_loop(max_delta, step_)
        assert got[-1].tolist() == want  # steps taken per chain
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


@pytest.mark.slow
def test_compiled_nuts_falls_back_to_blocks_when_the_loop_cannot_compile():
    """A potential with a graph break cannot be traced inside a ``while_loop``: the kernel
    builds that potential's sub-trees in blocks of leaves instead (which tolerate graph
    breaks), with the same draws as the eager kernel, and still loops for another potential."""

    def broken(z):
        torch._dynamo.graph_break()
        return 0.5 * ((z @ _PRECISION) * z).sum(-1)

    potential = FunctionPotential(broken, dim=3)
    potential.dtype = torch.float64
    eager = _run(NUTS(max_tree_depth=4), potential)
    kernel = NUTS(max_tree_depth=4, compile=True)
    assert kernel._use_subtree_loop(torch.device("cpu"))
    compiled = _run(kernel, potential)
    torch.testing.assert_close(compiled.z, eager.z, rtol=0.0, atol=1e-9)
    assert kernel._loop_failed_for is potential and _builder(kernel) is NUTS._fused_builder
    # the failed loop step's time, moved aside when the block step replaced it
    assert kernel._compile_time_before > 0.0
    assert kernel.compile_time_s > kernel._compile_time_before
    _run(kernel)  # a traceable potential: the loop again
    assert _builder(kernel) is NUTS._tree_builder
    clone = pickle.loads(pickle.dumps(kernel))  # a resumed run tries the loop again
    assert clone._loop_failed_for is None


def test_compiled_step_reraise_tells_compile_failures_from_runtime_errors(monkeypatch):
    """``reraise=True``: a failure of the first call (or of any call that compiled) is a
    :class:`CompileFailed` from the compiler's error; an error of a graph that already ran
    propagates unchanged."""
    calls = []

    def flaky_compile(fn, **kwargs):
        def compiled(*args):
            calls.append(args)
            if len(calls) in (1, 3):
                raise ValueError(f"call {len(calls)} failed")
            return fn(*args)

        return compiled

    monkeypatch.setattr(_compile.torch, "compile", flaky_compile)
    step = _compile.CompiledStep(lambda x: x + 1, mode=True, what="a step", device="cpu",
                                 reraise=True)  # fmt: skip
    with pytest.raises(_compile.CompileFailed, match="a step failed.*call 1 failed") as info:
        step(torch.zeros(1))
    assert isinstance(info.value.__cause__, ValueError)
    assert torch.equal(step(torch.zeros(1)), torch.ones(1))
    with pytest.raises(ValueError, match="call 3 failed"):
        step(torch.zeros(1))


def test_inductor_options_exist_in_this_torch(monkeypatch):
    """The CPU options name real inductor settings (torch.compile rejects unknown ones), and an
    option this torch lacks is left out instead of failing the compilation."""
    from torch._inductor import config

    options = _compile.inductor_options(torch.device("cpu"))
    assert options and all(_compile._has_inductor_option(k) for k in options)
    for key in options:  # the dotted names resolve to the settings the docs describe
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        # booleans; vec_isa_ok is a tristate whose default None means "probe the compiler";
        # the cacheable operators are a dict of names to versions
        assert (
            isinstance(node, bool)
            or (key == "cpp.vec_isa_ok" and node is None)
            or (key == "unsafe_marked_cacheable_functions" and isinstance(node, dict))
        )
    if config.cpp.vec_isa_ok is None:  # (not set through TORCHINDUCTOR_VEC_ISA_OK)
        assert options.get("cpp.vec_isa_ok") is True
    assert _compile.inductor_options(torch.device("meta")) == {}
    monkeypatch.setattr(
        _compile, "_has_inductor_option", lambda key: key != "cpp.use_decompose_tanh"
    )
    assert set(_compile.inductor_options(torch.device("cpu"))) == set(options) - {
        "cpp.use_decompose_tanh"
    }


def test_the_fx_graph_cache_keeps_while_loops_and_tells_their_bodies_apart():
    """The CPU options let inductor's FX-graph cache keep graphs holding a ``while_loop``
    (without them it bypasses the cache, and every process lowers the trajectory loops
    again). Two loops that differ only inside their body get graphs of their own: the cache
    key holds the body's code, so the second is a miss, not a hit on the first's entry."""
    from torch._dynamo.utils import counters
    from torch._inductor import config

    if not _compile.has_while_loop() or _compile._while_loop_op_name() is None:
        pytest.skip("this torch has no while_loop operator its FX-graph cache can keep")
    if not config.fx_graph_cache:
        pytest.skip("inductor's FX-graph cache is off in this environment")
    assert (
        _compile._while_loop_op_name()
        in (_compile.inductor_options(torch.device("cpu"))["unsafe_marked_cacheable_functions"])
    )

    def make(shift):
        def loop(n, x):
            def cond(i, y):
                return i < n

            def body(i, y):
                return i + 1, y * 0.5 + shift

            return _compile.run_while_loop(cond, body, (torch.zeros((), dtype=n.dtype), x))

        return loop

    counters.clear()
    n, x = torch.tensor(3), torch.arange(4.0)
    for shift in (1.0, 2.0):
        loop = make(shift)
        step = _compile.CompiledStep(loop, mode=True, what="a test loop", device="cpu")
        _, got = step(n, x)
        _, expected = loop(n, x)  # (eager: the loop in Python)
        torch.testing.assert_close(got, expected)
    assert counters["inductor"]["fxgraph_cache_bypass"] == 0
    assert (
        counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] == 2
    )


def test_a_user_setting_of_the_isa_probe_is_respected():
    """``TORCHINDUCTOR_VEC_ISA_OK`` (inductor's ``cpp.vec_isa_ok``) set by the user: the
    kernels leave it alone instead of skipping the probe."""
    from torch._inductor import config

    if config.cpp.vec_isa_ok is not None:
        pytest.skip("TORCHINDUCTOR_VEC_ISA_OK is set in this environment")
    for value in (False, True):
        with config.patch({"cpp.vec_isa_ok": value}):  # (monkeypatch does not restore it)
            assert "cpp.vec_isa_ok" not in _compile.inductor_options(torch.device("cpu"))
    assert config.cpp.vec_isa_ok is None


def test_a_cpp_build_failure_with_the_isa_probe_skipped_is_retried_with_it(monkeypatch):
    """A C++ build error while the probe is skipped: compiled again once with inductor's
    probe (the option dropped), and that compilation's result is used; any other compile
    error is not retried."""
    from torch._inductor import config
    from torch._inductor.exc import CppCompileError

    if config.cpp.vec_isa_ok is not None:
        pytest.skip("TORCHINDUCTOR_VEC_ISA_OK is set in this environment")
    forgot = []
    monkeypatch.setattr(_compile, "_forget_isa_choice", lambda: forgot.append(True))
    calls = []

    def fake_compile(fn, *, dynamic, options):
        calls.append(dict(options))

        def compiled(*args):
            if options.get("cpp.vec_isa_ok"):
                try:
                    raise CppCompileError(["g++"], "unknown flag -mavx512f")
                except CppCompileError as error:
                    raise RuntimeError("backend compiler failed") from error
            return fn(*args)

        return compiled

    monkeypatch.setattr(_compile.torch, "compile", fake_compile)
    step = _compile.CompiledStep(lambda x: x + 1, mode=True, what="a step", device="cpu")
    assert torch.equal(step(torch.zeros(1)), torch.ones(1))
    assert [c.get("cpp.vec_isa_ok") for c in calls] == [True, None]
    assert forgot == [True]  # inductor's cached choice of ISA was cleared before the retry
    assert torch.equal(step(torch.ones(1)), 2 * torch.ones(1))
    assert len(calls) == 2  # retried once, not per call

    def failing_compile(fn, *, dynamic, options):
        calls.append(dict(options))

        def compiled(*args):
            raise ValueError("not a C++ build error")

        return compiled

    calls.clear()
    monkeypatch.setattr(_compile.torch, "compile", failing_compile)
    step = _compile.CompiledStep(lambda x: x + 1, mode=True, what="a step", device="cpu")
    with pytest.raises(RuntimeError, match="not a C\\+\\+ build error"):
        step(torch.zeros(1))
    assert len(calls) == 1


def test_forgetting_the_isa_choice_clears_inductors_caches_and_keeps_the_probe(monkeypatch):
    """After a failure with the probe skipped, inductor chooses its ISA again (its cached
    list of valid sets is emptied) and later steps of the process keep the probe."""
    from torch._inductor import config, cpu_vec_isa

    if config.cpp.vec_isa_ok is not None:
        pytest.skip("TORCHINDUCTOR_VEC_ISA_OK is set in this environment")
    monkeypatch.setattr(_compile, "_isa_probe_needed", False)
    cpu_vec_isa.valid_vec_isa_list()  # cached
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 1
    _compile._forget_isa_choice()
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 0
    assert "cpp.vec_isa_ok" not in _compile.inductor_options(torch.device("cpu"))


def test_eager_hmc_stops_integrating_once_every_chain_diverged():
    """The per-step leapfrog loop (eager, or compiled step by step) breaks on CPU once no
    chain moves: with every chain diverging at its first step, one gradient per iteration."""
    potential = _gaussian()
    kernel = HMC(num_steps=7, step_size=40.0, max_delta_energy=1e-9,
                 adapt_step_size=False, adapt_mass_matrix=False)  # fmt: skip
    rng = ChainRNG.from_seed(0, num_chains=3)
    state = kernel.init_state(torch.zeros(3, 3, dtype=torch.float64) + 0.5, potential, rng,
                              num_warmup=0)  # fmt: skip
    count = [0]
    inner = potential.value_and_grad

    def counted(z, batch=None):
        count[0] += 1
        return inner(z, batch)

    potential.value_and_grad = counted
    state, info = kernel.step(state, potential, rng, None, iteration=0, num_warmup=0)
    assert info["diverging"].all() and info["num_steps"].tolist() == [1, 1, 1]
    assert count[0] == 1


def test_eager_chain_rng_unaffected_by_compile_flag():
    """``compile=False`` is the default and takes the eager path (no compiled step built)."""
    kernel = NUTS(max_tree_depth=3)
    potential = _gaussian()
    rng = ChainRNG.from_seed(0, 2)
    state = kernel.init_state(torch.zeros(2, 3, dtype=torch.float64), potential, rng, num_warmup=0)
    kernel.step(state, potential, rng, iteration=0, num_warmup=0)
    assert kernel.compile is False and kernel._compiled is None

"""Opt-in ``torch.compile`` for the Hamiltonian kernels' inner loop.

A :class:`CompiledStep` wraps a pure tensor function (one leapfrog step plus its bookkeeping,
with the potential's value and gradient taken by ``torch.func.grad_and_value`` so that the
forward and backward passes are traced into the same graph) and compiles it with inductor
for fixed shapes. Each wrapper owns a fresh code object, so its compiled graphs (one per chain
count, dimension, dtype and device) neither evict nor count against the graphs of other
kernels or potentials in the process. The time spent compiling (the first call for each new
signature) is accumulated in :attr:`CompiledStep.compile_time_s`, to be reported apart from
the sampling time, as NumPyro reports its JIT time.
"""

from __future__ import annotations

import importlib
import time
import types
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

import pyro
import torch
from torch import Tensor

from bayesdl.infer.mcmc._cpu_cache import caching_cpu_allocator, find_cxx

#: accepted values of the ``compile`` argument of the Hamiltonian kernels
COMPILE_MODES = (False, True, "auto")


def check_compile(value: Any) -> bool | str:
    """Validate the ``compile`` argument: ``False``, ``True`` or ``"auto"``."""
    if value is False or value is True or value == "auto":
        return value
    raise ValueError(f"compile must be False, True or 'auto', got {value!r}")


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work here (``None`` when it should)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)"
    if device.type == "cpu":
        if find_cxx() is None:
            return (
                "inductor needs a C++ compiler on CPU and none was found (set CXX or install g++)"
            )
    return None


#: the inductor option that trusts the CPU's flags instead of probing the compiler
_SKIP_ISA_PROBE = "cpp.vec_isa_ok"

#: set once a compilation with the probe skipped failed: the probe is used from then on
_isa_probe_needed = False


def inductor_options(device: torch.device) -> dict[str, Any]:
    """Inductor settings for the compiled steps on ``device``; on CPU (measured on one core,
    torch 2.13, AVX-512, ``benchmarks/nuts_bnn.py``'s 502-parameter tanh network):

    * ``cpp.use_decompose_tanh``: ``tanh`` is generated in its decomposed form
      ``2 / (1 + exp(-2x)) - 1`` instead of the vectorised 1-ulp Sleef ``tanh``. A compiled
      ``tanh`` of a ``[500, 50]`` float32 activation took 66 us (eager: 12 us), the
      decomposed one 30 us, and it still fuses with its neighbours; a NUTS leaf went from 0.124
      to 0.084 ms for one chain, 0.87 to 0.52 ms for eight. Its error is absolute, about one
      ulp of 1 (~1e-7 in float32, ~1e-16 in float64), so relative accuracy is lost only for
      ``|x| << 1e-3``, which a potential's sums do not notice.
    * ``cpp_wrapper``: the graph's kernel calls, buffer allocations and checks run in generated
      C++ instead of a Python wrapper, which cost about 140 us per call of a four-leaf NUTS
      block (~60 allocations, stride checks); sampling went from 0.102 to 0.085 ms per leaf for
      one chain. Compiling takes longer the first time on a machine (the 1-chain benchmark's
      graphs, three of them then: ~27 s instead of ~23 s into an empty cache; ~4.5 s either
      way once inductor's on-disk cache holds them). Most of a cold compile is the C++
      compiler and inductor's code generation, in proportion to the number of leaves
      compiled, which is why NUTS's block path compiles one four-leaf graph and pads the
      smaller sub-trees (AVX2 machine: ~38 s -> ~20 s for one chain into an empty cache).
      On CPU NUTS builds each sub-tree as one compiled ``while_loop`` instead (one leaf in
      the loop body, no per-block call). Back to back on the AVX2 machine, into an empty
      cache: one chain 10,600 instead of 7,270 gradients/s and 21 s instead of 30 s of
      compilation; eight chains 17,480 instead of 12,460 gradients/s (~14 s of a first
      compile is inductor's one-time start-up, which any first graph pays; ~2.6 s from a
      warm cache). NUTS now builds the whole trajectory in one such call on CPU
      (``NUTS._whole_tree``: a loop over doublings around the sub-tree loop).
    * ``cpp.vec_isa_ok``: the vector instruction set is taken from the CPU's flags (what
      ``torch.cpu`` reports: AVX2, AVX-512, ...) without inductor's probe, which compiles and
      loads a test library for each candidate set with the C++ compiler: ~5.5 of the 15.4 s
      that a first compile of NUTS's sub-tree loop took into an empty cache (2-core AVX-512
      machine; ~1 s of child processes per process even from a warm cache). Left alone when
      the user set it (``TORCHINDUCTOR_VEC_ISA_OK``). Inductor keeps the chosen set for the
      rest of the process, so later ``torch.compile`` calls of the process (the user's own
      too) use the set the first compilation chose. A compilation that fails to build or
      load its C++ with the probe skipped is retried once with it, after clearing inductor's
      choice (:class:`CompiledStep`); the probe then stays on for the process.
    * ``cpp_wrapper_build_separate``: the C++ wrapper (the loops, allocations and kernel
      calls) is compiled apart from the kernels, at ``-O1`` (inductor's
      ``aot_inductor.compile_wrapper_opt_level``) instead of ``-O3``. The whole-trajectory
      loop's wrapper is one ~1,100-line function, and g++ spent 8.7 s of the 11.5 s that its
      file took at ``-O3`` on it (most in value-range propagation), 1.3 s at ``-O1``; the
      kernels take ~1.8 s either way. A first compile of the 1-chain benchmark's loop into an
      empty cache: ~20 s -> ~13 s; eight chains: 18.7 -> 13.2 s. Sampling is unchanged
      within noise: the two builds run side by side in one process, alternating every 8
      iterations, took 87.8 and 86.9 us per leaf (1 chain; again 89.3 and 88.0), 533 and 540
      for eight chains (2-core AVX-512 machine).
    * ``unsafe_marked_cacheable_functions``: the ``while_loop`` operator is marked cacheable
      (keyed by this torch's version), so inductor's FX-graph cache keeps the trajectory
      loops' graphs; it bypasses graphs holding a higher-order operator unless told
      otherwise, and a fresh process then lowered the loop again from the Python graph
      (8.1 s with a warm cache; 3.2 s with it kept, most of it dynamo's tracing; a new
      kernel later in the same process ~1.4 s). The cache key pickles the loop's body and
      condition graphs with the outer graph, so loops differing only in their bodies get
      entries of their own (``tests/infer/mcmc/test_compile.py``). Names the user marked are
      kept.
    """
    if device.type != "cpu":
        return {}
    from torch._inductor import config

    wanted: dict[str, Any] = {
        "cpp.use_decompose_tanh": True,
        "cpp_wrapper": True,
        "cpp_wrapper_build_separate": True,
    }
    loop_op = _while_loop_op_name()
    if loop_op is not None:
        marked = dict(getattr(config, "unsafe_marked_cacheable_functions", None) or {})
        marked.setdefault(loop_op, torch.__version__)
        wanted[_CACHEABLE_OPS] = marked
    # None: not set by the user (False: this inductor lacks the option)
    if getattr(config.cpp, "vec_isa_ok", False) is None and not _isa_probe_needed:
        wanted[_SKIP_ISA_PROBE] = True
    # torch.compile rejects an option its inductor lacks (use_decompose_tanh is torch >= 2.8)
    return {key: value for key, value in wanted.items() if _has_inductor_option(key)}


#: the inductor option naming higher-order operators whose graphs its FX-graph cache may keep
_CACHEABLE_OPS = "unsafe_marked_cacheable_functions"


@lru_cache(maxsize=1)
def _while_loop_op_name() -> str | None:
    """The name under which inductor's FX-graph cache knows the ``while_loop`` operator
    (``None`` when this torch has no such operator, or its cache cannot be told to keep it)."""
    try:  # (the package's attribute of that name is the function, not the module)
        module = importlib.import_module("torch._higher_order_ops.while_loop")
        op = module.while_loop_op
    except (ImportError, AttributeError):
        return None
    if not _has_inductor_option(_CACHEABLE_OPS) or not hasattr(op, "cacheable"):
        return None
    return f"{op.__module__}.{op.__name__}"


def _is_cpp_build_error(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is inductor's C++ build failure or
    a failure to load the built library."""
    seen: set[int] = set()
    node: BaseException | None = error
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if type(node).__name__ == "CppCompileError" or isinstance(node, ImportError | OSError):
            return True
        node = node.__cause__ or node.__context__
    return False


def _forget_isa_choice() -> None:
    """Make inductor choose the vector ISA again, probing the compiler (best effort: it
    clears the caches of ``torch._inductor.cpu_vec_isa``'s list of valid sets and of the
    sets' own checks, where this torch has them)."""
    global _isa_probe_needed
    _isa_probe_needed = True
    try:
        from torch._inductor import cpu_vec_isa
    except ImportError:
        return
    for obj in vars(cpu_vec_isa).values():
        if isinstance(obj, type):  # the sets' cached checks
            candidates = [vars(obj).get(name) for name in ("__bool__", "_VecISA__bool__impl")]
        else:  # cached module functions (valid_vec_isa_list)
            candidates = [obj]
        for fn in candidates:
            clear = getattr(fn, "cache_clear", None)
            if clear is not None:
                clear()


def _has_inductor_option(key: str) -> bool:
    """Whether this torch's inductor config has the (dotted) option ``key``."""
    from torch._inductor import config

    node: Any = config
    for part in key.split("."):
        if not hasattr(node, part):
            return False
        node = getattr(node, part)
    return True


@lru_cache(maxsize=1)
def has_while_loop() -> bool:
    """Whether this torch has the ``while_loop`` control-flow operator (and
    ``torch.compiler.is_compiling``, which the compiled trajectory loops use)."""
    try:
        from torch._higher_order_ops import while_loop  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch, "compiler") and hasattr(torch.compiler, "is_compiling")


def run_while_loop(
    cond: Callable[..., Tensor], body: Callable[..., tuple[Tensor, ...]], carry: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """``torch._higher_order_ops.while_loop(cond, body, carry)`` when compiling, else the same
    loop in Python (an eager ``while_loop`` would itself call ``torch.compile``; this runs when
    compilation is unavailable and ``compile="auto"`` runs the step eagerly). The carries
    must be distinct tensors, none a view of another."""
    if not torch.compiler.is_compiling():
        while bool(cond(*carry)):
            carry = body(*carry)
        return tuple(carry)
    from torch._higher_order_ops import while_loop

    return tuple(while_loop(cond, body, carry))


def functional_value_and_grad(potential: Any) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
    """``(z, batch) -> (U [C], ∇U [C, D])`` by ``torch.func.grad_and_value`` of the potential's
    ``_value``: traceable by ``torch.compile`` (no ``autograd.grad`` call, no ``.detach()``)."""

    def total(z: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        u = potential._value(z, batch)
        return u.sum(), u

    grad_and_value = torch.func.grad_and_value(total, has_aux=True)

    def value_and_grad(z: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        g, (_, u) = grad_and_value(z, batch)
        return u, g

    return value_and_grad


def _allocator(cpu: bool) -> Any:
    """:func:`~bayesdl.infer.mcmc._cpu_cache.caching_cpu_allocator` for a step on CPU."""
    return caching_cpu_allocator() if cpu else nullcontext()


def _frames_compiled() -> int:
    """How many frames dynamo has compiled in this process (it bumps this on every compile and
    recompile, so a change across a call means the call compiled)."""
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]


class CompileFailed(RuntimeError):
    """``torch.compile`` of a step failed (raised by a :class:`CompiledStep` with
    ``reraise=True``; the compiler's error is its ``__cause__``)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


class CompiledStep:
    """``fn`` compiled by ``torch.compile(dynamic=False)``, with compile-time accounting and
    an eager fallback.

    Args:
        fn: the eager function (positional arguments only).
        mode: ``True`` (a failed compilation raises :class:`RuntimeError`) or ``"auto"`` (it
            warns once and runs ``fn`` eagerly from then on).
        what: what is compiled, for messages.
        device: where it runs (to check that a compiler exists).
        reraise: a failed compilation raises :class:`CompileFailed` (from the compiler's
            error), whatever ``mode``, for a caller that has another way to do the same work;
            an error of a call that was not compiling (a graph that already ran) propagates
            unchanged.

    Compiled calls run with Pyro's and ``torch.distributions``' validation off, as Pyro's
    JIT-compiled inference does: its support checks are data-dependent branches that would
    split the graph (and cannot be traced at all inside a ``while_loop``). The eager
    evaluations (initialisation, step-size search) still validate. On CPU the compiled calls
    run under :func:`~bayesdl.infer.mcmc._cpu_cache.caching_cpu_allocator` (process-wide
    while they run): a compiled loop allocates the same buffers at every leaf, and glibc's
    heap cost about a quarter of a 1-chain NUTS leaf (``BAYESDL_CPU_CACHE=0`` turns it off).

    Raises:
        RuntimeError: ``mode=True`` and ``torch.compile`` is unavailable here.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        mode: bool | str,
        what: str,
        device: Any,
        reraise: bool = False,
    ):
        self.fn = fn
        self.reraise = reraise
        self._calls_ok = 0
        self.mode = mode
        self.what = what
        self.compile_time_s = 0.0
        self.num_compiles = 0
        # on CPU a compiled loop's buffers come from a size-keyed cache while it runs
        self._cpu = torch.device(device).type == "cpu"
        reason = compile_unavailable_reason(torch.device(device))
        self.eager = reason is not None
        if reason is not None:
            if mode is True:
                raise RuntimeError(
                    f"compile=True but torch.compile is unavailable: {reason}; pass "
                    "compile=False (eager) or compile='auto' (compile when possible)"
                )
            warnings.warn(
                f"compile='auto': {reason}; running eagerly", RuntimeWarning, stacklevel=3
            )
            self._compiled = fn
            self._options: dict[str, Any] = {}
            return
        # a fresh code object: this wrapper's graphs get their own dynamo cache (and recompile
        # budget) instead of sharing the one of fn's code with every other kernel
        code = fn.__code__.replace()
        fresh = types.FunctionType(
            code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        self._fresh = fresh
        self._options = inductor_options(torch.device(device))  # (retry: see __call__)
        t0 = time.perf_counter()  # the first torch.compile of a process imports inductor
        self._compiled = torch.compile(fresh, dynamic=False, options=self._options)
        self.compile_time_s += time.perf_counter() - t0

    def __call__(self, *args: Any) -> Any:
        if self.eager:
            return self.fn(*args)
        before = _frames_compiled()
        t0 = time.perf_counter()  # (the allocator's one-off build counts as compile time)
        # entered outside the try: its warning (unavailable) is not a compiler failure
        with _allocator(self._cpu):
            try:
                with pyro.validation_enabled(False):
                    out = self._compiled(*args)
            except Exception as error:  # noqa: BLE001 -- any compiler failure
                # a failure while dynamo traced a frame, or of a step that never ran, is the
                # compiler's; the attempt's time is compile time
                compiling = self._calls_ok == 0 or _frames_compiled() != before
                if compiling:
                    self.compile_time_s += time.perf_counter() - t0
                    if self._options.get(_SKIP_ISA_PROBE) and _is_cpp_build_error(error):
                        # perhaps the compiler cannot build the vector ISA the CPU's flags
                        # named: compile again with inductor's probe picking it (once)
                        _forget_isa_choice()
                        self._options = {
                            k: v for k, v in self._options.items() if k != _SKIP_ISA_PROBE
                        }
                        self._compiled = torch.compile(
                            self._fresh, dynamic=False, options=self._options
                        )
                        return self(*args)
                if self.reraise:
                    if not compiling:
                        raise
                    raise CompileFailed(
                        f"torch.compile of {self.what} failed ({type(error).__name__}: "
                        f"{_first_line(error)})"
                    ) from error
                if self.mode is True:
                    raise RuntimeError(
                        f"torch.compile of {self.what} failed ({type(error).__name__}: "
                        f"{_first_line(error)}); "
                        "pass compile=False (eager) or compile='auto' (fall back to eager)"
                    ) from error
                warnings.warn(
                    f"compile='auto': torch.compile of {self.what} failed "
                    f"({type(error).__name__}); running eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.eager = True
                return self.fn(*args)
        self._calls_ok += 1
        compiled = _frames_compiled() - before
        if compiled:  # this call traced and compiled a graph (new shapes, strides or dtype)
            self.compile_time_s += time.perf_counter() - t0
            self.num_compiles += compiled
        return out


__all__ = [
    "COMPILE_MODES",
    "CompileFailed",
    "CompiledStep",
    "check_compile",
    "compile_unavailable_reason",
    "functional_value_and_grad",
    "has_while_loop",
    "inductor_options",
    "run_while_loop",
]

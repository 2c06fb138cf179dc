"""A size-bucketed caching CPU allocator for the compiled samplers' loops.

A compiled NUTS trajectory on CPU (one ``while_loop`` call, :mod:`bayesdl.infer.mcmc.nuts`)
allocates some forty buffers per leaf from ``c10``'s default CPU allocator, which takes each
from glibc's ``posix_memalign`` and returns it with ``free``: buffers of 2-100 KB, too large
for glibc's per-thread cache, so every one walks the heap's bins, and freeing the ~100 KB
activations of ``benchmarks/nuts_bnn.py``'s network consolidates the heap each time. On one
core that was about a quarter of a 1-chain leaf (perf: ``_int_malloc``, ``_int_free``,
``malloc_consolidate``, ...).

While a compiled step runs, :func:`caching_cpu_allocator` puts an allocator in front of the
default one that keeps freed blocks in free lists keyed by their exact size and hands them out
again: the loop allocates the same sizes at every leaf, so after the first leaf no allocation
reaches glibc. It is installed only over c10's default allocator (never over another
library's). When the outermost context exits, the default allocator is back and the cached
blocks are released; blocks of tensors still alive (the call's outputs) go back to the
system when those tensors die (or to the cache, if they die inside a later context).
At most :data:`MAX_CACHED_BYTES` are kept. Allocations made through it are not reported to
``torch.profiler``'s memory profiling (the default allocator's reports are skipped).

The allocator is a few lines of C++ against ``c10`` (``c10::SetCPUAllocator``), built once per
torch version with the first of ``$CXX``, ``g++``, ``c++``, ``clang++`` found, and kept in
inductor's cache directory; without a compiler, or if the build fails, the context does
nothing (a warning says why, once).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: the cache keeps at most this many bytes of freed blocks (larger frees go to the system)
MAX_CACHED_BYTES = 256 << 20

#: whether the compiled CPU steps use the cache; this attribute is read at each call, its
#: default at import from the environment (``BAYESDL_CPU_CACHE=0`` turns it off)
_OFF = ("0", "false", "no", "off")
enabled = os.environ.get("BAYESDL_CPU_CACHE", "1").strip().lower() not in _OFF

_SOURCE = r"""
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace {

void release(void* ptr);

struct CachingAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t n) override;
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

// all state in one object that is never destroyed: tensors alive at exit keep its deleter
struct State {
  std::mutex mu;
  int depth = 0;  // nesting of bayesdl_cache_enable calls (installed over c10's default)
  size_t cached_bytes = 0;
  size_t max_cached_bytes = 0;
  std::unordered_map<void*, size_t> live;  // size of every block handed out
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  long long hits = 0, misses = 0;
  CachingAllocator allocator;
};
State& state = *new State;

// the data pointer is its own context (raw_allocate / raw_deallocate work on it)
void release(void* ptr) {
  State& s = state;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.live.find(ptr);
    if (it == s.live.end()) return;  // nullptr of a zero-byte block
    size_t n = it->second;
    s.live.erase(it);
    if (s.depth > 0 && s.cached_bytes + n <= s.max_cached_bytes) {
      try {
        s.free_blocks[n].push_back(ptr);
        s.cached_bytes += n;
        return;
      } catch (const std::bad_alloc&) {
      }
    }
  }
  c10::free_cpu(ptr);
}

c10::DataPtr CachingAllocator::allocate(size_t n) {
  State& s = state;
  const c10::Device cpu(c10::DeviceType::CPU);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.free_blocks.find(n);
    if (it != s.free_blocks.end() && !it->second.empty()) {  // a hit: one lock
      void* ptr = it->second.back();
      it->second.pop_back();
      s.cached_bytes -= n;
      ++s.hits;
      s.live.emplace(ptr, n);
      return {ptr, ptr, &release, cpu};
    }
    ++s.misses;
  }
  if (n == 0) return {nullptr, nullptr, &release, cpu};
  void* ptr = c10::alloc_cpu(n);  // outside the lock
  std::lock_guard<std::mutex> lock(s.mu);
  s.live.emplace(ptr, n);
  return {ptr, ptr, &release, cpu};
}

}  // namespace

extern "C" {

// 1: in effect (installed now or by an outer call); 0: the CPU allocator is not c10's
// default (another library installed its own), which is left alone
int bayesdl_cache_enable(unsigned long long max_bytes) {
  State& s = state;
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.depth > 0) {
    ++s.depth;
    return 1;
  }
  c10::Allocator* current = c10::GetCPUAllocator();
  // ours still installed with nothing active (someone restored it out of order) is fine
  if (current != &s.allocator) {
    if (current != c10::GetDefaultCPUAllocator()) return 0;
    c10::SetCPUAllocator(&s.allocator, 0);
    if (c10::GetCPUAllocator() != &s.allocator) return 0;
  }
  s.max_cached_bytes = static_cast<size_t>(max_bytes);
  s.depth = 1;
  return 1;
}

void bayesdl_cache_disable() {
  State& s = state;
  std::vector<void*> dropped;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.depth == 0) return;
    if (--s.depth > 0) return;
    // restore the default unless somebody installed another allocator meanwhile (theirs
    // stays)
    if (c10::GetCPUAllocator() == &s.allocator) {
      c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), 0);
    }
    for (auto& kv : s.free_blocks) {
      dropped.insert(dropped.end(), kv.second.begin(), kv.second.end());
    }
    s.free_blocks.clear();
    s.cached_bytes = 0;
  }
  for (void* ptr : dropped) c10::free_cpu(ptr);
}

// for tests: [hits, misses, cached bytes, depth, installed (the current CPU allocator is
// ours), default (it is c10's default)]
void bayesdl_cache_stats(long long* out) {
  State& s = state;
  std::lock_guard<std::mutex> lock(s.mu);
  out[0] = s.hits;
  out[1] = s.misses;
  out[2] = static_cast<long long>(s.cached_bytes);
  out[3] = s.depth;
  out[4] = c10::GetCPUAllocator() == &s.allocator;
  out[5] = c10::GetCPUAllocator() == c10::GetDefaultCPUAllocator();
}

}
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_unavailable: str | None = None
_warned = False


def find_cxx() -> str | None:
    """The C++ compiler to use, as inductor looks for one: ``$CXX``, then ``g++``, ``c++``,
    ``clang++`` on the path, as a full path (``None`` if none is found)."""
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        path = shutil.which(c) if c else None
        if path:
            return path
    return None


def _cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        root = cache_dir()
    except Exception:  # noqa: BLE001 -- any torch layout without inductor's helper
        # a directory of this user's only: a shared one would let others plant the library
        root = os.path.join(tempfile.gettempdir(), f"bayesdl_{os.getuid()}")
    return os.path.join(root, "bayesdl_cpu_cache")


def _build() -> ctypes.CDLL:
    cxx = find_cxx()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    torch_dir = os.path.dirname(torch.__file__)
    include, lib = os.path.join(torch_dir, "include"), os.path.join(torch_dir, "lib")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
             f"-I{include}", f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}"]  # fmt: skip
    c10 = os.path.join(lib, "libc10.so")
    c10_id = os.stat(c10).st_mtime_ns if os.path.exists(c10) else 0
    key = hashlib.sha256(
        "|".join(
            [_SOURCE, torch.__version__, torch_dir, str(c10_id), cxx, platform.machine(), *flags]
        ).encode()
    ).hexdigest()[:24]
    directory = _cache_dir()
    path = os.path.join(directory, f"cpu_cache_{key}.so")
    if not os.path.exists(path):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, src = tempfile.mkstemp(suffix=".cpp", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(_SOURCE)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=directory)
        os.close(fd)
        try:
            cmd = [cxx, src, *flags, "-o", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-400:]}")
            os.replace(tmp, path)  # atomic: a concurrent process sees the whole file or none
        finally:
            os.unlink(src)
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib_ = ctypes.CDLL(path)
    lib_.bayesdl_cache_enable.argtypes = [ctypes.c_ulonglong]
    lib_.bayesdl_cache_enable.restype = ctypes.c_int
    lib_.bayesdl_cache_disable.restype = None
    lib_.bayesdl_cache_stats.argtypes = [ctypes.POINTER(ctypes.c_longlong)]
    lib_.bayesdl_cache_stats.restype = None
    return lib_


def _library(*, warn: bool = True) -> ctypes.CDLL | None:
    """The built allocator library, or ``None`` (with one warning, if ``warn``) when it cannot
    be built."""
    global _lib, _unavailable, _warned
    if _lib is None and _unavailable is None:
        with _lock:
            if _lib is None and _unavailable is None:
                try:
                    _lib = _build()
                except Exception as error:  # noqa: BLE001 -- a missing or failing compiler
                    _unavailable = f"{type(error).__name__}: {error}"
    if _unavailable is not None and warn and not _warned:
        _warned = True
        warnings.warn(
            f"bayesdl's caching CPU allocator is unavailable ({_unavailable}); compiled "
            "CPU sampling runs with the default allocator",
            RuntimeWarning,
            stacklevel=4,
        )
    return _lib


def stats() -> dict[str, int]:
    """Counters of the allocator (``hits``, ``misses``, ``cached_bytes``, ``depth``) and
    whether the process's CPU allocator is now this one (``installed``) or c10's default
    (``default``); empty when it is unavailable."""
    lib = _library()
    if lib is None:
        return {}
    out = (ctypes.c_longlong * 6)()
    lib.bayesdl_cache_stats(out)
    names = ("hits", "misses", "cached_bytes", "depth", "installed", "default")
    return {name: int(v) for name, v in zip(names, out, strict=True)}


@contextmanager
def caching_cpu_allocator(*, quiet: bool = False) -> Iterator[bool]:
    """Serve CPU tensor allocations from a size-keyed cache of freed blocks while the block
    runs: process-wide (every thread's CPU allocations pass through it meanwhile), nestable,
    guarded by one mutex. Yields whether the cache is in effect: false when it is switched
    off, could not be built, or the process's CPU allocator is not c10's default (another
    library installed its own, which is left alone).

    With ``quiet`` (``sample``'s loop, compiled or not) an unavailable cache gives no warning,
    and where no compiler is found nothing is built or recorded (a compiled step later in the
    process still tries, and warns)."""
    if not enabled:
        lib = None
    elif quiet:
        lib = _lib if _lib is not None or find_cxx() is None else _library(warn=False)
    else:
        lib = _library()
    if lib is None:
        yield False
        return
    on = bool(lib.bayesdl_cache_enable(MAX_CACHED_BYTES))
    try:
        yield on
    finally:
        if on:
            lib.bayesdl_cache_disable()


__all__ = ["MAX_CACHED_BYTES", "caching_cpu_allocator", "enabled", "find_cxx", "stats"]

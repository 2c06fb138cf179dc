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
reaches glibc. When the outermost context exits the default allocator is back, the cached
blocks are released, and blocks of tensors still alive (the call's outputs) go back to the
system when those tensors die. At most :data:`MAX_CACHED_BYTES` are kept. Allocations made
through it are not reported to ``torch.profiler``'s memory profiling (the default allocator's
reports are skipped).

The allocator is a few lines of C++ against ``c10`` (``c10::SetCPUAllocator``), built once per
torch version with the C++ compiler inductor uses and kept next to inductor's cache; without a
compiler, or if the build fails, the context does nothing (a warning says why, once).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
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

#: whether the compiled CPU steps use the cache (environment: ``BAYESDL_CPU_CACHE=0`` turns it
#: off); read at each call, so tests and users can switch it
_OFF = ("0", "false", "no", "off")
enabled = os.environ.get("BAYESDL_CPU_CACHE", "1").strip().lower() not in _OFF

_SOURCE = r"""
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

struct Block {
  void* ptr;
  size_t size;
};

std::mutex mu;
int depth = 0;                        // nesting of bayesdl_cache_enable calls
c10::Allocator* previous = nullptr;   // the allocator we stand in front of
size_t cached_bytes = 0;
size_t max_cached_bytes = 0;
std::unordered_map<size_t, std::vector<Block*>> free_blocks;
long long hits = 0, misses = 0;

void release(void* ctx) {
  Block* b = static_cast<Block*>(ctx);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (depth > 0 && cached_bytes + b->size <= max_cached_bytes) {
      free_blocks[b->size].push_back(b);
      cached_bytes += b->size;
      return;
    }
  }
  c10::free_cpu(b->ptr);
  delete b;
}

struct CachingAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    Block* b = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = free_blocks.find(n);
      if (it != free_blocks.end() && !it->second.empty()) {
        b = it->second.back();
        it->second.pop_back();
        cached_bytes -= n;
        ++hits;
      } else {
        ++misses;
      }
    }
    if (b == nullptr) {
      b = new Block{n == 0 ? nullptr : c10::alloc_cpu(n), n};
    }
    return {b->ptr, b, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingAllocator the_allocator;  // never destroyed: live tensors keep its deleter

void drop_cache_locked(std::vector<Block*>& out) {
  for (auto& kv : free_blocks) {
    for (Block* b : kv.second) out.push_back(b);
  }
  free_blocks.clear();
  cached_bytes = 0;
}

}  // namespace

extern "C" {

// 1: installed (or already, by an outer call); 0: another allocator with a higher priority
// is registered, so nothing changed
int bayesdl_cache_enable(unsigned long long max_bytes) {
  std::lock_guard<std::mutex> lock(mu);
  if (depth > 0) {
    ++depth;
    return 1;
  }
  c10::Allocator* current = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&the_allocator, 0);
  if (c10::GetCPUAllocator() != &the_allocator) return 0;
  previous = current;
  max_cached_bytes = static_cast<size_t>(max_bytes);
  depth = 1;
  return 1;
}

void bayesdl_cache_disable() {
  std::vector<Block*> dropped;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (depth == 0) return;
    if (--depth > 0) return;
    // restore unless somebody installed another allocator meanwhile (theirs stays)
    if (c10::GetCPUAllocator() == &the_allocator) c10::SetCPUAllocator(previous, 0);
    previous = nullptr;
    drop_cache_locked(dropped);
  }
  for (Block* b : dropped) {
    c10::free_cpu(b->ptr);
    delete b;
  }
}

// counters for tests: [hits, misses, cached bytes, depth]
void bayesdl_cache_stats(long long* out) {
  std::lock_guard<std::mutex> lock(mu);
  out[0] = hits;
  out[1] = misses;
  out[2] = static_cast<long long>(cached_bytes);
  out[3] = depth;
}

}
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_unavailable: str | None = None
_warned = False


def _compiler() -> str | None:
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def _cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        root = cache_dir()
    except Exception:  # noqa: BLE001 -- any torch layout without inductor's helper
        root = os.path.join(tempfile.gettempdir(), "bayesdl")
    return os.path.join(root, "bayesdl_cpu_cache")


def _build() -> ctypes.CDLL:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    torch_dir = os.path.dirname(torch.__file__)
    include, lib = os.path.join(torch_dir, "include"), os.path.join(torch_dir, "lib")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    key = hashlib.sha256(
        f"{_SOURCE}|{torch.__version__}|{torch_dir}|{cxx}|{abi}".encode()
    ).hexdigest()[:24]
    directory = _cache_dir()
    path = os.path.join(directory, f"cpu_cache_{key}.so")
    if not os.path.exists(path):
        os.makedirs(directory, exist_ok=True)
        fd, src = tempfile.mkstemp(suffix=".cpp", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(_SOURCE)
        tmp = f"{path}.{os.getpid()}.tmp"
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-I{include}", src, f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}", "-o", tmp]  # fmt: skip
        try:
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


def _library() -> ctypes.CDLL | None:
    """The built allocator library, or ``None`` (with one warning) when it cannot be built."""
    global _lib, _unavailable, _warned
    if _lib is not None or _unavailable is not None:
        if _unavailable is not None and not _warned:
            _warned = True
            warnings.warn(
                f"bayesdl's caching CPU allocator is unavailable ({_unavailable}); compiled "
                "CPU sampling runs with the default allocator",
                RuntimeWarning,
                stacklevel=4,
            )
        return _lib
    with _lock:
        if _lib is None and _unavailable is None:
            try:
                _lib = _build()
            except Exception as error:  # noqa: BLE001 -- a missing or failing compiler
                _unavailable = f"{type(error).__name__}: {error}"
    return _library()


def stats() -> dict[str, int]:
    """Counters of the allocator (``hits``, ``misses``, ``cached_bytes``, ``depth``); empty
    when it is unavailable."""
    lib = _library()
    if lib is None:
        return {}
    out = (ctypes.c_longlong * 4)()
    lib.bayesdl_cache_stats(out)
    names = ("hits", "misses", "cached_bytes", "depth")
    return {name: int(v) for name, v in zip(names, out, strict=True)}


@contextmanager
def caching_cpu_allocator() -> Iterator[bool]:
    """Serve CPU tensor allocations from a size-keyed cache of freed blocks inside the block
    (nestable, thread-safe). Yields whether the cache is in effect: false when the allocator
    could not be built, or when another CPU allocator registered with a higher priority."""
    lib = _library() if enabled else None
    if lib is None:
        yield False
        return
    on = bool(lib.bayesdl_cache_enable(MAX_CACHED_BYTES))
    try:
        yield on
    finally:
        if on:
            lib.bayesdl_cache_disable()


__all__ = ["MAX_CACHED_BYTES", "caching_cpu_allocator", "enabled", "stats"]

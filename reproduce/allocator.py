"""Which malloc the training process runs under, and how freed memory is kept and given back.

A CPU training step allocates and frees (R, N, M) activations of hundreds of MB. What the C
allocator does with them between steps costs up to a fifth of a run's time (docs/speed.md, "Issue
35"): glibc either unmaps every large block (a page fault per page, every step) or, kept on its heap,
lets small allocations split the freed blocks so that the heap grows and must be trimmed. jemalloc
with no decay keeps freed pages for reuse without that growth: modnoise's learning-order run beside
another run took 148 page faults in its steps against 5.5 million under glibc, 22% less step time,
2.0 GB peak, and numbers equal to the bit. So `python -m reproduce` starts itself again under
jemalloc where the library is installed (`restart_environment`; Debian's `libjemalloc2`, which
ci/setup.sh installs), and keeps glibc, made to keep freed memory, where it is not.

Standard library only: `reproduce/__main__.py` asks before torch is imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from functools import lru_cache

CHOICE = "REPRODUCE_ALLOCATOR"  # "system": stay with the C library's malloc (no restart under jemalloc)
# Freed pages stay with jemalloc until `release_freed_memory` (no time-based decay): its default
# decay of 10 s gave the learning-order run 45 million page faults (docs/speed.md).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
MALLCTL_ARENAS_ALL = 4096  # jemalloc's index for "every arena" in mallctl names (jemalloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@lru_cache(maxsize=1)
def in_use() -> str:
    """The malloc this process runs under: "jemalloc" (its `mallctl` is in the process), "glibc", or
    "system" (any other C library's). Recorded with every result (provenance `allocator`)."""
    if not sys.platform.startswith("linux"):
        return "system"
    process = ctypes.CDLL(None)  # the symbols of everything loaded, the preload first
    return "jemalloc" if hasattr(process, "mallctl") else "glibc" if hasattr(process, "malloc_trim") else "system"


def restart_environment(environ: Mapping[str, str] = os.environ, library: str | None = None) -> dict[str, str] | None:
    """The environment to start this process again with so that it runs under jemalloc without decay,
    or None to go on as it is: already under jemalloc, not Linux, `REPRODUCE_ALLOCATOR=system`,
    jemalloc not installed, or a preload of it that failed before (LD_PRELOAD names it already, so
    no endless restarts). `library` defaults to the installed libjemalloc found by the loader's cache.

    Both variables are read by the loader and by jemalloc at process start, so they cannot be set
    from inside; children (--jobs workers, stability's runs, Slurm tasks) inherit them. A
    MALLOC_CONF the user set is kept."""
    if environ.get(CHOICE) == "system" or in_use() == "jemalloc" or not sys.platform.startswith("linux"):
        return None
    library = library or ctypes.util.find_library("jemalloc")
    preload = environ.get("LD_PRELOAD", "")
    if not library or library in preload.replace(":", " ").split():
        return None
    return {**environ, "LD_PRELOAD": f"{preload}:{library}" if preload else library,
            "MALLOC_CONF": environ.get("MALLOC_CONF") or JEMALLOC_CONF}


def restart_under_jemalloc() -> None:
    """Start this process again, same command line, under jemalloc without decay where
    `restart_environment` says so; return where not. `python -m reproduce` calls it before torch is
    imported (the restart then costs ~50 ms), docs/speed_profile.py first in its main."""
    if (environment := restart_environment()) is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Under glibc, keep freed memory for the next allocation instead of returning it to the kernel.

    glibc serves every block over its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps
    it on free, so each large tensor a step allocates is faulted in page by page and zeroed by the
    kernel, every step. The modnoise small runs allocate (R, N, M) hidden layers of 100-350 MiB
    several times a step: at width 513 and 15 replicas on one thread a training step took 2.64 s,
    1.24 s of it system time (570,000 page faults), a probe's forward 1.38 s of which 0.81 s system
    (docs/modnoise.md, "Time cut"). With mmap off (blocks come from the heap) and the heap never
    trimmed, the freed blocks are reused and most faults stop (the heap still grows: `engine`
    gives it back every RELEASE_EVERY_S). Memory placement only: the same arithmetic runs on the
    same values (the stored numbers are equal, docs/modnoise.md).

    Process-wide and never undone (done once); True where set (glibc), False elsewhere (jemalloc
    keeps freed memory by its JEMALLOC_CONF). The memory kept is given back between runs
    (`release_freed_memory`)."""
    if in_use() != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> bool:
    """Give the pages of every freed block back to the kernel, after a run: jemalloc's purge of every
    arena, or glibc's malloc_trim(0).

    Why: freed memory is kept for the next step, and runs of other shapes one after another leave
    free blocks that the next run's tensors do not fit: the small tier in one process (ddmlp,
    smooth, masc, then modnoise) grew to 24 GB resident under glibc and was killed for memory in
    modnoise's second run (docs/speed.md). Between runs nothing is live but the data, so this costs
    one round of page faults per run, not per step. True where pages went back, False elsewhere."""
    allocator = in_use()
    if allocator == "jemalloc":
        name = f"arena.{MALLCTL_ARENAS_ALL}.purge".encode()
        return ctypes.CDLL(None).mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0
    if allocator == "glibc":
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    return False

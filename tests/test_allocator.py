"""The C allocator: jemalloc without decay where installed (`python -m reproduce` restarts under it),
glibc made to keep freed memory elsewhere, and freed pages given back between runs under both."""

import ctypes.util
import os
import resource
import subprocess
import sys

import pytest
import torch

from reproduce import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JEMALLOC = ctypes.util.find_library("jemalloc") if sys.platform.startswith("linux") else None
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # a planted path: restart_environment is told it


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture
def under_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "in_use", lambda: "glibc")
    monkeypatch.setattr(sys, "platform", "linux")


@pytest.mark.parametrize("environ, expected", [
    ({}, {"LD_PRELOAD": LIB, "MALLOC_CONF": allocator.JEMALLOC_CONF}),
    ({"LD_PRELOAD": "/opt/libx.so"}, {"LD_PRELOAD": f"/opt/libx.so:{LIB}", "MALLOC_CONF": allocator.JEMALLOC_CONF}),
    ({"MALLOC_CONF": "narenas:2"}, {"LD_PRELOAD": LIB, "MALLOC_CONF": "narenas:2"}),  # the user's kept
    ({"MALLOC_CONF": ""}, {"LD_PRELOAD": LIB, "MALLOC_CONF": allocator.JEMALLOC_CONF}),  # empty: not set
    ({"LD_PRELOAD": LIB}, None),  # named already, yet not in use: the preload failed, no second restart
    ({"LD_PRELOAD": f"/opt/libx.so {LIB}"}, None),
    ({allocator.CHOICE: "system"}, None),  # the user's opt-out
])
def test_restart_environment_preloads_jemalloc_once(under_glibc, environ, expected):
    env = allocator.restart_environment({"PATH": "/bin", **environ}, library=LIB)
    if expected is None:
        assert env is None
    else:
        assert env == {"PATH": "/bin", **environ, **expected}


def test_no_restart_under_jemalloc_or_without_it(monkeypatch, under_glibc):
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert allocator.restart_environment({}) is None  # not installed: glibc as it is
    monkeypatch.setattr(allocator, "in_use", lambda: "jemalloc")
    assert allocator.restart_environment({}, library=LIB) is None


def test_freed_memory_is_kept_for_the_next_large_tensor():
    """After `keep_freed_memory` (glibc), a large tensor allocated, freed and allocated again reuses the
    heap's block: a later allocation faults in (almost) no fresh pages, where glibc's default
    (a fresh mmap per block over 32 MiB) faulted in every page each time (docs/modnoise.md)."""
    if not allocator.keep_freed_memory():
        pytest.skip("glibc's mallopt only")
    size = 64 * 2**20 // 4  # 64 MiB of float32, over glibc's largest mmap threshold
    # Small free chunks first: otherwise (in a fresh process) the small allocations made around each
    # tensor took the start of the freed block and the heap grew by 64 MiB at every allocation, the
    # growth engine.RELEASE_EVERY_S bounds under glibc (jemalloc does not grow so).
    small = [torch.ones(8) for _ in range(2000)]
    del small
    torch.ones(size)  # allocated, touched and freed: the heap now holds the block
    counts = []  # the fewest of a few: small allocations can take the start of a freed block, so that
    for _ in range(4):  # the heap grows once or twice more before the block fits again (steady state)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(size)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = min(counts)
    assert faults < 64 * 2**20 / 4096 / 10, counts  # a tenth of the block's 16,384 pages at most


def test_freed_memory_goes_back_to_the_kernel_between_runs():
    """`release_freed_memory` (glibc's malloc_trim) gives the kept heap's free pages back: a freed
    256 MiB tensor stays resident under `keep_freed_memory` and leaves after the release, so runs of
    other shapes one after another do not pile up resident memory (the small tier in one process was
    killed for memory before it)."""
    if not allocator.keep_freed_memory():
        pytest.skip("glibc's mallopt only")
    allocator.release_freed_memory()
    start = _resident_mib()
    torch.ones(256 * 2**20 // 4)  # allocated, touched and freed: kept in the heap
    kept = _resident_mib()
    assert kept - start > 200, (start, kept)
    assert allocator.release_freed_memory()
    assert _resident_mib() - start < 50, (start, kept, _resident_mib())


# In a process started under jemalloc (the environment `python -m reproduce` restarts with): freed
# blocks are reused with no fresh page faults, stay resident (no decay), and leave at the purge.
UNDER_JEMALLOC = """
import os, resource, sys, torch
from reproduce import allocator

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert allocator.in_use() == "jemalloc" and not allocator.keep_freed_memory()
allocator.release_freed_memory()
start = resident_mib()
torch.ones(256 * 2**20 // 4)  # allocated, touched and freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(256 * 2**20 // 4)  # the same size again: the freed pages, not fresh ones
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
kept = resident_mib()
assert allocator.release_freed_memory()
print(faults, kept - start, resident_mib() - start)
"""


@pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed (ci/setup.sh installs it)")
def test_under_jemalloc_freed_pages_are_reused_kept_and_purged_between_runs():
    env = allocator.restart_environment({**os.environ, "PYTHONPATH": ROOT})
    assert env is not None and JEMALLOC in env["LD_PRELOAD"]
    out = subprocess.run([sys.executable, "-c", UNDER_JEMALLOC], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    faults, kept, after = (float(v) for v in out.stdout.split())
    assert faults < 256 * 2**20 / 4096 / 10, faults  # a tenth of the tensor's 65,536 pages at most
    assert kept > 200 and after < 50, (kept, after)

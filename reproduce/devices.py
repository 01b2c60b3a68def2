"""Device facts every layer needs: which device, which numerics, and how fast the device can be.

The lowest module of the package (it imports only torch and errors), so that the engine, the
runner's dry run and the bench share one peak table and one device check without importing
each other.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from reproduce.errors import UserError

PRECISIONS = ("tf32", "bf16")

# Dense (no sparsity) tensor-core peaks in FLOP/s, from NVIDIA's data sheets: (tf32, bf16).
PEAK_FLOPS = {
    "H100 PCIe": (378e12, 756e12),
    "H100": (494.7e12, 989.4e12),  # SXM5; the data sheet's 989/1979 are with 2:4 sparsity
    "H200": (494.7e12, 989.4e12),
    "A100": (156e12, 312e12),
}


@dataclass
class Numerics:
    """Process-wide numerics of training steps, set once by `resolve_device` (like torch's own TF32 flag).

    `precision`: tf32 (float32 storage, TF32 matmuls on CUDA; plain float32 on the CPU) or bf16
    (autocast of the forward pass to bfloat16, float32 weights and optimizer). `compile`: wrap the
    training forward in torch.compile (mode reduce-overhead, i.e. its own CUDA graphs, on the GPU).
    `cuda_graphs`: on CUDA without `compile`, capture each whole training step (forward, backward,
    fused optimizer) in one CUDA graph by hand (step.GraphedStep). Which of the two is faster
    waits for a GPU measurement (`bench --device cuda` with and without --compile). All three are
    recorded in every result's attrs.
    """

    precision: str = "tf32"
    compile: bool = False
    cuda_graphs: bool = True  # whole-step CUDA graphs on CUDA (step.make_step); no effect on the CPU


NUMERICS = Numerics()


def resolve_device(name: str, precision: str = "tf32", compile: bool = False) -> torch.device:
    """The training device. `precision` and `compile` set the process-wide `NUMERICS` that the
    training step uses (`step_numerics`); nothing else in the process changes numerics."""
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: use cpu or cuda")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    NUMERICS.precision, NUMERICS.compile = precision, compile
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA GPU is visible: use --device cpu")
    return torch.device(name)


def _set_tf32(on: bool) -> tuple[bool, bool]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    return saved


def _restore_tf32(saved: tuple[bool, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def step_numerics(device: torch.device) -> Iterator[None]:
    """Inside a training step: on CUDA, TF32 matmuls and convolutions exactly when --precision tf32
    (the papers' scale needs them), restored after the step so that probes and measures never see
    them; on every device no autocast but the step's own (the bf16 forward, step.py), whatever
    the caller has switched on. TF32 is a CUDA tensor-core format: the CPU computes float32."""
    if device.type != "cuda":
        if torch.is_autocast_enabled("cpu"):  # checked, not entered, per step: the CPU's steps are short
            with torch.autocast("cpu", enabled=False):
                yield
        else:
            yield
        return
    saved = _set_tf32(NUMERICS.precision == "tf32")
    try:
        with torch.autocast("cuda", enabled=False):
            yield
    finally:
        _restore_tf32(saved)


@contextmanager
def full_float32() -> Iterator[None]:
    """Probes and measures in full float32 on every device, whatever the training precision: TF32
    off for matmuls and convolutions (cuDNN allows TF32 by default) and no autocast. A TF32 product
    keeps 10 mantissa bits: a finite difference of two TF32 Jacobians (the tangent Hessian) would sit
    on a noise floor near 1e-3 of their norm, and a verdict must not depend on the GPU."""
    saved = _set_tf32(False)
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        try:
            yield
        finally:
            _restore_tf32(saved)


def peak_flops(device: torch.device, precision: str = "tf32") -> tuple[str, float | None]:
    """(device name, dense peak FLOP/s at this precision), None when the device is not in the table."""
    if device.type != "cuda":
        return f"CPU {device_name('cpu')} ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return name, peaks[precision == "bf16"]
    return name, None


def device_name(device: str) -> str:
    """The make of a device (GPU name, or the CPU model), recorded beside `device` in every result:
    a verdict must not depend on it, and the report shows what made the numbers."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def on_every_thread(fn: Callable[[], object]) -> int:
    """Call `fn` once on every thread of torch's OpenMP team (the main thread included), for
    per-thread CPU state such as the denormal flags of the MXCSR register, which
    `torch.set_flush_denormal` sets on the calling thread only. Runs one `GOMP_parallel` region of
    torch.get_num_threads() threads through the libgomp torch has loaded (the same threads its
    parallel regions and its BLAS use). Returns the number of threads reached; 0 where torch uses no
    libgomp (then only the caller's own thread has what `fn` did, if the caller ran it)."""
    gomp = _libgomp()
    threads = torch.get_num_threads()
    if gomp is None or threads < 2:
        return 0
    reached = set()

    def body(_data) -> None:
        fn()
        reached.add(threading.get_native_id())

    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(body)
    gomp.GOMP_parallel(callback, None, ctypes.c_uint(threads), ctypes.c_uint(0))
    return len(reached)


@lru_cache(maxsize=1)
def _libgomp() -> ctypes.CDLL | None:
    """The libgomp already mapped into this process by torch (None if there is none)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "libgomp" in line.split()[-1]})
    if not paths:
        return None
    gomp = ctypes.CDLL(paths[0])
    gomp.GOMP_parallel.restype = None
    return gomp


def cpu_peak_flops(threads: int | None = None) -> tuple[str, float | None]:
    """(how it is computed, the float32 FMA peak FLOP/s of `threads` cores (default torch's threads)):
    cores x GHz (/proc/cpuinfo's `cpu MHz`: the nominal clock a VM reports, no turbo) x FMA units per
    core x float32 SIMD lanes x 2 FLOPs per FMA. Lanes from the flags: 16 with avx512f, 8 with avx2 and
    fma, else 4 (SSE, one multiply and one add unit counted as one FMA). FMA units: 2 per core, an
    ASSUMPTION (Intel's server cores since Skylake-SP Gold/Platinum and AMD's Zen have two; some
    AVX-512 parts have one), since neither lscpu nor /proc/cpuinfo names them."""
    threads = threads or torch.get_num_threads()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)", None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    if not mhz:
        return "unknown (no cpu MHz in /proc/cpuinfo)", None
    lanes, isa = (16, "avx512f") if "avx512f" in flags else (8, "avx2+fma") if {"avx2", "fma"} <= set(flags) else (4, "sse")
    ghz, units = max(mhz) / 1000, 2
    peak = threads * ghz * 1e9 * units * lanes * 2
    return (f"{threads} cores x {ghz:.2f} GHz x {units} FMA units (assumed) x {lanes} float32 lanes ({isa}) x 2 "
            f"= {peak / 1e9:,.1f} GFLOP/s"), peak

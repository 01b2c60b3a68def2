"""Device facts every layer needs: which device, which numerics, and how fast the device can be.

The lowest module of the package (it imports only torch and errors), so that the engine, the
runner's dry run and the bench share one peak table and one device check without importing
each other.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
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
    """The training device; on CUDA, TF32 matmuls are on by default (the papers' scale needs them).

    `precision` and `compile` set the process-wide `NUMERICS` that `engine.train` uses.
    """
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: use cpu or cuda")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    NUMERICS.precision, NUMERICS.compile = precision, compile
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA GPU is visible: use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


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

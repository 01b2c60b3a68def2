"""The saved training state of a run (one file per run, written atomically at checkpoints), from
which a killed or preempted run resumes."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from reproduce import faults


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    faults.reached("state")
    os.replace(tmp, path)


def _load_state(path: Path | None, device: torch.device) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception:  # a checkpoint cut short by a kill mid-write cannot exist (atomic), but a foreign one can
        path.unlink()
        return None

"""Checkpoint probes: functions of (model) that return xarray pieces with a leading `replica`
dimension, run by `engine.train` at the checkpoint epochs outside the training step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import xarray as xr
from torch import nn

from reproduce.devices import full_float32

Probe = Callable[[nn.Module], dict[str, xr.DataArray]]


def _run_probe(model: nn.Module, probe: Probe) -> dict[str, xr.DataArray]:
    """The probe on the plain model in eval mode, without gradients, in full float32 (TF32 and
    autocast belong to the training step only)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), full_float32():
        pieces = probe(model)
    model.train(was_training)
    return pieces

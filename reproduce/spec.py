"""What a training run is asked to do: the optimizer of the paper, the epoch budget and the
checkpoint schedule. The lowest layer of the engine (spec -> step -> probes, state, timing -> engine)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSpec:
    """How to train: the optimizer of the paper and the epoch budget."""

    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    batch_size: int = 64  # 0 means full batch
    epochs: float = 100
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up, then constant
    checkpoints: tuple[float, ...] = ()  # epochs at which probes run; 0 and `epochs` always added


def log_schedule(last_epoch: float, first: float = 1.0, mantissas: Sequence[int] = (1, 2, 5)) -> tuple[float, ...]:
    """Checkpoint epochs n x 10^m (n in `mantissas`) from `first` up to `last_epoch`, plus 0 and the end.

    This is the papers' log-spaced schedule; `first` below 1 gives fractional-epoch checkpoints,
    needed when clean samples are learned within the first epoch.
    """
    epochs = {0.0, float(last_epoch)}
    decade = 10.0 ** math.floor(math.log10(first))
    while decade <= last_epoch:
        for n in mantissas:
            e = float(f"{n * decade:.6g}")
            if first <= e <= last_epoch:
                epochs.add(e)
        decade *= 10
    return tuple(sorted(epochs))

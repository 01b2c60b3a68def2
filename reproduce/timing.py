"""Seconds and FLOPs of training steps for --dry-run and the bench: the step `engine.train` takes
(`step.make_step`), timed on random data of the run's shape."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from reproduce.devices import NUMERICS
from reproduce.spec import TrainSpec
from reproduce.step import GraphedStep, make_step


def training_cost(n: int, spec: TrainSpec, multiply_adds: int, replicas: int,
                  epochs: float | None = None) -> tuple[int, float]:
    """Training steps and FLOPs of `epochs` (default `spec.epochs`) over `n` samples, for --dry-run:
    2 FLOPs per multiply-add, backward = 2 x forward, so 6 per multiply-add and sample."""
    epochs = spec.epochs if epochs is None else epochs
    if _RECORDING is not None:
        _RECORDING.append(dict(n=n, cost_spec=spec))
    steps = int(math.ceil(n / (spec.batch_size or n)) * epochs)
    return steps, 6.0 * multiply_adds * n * epochs * replicas


def checkpoint_count(spec: TrainSpec) -> int:
    """Probes a run of `spec` takes if it trains to its epoch cap: at epoch 0, at each checkpoint and
    at the end, for --dry-run."""
    return len({0.0, *spec.checkpoints, float(spec.epochs)})


_CALIBRATED: dict[tuple, float] = {}
_FAMILIES: dict[tuple, list[tuple[float, float]]] = {}
_POOLS: dict[tuple, torch.Tensor] = {}


CPU_TIER_SAMPLES = 5_000  # training samples: the CPU tiers' runs train on 500-2,000, the GPU tiers' image runs on 50,000-60,000


def seconds_per_step(model: nn.Module, input_shape: Sequence[int], num_classes: int, spec: TrainSpec,
                     device: torch.device, repeats: int = 3, target_s: float = 0.01, pool: int = 4096,
                     samples: int | None = None) -> float:
    """Calibration for --dry-run: seconds of one training step as `train` takes it (`make_step`: the
    batch gathered by a fresh random index from `pool` resident samples, so the gather misses caches
    as in training; forward under `NUMERICS`, backward, fused optimizer; a CUDA graph on the GPU), on
    random data of the run's shape. It trains `model`: pass a throwaway one.

    A run of at most CPU_TIER_SAMPLES training `samples` (the CPU tiers') is timed at its own batch
    on a pool of its own size (`own_step_seconds`: the median of several groups of steps): the
    extrapolation below put the same small-tier runs at 0.7x to 1.5x of their measured time from one
    dry run to the next (docs/speed.md), since its few single steps of small batches catch one phase
    of a shared machine and the extrapolation to the run's batch magnifies it. Such a run trains
    for minutes, so a second of timing is cheap beside it.

    Any other run (the GPU tiers' on a CPU, `samples` not given) is answered in a fraction of a
    second whatever the model, so that a dry run of hundreds of runs takes seconds: the batch grows from 1 by 4x while a step takes less than `target_s` (at least
    two batches); a step of the run's own batch that would take longer is extrapolated linearly in
    the batch (FLOPs) from the two largest batches timed (time = fixed per-step cost, optimizer
    included, + per-sample cost). Each point is the minimum of `repeats` timings, since a shared
    machine's load only ever adds time. One calibration per architecture, shape, optimizer and
    numerics is remembered for the process, so a tier's seeds share it; and a model of a family
    already calibrated (the same class, input, batch and replicas; another width) whose FLOPs per
    step are within 2x above the largest calibrated one, or between two calibrated ones, is scaled
    by FLOPs from its neighbours instead of timed (a width sweep times about one width in three).
    """
    if recorded(model, input_shape, num_classes):  # run_shape asks for the shape, not a timing
        return 0.0
    params = tuple(tuple(p.shape) for p in model.parameters())
    family = (type(model).__name__, tuple(input_shape), num_classes, spec.batch_size, spec.optimizer,
              getattr(model, "replicas", 1), str(device), NUMERICS.precision, NUMERICS.compile, NUMERICS.cuda_graphs)
    own = own_batch(samples)
    key = (family, params, samples if own else None)
    if key in _CALIBRATED:
        return _CALIBRATED[key]
    if own:
        _CALIBRATED[key] = own_step_seconds(model, tuple(input_shape), num_classes, spec, device, samples)
        return _CALIBRATED[key]
    flops = 6.0 * model.multiply_adds() * spec.batch_size * getattr(model, "replicas", 1) \
        if hasattr(model, "multiply_adds") else None
    seconds = _from_family(_FAMILIES.get(family, []), flops) if flops else None
    if seconds is None:
        seconds = measure_step(model, tuple(input_shape), num_classes, spec, device, repeats, target_s, pool)[0]
        if flops:
            _FAMILIES.setdefault(family, []).append((flops, seconds))
    _CALIBRATED[key] = seconds
    return seconds


def own_batch(samples: int | None) -> bool:
    """Whether `seconds_per_step` times a run of `samples` training samples at its own batch (a CPU
    tier's run); the experiments' `timed_at_own_batch` asks here, so the split has one source."""
    return samples is not None and samples <= CPU_TIER_SAMPLES


def own_step_seconds(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, spec: TrainSpec,
                     device: torch.device, samples: int, group_s: float = 0.2, groups: int = 5) -> float:
    """Seconds per training step at the run's own batch (`spec.batch_size`, or all `samples`), the
    step `train` takes (`make_step`) on random data of the run's shape, gathered from a pool of the
    run's own `samples`: the median over `groups` groups of consecutive steps of about `group_s`
    seconds each, after two warm-up steps (allocations, the first kernels). The time of a group is
    its mean step, as training's wall is; groups long enough that a step's own jitter averages out,
    and the median of several, so that one group slowed by another process or a slow phase of a
    shared machine does not move it (the minimum would keep the fastest phase instead, below the
    run's average). About 1.5 s of a dry run per run shape."""
    replicas = getattr(model, "replicas", 1)
    batch = spec.batch_size or samples
    g = torch.Generator().manual_seed(0)
    data = torch.rand(samples, *input_shape, generator=g).to(device)
    y = torch.randint(num_classes, (replicas, samples), generator=g).to(device)
    step = make_step(model, spec, data, y, batch)
    indices = [torch.randint(samples, (replicas, batch), generator=g).to(device) for _ in range(8)]
    timed = _step_timer(step, indices, device)
    timed(GraphedStep.warmup + 1 if step.graphed else 1)  # one-time costs (and a CUDA graph's capture)
    per_step = timed(1)
    return robust_step_seconds([timed(max(1, round(group_s / max(per_step, 1e-9)))) for _ in range(groups)])


def robust_step_seconds(group_means: Sequence[float]) -> float:
    """The median of groups' mean step times: a group slowed by other work counts as one vote."""
    return statistics.median(group_means)


def _from_family(points: list[tuple[float, float]], flops: float) -> float | None:
    """Seconds per step by linear interpolation in FLOPs between calibrated neighbours at most 4x
    apart, or extrapolation up to 2x above the largest (from the two largest); None: time it."""
    points = sorted(points)
    below = [p for p in points if p[0] <= flops]
    above = [p for p in points if p[0] >= flops]
    if below and above and above[0][0] <= 4 * below[-1][0]:
        (f1, t1), (f2, t2) = below[-1], above[0]
        return t1 if f2 == f1 else t1 + (t2 - t1) * (flops - f1) / (f2 - f1)
    if len(points) >= 2 and not above and flops <= 2 * points[-1][0]:
        return _extrapolate(*points[-2:], flops)
    return None


def _extrapolate(first: tuple[float, float], last: tuple[float, float], x: float) -> float:
    """Time at `x` on the line through two timed points (size, seconds) beyond the last one; the slope
    is kept between flat and proportional (a fixed cost plus a per-unit cost), which timing noise
    could otherwise push below zero or above the last point's own rate."""
    (x1, t1), (x2, t2) = first, last
    slope = min(max((t2 - t1) / (x2 - x1), 0.0), t2 / x2)
    return t2 + slope * (x - x2)


def measure_step(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, spec: TrainSpec,
                 device: torch.device, repeats: int = 3, target_s: float = math.inf,
                 pool: int = 4096) -> tuple[float, int]:
    """(seconds per training step at `spec.batch_size`, the largest batch actually timed): the
    measurement behind `seconds_per_step` (see there), without its caches; the bench reports both."""
    replicas = getattr(model, "replicas", 1)
    batch = spec.batch_size
    pool = max(pool, batch)
    data_key = (input_shape, pool, str(device))
    if data_key not in _POOLS:
        _POOLS.clear()  # one pool at a time: a CIFAR-sized pool is 50 MB
        _POOLS[data_key] = torch.rand(pool, *input_shape, device=device)
    data = _POOLS[data_key]
    y = torch.randint(num_classes, (replicas, pool), device=device)
    points: list[tuple[int, float]] = []
    b = min(batch, 1 if device.type == "cpu" else batch)
    while True:
        points.append((b, _time_step(model, spec, data, y, b, device, repeats)))
        if b == batch or (points[-1][1] >= target_s and len(points) > 1):
            break
        b = min(batch, b * 4)
    if points[-1][0] == batch:
        return points[-1][1], batch
    return _extrapolate(*points[-2:], batch), points[-1][0]


def _time_step(model, spec, data, y, batch, device, repeats) -> float:
    """Minimum over `repeats` of the mean step time of a group of steps (one step, or enough steps
    for ~2 ms where steps are shorter; the first timing, one step with its one-time costs, counts
    too: a dry run over hundreds of runs cannot afford warm-up steps of big models on a CPU)."""
    replicas = y.shape[0]
    step = make_step(model, spec, data, y, batch)
    indices = [torch.randint(data.shape[0], (replicas, batch), device=device) for _ in range(4)]
    timed = _step_timer(step, indices, device)
    if step.graphed:
        timed(GraphedStep.warmup + 1)  # eager warm-up steps and the capture
    first = timed(1)  # with one-time costs, which the minimum drops
    group = max(1, min(64, int(0.002 / max(first, 1e-9))))
    return min([first, *(timed(group) for _ in range(repeats - 1))])


def _step_timer(step, indices: list[torch.Tensor], device: torch.device) -> Callable[[int], float]:
    """timed(k): the mean seconds of k consecutive steps, cycling through `indices` (the host waits
    for the device before and after)."""
    def timed(k: int) -> float:
        sync(device)
        start = time.perf_counter()
        for i in range(k):
            step(indices[i % len(indices)])
        sync(device)
        return (time.perf_counter() - start) / k

    return timed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class RunShape:
    """A run's training problem as its experiment builds it: the stacked model (all the run's replicas),
    the input shape, classes, samples and the training spec (batch size as the engine trains it)."""

    model: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    n: int
    spec: TrainSpec

    @property
    def replicas(self) -> int:
        return getattr(self.model, "replicas", 1)

    @property
    def batch(self) -> int:
        return self.spec.batch_size or self.n


_RECORDING: list[dict] | None = None


def recorded(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> bool:
    """True inside `run_shape`, which then takes this model and shape instead of a timing: every
    experiment's `calibrate` calls it (through `seconds_per_step`, or itself where it times its own way)."""
    if _RECORDING is None:
        return False
    _RECORDING.append(dict(model=model, input_shape=input_shape, num_classes=num_classes))
    return True


def run_shape(experiment, run) -> RunShape:
    """The shape a run trains at, read from its experiment's own dry-run calibration (`calibrate` and
    `steps_and_flops`, which build the run's model and name its input, classes and samples), so that
    the bench times each run at the shape the tier trains and keeps no copies of the tiers' settings."""
    global _RECORDING
    _RECORDING = []
    try:
        experiment.steps_and_flops(run)
        experiment.calibrate(run, torch.device("cpu"))
        seen = {k: v for record in _RECORDING for k, v in record.items()}
    finally:
        _RECORDING = None
    spec = seen["cost_spec"]
    return RunShape(seen["model"], tuple(seen["input_shape"]), seen["num_classes"], seen["n"],
                    dataclasses.replace(spec, epochs=run.train.epochs))

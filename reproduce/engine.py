"""The one training loop every paper uses.

Data stay on the device as one tensor; a minibatch is a slice of a per-replica index
permutation, so there is no DataLoader and no Python work per sample. R replicas train stacked
(see models.py), each with its own labels and its own data order. At the checkpoint epochs the
probes run: functions of (model) that return xarray pieces with a leading `replica` dimension,
which the engine stacks along `epoch`. The training state is saved atomically at checkpoints
(and every `save_every_s` seconds at an epoch end), so a killed run resumes where it stopped and,
on the CPU, ends with exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from reproduce import faults
from reproduce.devices import NUMERICS

Probe = Callable[[nn.Module], dict[str, xr.DataArray]]


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


@dataclass
class TrainResult:
    dataset: xr.Dataset  # probe outputs, dims (epoch, replica, ...)
    diverged: bool
    diverged_epoch: float | None
    steps: int
    seconds: float  # wall time of training, probes included
    probe_seconds: float = 0.0  # the part of `seconds` spent in checkpoint probes


def make_optimizer(model: nn.Module, spec: TrainSpec, capturable: bool = False) -> torch.optim.Optimizer:
    """The paper's optimizer, fused: one kernel per step instead of a dozen small ops per parameter
    (2.6x faster Adam steps on a small CPU model; the same elementwise update, so stacked replicas
    still train as if alone). `capturable` keeps the step count on the device, so that the step can
    be captured in a CUDA graph."""
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    extra = dict(fused=fused, capturable=True) if capturable else dict(fused=fused)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    if spec.optimizer == "sgd":  # SGD keeps no step count: nothing to make capturable
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               fused=fused)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}: use adam, adamw or sgd")


def stacked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-replica mean cross-entropy, (R, B, K) x (R, B) -> (R,). Summing it trains replicas independently."""
    r, b, k = logits.shape
    return F.cross_entropy(logits.reshape(r * b, k), labels.reshape(r * b), reduction="none").view(r, b).mean(1)


class Step:
    """One training step of R stacked replicas, the same on every device: gather the batch by
    `index` (R, B) from the resident data, forward under `NUMERICS`, per-replica loss, backward,
    optimizer step. Returns the per-replica loss (R,) on the device (no host synchronisation)."""

    graphed = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
                 labels: torch.Tensor):
        self.model, self.optimizer, self.labels = model, optimizer, labels
        self.sample_shape = tuple(inputs.shape[1:])
        self.flat_inputs = inputs.reshape(inputs.shape[0], -1)  # index_select on this view: 3x faster than inputs[index] on the CPU
        self.forward = _training_forward(model, inputs.device)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return self.eager(index)

    def eager(self, index: torch.Tensor) -> torch.Tensor:
        batch_x = self.flat_inputs.index_select(0, index.reshape(-1)).view(*index.shape, *self.sample_shape)
        loss = stacked_cross_entropy(self.forward(batch_x), self.labels.gather(1, index))
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        return loss.detach()


class GraphedStep(Step):
    """The same step on CUDA, captured whole (forward, backward, fused optimizer) in one CUDA graph
    for the full batch shape: a replay launches it all at once, where eager mode launches some
    hundred small kernels from Python (measured on an H200 in the notes: MLP3 1.17 -> 0.20 ms per step).

    The batch's indices are copied into a static index tensor and gathered inside the graph from the
    resident data. Batches of another shape (an epoch's last, partial batch) and the first
    `warmup` full batches (run on a side stream, as capture requires) are eager steps; all are real
    training steps. The optimizer must be capturable (its step count on the device) and the learning
    rate fixed: the caller runs learning-rate warm-up steps with `eager`.
    """

    graphed = True
    warmup = 3

    def __init__(self, model, optimizer, inputs, labels, batch_shape: tuple[int, int]):
        super().__init__(model, optimizer, inputs, labels)
        self.batch_shape = tuple(batch_shape)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = 0

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        if tuple(index.shape) != self.batch_shape:
            return self.eager(index)
        if self.graph is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self.eager(index)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            self._capture(index)
        self.static_index.copy_(index)
        self.graph.replay()
        return self.static_loss

    def _capture(self, index: torch.Tensor) -> None:
        """Record one step (capture runs nothing; the replay that follows is the step)."""
        self.static_index = index.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients it reuses
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.eager(self.static_index)
        self.static_grads = [p.grad for p in self.model.parameters()]  # keep the graph's buffers referenced


def make_step(model: nn.Module, spec: TrainSpec, inputs: torch.Tensor, labels: torch.Tensor,
              batch: int) -> Step:
    """The step `train` and the dry-run calibration take: graphed on CUDA (unless `NUMERICS` says no
    or --compile asks for torch.compile's own graphs), eager elsewhere."""
    if inputs.device.type == "cuda" and NUMERICS.cuda_graphs and not NUMERICS.compile:
        optimizer = make_optimizer(model, spec, capturable=True)
        return GraphedStep(model, optimizer, inputs, labels, (labels.shape[0], batch))
    return Step(model, make_optimizer(model, spec), inputs, labels)


class Preempted(Exception):
    """train() saved its state and stopped because `request_stop()` was called (a Slurm preemption)."""


_stop = threading.Event()


def request_stop() -> None:
    """Ask the running train() (any thread) to save its state at the next step and raise Preempted."""
    _stop.set()


def clear_stop() -> None:
    _stop.clear()


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    faults.reached("state")
    os.replace(tmp, path)


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    spec: TrainSpec,
    probe: Probe,
    *,
    order_seeds: Sequence[int],
    state_path: Path | None = None,
    save_every_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
    stop_after_steps: int | None = None,
    stop_when: Callable[[list[tuple[float, dict[str, xr.DataArray]]]], bool] | None = None,
) -> TrainResult:
    """Train `model` (R stacked replicas) on `inputs` (N, ...) with per-replica `labels` (R, N).

    `order_seeds` (one per replica) fix each replica's data order, and nothing else:
    initialization and label noise have their own seeds, so a replica trains the same whichever
    replicas it is stacked with.
    `progress` is called with the number of steps done since its last call.
    `stop_after_steps` ends the call early (a stand-in for a kill, used by tests).
    `stop_when(records)` is asked after every checkpoint with the (epoch, probe outputs) so far; True
    ends training there (early stopping; the result then ends at that checkpoint).
    """
    with _flush_denormals(inputs.device):
        return _train(model, inputs, labels, spec, probe, order_seeds=order_seeds, state_path=state_path,
                      save_every_s=save_every_s, progress=progress, stop_after_steps=stop_after_steps,
                      stop_when=stop_when)


@contextmanager
def _flush_denormals(device: torch.device):
    """Adam's second moments and late gradients sink into float32 denormals, which the CPU computes
    ~100x slower: without this the quick ddmlp MLP3 ran at 14.2 ms per step after 30 epochs instead
    of 7.9. The flag is process-wide, so it is set for training only and cleared after (values below
    1.2e-38 become 0 meanwhile); left on, it would change any float code run later in the process."""
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _train(model, inputs, labels, spec, probe, *, order_seeds, state_path, save_every_s, progress,
           stop_after_steps, stop_when) -> TrainResult:
    device = inputs.device
    n = inputs.shape[0]
    replicas = labels.shape[0]
    batch = spec.batch_size or n
    steps_per_epoch = math.ceil(n / batch)
    total_steps = round(spec.epochs * steps_per_epoch)
    checkpoint_steps = sorted({round(e * steps_per_epoch) for e in (0.0, *spec.checkpoints, spec.epochs)})
    checkpoint_steps = [s for s in checkpoint_steps if s <= total_steps]
    step_fn = make_step(model, spec, inputs, labels, batch)
    optimizer = step_fn.optimizer
    warmup_steps = round(spec.warmup_epochs * steps_per_epoch)
    orders = [torch.Generator(device=device).manual_seed(int(s)) for s in order_seeds]
    if len(orders) != replicas:
        raise ValueError(f"{len(orders)} order seeds for {replicas} replicas")

    state = _load_state(state_path, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for generator, saved in zip(orders, state["orders"]):
            generator.set_state(saved.cpu())
        step, perm, records, seconds = state["step"], state["perm"], state["records"], state["seconds"]
        diverged_epoch, probe_seconds = state["diverged_epoch"], state.get("probe_seconds", 0.0)
    else:
        step, perm, records, seconds, diverged_epoch, probe_seconds = 0, None, [], 0.0, None, 0.0

    def probe_now() -> dict[str, xr.DataArray]:
        nonlocal probe_seconds
        start = time.perf_counter()
        pieces = _run_probe(model, probe)  # probes return host arrays, so their device work is done here
        probe_seconds += time.perf_counter() - start
        return pieces

    def checkpoint(step_now: int) -> None:
        if state_path is None:
            return
        _atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "orders": [g.get_state() for g in orders],
                "step": step_now,
                "perm": perm,
                "records": records,
                "seconds": seconds + time.perf_counter() - started,
                "diverged_epoch": diverged_epoch,
                "probe_seconds": probe_seconds,
            },
            state_path,
        )

    started = time.perf_counter()
    last_save = started
    running_loss = torch.zeros(replicas, device=device)
    if step == 0 and not records:
        records.append((0.0, probe_now()))
    next_checkpoints = [s for s in checkpoint_steps if s > step]
    steps_this_call = 0
    while step < total_steps and diverged_epoch is None:
        position = step % steps_per_epoch
        if position == 0 or perm is None:
            perm = torch.stack([torch.randperm(n, generator=g, device=device) for g in orders])
        index = perm[:, position * batch : (position + 1) * batch]
        if warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * min(1.0, (step + 1) / warmup_steps)
        # a changing learning rate cannot be replayed from a graph: warm-up steps are eager
        loss = step_fn.eager(index) if step < warmup_steps else step_fn(index)
        running_loss += loss
        step += 1
        steps_this_call += 1
        if progress is not None and (step % steps_per_epoch == 0 or step == total_steps):
            progress(steps_this_call)
            steps_this_call = 0
        if next_checkpoints and step == next_checkpoints[0]:
            next_checkpoints.pop(0)
            epoch = step / steps_per_epoch
            if not torch.isfinite(running_loss).all():
                diverged_epoch = epoch  # recorded; the loop ends and the run is marked diverged
            else:
                records.append((epoch, probe_now()))
            running_loss.zero_()
            checkpoint(step)
            last_save = time.perf_counter()
            if stop_when is not None and stop_when(records):
                break
        elif step % steps_per_epoch == 0 and time.perf_counter() - last_save > save_every_s:
            checkpoint(step)
            last_save = time.perf_counter()
        if _stop.is_set():
            checkpoint(step)
            raise Preempted(f"stopped at step {step} of {total_steps}, state saved to {state_path}")
        if stop_after_steps is not None and step >= stop_after_steps:
            checkpoint(step)
            raise KeyboardInterrupt(f"stopped after {step} steps (test stand-in for a kill)")

    seconds += time.perf_counter() - started
    dataset = xr.concat(
        [xr.Dataset(pieces).expand_dims(epoch=[epoch]) for epoch, pieces in records],
        dim="epoch",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
    )
    dataset.attrs.update(train_seconds=seconds, probe_seconds=probe_seconds, steps=step,
                         precision=NUMERICS.precision, compiled=int(NUMERICS.compile),
                         cuda_graphs=int(step_fn.graphed))
    return TrainResult(dataset, diverged_epoch is not None, diverged_epoch, step, seconds, probe_seconds)


def _training_forward(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward for training steps under `NUMERICS`: bf16 autocast and torch.compile
    when asked for. Probes and saved states always use the plain float32 `model`."""
    call = model
    if NUMERICS.compile:  # on CUDA instead of the hand-captured whole-step graph (make_step)
        call = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
    if NUMERICS.precision != "bf16":
        return call

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):  # no cache: capturable
            return call(x).float()

    return forward


def _run_probe(model: nn.Module, probe: Probe) -> dict[str, xr.DataArray]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pieces = probe(model)
    model.train(was_training)
    return pieces


def _load_state(path: Path | None, device: torch.device) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception:  # a checkpoint cut short by a kill mid-write cannot exist (atomic), but a foreign one can
        path.unlink()
        return None



def training_cost(n: int, spec: TrainSpec, multiply_adds: int, replicas: int,
                  epochs: float | None = None) -> tuple[int, float]:
    """Training steps and FLOPs of `epochs` (default `spec.epochs`) over `n` samples, for --dry-run:
    2 FLOPs per multiply-add, backward = 2 x forward, so 6 per multiply-add and sample."""
    epochs = spec.epochs if epochs is None else epochs
    steps = int(math.ceil(n / (spec.batch_size or n)) * epochs)
    return steps, 6.0 * multiply_adds * n * epochs * replicas


_CALIBRATED: dict[tuple, float] = {}
_FAMILIES: dict[tuple, list[tuple[float, float]]] = {}
_POOLS: dict[tuple, torch.Tensor] = {}


def seconds_per_step(model: nn.Module, input_shape: Sequence[int], num_classes: int, spec: TrainSpec,
                     device: torch.device, repeats: int = 3, target_s: float = 0.01, pool: int = 4096) -> float:
    """Calibration for --dry-run: seconds of one training step as `train` takes it (`make_step`: the
    batch gathered by a fresh random index from `pool` resident samples, so the gather misses caches
    as in training; forward under `NUMERICS`, backward, fused optimizer; a CUDA graph on the GPU), on
    random data of the run's shape. It trains `model`: pass a throwaway one.

    Answers in a fraction of a second whatever the model, so that a dry run of hundreds of runs
    takes seconds: the batch grows from 1 by 4x while a step takes less than `target_s` (at least
    two batches); a step of the run's own batch that would take longer is extrapolated linearly in
    the batch (FLOPs) from the two largest batches timed (time = fixed per-step cost, optimizer
    included, + per-sample cost). Each point is the minimum of `repeats` timings, since a shared
    machine's load only ever adds time. One calibration per architecture, shape, optimizer and
    numerics is remembered for the process, so a tier's seeds share it; and a model of a family
    already calibrated (the same class, input, batch and replicas; another width) whose FLOPs per
    step are within 2x above the largest calibrated one, or between two calibrated ones, is scaled
    by FLOPs from its neighbours instead of timed (a width sweep times about one width in three).
    """
    params = tuple(tuple(p.shape) for p in model.parameters())
    family = (type(model).__name__, tuple(input_shape), num_classes, spec.batch_size, spec.optimizer,
              getattr(model, "replicas", 1), str(device), NUMERICS.precision, NUMERICS.compile, NUMERICS.cuda_graphs)
    key = (family, params)
    if key in _CALIBRATED:
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

    def timed(k: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for i in range(k):
            step(indices[i % len(indices)])
        _sync(device)
        return (time.perf_counter() - start) / k

    if step.graphed:
        timed(GraphedStep.warmup + 1)  # eager warm-up steps and the capture
    first = timed(1)  # with one-time costs, which the minimum drops
    group = max(1, min(64, int(0.002 / max(first, 1e-9))))
    return min([first, *(timed(group) for _ in range(repeats - 1))])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()

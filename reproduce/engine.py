"""The one training loop every paper uses.

Data stay on the device as one tensor; a minibatch is a slice of a per-replica index
permutation, so there is no DataLoader and no Python work per sample. R replicas train stacked
(see models.py), each with its own labels and its own data order. At the checkpoint epochs the
probes run: functions of (model) that return xarray pieces with a leading `replica` dimension,
which the engine stacks along `epoch`. The training state is saved atomically at the first
checkpoint or epoch end once `save_gap` has passed since the last save, and when training ends,
so a killed run resumes where it stopped and, on the CPU, ends with exactly the numbers of an
uninterrupted run.

The parts live in their own modules: spec.py (TrainSpec, the checkpoint schedule), step.py (the
step and its CUDA graph), probes.py, state.py (the saved state), timing.py (step times for the dry
run and the bench); the names other modules import from here are re-exported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from contextlib import contextmanager
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import xarray as xr
from torch import nn

from reproduce.allocator import in_use as allocator_in_use, release_freed_memory
from reproduce.devices import NUMERICS, on_every_thread
from reproduce.probes import Probe, _run_probe
from reproduce.spec import TrainSpec, log_schedule
from reproduce.state import load_state, save_state
from reproduce.step import make_step
from reproduce.store import config_hash
from reproduce.timing import seconds_per_step, training_cost

__all__ = ["TrainSpec", "log_schedule", "TrainResult", "train", "checkpoint_steps_of", "fingerprint", "Preempted", "request_stop", "clear_stop",
           "Probe", "seconds_per_step", "training_cost"]


@dataclass
class TrainResult:
    dataset: xr.Dataset  # probe outputs, dims (epoch, replica, ...)
    diverged: bool
    diverged_epoch: float | None
    steps: int
    seconds: float  # wall time of training, probes included
    probe_seconds: float = 0.0  # the part of `seconds` spent in checkpoint probes


class Preempted(Exception):
    """train() saved its state and stopped because `request_stop()` was called (a Slurm preemption)."""


_stop = threading.Event()


def request_stop() -> None:
    """Ask the running train() (any thread) to save its state at the next step and raise Preempted."""
    _stop.set()


def clear_stop() -> None:
    _stop.clear()


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    spec: TrainSpec,
    probe: Probe,
    *,
    order_seeds: Sequence[int],
    state_path: Path | None = None,
    save_every_s: float = 10.0,
    progress: Callable[[int], None] | None = None,
    stop_after_steps: int | None = None,
    stop_when: Callable[[list[tuple[float, dict[str, xr.DataArray]]]], bool] | None = None,
) -> TrainResult:
    """Train `model` (R stacked replicas) on `inputs` (N, ...) with per-replica `labels` (R, N).

    `order_seeds` (one per replica) fix each replica's data order, and nothing else:
    initialization and label noise have their own seeds, so a replica trains the same whichever
    replicas it is stacked with.
    `save_every_s`: the shortest gap between two saved states (see `save_gap`).
    `progress` is called with the number of steps done since its last call.
    `stop_after_steps` ends the call early (a stand-in for a kill, used by tests).
    `stop_when(records)` is asked after every checkpoint with the (epoch, probe outputs) so far; True
    ends training there (early stopping; the result then ends at that checkpoint).
    """
    with _flush_denormals(inputs.device):
        return _train(model, inputs, labels, spec, probe, order_seeds=order_seeds, state_path=state_path,
                      save_every_s=save_every_s, progress=progress, stop_after_steps=stop_after_steps,
                      stop_when=stop_when)


def fingerprint(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, spec: TrainSpec,
                order_seeds: Sequence[int]) -> str:
    """What a saved state was trained for: the spec, the data orders, the model's parameter names and
    shapes, the inputs' shape and the labels themselves. A state resumes only into the same training;
    resumed into another (the tier's settings edited between a kill and the rerun) it would give
    numbers of neither, or fail at every resume."""
    digest = hashlib.sha256(labels.detach().cpu().contiguous().numpy().tobytes())
    return config_hash({"spec": dataclasses.asdict(spec), "order_seeds": [int(s) for s in order_seeds],
                        "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
                        "inputs": [list(inputs.shape), str(inputs.dtype)], "labels": digest.hexdigest()})


SAVE_SHARE = 0.05  # saving the state takes at most this share of the training time


# Under glibc the heap that `allocator.keep_freed_memory` keeps goes back to the kernel at a checkpoint
# at most this often: small allocations made between steps (probe results, records) land in the freed
# blocks of the step's large tensors, so the next step's do not fit and the heap grows; modnoise's
# learning-order run (a checkpoint every step) grew past 21 GB and was killed for memory. One round of
# page faults every 30 s, not every step (docs/speed.md). jemalloc's heap does not grow so (the same
# run peaked at 2.0 GB, never released): it keeps its pages until the run ends.
RELEASE_EVERY_S = 30.0


def save_gap(save_every_s: float, save_seconds: float) -> float:
    """Seconds from one saved state to the next: `save_every_s`, or longer where a save is slow, so
    that saves take at most SAVE_SHARE of the time. Saving at every checkpoint took 10% of the quick
    ddmlp MLP7 run (25 log-spaced checkpoints, 0.33 s per save, 8.1 of 79 s in train(); docs/speed.md).
    A kill loses at most this gap and one epoch of work, never numbers (a resumed run replays them)."""
    return max(save_every_s, save_seconds / SAVE_SHARE)


@contextmanager
def _flush_denormals(device: torch.device):
    """Adam's second moments and late gradients sink into float32 denormals, which the CPU computes
    ~100x slower: without this the quick ddmlp MLP3 ran at 14.2 ms per step after 30 epochs instead
    of 7.9. The flag is process-wide, so it is set for training only and cleared after (values below
    1.2e-38 become 0 meanwhile); left on, it would change any float code run later in the process.

    The flag lives in each thread's MXCSR register: `torch.set_flush_denormal` sets the calling
    thread's only, so it is set on every thread of torch's OpenMP team (`on_every_thread`). Set on
    the main thread alone, the second thread of a two-thread run kept computing denormals at full
    cost: a (30, 32, 784) x (30, 784, 256) bmm with denormal weights took 448 ms instead of 8
    (docs/speed.md), and the masc small tier trained at a third of the bench's speed."""
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    if flush:
        on_every_thread(lambda: torch.set_flush_denormal(True))
    try:
        yield
    finally:
        if flush:
            on_every_thread(lambda: torch.set_flush_denormal(False))
            torch.set_flush_denormal(False)


def checkpoint_steps_of(spec: TrainSpec, steps_per_epoch: int) -> list[int]:
    """The steps `train` probes at, in order: epoch 0, `spec.checkpoints` and the end, each at
    round(epoch x steps an epoch); a probe that differs by checkpoint counts its calls against these."""
    total_steps = round(spec.epochs * steps_per_epoch)
    steps = sorted({round(e * steps_per_epoch) for e in (0.0, *spec.checkpoints, spec.epochs)})
    return [s for s in steps if s <= total_steps]


def _train(model, inputs, labels, spec, probe, *, order_seeds, state_path, save_every_s, progress,
           stop_after_steps, stop_when) -> TrainResult:
    device = inputs.device
    n = inputs.shape[0]
    replicas = labels.shape[0]
    batch = spec.batch_size or n
    steps_per_epoch = math.ceil(n / batch)
    total_steps = round(spec.epochs * steps_per_epoch)
    checkpoint_steps = checkpoint_steps_of(spec, steps_per_epoch)
    step_fn = make_step(model, spec, inputs, labels, batch)
    optimizer = step_fn.optimizer
    warmup_steps = round(spec.warmup_epochs * steps_per_epoch)
    orders = [torch.Generator(device=device).manual_seed(int(s)) for s in order_seeds]
    if len(orders) != replicas:
        raise ValueError(f"{len(orders)} order seeds for {replicas} replicas")

    made_for = fingerprint(model, inputs, labels, spec, order_seeds)
    state = load_state(state_path, made_for)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for generator, saved in zip(orders, state["orders"]):
            generator.set_state(saved)
        step, records, seconds = state["step"], state["records"], state["seconds"]
        perm = None if state["perm"] is None else state["perm"].to(device)
        diverged_epoch, probe_seconds = state["diverged_epoch"], state["probe_seconds"]
    else:
        step, perm, records, seconds, diverged_epoch, probe_seconds = 0, None, [], 0.0, None, 0.0

    def probe_now() -> dict[str, xr.DataArray]:
        nonlocal probe_seconds
        start = time.perf_counter()
        pieces = _run_probe(model, probe)  # probes return host arrays, so their device work is done here
        probe_seconds += time.perf_counter() - start
        return pieces

    saved_step = -1

    def checkpoint(step_now: int) -> tuple[float, float]:
        """Save the state; (when the save ended, how long it took)."""
        nonlocal saved_step
        start = time.perf_counter()
        if state_path is None:
            return start, 0.0
        saved_step = step_now
        save_state(
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
                "made_for": made_for,
            },
            state_path,
        )
        end = time.perf_counter()
        return end, end - start

    started = time.perf_counter()
    last_save, save_seconds = started, 0.0
    last_release, heap_grows = started, allocator_in_use() == "glibc"

    def save_due() -> bool:
        return time.perf_counter() - last_save > save_gap(save_every_s, save_seconds)

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
            if heap_grows and time.perf_counter() - last_release > RELEASE_EVERY_S:
                release_freed_memory()
                last_release = time.perf_counter()
            if save_due():
                last_save, save_seconds = checkpoint(step)
            if stop_when is not None and stop_when(records):
                break
        elif step % steps_per_epoch == 0 and save_due():
            last_save, save_seconds = checkpoint(step)
        if _stop.is_set():
            checkpoint(step)
            raise Preempted(f"stopped at step {step} of {total_steps}, state saved to {state_path}")
        if stop_after_steps is not None and step >= stop_after_steps:
            checkpoint(step)
            raise KeyboardInterrupt(f"stopped after {step} steps (test stand-in for a kill)")
    if saved_step != step:  # the trained state, kept until the result is written (masc fits MASC for minutes after)
        checkpoint(step)

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

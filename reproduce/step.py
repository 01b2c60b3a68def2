"""One training step of R stacked replicas, eager or captured whole in a CUDA graph, and the
optimizer it steps: the only code that runs between two checkpoints of `engine.train`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.allocator import keep_freed_memory
from reproduce.devices import NUMERICS, step_numerics
from reproduce.spec import TrainSpec


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
        self.device = inputs.device

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return self.eager(index)

    def eager(self, index: torch.Tensor) -> torch.Tensor:
        """One step under the training numerics (`devices.step_numerics`: TF32 only here, only with
        --precision tf32); a graph captured from it keeps the kernels chosen under them."""
        with step_numerics(self.device):
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
    or --compile asks for torch.compile's own graphs), eager elsewhere. On the CPU the allocator keeps
    freed memory from here on (`allocator.keep_freed_memory`): every step, trained or timed, gets it."""
    if inputs.device.type == "cpu":
        keep_freed_memory()
    if inputs.device.type == "cuda" and NUMERICS.cuda_graphs and not NUMERICS.compile:
        optimizer = make_optimizer(model, spec, capturable=True)
        return GraphedStep(model, optimizer, inputs, labels, (labels.shape[0], batch))
    return Step(model, make_optimizer(model, spec), inputs, labels)


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

"""`python -m reproduce bench`: how fast the engine is, as ratios measured in one run.

    python -m reproduce bench [--quick] [--device cpu|cuda] [--precision tf32|bf16] [--compile]
                              [--results DIR] [--out DIR] [--only plain stacked runs steps tiers probes]
                              [--tiers quick small] [--run NAME ...]

Every line compares two throughputs taken in the same process, one after the other, and prints
both with their ratio, so the ratio holds on a busy machine where absolute speeds do not:

- engine vs a plain PyTorch loop (a torchvision-style Dataset, a DataLoader, one model per seed,
  trained one after another) on the tiers' own shapes (WORKLOAD_RUNS: the quick ddmlp MLP7, the
  modular-arithmetic nets of the quick and small modnoise tiers, the quick masc batch-32 MLP), read
  from the experiments' run configurations (timing.run_shape), so no tier setting is copied here;
- R = 1, 2, 4, 8, 16 replicas stacked as one batched model against R = 1 (one after another trains
  R x the samples at R = 1's speed);
- `runs`: every run of the quick and small tiers (quick only with --quick) at its own shape (its
  stacked model, replicas, samples, batch, optimizer): the tier's measured training samples/s (from
  its stored result in --results, probes excluded) beside the engine's at that shape on random data
  and the plain loop's, with the engine's share of the CPU's float32 FMA peak
  (devices.cpu_peak_flops: cores x GHz x FMA units x SIMD lanes x 2); `--tiers` and `--run NAME`
  keep the named tiers' and runs' lines only;
- `steps`: seconds per training step of every medium/full model (the ddmlp MLP7/5/3 at the paper's
  widths on CIFAR-10 and Fashion-MNIST shapes at batch 512, the smooth ConvNet at widths 4/16/64,
  the MASC CNN) at R = 1, 2, 4, 8 stacked replicas, tf32 beside bf16, with achieved FLOP/s and the
  share of the device's dense peak (devices.PEAK_FLOPS; unknown for CPUs);
- `tiers`: every tier's GPU-hours (device-hours on a CPU) from step times measured here (skipped
  with --quick);
- the share of wall time spent in checkpoint probes, read from the stored quick results in --results
  (the engine records `train_seconds` and `probe_seconds` in every result's attrs).

Numbers and a figure go to --out (bench.json, bench.png). Nothing here is a timed assertion.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reproduce.devices import NUMERICS, cpu_peak_flops, peak_flops, resolve_device
from reproduce.engine import TrainSpec, train
from reproduce.step import GraphedStep
from reproduce.timing import RunShape, measure_step, run_shape, sync
from reproduce.errors import UserError, _Parser, check_writable
from reproduce.models import StackedMLP, StackedTwoLayer

MLP7 = (2048, 2048, 1024, 1024, 512, 512)  # the double-descent paper's MLP7: 14.4 M multiply-adds on CIFAR-10


@dataclass(frozen=True)
class Workload:
    """One training problem: R replicas (seeds) of one architecture on N random samples."""

    name: str
    input_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    num_classes: int
    n: int
    spec: TrainSpec
    replicas: int = 4
    quadratic: bool = False  # modnoise: two layers, no biases, x -> (x W1)^2 W2
    one_hot: int = 0  # modnoise: inputs are two concatenated one-hot vectors of this modulus
    in_stacking_bench: bool = True  # False: too slow at 16 replicas for the R = 1..16 sweep

    def data(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        if self.one_hot:
            p = self.one_hot
            pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))[torch.randperm(p * p, generator=g)[: self.n]]
            x = torch.cat([nn.functional.one_hot(pairs[:, 0], p), nn.functional.one_hot(pairs[:, 1], p)], 1).float()
        else:
            x = torch.rand(self.n, *self.input_shape, generator=g)
        y = torch.randint(self.num_classes, (self.replicas, self.n), generator=g)
        return x.to(device), y.to(device)

    def stacked(self, replicas: int | None = None) -> nn.Module:
        seeds = range(replicas or self.replicas)
        if self.quadratic:
            return StackedQuadratic(math.prod(self.input_shape), self.hidden[0], self.num_classes, seeds)
        return StackedMLP(self.input_shape, self.hidden, self.num_classes, seeds)

    def plain(self) -> nn.Module:
        """The same network as a user would write it for one seed."""
        widths = [math.prod(self.input_shape), *self.hidden, self.num_classes]
        if self.quadratic:
            return nn.Sequential(nn.Linear(widths[0], widths[1], bias=False), Square(),
                                 nn.Linear(widths[1], widths[2], bias=False))
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        return nn.Sequential(*layers)

    def multiply_adds(self) -> int:
        widths = [math.prod(self.input_shape), *self.hidden, self.num_classes]
        return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class StackedQuadratic(nn.Module):
    """R two-layer nets x -> (x W1)^2 W2 without biases (the modular-arithmetic setting), stacked."""

    def __init__(self, fan_in: int, width: int, num_classes: int, seeds):
        super().__init__()
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.replicas = len(gens)
        self.w1 = nn.Parameter(torch.stack([torch.randn(fan_in, width, generator=g) / math.sqrt(fan_in) for g in gens]))
        self.w2 = nn.Parameter(torch.stack([torch.randn(width, num_classes, generator=g) / math.sqrt(width) for g in gens]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: one-hot pairs (R, B, 2P), or (B, 2P) shared by all replicas. (Gathering rows of W1 for
        the two hot entries instead of the matmul was tried: no faster on the CPU, so not kept.)"""
        h = torch.matmul(x, self.w1)  # -> (R, B, M)
        return torch.bmm(h * h, self.w2)


# The runs whose shapes the engine-vs-plain and stacking lines time: (tier, paper, run name), each
# read from its experiment's own configuration (timing.run_shape), so no tier setting is copied here.
RUN_TIERS = ("quick", "small")  # the CPU tiers whose runs `--only runs` times at their own shapes
WORKLOAD_RUNS = (("quick", "ddmlp", "mlp7-s0"), ("quick", "modnoise", "add-m513-s0"), ("small", "modnoise", "add-m33-s0"),
                 ("quick", "masc", "mlp-fashion_mnist-s0"))


def workloads(quick: bool) -> list[Workload]:
    """The speed-relevant shapes of the tiers, from their run configurations (WORKLOAD_RUNS): the quick
    ddmlp MLP7 (minibatch Adam), the modular-arithmetic nets (full batch AdamW; the quick tier's width
    513, and the small tier's width 33) and the masc batch-32 MLP, four seeds each (replicas of the
    run's first four seeds' shape), for a quarter epoch with --quick, one epoch otherwise (10 or 50
    full-batch steps)."""
    found = []
    for tier, paper, name in WORKLOAD_RUNS:
        shape = _shape(tier, paper, name)
        if shape is not None:
            found.append(_workload(f"{paper} {tier} {name}", shape, quick))
    return found


def _shape(tier: str, paper: str, name: str):
    from reproduce.experiments import experiment
    from reproduce.runner import plan

    runs = [run for p, run in plan(tier, [paper]) if run.name == name]
    return run_shape(experiment(paper), runs[0]) if runs else None


def _workload(name: str, shape: RunShape, quick: bool) -> Workload:
    """A RunShape as a bench Workload (StackedMLP or the modular two-layer net)."""
    model, e = shape.model, 0.25 if quick else 1.0
    full_batch_steps = 10 if quick else 50
    if shape.spec.batch_size:
        spec = replace(shape.spec, epochs=e, checkpoints=(), warmup_epochs=0.0)
    else:
        spec = replace(shape.spec, epochs=full_batch_steps, checkpoints=(), warmup_epochs=0.0)
    if isinstance(model, StackedMLP):
        return Workload(name, shape.input_shape, tuple(model.widths[1:-1]), shape.num_classes, shape.n, spec)
    if isinstance(model, StackedTwoLayer) and model.activation == "quadratic":
        return Workload(name, shape.input_shape, (model.width,), shape.num_classes, shape.n, spec, quadratic=True,
                        one_hot=model.p, in_stacking_bench=model.width < 256)
    raise ValueError(f"{name}: no bench workload for a {type(model).__name__}")


class _Samples(Dataset):
    """torchvision-style: one (input, label) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def time_plain(w: Workload, device: torch.device) -> float:
    """Samples per second of the plain loop: each seed trained alone, batches from a DataLoader."""
    x, y = w.data(torch.device("cpu"))  # a Dataset of host tensors, as torchvision gives
    batch = w.spec.batch_size or w.n
    start = time.perf_counter()
    for seed in range(w.replicas):
        torch.manual_seed(seed)
        model = w.plain().to(device)
        opt_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[w.spec.optimizer]
        opt = opt_class(model.parameters(), lr=w.spec.lr, weight_decay=w.spec.weight_decay)
        loader = DataLoader(_Samples(x, y[seed]), batch_size=batch, shuffle=True,
                            pin_memory=device.type == "cuda")
        steps, total = 0, round(w.spec.epochs * math.ceil(w.n / batch))
        while steps < total:
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                if steps == total:
                    break
    sync(device)
    return w.replicas * w.n * w.spec.epochs / (time.perf_counter() - start)


def _no_probe(model: nn.Module) -> dict[str, xr.DataArray]:
    return {}


def time_engine(w: Workload, device: torch.device, replicas: int | None = None) -> tuple[float, float]:
    """(samples per second of the engine in its steady state, seconds of one-time cost per `train`
    call): data resident, R replicas stacked. Each `train` call pays once for its optimizer, its first
    steps and, on CUDA, the eager warm-up steps and the graph capture (step.GraphedStep); a call of a
    few steps is timed beside the whole one and subtracted, so that the rate is the steps' own (what
    `step time` measures) and the one-time cost is reported on its own line."""
    r = replicas or w.replicas
    x, y = w.data(device)
    y = y[:1].expand(r, -1).contiguous() if r != w.replicas else y
    batch = w.spec.batch_size or w.n
    per_epoch = math.ceil(w.n / batch)
    total = round(w.spec.epochs * per_epoch)
    short = max(1, min(GraphedStep.warmup + 2, total // 2))

    def timed(steps: int) -> tuple[float, int]:
        model = w.stacked(r).to(device)
        spec = replace(w.spec, epochs=steps / per_epoch, checkpoints=())
        sync(device)
        start = time.perf_counter()
        train(model, x, y, spec, _no_probe, order_seeds=range(r))
        sync(device)
        return time.perf_counter() - start, r * ((steps // per_epoch) * w.n + (steps % per_epoch) * batch)

    (t_short, n_short), (t_long, n_long) = timed(short), timed(total)
    rate = (n_long - n_short) / max(t_long - t_short, 1e-9)
    return rate, max(0.0, t_short - n_short / rate)


def _warm_up(device: torch.device) -> None:
    """One tiny run of each path first, so neither side pays the first call's one-time costs."""
    w = Workload("warm-up", (1, 4, 4), (8,), 3, 64, TrainSpec("adam", 1e-3, 16, 1.0), replicas=1)
    time_plain(w, device)
    time_engine(w, device)


@dataclass
class Bench:
    device: str
    precision: str
    compiled: bool
    lines: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


def engine_vs_plain(b: Bench, device: torch.device, quick: bool) -> None:
    for w in workloads(quick):
        plain = time_plain(w, device)
        engine, once = time_engine(w, device)
        b.numbers.setdefault("engine_vs_plain", {})[w.name] = dict(engine=engine, plain=plain, engine_one_time_s=once,
                                                                   workload=asdict(w))
        b.say(f"engine vs plain DataLoader loop, {w.name} ({w.replicas} seeds, batch {w.spec.batch_size or w.n}): "
              f"engine {engine:,.0f} samples/s, plain {plain:,.0f} samples/s: {engine / plain:.1f}x")
        b.say(f"engine one-time cost per train() call, {w.name}: {once:.3f} s (optimizer, first steps"
              f"{', warm-up and graph capture' if device.type == 'cuda' else ''}; not in the rate above)")


def stacked_replicas(b: Bench, device: torch.device, quick: bool) -> None:
    """Throughput at R stacked replicas against R = 1 (training R replicas one after another takes R
    times as long as one, so the one-after-another throughput is R = 1's), for a compute-bound
    workload (the quick ddmlp MLP7) and the per-step-overhead-bound ones (the small modular net,
    the MASC batch-32 MLP)."""
    steps = 8 if quick else 32
    for w in [w for w in workloads(quick) if w.in_stacking_bench]:
        batch = w.spec.batch_size or w.n
        w = replace(w, spec=replace(w.spec, epochs=steps * batch / w.n), replicas=16)
        single = time_engine(w, device, replicas=1)[0]
        results = {1: single}
        for r in (2, 4, 8, 16):
            results[r] = time_engine(w, device, replicas=r)[0]
            b.say(f"stacked replicas, {w.name}, R={r} as one batched model vs one after another: stacked "
                  f"{results[r]:,.0f} samples/s, one after another {single:,.0f} samples/s: {results[r] / single:.1f}x")
        b.numbers.setdefault("stacked", {})[w.name] = {str(r): v for r, v in results.items()}


def tier_runs(b: Bench, device: torch.device, quick: bool, results: Path, tiers: tuple[str, ...] = RUN_TIERS,
              names: tuple[str, ...] = ()) -> None:
    """Each run of `tiers` (the quick and small tiers; quick only with --quick), or only those
    `names` (`--run`: a run's shape again, or two benches side by side as `--jobs 2` runs them), at
    its own shape (timing.run_shape: the run's stacked model, samples, batch and optimizer): the
    tier's measured training rate (steps x batch x replicas over train_seconds less probe_seconds,
    from the run's stored result in --results), the engine's steady rate at that shape on random
    data (`time_shape`) and the plain loop's (`time_plain_shape`: one replica at a time, a
    DataLoader), with the engine's achieved FLOP/s as a share of the CPU's float32 FMA peak
    (devices.cpu_peak_flops)."""
    from reproduce.store import ENGINE, Store

    if device.type == "cpu":
        how, peak = cpu_peak_flops()
        b.say(f"float32 FMA peak for the tier-run lines: {how}")
    else:
        how, peak = peak_flops(device, NUMERICS.precision)
        b.say(f"dense {NUMERICS.precision} peak for the tier-run lines: {how} {peak or 0:.3g} FLOP/s")
    store = Store(results)
    steps = 8 if quick else 32
    searched = ("quick",) if quick else tiers
    shapes = tier_run_shapes(searched)
    unknown = sorted(set(names) - {name for _, _, name, _ in shapes})
    if unknown:
        raise UserError(f"--run {' '.join(unknown)}: no such run in the {'/'.join(searched)} tier (names as in "
                        f"`python -m reproduce --tier T --dry-run`, e.g. {shapes[0][2] if shapes else 'mlp3-s0'})")
    for tier, paper, name, shape in (s for s in shapes if not names or s[2] in names):
        engine = time_shape(shape, device, steps)
        plain = time_plain_shape(shape, device, steps)
        measured = _tier_rate(store, tier, paper, name, shape, ENGINE)
        flops = 6.0 * shape.model.multiply_adds() * engine
        share = f"{flops / peak:.1%} of peak" if peak else "peak unknown"
        told = (f"tier {measured:,.0f} samples/s ({measured / engine:.0%} of the bench)" if measured
                else f"tier not measured (no stored {tier} result in {results})")
        b.numbers.setdefault("tier_runs", {})[f"{tier}/{paper}/{name}"] = dict(
            tier=measured, bench=engine, plain=plain, flops=flops, peak=peak, replicas=shape.replicas,
            batch=shape.batch, n=shape.n)
        b.say(f"tier run, {tier} {paper}/{name} (R={shape.replicas}, batch {shape.batch}, {shape.n} samples): "
              f"{told}, bench {engine:,.0f} samples/s ({_rate(flops)}, {share}), plain loop {plain:,.0f} samples/s")


def tier_run_shapes(tiers: tuple[str, ...]) -> list[tuple[str, str, str, RunShape]]:
    """(tier, paper, run name, shape) of every run of `tiers`."""
    from reproduce.experiments import PAPERS, experiment
    from reproduce.runner import plan

    return [(tier, paper, run.name, run_shape(experiment(paper), run)) for tier in tiers for paper, run in plan(tier, PAPERS)]


def _tier_rate(store, tier: str, paper: str, name: str, shape: RunShape, engine: str) -> float | None:
    """Samples per second of the stored run's training steps (probes excluded), None if not stored."""
    path = store.path(tier, paper, name)
    if not path.exists():
        return None
    with xr.open_dataset(path, engine=engine) as ds:
        steps, seconds = ds.attrs.get("steps"), ds.attrs.get("train_seconds")
        probes = float(ds.attrs.get("probe_seconds", 0.0))
    if not steps or not seconds:
        return None
    per_epoch = math.ceil(shape.n / shape.batch)
    samples = shape.replicas * ((int(steps) // per_epoch) * shape.n + (int(steps) % per_epoch) * shape.batch)
    return samples / max(float(seconds) - probes, 1e-9)


def time_shape(shape: RunShape, device: torch.device, steps: int) -> float:
    """Samples per second of the engine at a run's shape in its steady state: `steps` steps on random
    data, less a call of a few steps (its one-time costs), as `time_engine`."""
    x = torch.rand(shape.n, *shape.input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(shape.num_classes, (shape.replicas, shape.n), generator=torch.Generator().manual_seed(1)).to(device)
    per_epoch = math.ceil(shape.n / shape.batch)
    short = max(1, min(GraphedStep.warmup + 2, steps // 2))

    def timed(k: int) -> tuple[float, int]:
        model = copy.deepcopy(shape.model).to(device)
        spec = replace(shape.spec, epochs=k / per_epoch, checkpoints=(), warmup_epochs=0.0)
        sync(device)
        start = time.perf_counter()
        train(model, x, y, spec, _no_probe, order_seeds=range(shape.replicas))
        sync(device)
        return time.perf_counter() - start, shape.replicas * ((k // per_epoch) * shape.n + (k % per_epoch) * shape.batch)

    (t_short, n_short), (t_long, n_long) = timed(short), timed(steps)
    return (n_long - n_short) / max(t_long - t_short, 1e-9)


def one_replica(model: nn.Module) -> nn.Module:
    """The first replica of a stacked model as a model of its own (every parameter of a stacked model
    leads with its replicas: (R, ...) or, for grouped convolutions, (R x out, ...))."""
    r = model.replicas
    single = copy.deepcopy(model)
    for module in single.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(module, name, nn.Parameter(p.detach()[: p.shape[0] // r].clone()))
        if hasattr(module, "replicas"):
            module.replicas = 1
    return single


def time_plain_shape(shape: RunShape, device: torch.device, steps: int, seeds: int = 2) -> float:
    """Samples per second of the plain loop at a run's shape: one replica (`one_replica`) per seed,
    trained one after another from a torchvision-style Dataset and a shuffling DataLoader, the default
    torch.optim optimizer; `seeds` seeds (the rate of one after another is one seed's)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape.n, *shape.input_shape, generator=g)
    y = torch.randint(shape.num_classes, (shape.n,), generator=g)
    spec = shape.spec
    options = {"adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}),
               "sgd": (torch.optim.SGD, dict(momentum=spec.momentum))}
    start = time.perf_counter()
    samples = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = one_replica(shape.model).to(device)
        opt_class, extra = options[spec.optimizer]
        opt = opt_class(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **extra)
        loader = DataLoader(_Samples(x, y), batch_size=shape.batch, shuffle=True, pin_memory=device.type == "cuda")
        done = 0
        while done < steps:
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = nn.functional.cross_entropy(model(xb)[0], yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                samples += xb.shape[0]
                if done == steps:
                    break
    sync(device)
    return samples / (time.perf_counter() - start)


# The medium and full tiers' models (the papers' own widths), for step times at R = 1, 2, 4, 8.
PAPER_MLPS = {"MLP7": MLP7, "MLP5": (2048, 1024, 512, 512), "MLP3": (1024, 512)}
IMAGE_SHAPES = {"CIFAR-10": (3, 32, 32), "Fashion-MNIST": (1, 28, 28)}
SMOOTH_WIDTHS = (4, 16, 64)  # the smooth ConvNet's base widths 1..64: small, middle, widest


def step_workloads(quick: bool) -> list[tuple[str, Callable[[int], nn.Module], tuple[int, ...], TrainSpec]]:
    """(name, model of R replicas, input shape, spec) of the medium/full tiers' models: the ddmlp MLPs
    at batch 512 (Adam) on both input shapes, the smooth ConvNet at batch 128 (SGD), the MASC CNN at
    batch 32 (Adam). `quick`: MLP3 on CIFAR-10 and the narrowest ConvNet only."""
    from reproduce.experiments.masc import CNN_CONVS
    from reproduce.models import StackedCNN, StackedConvNet

    adam512, sgd128 = TrainSpec("adam", 1e-5, 512, 1.0), TrainSpec("sgd", 1e-3, 128, 1.0)
    found = [(f"{depth} {data}", (lambda r, h=hidden, x=shape: StackedMLP(x, h, 10, seeds=range(r))), shape, adam512)
             for data, shape in IMAGE_SHAPES.items() for depth, hidden in PAPER_MLPS.items()]
    found += [(f"ConvNet w{w} CIFAR-10", (lambda r, w=w: StackedConvNet((3, 32, 32), w, 10, seeds=range(r))),
               (3, 32, 32), sgd128) for w in SMOOTH_WIDTHS]
    found.append(("MASC CNN CIFAR-10", lambda r: StackedCNN((3, 32, 32), CNN_CONVS, (64,), 10, seeds=range(r)),
                  (3, 32, 32), TrainSpec("adam", 1e-5, 32, 1.0)))
    if quick:
        found = [w for w in found if w[0] in ("MLP3 CIFAR-10", f"ConvNet w{SMOOTH_WIDTHS[0]} CIFAR-10")]
    return found


def step_times(b: Bench, device: torch.device, quick: bool) -> None:
    """Seconds per training step (timing.measure_step: the step `train` takes, a CUDA graph on the GPU)
    of each medium/full model at R = 1, 2, 4, 8 stacked replicas, in tf32 and bf16, with the achieved
    FLOP/s (6 per multiply-add and sample) and its share of the device's dense peak. On the CPU a step
    longer than 0.5 s (0.1 s with --quick) is extrapolated from the largest batch timed, and says so."""
    target = math.inf if device.type == "cuda" else (0.1 if quick else 0.5)
    saved = NUMERICS.precision
    try:
        for name, build, shape, spec in step_workloads(quick):
            for r in (1, 2) if quick else (1, 2, 4, 8):
                parts, numbers = [], {}
                for precision in ("tf32", "bf16"):
                    NUMERICS.precision = precision
                    model = build(r).to(device)
                    seconds, timed = measure_step(model, shape, 10, spec, device, target_s=target)
                    achieved = 6.0 * model.multiply_adds() * spec.batch_size * r / seconds
                    peak = peak_flops(device, precision)[1]
                    numbers[precision] = dict(seconds=seconds, achieved=achieved, peak=peak, timed_batch=timed)
                    parts.append(f"{precision} {seconds * 1e3:,.2f} ms ({_rate(achieved)}"
                                 + (f", {achieved / peak:.1%} of peak" if peak else "") + ")"
                                 + ("" if timed == spec.batch_size else f" [extrapolated from batch {timed}]"))
                b.numbers.setdefault("steps", {}).setdefault(name, {})[str(r)] = numbers
                ratio = numbers["tf32"]["seconds"] / numbers["bf16"]["seconds"]
                b.say(f"step time, {name}, batch {spec.batch_size}, R={r}: {parts[0]}, {parts[1]}: bf16 {ratio:.1f}x")
    finally:
        NUMERICS.precision = saved
    name, peak = peak_flops(device, NUMERICS.precision)
    if not peak:
        b.say(f"peak of {name} unknown: the step times above give achieved FLOP/s only")


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.2f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def tier_hours(b: Bench, device: torch.device, quick: bool) -> None:
    """Every tier's device-hours (GPU-hours on a GPU) from step and probe times measured here, in tf32
    and bf16: the dry run's estimate (runner.estimate), which times each run's own step on this device."""
    from reproduce.experiments import PAPERS, TIERS
    from reproduce.runner import estimate

    if quick:
        b.say("projected tiers: skipped with --quick (python -m reproduce --tier T --dry-run gives each)")
        return
    unit = "GPU-hours" if device.type == "cuda" else "device-hours"
    saved = NUMERICS.precision
    try:
        for tier in TIERS:
            hours = {}
            for precision in ("tf32", "bf16"):
                NUMERICS.precision = precision
                rows = estimate(tier, PAPERS, device)
                hours[precision] = sum(row[-1] for row in rows) / 3600
            b.numbers.setdefault("tiers", {})[tier] = dict(hours, runs=len(rows), unit=unit)
            b.say(f"projected {tier} tier ({len(rows)} runs) on {peak_flops(device)[0]}: tf32 {hours['tf32']:.3g} "
                  f"{unit}, bf16 {hours['bf16']:.3g} {unit}, from step times measured here")
    finally:
        NUMERICS.precision = saved


def probe_share(b: Bench, results: Path) -> None:
    """The share of each paper's quick-tier wall time spent in checkpoint probes, from stored results."""
    from reproduce.experiments import PAPERS

    shares = {}
    for paper in PAPERS:
        files = sorted((results / "quick" / paper).glob("*.nc"))
        train_s = probe_s = 0.0
        missing = 0
        for path in files:
            with xr.open_dataset(path, engine="netcdf4") as ds:
                train_s += float(ds.attrs.get("train_seconds", 0.0))
                if "probe_seconds" in ds.attrs:
                    probe_s += float(ds.attrs["probe_seconds"])
                else:
                    missing += 1
        if not files:
            b.say(f"probe cost, {paper} quick tier: no quick results in {results} yet")
        elif missing:
            b.say(f"probe cost, {paper} quick tier: {missing} of {len(files)} runs made before the engine recorded "
                  f"probe_seconds (rerun with --fresh)")
        else:
            shares[paper] = dict(probe_seconds=probe_s, train_seconds=train_s)
            b.say(f"probe cost, {paper} quick tier ({len(files)} runs): probes {probe_s:,.0f} s of {train_s:,.0f} s "
                  f"wall: {probe_s / max(train_s, 1e-9):.1%}")
    b.numbers["probe_share"] = shares


def figure(b: Bench):
    """Stacked-replica speed-up, and achieved FLOP/s against the peak."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    for name, stacked in b.numbers.get("stacked", {}).items():
        rs = sorted(int(r) for r in stacked)
        ax1.plot(rs, [stacked[str(r)] / stacked["1"] for r in rs], "o-", label=name)
        ax1.axhline(1, ls="--", color="grey")
        ax1.set(xscale="log", xlabel="replicas R", ylabel="throughput / one after another", title="stacked replicas")
        ax1.set_xticks(rs, [str(r) for r in rs])
        ax1.legend(fontsize=7)
    peaks = set()
    for i, (name, by_r) in enumerate(b.numbers.get("steps", {}).items()):
        rs = sorted(int(r) for r in by_r)
        for precision, style in (("tf32", "o-"), ("bf16", "s--")):
            ax2.plot(rs, [by_r[str(r)][precision]["achieved"] / 1e12 for r in rs], style, color=f"C{i % 10}",
                     label=f"{name} {precision}" if precision == "tf32" else None)
            peaks.add(by_r[str(rs[0])][precision]["peak"])
    for peak in peaks - {None}:
        ax2.axhline(peak / 1e12, ls=":", color="grey")
    if b.numbers.get("steps"):
        ax2.set(xscale="log", yscale="log", xlabel="replicas R", ylabel="achieved TFLOP/s (dashed: bf16)",
                title="medium/full models" + ("" if peaks - {None} else " (peak unknown)"))
        ax2.legend(fontsize=6)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    p = _Parser(prog="python -m reproduce bench", description="Speed ratios of the engine, measured in one run.")
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test in about a minute")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", default="tf32", help="tf32 (default) or bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's training forward")
    p.add_argument("--results", type=Path, default=Path("results"), help="results store to read probe times from")
    p.add_argument("--out", type=Path, default=None, help="where bench.json and bench.png go (default RESULTS/bench)")
    sections = ["plain", "stacked", "runs", "steps", "tiers", "probes"]
    p.add_argument("--only", nargs="+", default=sections, choices=sections, help="benchmarks to run (default all)")
    p.add_argument("--tiers", nargs="+", default=list(RUN_TIERS), choices=RUN_TIERS,
                   help="the tiers whose runs `--only runs` times (default quick and small; --quick: quick)")
    p.add_argument("--run", nargs="+", default=[], metavar="NAME",
                   help="`--only runs`: only these runs of the tiers (e.g. add-m513-adam-s0)")
    args = p.parse_args(argv)
    device = resolve_device(args.device, args.precision, args.compile)
    out = args.out or args.results / "bench"
    check_writable(out, "--out DIR")  # before minutes of measuring, not after
    b = Bench(str(device), args.precision, args.compile)
    b.say(f"bench on {peak_flops(device)[0]}, precision {args.precision}, compile {args.compile}, "
          f"torch {torch.__version__}{', quick sizes' if args.quick else ''}")
    _warm_up(device)
    if "plain" in args.only:
        engine_vs_plain(b, device, args.quick)
    if "stacked" in args.only:
        stacked_replicas(b, device, args.quick)
    if "runs" in args.only:
        tier_runs(b, device, args.quick, args.results, tuple(args.tiers), tuple(args.run))
    if "steps" in args.only:
        step_times(b, device, args.quick)
    if "tiers" in args.only:
        tier_hours(b, device, args.quick)
    if "probes" in args.only:
        probe_share(b, args.results)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(dict(lines=b.lines, numbers=b.numbers, device=b.device,
                                                        precision=b.precision, compiled=b.compiled), indent=1))
        drawn = bool(b.numbers.get("stacked") or b.numbers.get("steps"))  # what the figure shows; else no figure
        if drawn:
            figure(b).savefig(out / "bench.png", dpi=120)
    except OSError as error:
        raise UserError(f"cannot write the bench output to {out} ({error.strerror}): pass --out DIR") from None
    print(f"bench: {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if drawn else " (no figure: neither "
                                            "stacked nor steps was measured)"))
    return 0

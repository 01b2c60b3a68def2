"""`python -m reproduce bench`: how fast the engine is, as ratios measured in one run.

    python -m reproduce bench [--quick] [--device cpu|cuda] [--precision tf32|bf16] [--compile]
                              [--results DIR] [--out DIR]

Every line compares two throughputs taken in the same process, one after the other, and prints
both with their ratio, so the ratio holds on a busy machine where absolute speeds do not:

- engine vs a plain PyTorch loop (a torchvision-style Dataset, a DataLoader, one model per seed,
  trained one after another) on the quick ddmlp MLP, the modular-arithmetic nets (modnoise) and the
  MASC batch-32 MLP, all defined here so the bench needs no other paper's code;
- R = 1, 2, 4, 8, 16 replicas stacked as one batched model against R = 1 (one after another trains
  R x the samples at R = 1's speed);
- achieved FLOP/s of the double-descent paper's MLP7 (batch 512, CIFAR-10-sized random data)
  against the device's dense peak (the table below; unknown for CPUs);
- the share of wall time spent in checkpoint probes, read from the stored quick results in --results
  (the engine records `train_seconds` and `probe_seconds` in every result's attrs).

Numbers and a figure go to --out (bench.json, bench.png). Nothing here is a timed assertion.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reproduce.engine import NUMERICS, TrainSpec, resolve_device, seconds_per_step, train
from reproduce.errors import UserError
from reproduce.models import StackedMLP
from reproduce.store import device_name

# Dense (no sparsity) tensor-core peaks in FLOP/s, from NVIDIA's data sheets: (tf32, bf16).
PEAK_FLOPS = {
    "H100 PCIe": (378e12, 756e12),
    "H100": (494.7e12, 989.4e12),  # SXM5; the data sheet's 989/1979 are with 2:4 sparsity
    "H200": (494.7e12, 989.4e12),
    "A100": (156e12, 312e12),
}
MLP7 = (2048, 2048, 1024, 1024, 512, 512)  # the double-descent paper's MLP7: 14.4 M multiply-adds on CIFAR-10


def peak_flops(device: torch.device, precision: str = "tf32") -> tuple[str, float | None]:
    """(device name, dense peak FLOP/s at this precision), None when the device is not in the table."""
    if device.type != "cuda":
        return f"CPU {device_name('cpu')} ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return name, peaks[precision == "bf16"]
    return name, None


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


def workloads(quick: bool) -> list[Workload]:
    """The speed-relevant shapes of the four papers' quick tiers.

    ddmlp: its quick MLP7 (4096 Fashion-MNIST-sized samples, batch 64, Adam); modnoise: addition mod 59
    on 90% of the pairs, full batch AdamW, widths 1024 and 2^5 + 1; masc: its quick MLP (256-256-256,
    2000 samples, batch 32, Adam). Four seeds each, as in the hand-written probe before the bench.
    """
    e = 0.25 if quick else 1.0
    full_batch_steps = 10 if quick else 50
    n_mod = round(0.9 * 59 * 59)
    return [
        Workload("ddmlp quick MLP7", (1, 28, 28), (512, 512, 256, 256, 128, 128), 10, 4096,
                 TrainSpec("adam", 1e-3, 64, e)),
        Workload("modnoise P=59 width 1024", (2 * 59,), (1024,), 59, n_mod,
                 TrainSpec("adamw", 1e-3, 0, full_batch_steps, weight_decay=1.0), quadratic=True, one_hot=59,
                 in_stacking_bench=False),
        Workload("modnoise P=59 width 33", (2 * 59,), (33,), 59, n_mod,
                 TrainSpec("adamw", 1e-3, 0, full_batch_steps, weight_decay=1.0), quadratic=True, one_hot=59),
        Workload("masc quick MLP batch 32", (1, 28, 28), (256, 256, 256), 10, 2000, TrainSpec("adam", 1e-3, 32, e)),
    ]


class _Samples(Dataset):
    """torchvision-style: one (input, label) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
    _sync(device)
    return w.replicas * w.n * w.spec.epochs / (time.perf_counter() - start)


def _no_probe(model: nn.Module) -> dict[str, xr.DataArray]:
    return {}


def time_engine(w: Workload, device: torch.device, replicas: int | None = None) -> float:
    """Samples per second of the engine: data resident, R replicas stacked, one `train` call."""
    r = replicas or w.replicas
    x, y = w.data(device)
    y = y[:1].expand(r, -1).contiguous() if r != w.replicas else y
    model = w.stacked(r).to(device)
    _sync(device)
    start = time.perf_counter()
    train(model, x, y, w.spec, _no_probe, order_seeds=range(r))
    _sync(device)
    return r * w.n * w.spec.epochs / (time.perf_counter() - start)


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
        engine = time_engine(w, device)
        b.numbers.setdefault("engine_vs_plain", {})[w.name] = dict(engine=engine, plain=plain, workload=asdict(w))
        b.say(f"engine vs plain DataLoader loop, {w.name} ({w.replicas} seeds, batch {w.spec.batch_size or w.n}): "
              f"engine {engine:,.0f} samples/s, plain {plain:,.0f} samples/s: {engine / plain:.1f}x")


def stacked_replicas(b: Bench, device: torch.device, quick: bool) -> None:
    """Throughput at R stacked replicas against R = 1 (training R replicas one after another takes R
    times as long as one, so the one-after-another throughput is R = 1's), for a compute-bound
    workload (the quick ddmlp MLP7) and the per-step-overhead-bound ones (the small modular net,
    the MASC batch-32 MLP)."""
    steps = 8 if quick else 32
    for w in [w for w in workloads(quick) if w.in_stacking_bench]:
        batch = w.spec.batch_size or w.n
        w = replace(w, spec=replace(w.spec, epochs=steps * batch / w.n), replicas=16)
        single = time_engine(w, device, replicas=1)
        results = {1: single}
        for r in (2, 4, 8, 16):
            results[r] = time_engine(w, device, replicas=r)
            b.say(f"stacked replicas, {w.name}, R={r} as one batched model vs one after another: stacked "
                  f"{results[r]:,.0f} samples/s, one after another {single:,.0f} samples/s: {results[r] / single:.1f}x")
        b.numbers.setdefault("stacked", {})[w.name] = {str(r): v for r, v in results.items()}


def flops_vs_peak(b: Bench, device: torch.device, quick: bool) -> None:
    """Achieved FLOP/s of MLP7 at batch 512 on CIFAR-10-sized random data (2 FLOPs per multiply-add,
    backward = 2 x forward), against the device's dense peak at the precision in use."""
    model = StackedMLP((3, 32, 32), MLP7, 10, seeds=[0]).to(device)
    spec = TrainSpec("adam", 1e-5, 512, 1.0)
    seconds = seconds_per_step(model, (3, 32, 32), 10, spec, device, repeats=1 if quick else 5,
                               budget_s=0.0 if quick else 1.0)
    achieved = 6.0 * model.multiply_adds() * spec.batch_size / seconds
    name, peak = peak_flops(device, NUMERICS.precision)
    b.numbers["flops"] = dict(device=name, achieved=achieved, peak=peak, precision=NUMERICS.precision)
    if peak:
        b.say(f"MLP7 batch 512 on {name} ({NUMERICS.precision}): achieved {achieved / 1e12:.1f} TFLOP/s, "
              f"dense peak {peak / 1e12:.0f} TFLOP/s: {achieved / peak:.1%} of peak")
    else:
        b.say(f"MLP7 batch 512 on {name} ({NUMERICS.precision}): achieved {achieved / 1e9:.1f} GFLOP/s, peak unknown")


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
    flops = b.numbers.get("flops")
    if flops:
        bars = {"achieved": flops["achieved"] / 1e12}
        if flops["peak"]:
            bars["dense peak"] = flops["peak"] / 1e12
        ax2.bar(list(bars), list(bars.values()), color=["C0", "C7"][: len(bars)])
        ax2.set(ylabel="TFLOP/s", title=f"MLP7 batch 512, {flops['precision']}\n{flops['device']}"
                + ("" if flops["peak"] else " (peak unknown)"))
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    from reproduce.cli import _Parser

    p = _Parser(prog="python -m reproduce bench", description="Speed ratios of the engine, measured in one run.")
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test in about a minute")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", default="tf32", help="tf32 (default) or bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's training forward")
    p.add_argument("--results", type=Path, default=Path("results"), help="results store to read probe times from")
    p.add_argument("--out", type=Path, default=None, help="where bench.json and bench.png go (default RESULTS/bench)")
    p.add_argument("--only", nargs="+", default=["plain", "stacked", "flops", "probes"],
                   choices=["plain", "stacked", "flops", "probes"], help="benchmarks to run (default all)")
    args = p.parse_args(argv)
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {args.device!r}: use cpu or cuda")
    device = resolve_device(args.device, args.precision, args.compile)
    out = args.out or args.results / "bench"
    b = Bench(str(device), args.precision, args.compile)
    b.say(f"bench on {peak_flops(device)[0]}, precision {args.precision}, compile {args.compile}, "
          f"torch {torch.__version__}{', quick sizes' if args.quick else ''}")
    _warm_up(device)
    if "plain" in args.only:
        engine_vs_plain(b, device, args.quick)
    if "stacked" in args.only:
        stacked_replicas(b, device, args.quick)
    if "flops" in args.only:
        flops_vs_peak(b, device, args.quick)
    if "probes" in args.only:
        probe_share(b, args.results)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(dict(lines=b.lines, numbers=b.numbers, device=b.device,
                                                        precision=b.precision, compiled=b.compiled), indent=1))
        figure(b).savefig(out / "bench.png", dpi=120)
    except OSError as error:
        raise UserError(f"cannot write the bench output to {out} ({error.strerror}): pass --out DIR") from None
    print(f"bench: {out / 'bench.json'} and {out / 'bench.png'}")
    return 0

"""Where a tier's training time goes: one run of a tier, as the tier runs it, with manual timers.

    PYTHONPATH=. python docs/speed_profile.py --tier quick --paper masc [--run NAME] [--out FILE.json]
    PYTHONPATH=. python docs/speed_profile.py --tier quick --paper ddmlp --run mlp7-s0 --against-bench

`--against-bench` answers one question only: is a step of the run, as the tier runs it, slower than
the bench's step at the run's shape? It trains the bench's workload (the run's stacked model on
random data, `timing.run_shape`, no probes, as many epochs as the run) and then the run itself,
each twice in this one process, and prints the median of the whole-step times (`Step.eager`, no
inner timers) of each, by eighths of the run.

The run is executed by its experiment's own `execute` (data, model, probes, stop rule, the
engine's loop), with `engine.train`'s parts wrapped by timers: the batch gather, the forward
(with the loss), the backward, the optimizer step (timed inside `step.Step.eager`: on the CPU
every op is synchronous, so a wall-clock timer between them is the op's own time), the per-epoch
permutation, the checkpoint probes, the stop rule and the state saves. "loop rest" is the wall
time of the training calls minus all of those: the Python of the loop and the timers themselves.
Beside the time, the minor page faults and system CPU of the steps, probes and saves (getrusage):
the kernel's share of a part (the modnoise learning-order runs' heap growth, docs/speed.md).
The numbers computed are those of the plain run (the wrappers only time): the profile is for
docs/speed.md, not a place results come from. Nothing is written to a results store.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import reproduce.engine as engine
import reproduce.step as step_module
from reproduce.allocator import restart_under_jemalloc
from reproduce.devices import step_numerics
from reproduce.experiments import experiment
from reproduce.runner import plan
from reproduce.step import stacked_cross_entropy

PARTS = ("gather", "forward", "backward", "optimizer", "permutation", "probes", "stop rule", "state saves")
T: dict[str, float] = defaultdict(float)
COUNT: dict[str, int] = defaultdict(int)
FAULTS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # part: [minor page faults, system CPU s]


def _faults() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


def _count_faults(part: str, before: tuple[int, float]) -> None:
    after = _faults()
    FAULTS[part][0] += after[0] - before[0]
    FAULTS[part][1] += after[1] - before[1]


def timed_eager(self, index):
    """step.Step.eager with a timer between its parts (the same ops in the same order)."""
    faults = _faults()
    with step_numerics(self.device):
        t0 = time.perf_counter()
        batch_x = self.flat_inputs.index_select(0, index.reshape(-1)).view(*index.shape, *self.sample_shape)
        batch_y = self.labels.gather(1, index)
        t1 = time.perf_counter()
        loss = stacked_cross_entropy(self.forward(batch_x), batch_y)
        t2 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        t3 = time.perf_counter()
        self.optimizer.step()
        t4 = time.perf_counter()
    _count_faults("steps", faults)
    for part, seconds in zip(PARTS[:4], (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        T[part] += seconds
    COUNT["steps"] += 1
    COUNT["samples"] += index.numel()
    return loss.detach()


def wrap(module, name: str, part: str) -> None:
    inner = getattr(module, name)

    def timed(*args, **kwargs):
        faults, start = _faults(), time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            T[part] += time.perf_counter() - start
            COUNT[part] += 1
            _count_faults(part, faults)

    setattr(module, name, timed)


def instrument() -> None:
    step_module.Step.eager = timed_eager
    wrap(engine, "_run_probe", "probes")
    wrap(engine, "save_state", "state saves")
    inner_randperm = torch.randperm

    def randperm(*args, **kwargs):
        start = time.perf_counter()
        out = inner_randperm(*args, **kwargs)
        T["permutation"] += time.perf_counter() - start
        return out

    engine.torch = _TorchProxy(randperm)
    inner_train = engine._train

    def train(*args, stop_when=None, **kwargs):
        if stop_when is not None:
            def stop(records):
                start = time.perf_counter()
                try:
                    return stop_when(records)
                finally:
                    T["stop rule"] += time.perf_counter() - start
        else:
            stop = None
        start = time.perf_counter()
        try:
            return inner_train(*args, stop_when=stop, **kwargs)
        finally:
            T["train calls"] += time.perf_counter() - start

    engine._train = train


class _TorchProxy:
    """`torch` for engine.py, with `randperm` timed."""

    def __init__(self, randperm):
        self.randperm = randperm

    def __getattr__(self, name):
        return getattr(torch, name)


def profile(tier: str, paper: str, name: str | None) -> dict:
    runs = [run for p, run in plan(tier, [paper]) if name is None or run.name == name]
    run = runs[0]
    instrument()
    with tempfile.TemporaryDirectory() as folder:  # saves as the tier makes them (runner.compute passes a state path)
        start = time.perf_counter()
        experiment(paper).execute(run, torch.device("cpu"), state_path=Path(folder) / "state.pt")
        total = time.perf_counter() - start
    train_s = T["train calls"]
    parts = {part: T[part] for part in PARTS}
    parts["loop rest"] = train_s - sum(parts.values())
    return dict(tier=tier, paper=paper, run=run.name, threads=torch.get_num_threads(), steps=COUNT["steps"],
                samples=COUNT["samples"], train_seconds=train_s, run_seconds=total, parts=parts,
                page_faults={part: dict(faults=int(n), system_seconds=s) for part, (n, s) in FAULTS.items()},
                samples_per_s=COUNT["samples"] / train_s,
                step_samples_per_s=COUNT["samples"] / sum(T[p] for p in PARTS[:4]))


def against_bench(tier: str, paper: str, name: str) -> None:
    """Median step times of the bench's workload and of the run, twice each, in this process."""
    import copy
    import statistics
    from dataclasses import replace

    from reproduce.bench import _no_probe
    from reproduce.timing import run_shape

    times: list[float] = []
    inner = step_module.Step.eager

    def eager(self, index):
        start = time.perf_counter()
        out = inner(self, index)
        times.append(time.perf_counter() - start)
        return out

    step_module.Step.eager = eager
    run = next(run for p, run in plan(tier, [paper]) if run.name == name)
    shape = run_shape(experiment(paper), run)
    x = torch.rand(shape.n, *shape.input_shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(shape.num_classes, (shape.replicas, shape.n), generator=torch.Generator().manual_seed(1))
    spec = replace(shape.spec, epochs=run.train.epochs, checkpoints=(), warmup_epochs=0.0)
    jobs = [("bench workload", lambda: engine.train(copy.deepcopy(shape.model), x, y, spec, _no_probe,
                                                    order_seeds=range(shape.replicas)))] * 2
    with tempfile.TemporaryDirectory() as folder:
        # each run with a state path of its own (as the tier passes one): a finished state would be resumed
        jobs += [(f"{tier} {paper}/{name}", lambda k=k: experiment(paper).execute(
            run, torch.device("cpu"), state_path=Path(folder) / f"state-{k}.pt")) for k in range(2)]
        for label, job in jobs:
            times.clear()
            job()
            n = len(times)
            eighths = " ".join(f"{statistics.median(times[i * n // 8:(i + 1) * n // 8]) * 1e3:.0f}" for i in range(8))
            print(f"{label}: {n} steps, {sum(times):.1f} s, median {statistics.median(times) * 1e3:.1f} ms a step; "
                  f"by eighths (ms): {eighths}", flush=True)


def main() -> None:
    restart_under_jemalloc()  # the allocator the tier trains under (`python -m reproduce` does the same)
    p = argparse.ArgumentParser()
    p.add_argument("--tier", default="quick")
    p.add_argument("--paper", default="masc")
    p.add_argument("--run", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--main-thread-flush", action="store_true",
                   help="the engine before issue 35: denormals flushed on the main thread only")
    p.add_argument("--against-bench", action="store_true",
                   help="step times of the run against the bench's workload at its shape (needs --run)")
    args = p.parse_args()
    if args.against_bench:
        return against_bench(args.tier, args.paper, args.run)
    if args.main_thread_flush:
        import reproduce.devices
        engine.on_every_thread = lambda fn: 0
    result = profile(args.tier, args.paper, args.run)
    result["main_thread_flush"] = args.main_thread_flush
    print(f"{'main thread only: ' if args.main_thread_flush else ''}{result['tier']} {result['paper']}/{result['run']}: {result['steps']} steps, "
          f"{result['train_seconds']:.1f} s in train() of {result['run_seconds']:.1f} s, "
          f"{result['samples_per_s']:,.0f} samples/s (steps alone {result['step_samples_per_s']:,.0f})")
    for part, seconds in result["parts"].items():
        print(f"  {part:12} {seconds:8.2f} s  {seconds / result['train_seconds']:6.1%}  "
              f"{seconds / max(result['steps'], 1) * 1e3:7.3f} ms/step")
    for part, counted in result["page_faults"].items():  # the kernel's work in a part: its system CPU
        print(f"  page faults in {part}: {counted['faults']:,} ({counted['system_seconds']:.1f} s of system CPU)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

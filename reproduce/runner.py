"""Make the results of a plan: the one code path behind the command line and the claim tests.

For every run of the tier: reuse the stored file when it is valid, otherwise train (resuming
from the run's saved training state if a previous attempt was killed) and write the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reproduce.data import locate
from reproduce.engine import resolve_device
from reproduce.experiments import check_tier, experiment
from reproduce.store import Store, utc_now


def plan(tier: str, papers: Sequence[str], seed: int = 0) -> list[tuple[str, object]]:
    """(paper, run) pairs of a tier, in the order they will be computed."""
    check_tier(tier)
    return [(paper, run) for paper in papers for run in experiment(paper).runs(tier, seed)]


def make_results(
    tier: str,
    papers: Sequence[str],
    results: Path,
    device: str = "cpu",
    seed: int = 0,
    fresh: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    precision: str = "tf32",
    compile: bool = False,
) -> dict[str, list[str]]:
    """Compute every run of the plan that the store lacks; return the run names per paper."""
    store = Store(Path(results))
    dev = resolve_device(device, precision, compile)
    todo, names = [], {p: [] for p in papers}
    for paper, run in plan(tier, papers, seed):
        names[paper].append(run.name)
        config = dataclasses.asdict(run)
        if fresh:
            store.state_path(tier, paper, run.name).unlink(missing_ok=True)
        elif store.load(tier, paper, run.name, config, warn=log) is not None:
            continue
        todo.append((paper, run, config))
    if not todo:
        return names
    for dataset in sorted({getattr(run, "dataset", None) for _, run, _ in todo} - {None}):
        locate(dataset)  # a missing data set stops the plan here, with one clear line, before any training
    total = sum(experiment(p).steps_and_flops(r)[0] for p, r, _ in todo)
    with tqdm(total=total, desc=f"{tier} plan ({len(todo)} runs)", unit="step", disable=not progress, position=0) as bar:
        for paper, run, config in todo:
            started = utc_now()
            state = store.state_path(tier, paper, run.name)
            steps = experiment(paper).steps_and_flops(run)[0]
            with tqdm(total=steps, desc=f"{paper}/{run.name}", unit="step", disable=not progress,
                      position=1, leave=False) as run_bar:

                def advance(n: int) -> None:
                    run_bar.update(n)
                    bar.update(n)

                ds = experiment(paper).execute(run, dev, state_path=state, progress=advance)
            status = "diverged" if ds.attrs.get("diverged") else "complete"
            provenance = dict(seed=run.seed, device=str(dev), torch_version=torch.__version__,
                              started_at=started, finished_at=utc_now(), status=status)
            path = store.write(ds, tier, paper, run.name, config, provenance)
            state.unlink(missing_ok=True)
            log(f"{paper}/{run.name}: {status}, {ds.attrs.get('train_seconds', 0):.0f} s of training -> {path}")
    return names


H100_ASSUMED_FRACTION = 0.4  # of the H100 SXM's dense TF32 peak: the target for MLP7 at batch 512


def describe(tier: str, papers: Sequence[str], device: str = "cpu", seed: int = 0, precision: str = "tf32") -> str:
    """The --dry-run table: runs, epochs, steps, FLOPs, and time on this device from a short calibration.

    The estimate is training steps (`calibrate`: seconds per step) plus checkpoint probes (an
    experiment's optional `calibrate_probe(run, device)`: seconds of one probe call on data of the
    run's shape, times the run's number of checkpoints). A projection for an H100 from the FLOPs at
    an assumed share of its TF32 peak follows, stated as an assumption.
    """
    from reproduce.bench import PEAK_FLOPS, peak_flops

    dev = resolve_device(device, precision)
    lines = [f"plan for tier {tier} on {dev}:",
             f"{'paper':8} {'run':12} {'replicas':>8} {'epochs':>9} {'steps':>11} {'FLOPs':>9} {'probes':>7} "
             f"{'est. time':>10}"]
    total_flops = total_seconds = 0.0
    uncalibrated = set()
    for paper, run in plan(tier, papers, seed):
        exp = experiment(paper)
        steps, flops = exp.steps_and_flops(run)
        seconds = steps * exp.calibrate(run, dev)
        checkpoints = len({0.0, *run.train.checkpoints, float(run.train.epochs)})
        if hasattr(exp, "calibrate_probe"):
            seconds += checkpoints * exp.calibrate_probe(run, dev)
        else:
            uncalibrated.add(paper)
        total_flops += flops
        total_seconds += seconds
        lines.append(f"{paper:8} {run.name:12} {len(run.replicas):>8} {run.train.epochs:>9.3g} {steps:>11,} "
                     f"{flops:>9.2e} {checkpoints:>7} {_duration(seconds):>10}")
    name = peak_flops(dev, precision)[0]
    lines.append(f"total: {total_flops:.2e} FLOPs, about {_duration(total_seconds)} on this device ({name}), "
                 f"= {total_seconds / 3600:.3g} device-hours; training steps and probes"
                 + (f" (probes not calibrated for {', '.join(sorted(uncalibrated))})" if uncalibrated else ""))
    h100 = PEAK_FLOPS["H100"][precision == "bf16"] * H100_ASSUMED_FRACTION
    lines.append(f"projection: {total_flops / h100 / 3600:.3g} GPU-hours on one H100 SXM, assuming "
                 f"{H100_ASSUMED_FRACTION:.0%} of its {PEAK_FLOPS['H100'][precision == 'bf16'] / 1e12:.0f} TFLOP/s "
                 f"dense {precision} peak (an assumption, not a measurement; training FLOPs only)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


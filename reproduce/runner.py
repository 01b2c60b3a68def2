"""Make the results of a plan: the one code path behind the command line and the claim tests.

For every run of the tier: reuse the stored file when it is valid, otherwise train (resuming
from the run's saved training state if a previous attempt was killed) and write the file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import torch
import xarray as xr
from tqdm.auto import tqdm

from reproduce.data import locate
from reproduce.allocator import in_use as allocator_in_use, keep_freed_memory, release_freed_memory
from reproduce.devices import NUMERICS, PEAK_FLOPS, device_name, peak_flops, resolve_device
from reproduce.errors import UserError
from reproduce.experiments import check_tier, experiment
from reproduce.store import ENGINE, Store, config_hash, run_config, unusable, utc_now
from reproduce.timing import checkpoint_count


def plan(tier: str, papers: Sequence[str], seed: int = 0, only: Sequence[str] | None = None) -> list[tuple[str, object]]:
    """(paper, run) pairs of a tier, in the order they will be computed; `only` keeps runs by name."""
    check_tier(tier)
    pairs = [(paper, run) for paper in papers for run in experiment(paper).runs(tier, seed)]
    if only:
        known = {run.name for _, run in pairs}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise UserError(f"unknown run {unknown[0]!r} in the {tier} plan: choose from {', '.join(sorted(known))}")
        pairs = [(paper, run) for paper, run in pairs if run.name in only]
    return pairs


def make_results(
    tier: str,
    papers: Sequence[str],
    results: Path,
    device: str = "cpu",
    seed: int = 0,
    fresh: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    jobs: int = 1,
    only: Sequence[str] | None = None,
    threads: int | None = None,
    precision: str = "tf32",
    compile: bool = False,
    execute: Callable[[Store, str, list], None] | None = None,
) -> dict[str, list[str]]:
    """Compute every run of the plan that the store lacks; return the run names per paper.

    `only` keeps the runs with these names; `threads` sets torch's CPU threads (the numbers depend
    on it); the progress lines' time left is the last --dry-run's estimate for `jobs` processes
    sharing the plan, where that dry run remembered one for this plan, device and thread count
    (`remembered_estimate`: the run itself times nothing, as the calibration took up to a minute of
    a small tier's CPU before any run started). The runs are computed here (`run_locally`) unless `execute(store, tier, todo)` is given:
    executors.make_results passes the Slurm executor that way, so the executors call the runner and
    the runner never imports them.
    """
    store = Store(Path(results))
    resolve_device(device, precision, compile)  # checks the device and precision before any work
    todo, names = [], {p: [] for p in papers}
    for paper, run in plan(tier, papers, seed, only):
        names[paper].append(run.name)
        if fresh:
            store.state_path(tier, paper, run.name).unlink(missing_ok=True)
        elif store.load(tier, paper, run.name, run_config(run), warn=log) is not None:
            continue
        todo.append((paper, run))
    if not todo:
        return names
    for dataset in sorted({getattr(run, "dataset", None) for _, run in todo} - {None}):
        locate(dataset)  # a missing data set stops the plan here, with one clear line, before any training
    if execute is not None:
        execute(store, tier, todo)
    else:
        if threads:
            torch.set_num_threads(threads)
        seconds = remembered_estimate(tier, todo, device, precision, log) if progress else None
        log(f"plan: {len(todo)} run{'s' * (len(todo) != 1)} of the {tier} tier to make"
            + (f" ({sum(map(len, names.values())) - len(todo)} stored, reused)" if len(todo) < sum(map(len, names.values())) else "")
            + (f", about {_duration(side_by_side_seconds(list(seconds.values()), jobs))} by the --dry-run estimate"
               if seconds else " (`--dry-run` first gives the time estimate)" if progress else ""))
        run_locally(store, tier, todo, device, reuse=not fresh, log=log, progress=progress, precision=precision,
                    compile=compile, estimates=seconds, jobs=jobs)
    return names


def estimates_folder() -> Path:
    """This machine's cache of the dry runs' seconds per run (TIER.json), under $XDG_CACHE_HOME (default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reproduce" / "estimates"


def _calibrated_on(device: str, precision: str) -> dict:
    """What a dry run's step times depend on: a remembered estimate made under anything else is not used."""
    dev = resolve_device(device, precision)
    return dict(device=str(dev), make=device_name(str(dev)), threads=torch.get_num_threads(),
                torch=torch.__version__, precision=precision, allocator=allocator_in_use())


def remember_estimate(tier: str, rows: list, device: str, precision: str, folder: Path | None = None) -> Path | None:
    """Write a dry run's seconds per run (`estimate`'s rows) to this machine's cache, with what they were
    calibrated on and each run's config hash, for the runs' progress lines (`remembered_estimate`), in
    whatever results folder they write; atomically, keeping an earlier dry run's other runs made on the
    same calibration. None where the cache cannot be written (a dry run changes nothing else)."""
    path = Path(folder or estimates_folder()) / f"{tier}.json"
    record = dict(calibrated_on=_calibrated_on(device, precision), runs={})
    try:
        old = json.loads(path.read_text())
        if old.get("calibrated_on") == record["calibrated_on"]:
            record["runs"].update(old["runs"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass  # none yet, or unreadable: replaced by this one
    record["runs"].update({f"{paper}/{run.name}": dict(config=config_hash(run_config(run)), seconds=seconds)
                           for paper, run, *_, seconds in rows})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        return None
    return path


def remembered_estimate(tier: str, todo: list, device: str, precision: str, log: Callable[[str], None] = print,
                        folder: Path | None = None) -> dict[str, float] | None:
    """Seconds per "paper/run" of `todo` from the last --dry-run (`remember_estimate`), or None: no dry
    run, or one made on another device, thread count, torch or precision, or for other runs (another
    config), which is said in one line and not used."""
    path = Path(folder or estimates_folder()) / f"{tier}.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        same = record["calibrated_on"] == _calibrated_on(device, precision)
        runs = record["runs"]
        seconds = {f"{p}/{r.name}": float(runs[f"{p}/{r.name}"]["seconds"]) for p, r in todo
                   if runs.get(f"{p}/{r.name}", {}).get("config") == config_hash(run_config(r))}
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as error:
        log(f"{path}: not a dry run's estimate ({type(error).__name__}: {error}); not used")
        return None
    if not same or len(seconds) < len(todo):
        log(f"{path}: the dry run's estimate was made {'on another device, thread count, torch or precision' if not same else 'for other runs'}"
            f"; not used (`--dry-run` again for one)")
        return None
    return seconds


def compute(store: Store, tier: str, paper: str, run, device: str, *, reuse: bool = True, wait: bool = True,
            log: Callable[[str], None] = print, progress: Callable[[int], None] | None = None,
            precision: str = "tf32", compile: bool = False) -> bool:
    """Train one run and write its file, holding the run's lock; the unit every executor runs.

    Returns False at once when another process holds the lock and `wait` is false. Under the
    lock the store is checked again, so a run that another process finished is not recomputed.
    """
    with store.lock(tier, paper, run.name, wait) as held:
        if not held:
            return False
        config = run_config(run)
        if reuse and store.load(tier, paper, run.name, config, warn=log) is not None:
            log(f"{paper}/{run.name}: computed by another process, reusing it")
            return True
        store.clean_partial(tier, paper, run.name)
        started = utc_now()
        state = store.state_path(tier, paper, run.name)
        dev = resolve_device(device, precision, compile)
        try:
            ds = experiment(paper).execute(run, dev, state_path=state, progress=progress)
        finally:
            release_freed_memory()  # the heap kept for this run's steps goes back before the next run
        status = "diverged" if ds.attrs.get("diverged") else "complete"
        provenance = dict(seed=run.seed, device=str(dev), torch_version=torch.__version__,
                          torch_threads=torch.get_num_threads(), allocator=allocator_in_use(), started_at=started,
                          finished_at=utc_now(), status=status)
        path = store.write(ds, tier, paper, run.name, config, provenance)
        state.unlink(missing_ok=True)
        log(f"{paper}/{run.name}: {status}, {ds.attrs.get('train_seconds', 0):.0f} s of training -> {path}")
    return True


def run_locally(store: Store, tier: str, todo: list, device: str, reuse: bool = True,
                log: Callable[[str], None] = print, progress: bool = True, stream: TextIO | None = None,
                log_every_s: float = 60.0, estimates: dict[str, float] | None = None, jobs: int = 1,
                **numerics) -> None:
    """The local executor: runs in plan order; one that another process holds is waited for last.

    Progress goes to `stream` (default stderr): two tqdm bars (plan, run) on a terminal; where the
    stream is not a terminal (a log file, CI), no bars and so no carriage returns, but one `log` line
    per run every `log_every_s` seconds and at its end, with steps/s and elapsed time. With `progress`,
    each run starts with "run i of N", the plan's elapsed time and, from `estimates` (seconds per
    "paper/run", the --dry-run's), the time left of `jobs` processes sharing the runs not yet taken;
    a run's "complete" line follows its last progress line.
    """
    stream = stream or sys.stderr
    bars = dict(disable=None if progress else True, file=stream, unit="step")  # None: off unless a terminal
    total = sum(experiment(p).steps_and_flops(r)[0] for p, r in todo)
    clock = _PlanClock(estimates, jobs)
    with tqdm(total=total, desc=f"{tier} plan ({len(todo)} runs)", position=0, **bars) as bar:
        deferred = []
        for i, (paper, run) in enumerate(todo, 1):
            name = f"{paper}/{run.name}"
            left = [f"{p}/{r.name}" for p, r in todo[i - 1:]]
            if progress and bar.disable:  # a log: one line; a terminal: the plan bar says it
                log(f"run {i} of {len(todo)}: {name}; {clock.status(left)}")
            bar.set_description(f"{tier} plan, run {i} of {len(todo)}", refresh=False)
            steps = experiment(paper).steps_and_flops(run)[0]
            with tqdm(total=steps, desc=name, position=1, leave=False, **bars) as run_bar:
                line = _ProgressLine(name, steps, log if progress and bar.disable else None, log_every_s)

                def advance(n: int) -> None:
                    run_bar.update(n)
                    bar.update(n)
                    line.update(n)

                def said(message: str) -> None:  # the run's last progress line before its "complete" line
                    line.finish()
                    log(message)

                made = compute(store, tier, paper, run, device, reuse=reuse, wait=False, log=said, progress=advance,
                               **numerics)
                line.finish()
            if made:
                clock.done(name)
            else:
                deferred.append((paper, run))
                clock.passed(name)
                if progress:
                    log(f"{name}: another process is computing it; on to the next run")
        for paper, run in deferred:
            log(f"{paper}/{run.name}: another process is computing it; waiting for its result")
            compute(store, tier, paper, run, device, reuse=True, wait=True, log=log, **numerics)


class _PlanClock:
    """Elapsed time of the plan and the time left: the --dry-run estimates of the runs left, shared out
    to `jobs` processes (`side_by_side_seconds`) and scaled by how this process's finished runs
    compared with their estimates (no estimates: elapsed time only). A run another process holds is
    neither finished here nor left."""

    def __init__(self, estimates: dict[str, float] | None, jobs: int = 1):
        self.estimates, self.jobs, self.started = estimates or {}, jobs, time.perf_counter()
        self.finished: list[str] = []
        self.elsewhere: set[str] = set()

    def done(self, name: str) -> None:
        self.finished.append(name)

    def passed(self, name: str) -> None:
        self.elsewhere.add(name)

    def status(self, left: list[str]) -> str:
        elapsed = time.perf_counter() - self.started
        text = f"{_duration(elapsed)} elapsed"
        left = [n for n in left if n not in self.elsewhere]
        if not self.estimates or any(n not in self.estimates for n in left):
            return text
        planned = sum(self.estimates.get(n, 0.0) for n in self.finished)
        pace = elapsed / planned if self.finished and planned > 0 else 1.0
        return text + f", about {_duration(pace * side_by_side_seconds([self.estimates[n] for n in left], self.jobs))} left"


class _ProgressLine:
    """Progress of one run as plain log lines, for logs where a progress bar would write `\r`s."""

    def __init__(self, name: str, total: int, log: Callable[[str], None] | None, every_s: float):
        self.name, self.total, self.log, self.every_s = name, total, log, every_s
        self.done = 0
        self.said = -1  # steps done when last said: the last line is said once
        self.started = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if self.log is not None and time.perf_counter() - self.last >= self.every_s:
            self._say()

    def finish(self) -> None:
        if self.log is not None and self.done and self.said != self.done:
            self._say()

    def _say(self) -> None:
        self.said = self.done
        self.last = time.perf_counter()
        elapsed = self.last - self.started
        self.log(f"{self.name}: {self.done:,}/{self.total:,} steps, {self.done / max(elapsed, 1e-9):,.1f} steps/s, "
                 f"{elapsed:,.0f} s elapsed")


def check_stored(tier: str, papers: Sequence[str], results: Path, seed: int = 0,
                 only: Sequence[str] | None = None) -> None:
    """For commands that train nothing (report): a stored file that cannot be used is an error, not a notice."""
    store = Store(Path(results))
    for paper, run in plan(tier, papers, seed, only):
        path = store.path(tier, paper, run.name)
        if path.exists() and (reason := store.problem(path, paper, tier, run_config(run))):
            raise UserError(unusable(path, reason, tier, paper, run.name, results))


def diverged_runs(tier: str, papers: Sequence[str], results: Path, seed: int = 0,
                  only: Sequence[str] | None = None) -> list[str]:
    """`paper/run (epoch E)` for every stored run of the plan whose loss turned NaN."""
    store, found = Store(Path(results)), []
    for paper, run in plan(tier, papers, seed, only):
        path = store.path(tier, paper, run.name)
        if path.exists():
            with xr.open_dataset(path, engine=ENGINE) as ds:
                if ds.attrs.get("status") == "diverged":
                    found.append(f"{paper}/{run.name} (epoch {ds.attrs.get('diverged_epoch')})")
    return found


H100_ASSUMED_FRACTION = 0.4  # of the H100 SXM's dense TF32 peak: the target for MLP7 at batch 512


def describe(tier: str, papers: Sequence[str], device: str = "cpu", seed: int = 0,
             only: Sequence[str] | None = None, precision: str = "tf32", jobs: int = 1,
             remember: bool = False) -> str:
    """The --dry-run table: runs, epochs, steps, FLOPs, and time on this device from a short calibration.

    The estimate is training steps (`calibrate`: seconds per step, measured on this device, see
    engine.seconds_per_step) plus checkpoint probes (an experiment's optional
    `calibrate_probe(run, device)`: seconds of one probe call on data of the run's shape, times the
    run's number of checkpoints; or `calibrate_probes(run, device)`: seconds of all the run's probes,
    where they differ by checkpoint, as modnoise's full and per-step light probes) plus the work after training (an experiment's optional
    `calibrate_after(run, device)`, e.g. masc's subspace fitting). Runs of one shape (the seeds of a run) share one calibration, so
    the dry run of any tier takes seconds. On a GPU the total is that measurement; elsewhere a
    projection for an H100 from the FLOPs at an assumed share of its TF32 peak follows, stated as
    an assumption. With `jobs` > 1 (executors.side_by_side) the time is that of the runs shared out in
    plan order to the process that frees first (`side_by_side_seconds`), each calibrated at its own
    threads. With `remember` the seconds per run go to this machine's cache for the runs' progress
    lines (`remember_estimate`).
    """
    dev = resolve_device(device, precision)
    lines = [f"plan for tier {tier} on {dev}:",
             f"{'paper':8} {'run':12} {'replicas':>8} {'epochs':>9} {'steps':>11} {'FLOPs':>9} {'probes':>7} "
             f"{'est. time':>10}"]
    total_flops = 0.0
    uncalibrated, run_seconds = set(), []
    rows = estimate(tier, papers, dev, seed, only)
    remembered = remember_estimate(tier, rows, device, precision) if remember else None
    for paper, run, steps, flops, checkpoints, seconds in rows:
        if not any(hasattr(experiment(paper), f) for f in ("calibrate_probe", "calibrate_probes")):
            uncalibrated.add(paper)
        total_flops += flops
        run_seconds.append(seconds)
        lines.append(f"{paper:8} {run.name:12} {len(run.replicas):>8} {run.train.epochs:>9.3g} {steps:>11,} "
                     f"{flops:>9.2e} {checkpoints:>7} {_duration(seconds):>10}")
    name = peak_flops(dev, precision)[0]
    total_seconds = side_by_side_seconds(run_seconds, jobs)
    if jobs > 1:
        name += f", {jobs} jobs side by side; the runs' sum {_duration(sum(run_seconds))}"
    lines.append(f"total: {total_flops:.2e} FLOPs, about {_duration(total_seconds)} on this device ({name}), "
                 f"= {total_seconds / 3600:.3g} device-hours; training steps, probes and work after training (masc's MASC at CPU-tier sizes only)"
                 + (f" (probes not calibrated for {', '.join(sorted(uncalibrated))})" if uncalibrated else ""))
    if dev.type == "cuda":
        lines.append(f"GPU-hours: {total_seconds / 3600:.3g} on this GPU, from step times measured on it "
                     f"({'whole-step CUDA graphs' if NUMERICS.cuda_graphs and not NUMERICS.compile else 'eager steps'}"
                     f", {precision})")
    else:
        h100 = PEAK_FLOPS["H100"][precision == "bf16"] * H100_ASSUMED_FRACTION
        lines.append(f"projection: {total_flops / h100 / 3600:.3g} GPU-hours on one H100 SXM, ASSUMING "
                     f"{H100_ASSUMED_FRACTION:.0%} of its {PEAK_FLOPS['H100'][precision == 'bf16'] / 1e12:.0f} TFLOP/s "
                     f"dense {precision} peak (an assumption, not a measurement: no GPU here; training FLOPs only; "
                     f"`--dry-run --device cuda` on a GPU measures it)")
    if remembered is not None:
        lines.append(f"estimate: remembered in {remembered} for the runs' progress lines")
    return "\n".join(lines)


def side_by_side_seconds(seconds: Sequence[float], jobs: int = 1) -> float:
    """Wall time of runs taking `seconds` each when `jobs` processes take them in plan order, each next
    run going to the process that frees first (what the store's per-run lock does, run_locally)."""
    free = [0.0] * max(1, jobs)
    for s in seconds:
        free[free.index(min(free))] += s
    return max(free)


def estimate(tier: str, papers: Sequence[str], dev, seed: int = 0,
             only: Sequence[str] | None = None) -> list[tuple[str, object, int, float, int, float]]:
    """(paper, run, steps, FLOPs, checkpoints, estimated seconds) for every run of the plan, from
    step and probe times measured on `dev` under the current numerics (see `describe`).

    Within a model family (a paper's runs of one replica count, batch size, optimizer and data set:
    another width or depth) the seconds per step of runs timed by extrapolation from small batches
    (the GPU tiers' on a CPU) are one line in the FLOPs per step (`_family_fit`) through all the
    family's timings, so the estimate grows with the FLOPs, and one timing that a busy machine slowed
    moves it less. A run that its experiment times at its own batch and shape (the optional
    `timed_at_own_batch(run)`: the CPU tiers' runs of ddmlp and masc, timed over several groups of
    steps) keeps its own timing: the line would move it, since a step's time is not linear in its
    FLOPs across depths (small-tier ddmlp: 17, 18 and 20 ms per GFLOP for MLP3, 5 and 7, so the line
    through them put MLP7 18% under its own timing). modnoise's CPU-tier runs, timed by one or two
    full-batch steps each, keep the line through the widths, which pools them (the small main run:
    8.5 and 8.6 min in two dry runs with it, 7.3-8.8 min in three without; docs/speed.md).
    """
    if dev.type == "cpu":
        keep_freed_memory()  # the allocator training steps and probes run under (make_step), from the first probe timed
    rows, calibrated = [], {}
    for paper, run in plan(tier, papers, seed, only):
        exp = experiment(paper)
        steps, flops = exp.steps_and_flops(run)
        checkpoints = checkpoint_count(run.train)
        shape = (paper, steps, flops, checkpoints, len(run.replicas))  # the same for every seed of a run
        if shape not in calibrated:
            if hasattr(exp, "calibrate_probes"):  # probes that differ by checkpoint: the run's own total
                probe = exp.calibrate_probes(run, dev)
            else:
                probe = checkpoints * exp.calibrate_probe(run, dev) if hasattr(exp, "calibrate_probe") else 0.0
            probe += exp.calibrate_after(run, dev) if hasattr(exp, "calibrate_after") else 0.0
            own = hasattr(exp, "timed_at_own_batch") and exp.timed_at_own_batch(run)
            calibrated[shape] = (exp.calibrate(run, dev), probe, own)
        rows.append((paper, run, steps, flops, checkpoints, calibrated[shape]))
    families: dict[tuple, list[tuple[float, float]]] = {}
    for paper, run, steps, flops, _, (step_s, _, own) in rows:
        if not own:
            families.setdefault(_family(paper, run), []).append((flops / max(steps, 1), step_s))
    fits = {key: _family_fit(points) for key, points in families.items()}
    return [(paper, run, steps, flops, checkpoints,
             steps * (step_s if own else fits[_family(paper, run)](flops / max(steps, 1))) + probe)
            for paper, run, steps, flops, checkpoints, (step_s, probe, own) in rows]


def _family(paper: str, run) -> tuple:
    return (paper, len(run.replicas), run.train.batch_size, run.train.optimizer, getattr(run, "dataset", None))


def _family_fit(points: list[tuple[float, float]]) -> Callable[[float], float]:
    """Seconds per step as a + b * FLOPs per step with a, b >= 0 (a fixed cost per step plus a cost per
    FLOP), least squares in relative error over the family's timings; one size of step: their median."""
    import numpy as np
    from scipy.optimize import nnls

    x, y = np.array(points, dtype=float).T
    if len(set(x)) < 2:
        return lambda flops: float(np.median(y))
    (a, b), _ = nnls(np.stack([np.ones_like(x), x], axis=1) / y[:, None], np.ones_like(y))
    return lambda flops: float(a + b * flops)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


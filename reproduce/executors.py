"""Where the runs of a plan are computed: `local` (this process) or `slurm` (one job array).

Both call `runner.compute` for each run, so results land in the same store, under the same
per-run lock, whichever executor made them. On Slurm, submitit submits one array task per run (a
run already trains its replicas stacked); a task that is preempted or reaches its time limit
receives USR2, saves its training state at the next step and is requeued (submitit's
checkpointing protocol); the requeued task resumes from that state. A task killed outright
(`scontrol requeue`, node failure) resumes from the last state saved at a checkpoint or a minute
before. Numbers on the CPU depend on torch's thread count: tasks use `cpus` threads, so a local run
with `--threads` equal to `cpus` gives the same numbers.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reproduce import engine, runner
from reproduce.errors import UserError
from reproduce.store import Store

EXECUTORS = ("local", "slurm")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of every array task; from `--slurm-config FILE` ([slurm] table of a TOML file) and options."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 24 * 60  # time limit of one task; a longer run is checkpointed and requeued
    gpus: int = 0  # GPUs per task (then use --device cuda)
    cpus: int = 2  # CPUs per task, and torch's thread count in the task
    mem_gb: float | None = None  # None: the partition's default
    parallelism: int = 64  # at most this many tasks of the array at once
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to save the state
    poll_s: float = 5.0  # how often the submitting process checks on the array

    @classmethod
    def load(cls, path: Path | None = None, **options) -> SlurmConfig:
        """The config from a TOML file's [slurm] table, then the options that are not None."""
        values = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text()).get("slurm", {})
            except OSError as error:
                raise UserError(f"slurm config {path}: {error.strerror}") from None
            except tomllib.TOMLDecodeError as error:
                raise UserError(f"slurm config {path} is not valid TOML: {error}") from None
        values.update({k: v for k, v in options.items() if v is not None})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise UserError(f"unknown slurm setting {unknown[0]!r}: use {', '.join(sorted(fields))}")
        return cls(**values)


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}: choose from {', '.join(EXECUTORS)}")
    return name


def make_results(tier: str, papers: Sequence[str], results: Path, device: str = "cpu", seed: int = 0, *,
                 executor: str = "local", slurm: SlurmConfig | None = None, jobs: int = 1, worker: bool = False,
                 **options) -> dict[str, list[str]]:
    """`runner.make_results` with the named executor: `local` computes in this process (and, with
    `jobs` > 1, in jobs - 1 more beside it: `side_by_side`, whose workers are `worker`s: one of the
    jobs, spawning none), `slurm` submits the runs the store lacks as one job array (`options` as
    runner.make_results takes them)."""
    if check_executor(executor) == "local":
        if jobs > 1 and not worker:
            return side_by_side(tier, papers, results, device, seed, jobs=jobs, **options)
        return runner.make_results(tier, papers, results, device, seed, jobs=jobs, **options)
    numerics = {k: options[k] for k in ("precision", "compile") if k in options}
    reuse = not options.get("fresh", False)
    log = options.get("log", print)

    def on_slurm(store: Store, tier_: str, todo: list) -> None:
        run_on_slurm(store, tier_, todo, device, slurm or SlurmConfig(), reuse=reuse, log=log, numerics=numerics)

    return runner.make_results(tier, papers, results, device, seed, execute=on_slurm, **options)


def check_jobs(jobs: int, device: str, executor: str, fresh: bool) -> int:
    """--jobs N: N local processes side by side on the CPU (see `side_by_side`)."""
    if jobs > 1 and (device != "cpu" or executor != "local"):
        raise UserError(f"--jobs {jobs} runs processes side by side on this machine's CPU: use it with --device cpu "
                        "and the local executor (on Slurm every run is its own task already)")
    if jobs > 1 and fresh:
        raise UserError(f"--jobs {jobs} with --fresh: a process beside this one could reuse a stored run the other "
                        "recomputes; remove the stored runs (or the results folder) instead, or use --jobs 1")
    return jobs


def side_by_side(tier: str, papers: Sequence[str], results: Path, device: str = "cpu", seed: int = 0, *, jobs: int,
                 threads: int | None = None, only: Sequence[str] | None = None, log: Callable[[str], None] = print,
                 **options) -> dict[str, list[str]]:
    """Make the plan's runs in `jobs` processes side by side, each with `threads` torch threads (default:
    this machine's threads shared out): this process and jobs - 1 workers (`python -m reproduce run
    --no-report` on the same plan and store). The store's per-run lock shares the runs out: a process
    passes over a run another holds and takes the next one in plan order (`runner.run_locally`), so the
    tier takes about its longest chain of runs rather than their sum. Why: small stacked models use two
    cores less well than two runs on one core each (docs/speed.md). A run's numbers depend only on its
    own thread count, not on which process made it."""
    threads = threads or max(1, torch.get_num_threads() // jobs)
    command = [sys.executable, "-m", "reproduce", "run", "--tier", tier, "--paper", *papers, "--results", str(results),
               "--seed", str(seed), "--device", device, "--threads", str(threads), "--no-report",
               "--jobs", str(jobs), "--worker",
               "--precision", options.get("precision", "tf32"), *(["--compile"] if options.get("compile") else []),
               *(["--run", *only] if only else [])]
    log(f"{jobs} jobs side by side, {threads} thread{'s' * (threads != 1)} each")
    workers = [spawn_worker(command) for _ in range(jobs - 1)]
    try:
        names = runner.make_results(tier, papers, results, device, seed, threads=threads, only=only, log=log, jobs=jobs,
                                     **options)
    finally:
        codes = [w.wait() for w in workers]
    if any(codes):
        raise UserError(f"a job beside this one failed (exit codes {codes}); its runs are not stored: run the same "
                        "command again, stored runs are reused")
    return names


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def spawn_worker(command: Sequence[str]) -> subprocess.Popen:
    """Start a worker process that dies with this one. A worker trains outside whatever lock the user's
    command holds (a CPU slot, a job's cgroup): were this process killed (the OOM killer, kill -9), the
    worker would go on training unseen. On Linux the kernel sends it SIGTERM when this process dies
    (prctl PR_SET_PDEATHSIG); its run resumes from its last saved state when the command is run again."""
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child, between fork and exec
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl took hold
            os._exit(1)

    linux = sys.platform.startswith("linux")
    return subprocess.Popen(list(command), cwd=Path.cwd(), preexec_fn=die_with_parent if linux else None)


class RunTask:
    """One array task: compute one run into the store. Checkpointable in submitit's sense.

    Training runs in a worker thread so that the main thread, where submitit's USR2 handler
    runs, can ask it to stop (`engine.request_stop`) and wait until its state is saved.
    """

    def __init__(self, root: Path, tier: str, device: str, threads: int, reuse: bool, numerics: dict | None = None) -> None:
        self.root, self.tier, self.device, self.threads, self.reuse = Path(root), tier, device, threads, reuse
        self.numerics = numerics or {}  # precision and compile, as devices.resolve_device takes them

    def __call__(self, paper: str, run) -> str:
        outcome: dict = {}

        def work() -> None:
            torch.set_num_threads(self.threads)
            try:
                runner.compute(Store(self.root), self.tier, paper, run, self.device, reuse=self.reuse, **self.numerics)
            except BaseException as error:  # re-raised in the main thread
                outcome["error"] = error

        engine.clear_stop()
        _worker[0] = threading.Thread(target=work, name=f"train-{run.name}")
        _worker[0].start()
        while _worker[0].is_alive():
            _worker[0].join(timeout=1.0)  # short waits: the USR2 handler runs between them
        if "error" in outcome:
            raise outcome["error"]
        return f"{paper}/{run.name}"

    def checkpoint(self, paper: str, run):
        """submitit calls this on USR2: save the training state now, then requeue the same task."""
        import submitit

        engine.request_stop()
        if _worker[0] is not None:
            _worker[0].join(timeout=600)
        print(f"{paper}/{run.name}: state saved on preemption, requeueing", flush=True)
        return submitit.helpers.DelayedSubmission(self, paper, run)


_worker: list[threading.Thread | None] = [None]


def slurm_executor(folder: Path, tier: str, config: SlurmConfig):
    """A submitit SlurmExecutor with the config's resources (no cluster contact)."""
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install submitit") from None
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=1000)
    params = dict(job_name=f"reproduce-{tier}", time=config.time_min, cpus_per_task=config.cpus,
                  array_parallelism=config.parallelism, signal_delay_s=config.signal_delay_s, partition=config.partition,
                  setup=[f"export PYTHONPATH={PACKAGE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"])
    if config.gpus:
        params["gpus_per_node"] = config.gpus
    if config.mem_gb:
        params["mem"] = f"{int(config.mem_gb * 1024)}M"
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def describe_array(store: Store, tier: str, pairs: list, config: SlurmConfig) -> str:
    """The --dry-run view of the Slurm path: the sbatch script submitit would submit, and its tasks."""
    executor = slurm_executor(store.root / ".slurm" / tier / "%j", tier, config)
    executor.parameters["map_count"] = len(pairs)
    script = executor._make_submission_file_text(f"{sys.executable} -u -m submitit.core._submit ...", "dry-run")
    header = [line for line in script.splitlines() if line.startswith("#SBATCH") or line.startswith("export")]
    tasks = [f"  task {i}: {paper}/{run.name} ({len(run.replicas)} stacked replicas)" for i, (paper, run) in enumerate(pairs)]
    return "\n".join([f"slurm job array of {len(pairs)} tasks, results in {store.root}:", *header, *tasks])


def run_on_slurm(store: Store, tier: str, todo: list, device: str, config: SlurmConfig, reuse: bool = True,
                 log: Callable[[str], None] = print, numerics: dict | None = None) -> None:
    """Submit one job array for `todo`, wait for it, and check that every run reached the store."""
    if shutil.which("sbatch") is None:
        raise UserError("--executor slurm needs Slurm's sbatch on PATH (run on a cluster's login node, or bash ci/slurm.sh)")
    if config.gpus and device != "cuda":
        log("note: GPUs asked for but --device is cpu; the tasks will train on the CPU")
    executor = slurm_executor(store.root / ".slurm" / tier / "%j", tier, config)
    task = RunTask(store.root.resolve(), tier, device, config.cpus, reuse, numerics)
    jobs = executor.map_array(task, [p for p, _ in todo], [r for _, r in todo])
    log(f"submitted slurm job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} tasks); logs in {store.root / '.slurm' / tier}")
    wait_for(jobs, config.poll_s)
    for job, (paper, run) in zip(jobs, todo):
        if job.paths.result_pickle.exists():
            try:
                job.result()
            except Exception as error:  # the task's traceback is in its log; one line here
                last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                raise UserError(f"slurm task {job.job_id} ({paper}/{run.name}) failed: {last} (log: {job.paths.stderr})") from None
        if not store.path(tier, paper, run.name).exists():
            raise UserError(f"slurm task {job.job_id} ({paper}/{run.name}) ended without a result (log: {job.paths.stderr}); "
                            f"rerun the same command to resume it")


def wait_for(jobs: list, poll_s: float = 5.0) -> None:
    """Until every task has a result file or has left the queue (submitit alone would need sacct)."""
    gone_twice: set[str] = set()
    while True:
        pending = [j for j in jobs if not j.paths.result_pickle.exists()]
        if not pending:
            return
        queued = _queued_ids()
        if queued is not None:
            gone = {j.job_id for j in pending if j.job_id not in queued}
            if gone and gone <= gone_twice and len(gone) == len(pending):
                return
            gone_twice = gone
        time.sleep(poll_s)


def _queued_ids() -> set[str] | None:
    """Ids of the array tasks Slurm still holds (pending, running, requeued), or None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None

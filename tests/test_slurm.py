"""The Slurm executor against a real single-node cluster (ci/slurm.sh starts it; skipped where it cannot).

Quick-tier ddmlp runs are made locally with one torch thread and on the cluster, and must store
the same numbers: the smallest (mlp3-s0) as a Slurm array task with one CPU, and mlp5-s0 as a
task preempted twice mid-run: first the graceful way (USR2, as Slurm signals before
preemption or the time limit: submitit calls the task's checkpoint and requeues it), then the hard
way (`scontrol requeue`: the task is killed and resumes from its last saved state).

The preempted run is not the smallest because a hard requeue only kills a task that is still
training KillWait (ci/slurm.sh: 10 s) after the requeue: submitit ignores the SIGTERM that comes
first. The quick mlp3 finished its last 50 epochs in about 6 s, so it completed instead of being
killed; mlp5 has about 40 s of them at one thread (mlp7, twice that, made CI slower for nothing).
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
ARRAY_RUN = "mlp3-s0"  # the smallest quick run
PREEMPTED_RUN = "mlp5-s0"  # about 40 s of training left after the first restart, at one thread
REQUEUE_GAP_S = 2.0  # after a requeue, wait this long before starting the job (see _restarted)
ARGS = ["--tier", "quick", "--paper", "ddmlp", "--no-report"]


ASK = "REPRODUCE_SLURM_TESTS"  # =1: run these tests against the cluster that `bash ci/slurm.sh` started (.ci/run sets it)



def why_not_asked() -> str | None:
    """Why the Slurm tests do not run here, or None. They run only where asked: `python -m pytest` on a
    user's machine installs nothing and starts nothing; .ci/run starts the cluster and asks."""
    if os.environ.get(ASK) != "1":
        return (f"the Slurm tests run only where asked: start a single-node cluster with `bash ci/slurm.sh` (as root; "
                f"it installs slurm-wlm and munge), then `{ASK}=1 python -m pytest tests/test_slurm.py`; .ci/run does both")
    if shutil.which("sinfo") is None:
        return f"{ASK}=1 but no Slurm here: start the cluster first with `bash ci/slurm.sh` (as root)"
    return None


pytestmark = pytest.mark.skipif(why_not_asked() is not None, reason=str(why_not_asked()))


@pytest.fixture(scope="module")
def cluster():
    """The running cluster (never started here: `bash ci/slurm.sh` starts it, .ci/run calls that)."""
    if (why := why_not_asked()) is not None:
        pytest.skip(why)
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or "idle" not in out.stdout and "mix" not in out.stdout and "alloc" not in out.stdout:
        pytest.skip(f"{ASK}=1 but the cluster does not answer (sinfo: {(out.stdout + out.stderr).strip()[:200]}): "
                    f"start it with `bash ci/slurm.sh`")


def _cli(run: str, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "reproduce", *ARGS, "--run", run, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _result(results: Path, run: str) -> Path:
    return results / "quick" / "ddmlp" / f"{run}.nc"


def _assert_same_numbers(a: Path, b: Path) -> None:
    with xr.open_dataset(a, engine="netcdf4") as x, xr.open_dataset(b, engine="netcdf4") as y:
        assert set(x.data_vars) == set(y.data_vars)
        for name in [*x.data_vars, *x.coords]:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
        assert x.attrs["config_hash"] == y.attrs["config_hash"] and x.attrs["torch_threads"] == y.attrs["torch_threads"] == 1


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The local one-thread result of a run, made once per module."""
    results = tmp_path_factory.mktemp("local")

    def made(run: str) -> Path:
        if not _result(results, run).exists():
            _cli(run, "--threads", "1", "--results", str(results))
        return _result(results, run)
    return made


def test_slurm_array_gives_the_local_numbers(cluster, local, tmp_path):
    dry = subprocess.run([sys.executable, "-m", "reproduce", *ARGS, "--run", ARRAY_RUN, "--executor", "slurm",
                          "--cpus", "1", "--dry-run", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "#SBATCH --cpus-per-task=1" in dry.stdout and f"task 0: ddmlp/{ARRAY_RUN}" in dry.stdout, dry.stdout + dry.stderr
    out = _cli(ARRAY_RUN, "--executor", "slurm", "--cpus", "1", "--results", str(tmp_path))
    assert "submitted slurm job array" in out
    _assert_same_numbers(_result(tmp_path, ARRAY_RUN), local(ARRAY_RUN))


def _total_steps(run: str) -> int:
    """Training steps of the quick run, from the plan (the quick tier's size is a setting, not a constant)."""
    from reproduce.experiments import experiment
    from reproduce.runner import plan

    (paper, spec), = plan("quick", ["ddmlp"], 0, [run])
    return experiment(paper).steps_and_flops(spec)[0]


def _saved_step(results: Path, run: str = PREEMPTED_RUN) -> int:
    state = results / "quick" / "ddmlp" / ".state" / f"{run}.pt"
    try:
        return torch.load(state, weights_only=True)["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def _wait(condition, explain=lambda: "", timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out\n" + explain()
        time.sleep(0.5)


def _scontrol(*args: str) -> str:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def _cluster_state(job: str, log: Path, proc: subprocess.Popen) -> str:
    """What to read when a wait times out: the job, the node, Slurm's own logs and the task's log."""
    tails = [f"== {path} ==\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:])
             for path in (Path("/var/log/slurm/slurmctld.log"), Path("/var/log/slurm/slurmd.log"), log)
             if path.exists()]
    command = "running" if proc.poll() is None else f"exited {proc.returncode}"
    return "\n".join([f"== scontrol show job {job} ==", _scontrol("show", "job", job),
                      "== sinfo -R ==", subprocess.run(["sinfo", "-R"], capture_output=True, text=True).stdout,
                      f"== the submitting command: {command} ==", *tails])


def _restarted(job: str, log: Path, proc: subprocess.Popen, starts: int) -> None:
    """Wait until the task has started `starts` times, starting the requeued job early.

    Slurm holds a requeued job back about 2 minutes (its requeue delay). The delay exists because
    slurmd refuses to launch a job whose credential is not newer, in whole seconds, than the kill of
    its previous run ("Job N already killed, do not launch batch job"), and the job then ends as
    failed. So the test starts it 2 s after it was seen pending, never at once (a restart within the
    same second as the requeue made CI time out).
    """
    pending_since: list[float] = []
    explain = lambda: _cluster_state(job, log, proc)  # noqa: E731

    def started() -> bool:
        if log.read_text(errors="replace").count("Starting with JobEnvironment") >= starts:
            return True
        assert proc.poll() is None, "the submitting command ended before the restart\n" + explain()
        if "JobState=PENDING" not in _scontrol("show", "job", job):
            pending_since.clear()
        elif not pending_since:
            pending_since.append(time.monotonic())
        elif time.monotonic() - pending_since[0] > REQUEUE_GAP_S:
            _scontrol("update", f"JobId={job}", "StartTime=now")
        return False

    _wait(started, explain)


def test_preempted_task_resumes_with_the_same_numbers(cluster, local, tmp_path):
    proc = _cli(PREEMPTED_RUN, "--executor", "slurm", "--cpus", "1", "--results", str(tmp_path), wait=False)
    line = proc.stdout.readline()
    job = re.search(r"job array (\d+)", line).group(1)
    total = _total_steps(PREEMPTED_RUN)
    _wait(lambda: _saved_step(tmp_path) >= total // 10)  # the state of the first checkpoint past epoch 6
    log = next((tmp_path / ".slurm" / "quick" / job).glob("*_log.out"))

    # 1. graceful preemption: USR2 -> checkpoint() saves the state at the next step -> requeued
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    explain = lambda: _cluster_state(job, log, proc)  # noqa: E731
    _wait(lambda: "state saved on preemption" in log.read_text(), explain)
    saved = _saved_step(tmp_path)
    assert total // 10 <= saved < total
    _restarted(job, log, proc, starts=2)

    # 2. hard requeue at the first state the resumed task saves, with most of the training still
    # ahead: the task is killed KillWait later and resumes from that state
    _wait(lambda: _saved_step(tmp_path) > saved, explain)
    hard = _saved_step(tmp_path)
    subprocess.run(["scontrol", "requeue", job], check=True)
    _restarted(job, log, proc, starts=3)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert log.read_text().count("Starting with JobEnvironment") >= 3
    _assert_same_numbers(_result(tmp_path, PREEMPTED_RUN), local(PREEMPTED_RUN))
    print(f"\npreemption: USR2 state saved at step {saved} of {total}; hard requeue when the last saved step was {hard}")

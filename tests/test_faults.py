"""Faults, locally: SIGKILL at random points of a run, and two processes on one store.

The kill test kills a tiny run (tests/_fault_child.py, through the real runner) again and again,
at random epochs and random moments within them, plus deliberately inside a training-state write
and inside a results write (REPRODUCE_KILL_AT), rerunning after each kill. Every final file must
equal an uninterrupted run's, and no partial file may ever sit where a result is read.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.store import Store

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "_fault_child.py"
EPOCH_STEPS = 16  # tests/_fault_child.py: 512 samples, batch 32
EPOCHS = 20
KILLS = 20  # the fault model asks for at least 20 kills; each costs a process start (about 2 s of imports)
TIMING = {"started_at", "finished_at", "train_seconds", "probe_seconds", "git_commit", "host"}


def _start(results: Path, runs: str, progress: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), str(results), runs], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "REPRODUCE_PROGRESS": str(progress), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out


def _steps(progress: Path, run: str) -> int:
    if not progress.exists():
        return 0
    return sum(int(n) for name, n in (line.split() for line in progress.read_text().splitlines()) if name == run)


def _saved_step(results: Path, run: str) -> int:
    state = results / "quick" / "ddmlp" / ".state" / f"{run}.pt"
    return torch.load(state, weights_only=True)["step"] if state.exists() else 0


def _result(results: Path, run: str) -> Path:
    return results / "quick" / "ddmlp" / f"{run}.nc"


def _assert_no_partial_result(results: Path, run: str) -> None:
    """Where a result is read there is either nothing or a complete, valid file."""
    path = _result(results, run)
    if path.exists():
        with xr.open_dataset(path, engine="netcdf4") as ds:
            config = json.loads(ds.attrs["config"])
        assert Store(results).problem(path, "ddmlp", "quick", config) is None


def _assert_same(a: Path, b: Path) -> None:
    with xr.open_dataset(a, engine="netcdf4") as x, xr.open_dataset(b, engine="netcdf4") as y:
        assert set(x.data_vars) == set(y.data_vars) and set(x.coords) == set(y.coords)
        for name in [*x.data_vars, *x.coords]:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
        for key in (x.attrs.keys() | y.attrs.keys()) - TIMING:
            assert str(x.attrs.get(key)) == str(y.attrs.get(key)), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("reference")
    _finish(_start(results, "tiny", results / "progress"))
    return _result(results, "tiny-s0")


def test_sigkill_at_random_points_loses_nothing(tmp_path, reference):
    """KILLS kills (random epochs and moments, and inside a state write and a results write)."""
    rng = random.Random(0)
    run = "tiny-s0"
    kills, lost_steps, rounds, attempts = [], 0, 0, 0
    deliberate = ["state:4", "result:1", "state:1", "result:1"]  # state:1: the first save of that attempt
    while len(kills) < KILLS:
        rounds += 1
        results = tmp_path / f"round{rounds}"
        progress = results / "progress"
        results.mkdir()
        while not _result(results, run).exists():
            resume = _saved_step(results, run)
            if kills and kills[-1]["round"] == rounds:
                lost_steps += max(0, kills[-1]["reached"] - resume)
                assert resume <= kills[-1]["reached"] + EPOCH_STEPS
            before = _steps(progress, run)
            attempts += 1
            env = {"REPRODUCE_KILL_AT": deliberate.pop(0)} if deliberate and attempts % 3 == 2 else {}
            proc = _start(results, "tiny", progress, **env)
            if env:
                proc.wait(timeout=600)
                if proc.returncode == -signal.SIGKILL:
                    kills.append(dict(round=rounds, at=env["REPRODUCE_KILL_AT"], reached=resume + _steps(progress, run) - before))
            elif len(kills) >= KILLS:
                _finish(proc)
            else:
                target = rng.randint(0, 7)  # epochs of this attempt, then a random moment within the next
                deadline = time.monotonic() + 600
                while proc.poll() is None and _steps(progress, run) - before < target * EPOCH_STEPS and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.05) if target else rng.uniform(0, 4.0))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills.append(dict(round=rounds, at=f"epoch+{target}", reached=resume + _steps(progress, run) - before))
            _assert_no_partial_result(results, run)
        _assert_same(_result(results, run), reference)
        assert not list(results.rglob("*.rejected")), "a partial file was read as a result"
        state_dir = results / "quick" / "ddmlp" / ".state"
        assert not list(state_dir.glob("*.pt")) and not list(results.rglob("*.tmp*"))
    deliberate_hits = [k["at"] for k in kills if ":" in k["at"]]
    assert any(a.startswith("state") for a in deliberate_hits) and any(a.startswith("result") for a in deliberate_hits)
    print(f"\nkill test: {len(kills)} kills in {rounds} rounds ({len(deliberate_hits)} inside writes: "
          f"{', '.join(deliberate_hits)}); work recomputed after kills: {lost_steps} steps = "
          f"{lost_steps / EPOCH_STEPS:.1f} epochs (of {rounds * EPOCHS} epochs of training; counted at epoch "
          f"ends, so up to one more epoch per kill may be unseen)")


def test_overlapping_plans_compute_each_run_once(tmp_path):
    """Two processes, plans {ta, tb} and {tb, tc} on one store: three runs, each trained once."""
    progress = tmp_path / "progress"
    first = _start(tmp_path, "ta,tb", progress)
    second = _start(tmp_path, "tb,tc", progress)
    _finish(first)
    _finish(second)
    starts = [line.split()[1] for line in progress.read_text().splitlines() if line.startswith("start ")]
    assert sorted(starts) == ["ta-s0", "tb-s0", "tc-s0"]
    for run in ("ta-s0", "tb-s0", "tc-s0"):
        _assert_no_partial_result(tmp_path, run)
        assert _result(tmp_path, run).exists()

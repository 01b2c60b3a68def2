"""The command line: bad input gives one clear line and exit code 2; the dry run needs no data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "reproduce", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--tier", "huge"], "unknown tier 'huge'"),
        (["--tier", "quick", "--paper", "nope"], "unknown paper 'nope'"),
        (["--tier", "quick", "--device", "tpu"], "unknown device 'tpu'"),
        (["--tier", "quick", "--device", "cuda", "--dry-run"], "no CUDA GPU"),
        (["--tier", "quick", "--bogus"], "unrecognized arguments"),
        (["--tier", "quick", "--claim", "ddmlp.nope"], "unknown claim 'ddmlp.nope'"),
        (["--tier", "quick", "--executor", "cloud"], "unknown executor 'cloud'"),
        (["--tier", "quick", "--run", "mlp9-s0", "--dry-run"], "unknown run 'mlp9-s0'"),
        (["--tier", "quick", "--executor", "slurm", "--slurm-config", "/nonexistent.toml"], "slurm config /nonexistent.toml"),
        (["--tier", "quick", "--precision", "fp8", "--dry-run"], "unknown precision 'fp8'"),
        (["bench", "--device", "tpu"], "unknown device 'tpu'"),
        (["bench", "--bogus"], "unrecognized arguments"),
        (["--tier", "quick", "--threads", "two"], "'two' is not a whole number"),
        (["--tier", "quick", "--paper", "ddmlp", "--claim", "masc.beats_model", "--dry-run"],
         "claim 'masc.beats_model' is a claim of masc, not of --paper ddmlp"),
        (["bench", "--quick", "--out", "/dev/null/bench"], "/dev/null/bench is not writable"),
        (["--tier", "quick", "--jobs", "2", "--fresh"], "--jobs 2 with --fresh"),
        (["--tier", "quick", "--jobs", "2", "--executor", "slurm"], "--jobs 2 runs processes side by side"),
    ],
    ids=["tier", "paper", "device", "cuda-missing", "flag", "claim", "executor", "run", "slurm-config", "precision",
         "bench-device", "bench-flag", "threads-word", "claim-of-other-paper", "bench-out", "jobs-fresh", "jobs-slurm"],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    result = _cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_results_directory(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = _cli("--tier", "quick", "--results", str(blocked / "results"))
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_set_through_the_command_line(tmp_path):
    """ddmlp's full tier needs CIFAR-10: without it (and offline) the plan stops before training."""
    result = _cli("--tier", "full", "--paper", "ddmlp", "--results", str(tmp_path / "r"), REPRODUCE_DATA=str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cifar10 not found" in lines[0] and str(tmp_path / "cifar-10-batches-py") in lines[0]


@pytest.mark.parametrize("folder", ["missing", "empty", "other-tier"])
def test_report_without_stored_results_refuses_and_keeps_the_report(tmp_path, folder):
    """No results for the tier: exit 2 naming the command that makes them; no folder made, no report touched."""
    results = tmp_path / "r"
    if folder != "missing":
        (results / "quick").mkdir(parents=True)
        (results / "quick" / "report.md").write_text("the earlier report")
    if folder == "other-tier":
        (results / "medium" / "ddmlp").mkdir(parents=True)
    result = _cli("report", "--tier", "quick", "--results", str(results))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no quick results" in lines[0] and "python -m reproduce --tier quick" in lines[0]
    assert result.stdout == ""
    if folder == "missing":
        assert not results.exists()
    else:
        assert (results / "quick" / "report.md").read_text() == "the earlier report"
        assert not (results / "quick" / "claims.json").exists()


def _stored_run(results, seed=0):
    """An (unusable) file where the first quick ddmlp run of `seed` goes: the store 'has results'."""
    from reproduce.runner import plan
    from reproduce.store import Store

    path = Store(results).path("quick", "ddmlp", plan("quick", ["ddmlp"], seed)[0][1].name)
    path.parent.mkdir(parents=True)
    path.write_text("a stored run")


@pytest.mark.parametrize("damage", ["empty", "not-entries", "other-seed", "read-only"])
def test_report_that_would_be_lost_stops_before_anything_changes(tmp_path, damage):
    """A damaged claims.json, a report of another base seed, a folder that takes no file: one line, exit 2,
    the report's files untouched (merging would otherwise replace the report, or mix two seeds' verdicts)."""
    from reproduce.report import stub_entry

    results = tmp_path / "r"
    _stored_run(results, seed=1)
    out = results / "quick"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "ddmlp.noisy_learned_later.png").write_bytes(b"png")
    judged = {**stub_entry("ddmlp.noisy_learned_later", "quick"), "verdict": "reproduced", "seed": 0,
              "cases": [{"case": "x"}]}
    text = {"empty": "", "not-entries": "[1, 2]"}.get(damage, json.dumps([judged]))
    (out / "claims.json").write_text(text)
    if damage == "read-only":  # root writes anywhere, so the probe file's name is taken by a folder
        (out / ".write-test").mkdir()
    result = _cli("report", "--tier", "quick", "--paper", "ddmlp", "--seed", "1", "--results", str(results))
    lines = result.stderr.strip().splitlines()
    needle = {"read-only": "is not writable", "other-seed": "holds verdicts of base seed 0, not 1"}.get(damage, "is damaged")
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stdout + result.stderr
    assert (out / "claims.json").read_text() == text
    assert (out / "figures" / "ddmlp.noisy_learned_later.png").exists() and not (out / "pytest.log").exists()


def _regression_entries(tier):
    from reproduce.report import stub_entry

    good = {**stub_entry("ddmlp.noisy_learned_later", tier), "verdict": "reproduced", "expected": "reproduced",
            "as_expected": True}
    bad = {**stub_entry("ddmlp.separation_deepens_with_layers", tier), "verdict": "not_reproduced",
           "expected": "reproduced", "as_expected": False, "regression": True, "note": "CS did not fall with depth"}
    return [good, bad]


@pytest.mark.parametrize("regressed", [False, True])
def test_report_judges_in_process_prints_the_table_and_exits_1_on_a_regression(tmp_path, monkeypatch, capsys,
                                                                                regressed):
    """`report` calls the judge directly (no pytest process), prints the table; a regression exits 1."""
    from reproduce import cli

    entries = _regression_entries("quick")[: 2 if regressed else 1]
    monkeypatch.setattr("reproduce.judge.judge_tier", lambda *a, **k: (entries, {}))
    monkeypatch.setattr("reproduce.runner.check_stored", lambda *a, **k: None)
    monkeypatch.setattr("reproduce.store.git_commit", lambda: "abc")  # the header's commit: `git` is its one process
    monkeypatch.setattr("subprocess.Popen", None)  # nothing else may start a process
    code = cli.report("quick", tmp_path, ["ddmlp"])
    out = capsys.readouterr().out
    assert code == (1 if regressed else 0)
    assert out.splitlines()[1].split()[:2] == ["claim", "verdict"] and "ddmlp.noisy_learned_later" in out
    assert ("REGRESSION" in out and "CS did not fall with depth" in out) == regressed
    stored = {e["id"]: e for e in json.loads((tmp_path / "quick" / "claims.json").read_text())}
    assert stored["ddmlp.noisy_learned_later"]["verdict"] == "reproduced" and "pytest" not in sys.modules.get(
        "reproduce.cli").__dict__


def test_help_lists_the_verbs_and_report_help_only_its_options():
    top = _cli("--help").stdout
    assert all(verb in top for verb in ("run", "report", "bench", "stability"))
    report = _cli("report", "--help").stdout
    assert "--claim" in report and "--fresh" not in report and "--executor" not in report
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("reproduce ")
    threads = _cli("--tier", "quick", "--threads", "0", "--dry-run")
    assert threads.returncode == 2 and "at least 1" in threads.stderr


def test_stability_compares_verdicts_across_settings(tmp_path, monkeypatch, capsys):
    """Each setting is a subprocess run of the quick tier (faked here): one column each; a difference exits 1."""
    from reproduce import cli

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        store = Path(command[command.index("--results") + 1])
        seed = int(command[command.index("--seed") + 1])
        entries = [{"id": "ddmlp.noisy_learned_later", "verdict": "reproduced"},
                   {"id": "masc.beats_model", "verdict": "not_reproduced" if seed == 1 else "reproduced"}]
        (store / "quick").mkdir(parents=True)
        (store / "quick" / "claims.json").write_text(json.dumps(entries))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert cli.main(["stability", "--tier", "quick", "--results", str(tmp_path)]) == 1
    settings = [(c[c.index("--threads") + 1], c[c.index("--seed") + 1]) for c in commands]
    assert settings == [("2", "0"), ("2", "1"), ("2", "2"), ("1", "0")]
    assert all(Path(c[c.index("--results") + 1]) == tmp_path / "stability" / f"t{t}-s{s}"
               for c, (t, s) in zip(commands, settings))
    out = capsys.readouterr().out
    table = out[out.index("claim"):]
    assert "t2-s0" in table and "t1-s0" in table and "DIFFERS" in table.splitlines()[-2]
    assert "masc.beats_model" in out.splitlines()[-1]
    commands.clear()
    assert cli.main(["stability", "--results", str(tmp_path / "same"), "--seeds", "0", "2"]) == 0


def test_missing_data_set_says_how_to_get_it(tmp_path):
    code = ("import sys; from reproduce.data import load_dataset; from reproduce.errors import UserError\n"
            "try:\n    load_dataset('cifar10', root=sys.argv[1], download=False)\n"
            "except UserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT).stdout
    assert "cifar" in out.lower() and str(tmp_path) in out


def test_dry_run_shows_the_full_plan_without_data(tmp_path):
    """The plan of a tier whose data set is missing, saying so and where it was looked for; the results
    folder is checked (and not made)."""
    result = _cli("--tier", "full", "--paper", "ddmlp", "--dry-run", "--results", str(tmp_path / "r"),
                  REPRODUCE_DATA=str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "mlp7-s0" in out and "mlp3-s0" in out and "FLOPs" in out and "total" in out
    assert "1e+05" in out and "1e+06" in out
    assert "data: cifar10 missing (cifar10 not found" in out and "a run would stop before training" in out
    assert f"results: {tmp_path / 'r'} (writable; 0 of the" in out and not (tmp_path / "r").exists()


def test_dry_run_names_the_data_source_and_refuses_a_missing_data_folder(tmp_path):
    """REPRODUCE_DATA naming no folder is bad input (it used to fall back to the system copy unsaid)."""
    result = _cli("--tier", "quick", "--paper", "modnoise", "--dry-run", REPRODUCE_DATA="/nonexistent")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("error: REPRODUCE_DATA=/nonexistent is not a folder: create it (with the data "
                                     "sets in it), or unset REPRODUCE_DATA to read /usr/share/datasets/fashion-mnist "
                                     f"and {Path.home() / '.cache' / 'reproduce' / 'data'}")
    from reproduce.data import data_source

    assert data_source(["fashion_mnist"])["fashion_mnist"].startswith(("/", "missing"))


def test_a_negative_seed_is_refused():
    result = _cli("--tier", "quick", "--seed", "-1", "--dry-run")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: argument --seed: must be 0 or more, not -1 (see python -m reproduce --help)")


@pytest.mark.parametrize("bad", [[{"id": 5, "verdict": []}], [{"id": "masc.beats_model", "verdict": "great"}],
                                 [{"id": "masc.beats_model", "verdict": "reproduced", "cases": "x"}], ["text"]])
def test_claims_json_of_the_wrong_types_is_refused_and_left_alone(tmp_path, bad):
    """`report --claim` merges into claims.json: entries of the wrong types would turn the stored verdicts
    into stubs; one line, exit 2, the file unchanged."""
    _store_quick_runs(tmp_path)
    path = tmp_path / "quick" / "claims.json"
    path.write_text(json.dumps(bad))
    result = _cli("report", "--tier", "quick", "--paper", "ddmlp", "--claim", "ddmlp.noisy_learned_later",
                  "--results", str(tmp_path))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "is damaged (entry 0" in lines[0], result.stderr
    assert path.read_text() == json.dumps(bad) and not (tmp_path / "quick" / "report.md").exists()


def test_report_out_writes_elsewhere_json_summary_and_header(tmp_path):
    """`report --out DIR` for a store that is not to be written; `--json` prints the summary alone on stdout;
    claims-header.json beside claims.json (which stays a list) says what judged it."""
    _store_quick_runs(tmp_path / "store", status="diverged")  # judged as errors: no figures of the fake runs
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "store").rglob("*"))
    result = _cli("report", "--tier", "quick", "--paper", "ddmlp", "--results", str(tmp_path / "store"),
                  "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 1, result.stderr  # the errors are regressions
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "store").rglob("*")) == before
    summary = json.loads(result.stdout)
    assert summary["tier"] == "quick" and {c["id"] for c in summary["claims"]} >= {"ddmlp.noisy_learned_later"}
    out = tmp_path / "out" / "quick"
    assert isinstance(json.loads((out / "claims.json").read_text()), list) and (out / "report.html").exists()
    header = json.loads((out / "claims-header.json").read_text())
    assert header["schema"] == "reproduce-claims/1" and header["tier"] == "quick" and header["seed"] == 0
    assert header["command"].startswith("python -m reproduce report --tier quick") and header["python"]
    assert {"written_at", "git_commit", "host", "data_source"} <= set(header)


def test_scorecard_across_tiers(tmp_path):
    """`report --all-tiers`: each claim's verdict where the store has the tier's report, else its
    expectation, marked measured or predicted; '-' where the claim has no case."""
    from reproduce.judge import declared, expectation
    from reproduce.report import SHORT_WORDS, scorecard_table, words

    claim = declared()["ddmlp.noisy_learned_later"]
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "claims.json").write_text(json.dumps([{"id": claim.id, "verdict": "reproduced",
                                                                  "as_expected": True, "expected": "reproduced"}]))
    columns, rows = scorecard_table(tmp_path)
    row = dict(zip(columns, next(r for r in rows if r[0] == claim.id)))
    assert row["quick"] == "reproduced" and row["small"] == "-"
    medium = expectation(claim, "medium")
    assert row["medium"] == f"[{medium['expectation']} {words(medium['expected'])}]"
    result = _cli("report", "--all-tiers", "--results", str(tmp_path))
    assert result.returncode == 0 and (tmp_path / "scorecard.html").exists() and claim.id in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()[:-1]) <= 100
    table = result.stdout.splitlines()[:len(rows) + 2]
    assert [line.split()[0] for line in table[2:]] == [r[0] for r in rows], "a console scorecard row wraps"
    assert table[2 + [r[0] for r in rows].index(claim.id)].split()[1] == "reproduced"
    assert f"~{SHORT_WORDS[words(medium['expected'])]}" in table[2 + [r[0] for r in rows].index(claim.id)]


def test_slurm_config_file_with_an_unknown_setting(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('[slurm]\npartition = "gpu"\ngpu = 1\n')
    result = _cli("--tier", "quick", "--executor", "slurm", "--slurm-config", str(config), "--dry-run")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: unknown slurm setting 'gpu': use cpus, gpus, mem_gb, parallelism, partition, poll_s, signal_delay_s, time_min")


def _store_quick_runs(root, status="complete", config_change=None):
    """Stand-in result files for the quick ddmlp plan (made for exactly its configs), without training."""
    import dataclasses

    import numpy as np
    import xarray as xr

    from reproduce.runner import plan
    from reproduce.store import Store

    store = Store(root)
    for paper, run in plan("quick", ["ddmlp"]):
        config = {**dataclasses.asdict(run), **(config_change or {})}
        ds = xr.Dataset({"loss": (("epoch",), np.array([2.3, np.nan]))}, coords={"epoch": [0.0, 0.01]})
        store.write(ds, "quick", paper, run.name, config, {"status": status, "diverged_epoch": 0.01})
    return store.path("quick", "ddmlp", "mlp3-s0")


@pytest.mark.parametrize("damage, needle", [("truncated", "unreadable"), ("schema", "schema version 1, expected"),
                                             ("config", "made for another config")])
def test_unusable_store_file_stops_the_report(tmp_path, damage, needle):
    """`report` trains nothing, so a stored file it cannot use is an error; a run moves it aside and remakes it."""
    import xarray as xr

    path = _store_quick_runs(tmp_path, config_change={"seed": 7} if damage == "config" else None)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "schema":
        with xr.open_dataset(path, engine="netcdf4") as opened:
            ds = opened.load()
        ds.attrs["schema_version"] = 1
        ds.to_netcdf(path, engine="netcdf4")
    result = _cli("report", "--tier", "quick", "--results", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "mlp" in lines[0] and "--run" in lines[0], result.stderr


def test_nan_loss_is_recorded_as_diverged_and_its_claim_says_so(tmp_path):
    """Runs stored as diverged: the claim fails naming them (not a pass), the command says so and exits 3,
    its own code (2 is bad input)."""
    from reproduce.cli import EXIT_DIVERGED

    _store_quick_runs(tmp_path, status="diverged")
    result = _cli("--tier", "quick", "--paper", "ddmlp", "--claim", "ddmlp.noisy_learned_later", "--results", str(tmp_path))
    assert result.returncode == EXIT_DIVERGED == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged (NaN loss)" in lines[0] and "ddmlp/mlp7-s0 (epoch 0.01)" in lines[0]
    claims = {c["id"]: c for c in json.loads((tmp_path / "quick" / "claims.json").read_text())}
    claim = claims["ddmlp.noisy_learned_later"]
    assert claim["verdict"] != "reproduced" and "diverged (NaN loss)" in json.dumps(claim)


def test_bad_names_are_answered_before_torch_is_imported():
    """An unknown tier, paper or device costs the user no torch import (2 s on this machine)."""
    code = ("import sys; from reproduce.cli import main\n"
            "for args in (['--tier', 'huge'], ['--tier', 'quick', '--paper', 'nope'], ['--tier', 'quick', '--device', 'tpu']):\n"
            "    assert main(args) == 2\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_jobs_side_by_side_make_each_run_once_with_the_numbers_of_one_job(tmp_path):
    """--jobs 2: two processes share the plan's runs out through the store's per-run lock; every run is
    stored once, and its numbers are those of the same run made by one job at the same thread count.
    Both processes show the dry run's estimate for the two jobs. The one job runs under glibc
    (REPRODUCE_ALLOCATOR=system), the two under jemalloc where it is installed: the same numbers."""
    import ctypes.util

    import xarray as xr

    args = ["run", "--tier", "small", "--paper", "modnoise", "--threads", "1", "--no-report"]
    one = _cli(*args, "--results", str(tmp_path / "one"), REPRODUCE_SHRINK="1", REPRODUCE_ALLOCATOR="system")
    dry = _cli(*args, "--jobs", "2", "--dry-run", REPRODUCE_SHRINK="1")
    two = _cli(*args, "--jobs", "2", "--results", str(tmp_path / "two"), REPRODUCE_SHRINK="1")
    assert one.returncode == 0 and dry.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    assert "2 jobs side by side, 1 thread each" in two.stdout + two.stderr
    plans = [line for line in (two.stdout + two.stderr).splitlines() if line.startswith("plan: ")]
    assert len(plans) == 2 and plans[0] == plans[1] and "by the --dry-run estimate" in plans[0], plans  # the worker's too
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.nc"))
    assert files and files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.nc"))
    made = [line for line in (two.stdout + two.stderr).splitlines() if ": complete," in line]
    assert len(made) == len(files), made  # each run trained by one process only
    for f in files:
        with xr.open_dataset(tmp_path / "one" / f) as a, xr.open_dataset(tmp_path / "two" / f) as b:
            xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
            assert a.attrs["allocator"] == "glibc"
            assert b.attrs["allocator"] == ("jemalloc" if ctypes.util.find_library("jemalloc") else "glibc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_side_by_side_worker_dies_with_a_killed_main_process(tmp_path):
    """--jobs: a worker trains outside the lock its main process holds, so when the main process is
    killed outright (the OOM killer, kill -9) the worker must not go on training unseen."""
    import signal
    import time

    code = ("import sys, time; from reproduce.executors import spawn_worker\n"
            "w = spawn_worker([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "print(w.pid, flush=True); time.sleep(120)")
    main = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker = int(main.stdout.readline())
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    status = Path(f"/proc/{worker}/status")
    for _ in range(100):  # the kernel signals the orphan at once; give it up to 10 s to exit
        try:
            if "State:\tZ" in status.read_text():  # exited, not yet reaped by its new parent
                return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its killed main process")

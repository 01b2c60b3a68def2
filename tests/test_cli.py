"""The command line: bad input gives one clear line and exit code 2; the dry run needs no data."""

import json
import os
import subprocess
import sys

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
    ],
    ids=["tier", "paper", "device", "cuda-missing", "flag", "claim", "executor", "run", "slurm-config", "precision",
         "bench-device", "bench-flag"],
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


def test_report_without_stored_results_trains_nothing(tmp_path):
    result = _cli("report", "--tier", "quick", "--results", str(tmp_path))
    assert result.returncode == 0, result.stderr
    claims = json.loads((tmp_path / "quick" / "claims.json").read_text())
    assert {c["verdict"] for c in claims} == {"not_run"}
    assert not (tmp_path / "quick" / "ddmlp").exists()


def test_missing_data_set_says_how_to_get_it(tmp_path):
    code = ("import sys; from reproduce.data import load_dataset; from reproduce.errors import UserError\n"
            "try:\n    load_dataset('cifar10', root=sys.argv[1], download=False)\n"
            "except UserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT).stdout
    assert "cifar" in out.lower() and str(tmp_path) in out


def test_dry_run_shows_the_full_plan_without_data():
    result = _cli("--tier", "full", "--paper", "ddmlp", "--dry-run", REPRODUCE_DATA="/nonexistent")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "mlp7-s0" in out and "mlp3-s0" in out and "FLOPs" in out and "total" in out
    assert "1e+05" in out and "1e+06" in out


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
    """Runs stored as diverged: the claim fails naming them (not a pass), the command says so and exits 2."""
    _store_quick_runs(tmp_path, status="diverged")
    result = _cli("--tier", "quick", "--paper", "ddmlp", "--claim", "ddmlp.noisy_learned_later", "--results", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged (NaN loss)" in lines[0] and "ddmlp/mlp7-s0 (epoch 0.01)" in lines[0]
    claims = json.loads((tmp_path / "quick" / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["ddmlp.noisy_learned_later"]
    assert claims[0]["verdict"] != "reproduced" and "diverged (NaN loss)" in json.dumps(claims[0])

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
        (["--tier", "quick", "--precision", "fp8", "--dry-run"], "unknown precision 'fp8'"),
        (["bench", "--device", "tpu"], "unknown device 'tpu'"),
        (["bench", "--bogus"], "unrecognized arguments"),
    ],
    ids=["tier", "paper", "device", "cuda-missing", "flag", "precision", "bench-device", "bench-flag"],
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
    """The medium tier needs CIFAR-10: without it (and offline) the plan stops before training."""
    result = _cli("--tier", "medium", "--paper", "ddmlp", "--results", str(tmp_path / "r"), REPRODUCE_DATA=str(tmp_path))
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

"""The bench: a smoke run on tiny shapes prints one parseable line per measurement (no timed assertion),
the stacked quadratic net's row gather equals its one-hot matmul, and probe times reach the attrs."""

import json
import re

import numpy as np
import torch
import xarray as xr

from reproduce import bench
from reproduce.engine import TrainSpec, train
from reproduce.experiments import PAPERS
from reproduce.models import StackedMLP

RATIO = re.compile(r"^(engine vs plain DataLoader loop|stacked replicas), .+: \S+ ([\d,]+) samples/s, "
                   r".+ ([\d,]+) samples/s: ([\d.]+)x$")
ONCE = re.compile(r"^engine one-time cost per train\(\) call, tiny \w+: [\d.]+ s \(.+; not in the rate above\)$")
TIER_RUN = re.compile(r"^tier run, quick ddmlp/mlp3-s0 \(R=2, batch 16, 40 samples\): tier ([\d,]+) samples/s "
                      r"\(\d+% of the bench\), bench [\d,]+ samples/s \([\d.]+ [GT]FLOP/s, [\d.]+% of peak\), "
                      r"plain loop [\d,]+ samples/s$")
STEP = re.compile(r"^step time, tiny MLP, batch 8, R=\d: tf32 ([\d,.]+) ms \([\d.]+ [GT]FLOP/s\), "
                  r"bf16 ([\d,.]+) ms \([\d.]+ [GT]FLOP/s\): bf16 ([\d.]+)x$")


def _tiny(quick):
    spec = TrainSpec("adam", 1e-3, 16, 1.0)
    return [
        bench.Workload("tiny mlp", (1, 4, 4), (8, 8), 3, 64, spec, replicas=2),
        bench.Workload("tiny modular", (2 * 5,), (9,), 5, 20, TrainSpec("adamw", 1e-3, 0, 3, weight_decay=1.0),
                       replicas=2, quadratic=True, one_hot=5),
    ]


def test_smoke_bench_lines_parse(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "workloads", _tiny)
    monkeypatch.setattr(bench, "step_workloads", lambda quick: [
        ("tiny MLP", lambda r: StackedMLP((1, 4, 4), (16, 16), 10, seeds=range(r)), (1, 4, 4), TrainSpec("adam", 1e-3, 8, 1.0))])
    tiny = bench.RunShape(StackedMLP((1, 4, 4), (8,), 3, seeds=[0, 1]), (1, 4, 4), 3, 40, TrainSpec("adam", 1e-3, 16, 1.0))
    monkeypatch.setattr(bench, "tier_run_shapes", lambda tiers: [("quick", "ddmlp", "mlp3-s0", tiny)])
    results = tmp_path / "results"
    stored = results / "quick" / "ddmlp"
    stored.mkdir(parents=True)
    xr.Dataset(attrs=dict(train_seconds=10.0, probe_seconds=2.5, steps=30)).to_netcdf(stored / "mlp3-s0.nc",
                                                                                       engine="netcdf4")
    assert bench.main(["--quick", "--results", str(results)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    ratios = [RATIO.match(line) for line in lines if line.startswith(("engine vs", "stacked"))]
    assert len(ratios) == 2 + 2 * 4 and all(ratios), lines
    for m in ratios:
        a, b, ratio = (float(g.replace(",", "")) for g in m.groups()[1:])
        assert abs(ratio - a / b) <= 0.05 + 0.01 * a / b
    once = [ONCE.match(line) for line in lines if line.startswith("engine one-time")]
    assert len(once) == 2 and all(once), lines  # the capture and warm-up are not in the engine's rate
    steps = [STEP.match(line) for line in lines if line.startswith("step time")]
    assert len(steps) == 2 and all(steps), lines  # R = 1, 2 with --quick
    for m in steps:
        tf32, bf16, ratio = (float(g.replace(",", "")) for g in m.groups())
        assert abs(ratio - tf32 / bf16) <= 0.05 + 0.01 * tf32 / bf16
    assert any(line.startswith("peak of CPU") for line in lines)
    run = [TIER_RUN.match(line) for line in lines if line.startswith("tier run")]
    assert len(run) == 1 and all(run), lines
    # 30 steps of 3 per epoch (16, 16, 8 samples) on 2 replicas = 10 epochs x 40 x 2 samples in 10 - 2.5 s
    assert run[0].group(1) == f"{10 * 40 * 2 / 7.5:,.0f}"
    assert any(line.startswith("float32 FMA peak for the tier-run lines: ") for line in lines)
    assert any(line.startswith("projected tiers: skipped with --quick") for line in lines)
    assert any(line.endswith("probes 2 s of 10 s wall: 25.0%") for line in lines), lines
    saved = json.loads((results / "bench" / "bench.json").read_text())
    assert saved["numbers"]["probe_share"]["ddmlp"]["probe_seconds"] == 2.5
    assert (results / "bench" / "bench.png").stat().st_size > 0


def test_the_engine_rate_leaves_out_one_time_costs(monkeypatch):
    """time_engine subtracts a short train() call from the whole one: a fixed cost added to every
    call (a stand-in for warm-up and graph capture) moves the one-time line, not the rate."""
    w = _tiny(True)[0]
    real = bench.train

    def train_with_a_fixed_cost(model, x, y, spec, *args, **kwargs):
        result = real(model, x, y, spec, *args, **kwargs)
        ticks[0] += 100.0 + result.steps  # 100 s once per call, then 1 s per step
        return result

    ticks = [0.0]
    monkeypatch.setattr(bench, "train", train_with_a_fixed_cost)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: ticks[0])
    rate, once = bench.time_engine(w, torch.device("cpu"))
    assert rate == w.replicas * w.spec.batch_size / 1.0  # samples of one step per second of one step
    assert once == 100.0


def test_stacked_quadratic_replica_equals_plain_net():
    """The bench compares like with like: replica r of the stacked modular net is the plain net with its weights."""
    w = bench.Workload("q", (2 * 7,), (5,), 7, 10, TrainSpec(), replicas=2, quadratic=True, one_hot=7)
    stacked, plain = w.stacked(), w.plain()
    x, _ = w.data(torch.device("cpu"))
    with torch.no_grad():
        plain[0].weight.copy_(stacked.w1[1].T)
        plain[2].weight.copy_(stacked.w2[1].T)
    torch.testing.assert_close(stacked(x)[1], plain(x))


def test_engine_records_probe_and_train_seconds():
    x = torch.rand(32, 1, 2, 2)
    y = torch.randint(3, (1, 32))

    def probe(model):
        return {"w": xr.DataArray(np.zeros(1), dims=("replica",))}

    result = train(StackedMLP((1, 2, 2), [4], 3, seeds=[0]), x, y, TrainSpec(batch_size=8, epochs=2, checkpoints=(1.0,)),
                   probe, order_seeds=[0])
    attrs = result.dataset.attrs
    assert 0 < attrs["probe_seconds"] == result.probe_seconds <= attrs["train_seconds"] == result.seconds
    assert attrs["precision"] == "tf32" and attrs["steps"] == 8


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _claims(path, verdicts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"id": cid, "verdict": v, "expected": "reproduced", "cases": [
        {"control": False, "conditions": [{"name": "gap", "n": 5, "aggregate": 0.3, "interval": [0.2, 0.4],
                                           "threshold": 0.1, "op": ">="}]}]} for cid, v in verdicts.items()]))


def test_gpu_summary_compares_the_quick_verdicts_with_the_cpus(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "ci" / "gpu_summary.py")
    gpu_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_summary)
    out = tmp_path / "check"
    (out / "bench").mkdir(parents=True)
    (out / "parts.txt").write_text("gpu-tests 0 12\nbench 0 80\nquick 0 140\nmedium 124 210\n")
    (out / "bench" / "bench.json").write_text(json.dumps({"lines": ["engine vs plain DataLoader loop, x: 5.0x"]}))
    _claims(out / "results" / "quick" / "claims.json", {"ddmlp.a": "reproduced", "ddmlp.b": "not_reproduced"})
    _claims(out / "results" / "medium" / "claims.json", {"ddmlp.a": "reproduced"})
    _claims(tmp_path / "cpu.json", {"ddmlp.a": "reproduced", "ddmlp.b": "not_reproduced"})
    lines, ok = gpu_summary.summary(out, tmp_path / "cpu.json")
    text = "\n".join(lines)
    assert "| medium | 124 (timed out) | 210 |" in text and not ok  # a part cut off fails the check
    assert "2 of 2 verdicts equal the CPU's" in text and "n=5, [0.2, 0.4]" in text
    assert "- engine vs plain DataLoader loop, x: 5.0x" in text
    (out / "parts.txt").write_text("gpu-tests 0 12\n")
    assert gpu_summary.summary(out, tmp_path / "cpu.json")[1]
    _claims(tmp_path / "cpu.json", {"ddmlp.a": "reproduced", "ddmlp.b": "reproduced"})
    lines, ok = gpu_summary.summary(out, tmp_path / "cpu.json")
    assert not ok and "- ddmlp.b: cpu reproduced -> gpu not_reproduced" in lines


def test_the_gpu_checks_cpu_side_runs(tmp_path):
    """ci/gpu-check.sh --dry-run: everything but the GPU steps, at test size (one paper), ends with
    a summary and an archive; without a CPU claims.json to compare with it says so and exits 1."""
    import os
    import subprocess
    import sys

    out = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "ci" / "gpu-check.sh"), "--dry-run", "--paper", "ddmlp", "--out", str(out),
                           "--cpu-claims", str(tmp_path / "none.json")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}, timeout=900)
    summary = (out / "summary.md").read_text()
    parts = dict(line.split()[:2] for line in (out / "parts.txt").read_text().splitlines())
    # pytest exits 5 when the module skips (no CUDA); the shrunk medium's verdicts may differ from the tier's (exit 1)
    assert parts.pop("medium") in ("0", "1") and parts == {"gpu-tests": "5", "bench": "0", "quick": "0"}, summary
    assert "no CUDA GPU visible" in (out / "gpu-tests.log").read_text()
    assert "## medium verdicts" in summary and "| ddmlp." in summary.split("## medium verdicts")[1]
    assert "no CPU claims.json to compare with" in summary and done.returncode == 1
    assert (tmp_path / "check.tar.gz").stat().st_size > 0


def test_run_shape_reads_the_tiers_own_runs():
    """The bench's shapes come from the experiments' configurations: the small masc run's stacked MLP,
    its replicas, samples and batch, as `masc.runs` declares them (no copy in bench.py)."""
    from reproduce.experiments import masc
    from reproduce.timing import run_shape

    run = masc.runs("small", 0)[0]
    shape = run_shape(masc, run)
    assert shape.replicas == len(run.replicas) and shape.batch == run.train.batch_size
    assert shape.n == run.n_train and tuple(shape.model.widths[1:-1]) == run.hidden
    single = bench.one_replica(shape.model)
    x = torch.rand(3, *shape.input_shape)
    assert torch.allclose(single(x), shape.model(x)[:1], atol=1e-6)  # the plain loop's model: the first replica


def test_runs_section_times_only_the_tiers_asked_for(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(bench, "tier_run_shapes", lambda tiers: asked.append(tiers) or [])
    assert bench.main(["--only", "runs", "--tiers", "quick", "--results", str(tmp_path)]) == 0
    assert bench.main(["--only", "runs", "--results", str(tmp_path)]) == 0
    assert bench.main(["--only", "runs", "--quick", "--results", str(tmp_path)]) == 0
    assert asked == [("quick",), bench.RUN_TIERS, ("quick",)]


def test_runs_section_times_only_the_runs_named(tmp_path, monkeypatch, capsys):
    """`--run NAME` times only those runs' shapes; a name the tiers lack is one message, exit 2."""
    timed = []
    monkeypatch.setattr(bench, "time_shape", lambda shape, device, steps: timed.append(shape) or 1.0)
    monkeypatch.setattr(bench, "time_plain_shape", lambda shape, device, steps: 1.0)
    assert bench.main(["--only", "runs", "--tiers", "quick", "--run", "mlp3-s0", "--results", str(tmp_path)]) == 0
    mlp3 = next(shape for _, _, name, shape in bench.tier_run_shapes(("quick",)) if name == "mlp3-s0")
    assert len(timed) == 1 and (timed[0].replicas, timed[0].n) == (mlp3.replicas, mlp3.n)
    from reproduce import cli

    assert cli.main(["bench", "--only", "runs", "--tiers", "quick", "--run", "mlp9-s0", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--run mlp9-s0: no such run" in err and "Traceback" not in err and len(timed) == 1


def test_every_cpu_tier_run_has_a_shape_for_the_bench():
    """`run_shape` reads each run's model and shape from its experiment's own calibration, whichever
    way that calibration times (modnoise times its CPU-tier runs on their own data): nothing is timed."""
    shapes = bench.tier_run_shapes(bench.RUN_TIERS)
    assert {paper for _, paper, _, _ in shapes} == set(PAPERS)
    for tier, paper, name, shape in shapes:
        assert shape.replicas >= 1 and shape.n >= shape.batch >= 1, (tier, paper, name)

"""The training engine: schedule, stacking, divergence, and resume after a kill."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec, log_schedule, train
from reproduce.models import StackedMLP


def test_log_schedule():
    assert log_schedule(100) == (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    assert log_schedule(3, first=0.1) == (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0)


def _problem(seed=0, n=96, replicas=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.randint(3, (replicas, n), generator=g)
    return x, y


def _accuracy_probe(x, y):
    def probe(model):
        pred = model(x).argmax(-1)
        return {"accuracy": xr.DataArray((pred == y).double().mean(1).numpy(), dims=("replica",)),
                "w0": xr.DataArray(model.weights[0].detach().reshape(model.replicas, -1).numpy(), dims=("replica", "p"))}
    return probe


def test_stacked_replicas_train_as_if_alone():
    """Replica r of a stacked run ends exactly where it ends when trained by itself."""
    x, y = _problem()
    spec = TrainSpec(optimizer="adam", lr=1e-2, batch_size=16, epochs=3, checkpoints=(1.0,))
    stacked = StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2])
    both = train(stacked, x, y, spec, _accuracy_probe(x, y), order_seeds=[5, 6]).dataset
    for r, (init, order) in enumerate([(1, 5), (2, 6)]):
        alone_model = StackedMLP((1, 4, 4), [8, 8], 3, seeds=[init])
        alone = train(alone_model, x, y[r : r + 1], spec, _accuracy_probe(x, y[r : r + 1]), order_seeds=[order]).dataset
        np.testing.assert_allclose(both["w0"].isel(replica=r), alone["w0"].isel(replica=0), rtol=1e-5, atol=1e-6)


def test_probe_pieces_stack_along_epoch():
    x, y = _problem()
    spec = TrainSpec(lr=1e-2, batch_size=24, epochs=2, checkpoints=(0.5, 1.0))
    result = train(StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1]), x, y, spec, _accuracy_probe(x, y), order_seeds=[0, 1])
    assert list(result.dataset.epoch.values) == [0.0, 0.5, 1.0, 2.0]
    assert result.dataset["accuracy"].dims == ("epoch", "replica")
    assert result.steps == 8 and not result.diverged


@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
def test_the_kept_heap_goes_back_at_checkpoints_at_most_every_release_gap(monkeypatch, allocator):
    """Under glibc `train` gives the kept heap back (`release_freed_memory`) at a checkpoint once
    RELEASE_EVERY_S has passed since the last time, so a run with a checkpoint every step cannot grow
    its heap without bound (the learning-order run was killed for memory) yet faults its pages in again
    at most that often. Under jemalloc, whose heap does not grow so, never within a run."""
    import reproduce.engine as engine

    calls = []
    monkeypatch.setattr(engine, "release_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(engine, "allocator_in_use", lambda: allocator)
    x, y = _problem()
    spec = TrainSpec(lr=1e-2, batch_size=24, epochs=2, checkpoints=(0.5, 1.0, 1.5))
    every = 4 if allocator == "glibc" else 0
    for gap, expected in ((0.0, every), (3600.0, 0)):  # every checkpoint (the three and the end), or none
        calls.clear()
        monkeypatch.setattr(engine, "RELEASE_EVERY_S", gap)
        train(StackedMLP((1, 4, 4), [8], 3, seeds=[0]), x, y[:1], spec, _accuracy_probe(x, y[:1]), order_seeds=[0])
        assert len(calls) == expected, (gap, calls)


def test_training_leaves_denormals_as_it_found_them():
    """The engine flushes float32 denormals while it trains on the CPU (speed), and only then."""
    x, y = _problem()
    seen = []
    probe = lambda model: seen.append(float(torch.tensor(1e-40) * 1.0)) or _accuracy_probe(x, y[:1])(model)
    train(StackedMLP((1, 4, 4), [8], 3, seeds=[0]), x, y[:1], TrainSpec(batch_size=24, epochs=1), probe,
          order_seeds=[0])
    assert seen and seen[0] == 0.0  # flushed during training
    assert float(torch.tensor(1e-40) * 1.0) > 0.0  # and restored after it


def test_training_flushes_denormals_on_every_thread_of_the_team():
    """The flag is per thread (MXCSR): the engine sets it on each of torch's OpenMP threads, whose
    share of a parallel matmul or Adam step computed denormals at full cost when only the main
    thread flushed (docs/speed.md), and clears it on each after training."""
    from reproduce.devices import on_every_thread

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, y = _problem()
        seen, after = [], []
        look = lambda out: on_every_thread(lambda: out.append(float(torch.tensor(1e-40) * 1.0)))

        def probe(model):
            look(seen)
            return _accuracy_probe(x, y[:1])(model)

        train(StackedMLP((1, 4, 4), [8], 3, seeds=[0]), x, y[:1], TrainSpec(batch_size=24, epochs=1), probe,
              order_seeds=[0])
        look(after)
    finally:
        torch.set_num_threads(saved)
    if not seen:
        pytest.skip("torch runs no libgomp team here: only the main thread's flag can be set")
    assert len(seen) >= 4 and set(seen) == {0.0}  # two probes x two threads, all flushed
    assert len(after) == 2 and all(v > 0.0 for v in after)  # and cleared on both after training


def test_nan_loss_stops_the_run_as_diverged():
    x, y = _problem()
    spec = TrainSpec(optimizer="sgd", lr=1e12, momentum=0.0, batch_size=32, epochs=50, checkpoints=log_schedule(50))
    result = train(StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1]), x, y, spec, _accuracy_probe(x, y), order_seeds=[0, 1])
    assert result.diverged
    assert result.steps < 50 * 3
    assert result.dataset.epoch.values[-1] < result.diverged_epoch


SCRIPT = textwrap.dedent("""
    import pathlib, sys, torch
    from reproduce.engine import TrainSpec, log_schedule, train
    from reproduce.models import StackedMLP
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(512, 1, 8, 8, generator=g)
    y = torch.randint(4, (2, 512), generator=g)
    def probe(model):
        import xarray as xr
        return {"w": xr.DataArray(torch.cat([p.detach().reshape(2, -1) for p in model.parameters()], 1).numpy(),
                                  dims=("replica", "p"))}
    spec = TrainSpec(lr=1e-3, batch_size=16, epochs=60, checkpoints=log_schedule(60))
    model = StackedMLP((1, 8, 8), [64, 64], 4, seeds=[3, 4])
    state = pathlib.Path(sys.argv[2]) if sys.argv[2] != "-" else None
    result = train(model, x, y, spec, probe, order_seeds=[7, 8], state_path=state, save_every_s=0.0)
    result.dataset.to_netcdf(sys.argv[1], engine="netcdf4")
""")


def _run(tmp_path, out, state):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(state)], env=env)


def test_killed_run_resumes_to_identical_numbers(tmp_path):
    """SIGKILL mid-training, start again: the final weights equal those of an uninterrupted run."""
    assert _run(tmp_path, tmp_path / "whole.nc", "-").wait(timeout=300) == 0
    state = tmp_path / "state.pt"
    victim = _run(tmp_path, tmp_path / "resumed.nc", state)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well into training, past a few saves
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before the kill; make it longer"
    assert not (tmp_path / "resumed.nc").exists()
    assert _run(tmp_path, tmp_path / "resumed.nc", state).wait(timeout=300) == 0
    whole = xr.open_dataset(tmp_path / "whole.nc", engine="netcdf4").load()
    resumed = xr.open_dataset(tmp_path / "resumed.nc", engine="netcdf4").load()
    for ds in (whole, resumed):  # wall times differ between any two runs; the numbers must not
        assert ds.attrs.pop("train_seconds") >= ds.attrs.pop("probe_seconds") > 0
    xr.testing.assert_identical(whole, resumed)


def test_stop_request_saves_mid_epoch_and_resumes_to_identical_numbers(tmp_path):
    """request_stop (what a Slurm preemption signal triggers) saves at the next step; resuming loses nothing."""
    from reproduce import engine

    x, y = _problem()
    spec = TrainSpec(optimizer="adam", lr=1e-2, batch_size=16, epochs=4, checkpoints=(2.0,))

    def probe(model):  # a copy of the weights: a numpy view would follow the live tensor
        return {"w0": xr.DataArray(model.weights[0].detach().reshape(model.replicas, -1).numpy().copy(), dims=("replica", "p"))}

    def run(state=None, progress=None):
        model = StackedMLP((1, 4, 4), [8], 3, seeds=[1, 2])
        return train(model, x, y, spec, probe, order_seeds=[5, 6], state_path=state, progress=progress)

    whole = run().dataset
    state = tmp_path / "state.pt"
    engine.clear_stop()
    with pytest.raises(engine.Preempted):
        run(state, progress=lambda n: engine.request_stop())  # asked at the end of epoch 1
    engine.clear_stop()
    assert torch.load(state, weights_only=True)["step"] == 6  # the step where it was asked, not the checkpoint (12)
    resumed = run(state).dataset
    for ds in (whole, resumed):  # wall times differ between any two runs
        ds.attrs.pop("train_seconds"), ds.attrs.pop("probe_seconds")
    xr.testing.assert_identical(resumed, whole)


def _old_loop(model, x, y, spec, order_seeds):
    """The training loop as the engine wrote it inline before the step function (data order,
    gather, forward, loss, backward, fused optimizer, learning-rate warm-up), kept here as the
    reference the step-function path must match bit for bit."""
    from reproduce.step import make_optimizer, stacked_cross_entropy

    n, batch = x.shape[0], spec.batch_size or x.shape[0]
    steps_per_epoch = -(-n // batch)
    total, warmup = round(spec.epochs * steps_per_epoch), round(spec.warmup_epochs * steps_per_epoch)
    orders = [torch.Generator().manual_seed(int(s)) for s in order_seeds]
    optimizer, flat, losses = make_optimizer(model, spec), x.reshape(n, -1), []
    for step in range(total):
        position = step % steps_per_epoch
        if position == 0:
            perm = torch.stack([torch.randperm(n, generator=g) for g in orders])
        index = perm[:, position * batch : (position + 1) * batch]
        if warmup:
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * min(1.0, (step + 1) / warmup)
        batch_x = flat.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])
        loss = stacked_cross_entropy(model(batch_x), y.gather(1, index))
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_step_function_gives_the_numbers_of_the_old_loop(optimizer):
    """train() now runs step.Step (the step the CUDA graph captures on a GPU) eagerly on the CPU:
    with a partial last batch and learning-rate warm-up, its weights equal the old loop's exactly."""
    from reproduce import step

    x, y = _problem(n=100)  # batch 16: six full batches and a partial one of 4 per epoch
    spec = TrainSpec(optimizer=optimizer, lr=1e-2, batch_size=16, epochs=3, warmup_epochs=1.0, weight_decay=1e-3)
    new, old = (StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2]) for _ in range(2))
    losses = []
    step_class = step.Step

    class Recording(step_class):
        def eager(self, index):
            losses.append(super().eager(index))
            return losses[-1]

    step.Step = Recording
    try:
        result = train(new, x, y, spec, lambda m: {}, order_seeds=[5, 6])
    finally:
        step.Step = step_class
    reference = _old_loop(old, x, y, spec, order_seeds=[5, 6])
    assert result.steps == len(reference) == 21
    assert torch.equal(torch.stack(losses), reference)
    for a, b in zip(new.parameters(), old.parameters()):
        assert torch.equal(a, b)


class _Writes:
    """A pickled object whose unpickling writes a file: a stand-in for code in a foreign state."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _small_run(state):
    x, y = _problem()
    spec = TrainSpec(lr=1e-2, batch_size=24, epochs=2, checkpoints=(1.0,))
    return train(StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1]), x, y, spec, _accuracy_probe(x, y), order_seeds=[0, 1],
                 state_path=state)


def _refused(tmp_path, capsys, kind):
    """The run trained from step 0, the file is kept as <name>.<kind>-<time>, one line says so."""
    aside = list(tmp_path.glob(f"state.pt.{kind}-*"))
    assert len(aside) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and str(tmp_path / "state.pt") in lines[0] and aside[0].name in lines[0], lines
    return aside[0], lines[0]


def test_a_corrupt_state_is_kept_aside_and_the_run_starts_again(tmp_path, capsys):
    state = tmp_path / "state.pt"
    _small_run(state)
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])  # cut short
    result = _small_run(state)
    assert result.steps == 8 and list(result.dataset.epoch.values) == [0.0, 1.0, 2.0]
    aside, line = _refused(tmp_path, capsys, "corrupt")
    assert aside.read_bytes() == whole[: len(whole) // 2] and "starts from the beginning" in line


def test_a_state_carrying_a_pickled_object_is_refused_without_running_it(tmp_path, capsys):
    from reproduce import state as states

    target = tmp_path / "written-by-the-pickle"
    torch.save({"format": states.FORMAT, "version": states.VERSION, "model": _Writes(target)}, tmp_path / "state.pt")
    with pytest.raises(Exception):  # the check itself: unpickled without weights_only, the object runs
        torch.load(tmp_path / "state.pt", weights_only=True)
    result = _small_run(tmp_path / "state.pt")
    assert not target.exists()
    assert result.steps == 8
    _, line = _refused(tmp_path, capsys, "foreign")
    assert "it pickles builtins.open" in line or "pickles" in line


def test_a_state_without_our_marker_is_refused(tmp_path, capsys):
    torch.save({"model": {}, "step": 3}, tmp_path / "state.pt")  # plain tensors and values, but not ours
    assert _small_run(tmp_path / "state.pt").steps == 8
    _, line = _refused(tmp_path, capsys, "foreign")
    assert "marker" in line


@pytest.mark.parametrize("change", ["lr", "labels"])
def test_a_state_saved_by_another_training_is_kept_aside_as_stale(tmp_path, capsys, change):
    """A partial state of one training is not resumed into another (the tier's settings or labels
    edited between a kill and the rerun): it is moved aside and the run gives a fresh run's numbers."""
    x, y = _problem()
    spec = TrainSpec(lr=1e-2, batch_size=24, epochs=2, checkpoints=(1.0,))
    model = lambda: StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1])  # noqa: E731
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train(model(), x, y, spec, _accuracy_probe(x, y), order_seeds=[0, 1], state_path=state, stop_after_steps=3)
    other_spec = dataclasses.replace(spec, lr=2e-2) if change == "lr" else spec
    other_y = y.roll(1, dims=1) if change == "labels" else y
    resumed = train(model(), x, other_y, other_spec, _accuracy_probe(x, other_y), order_seeds=[0, 1], state_path=state)
    fresh = train(model(), x, other_y, other_spec, _accuracy_probe(x, other_y), order_seeds=[0, 1])
    for ds in (resumed.dataset, fresh.dataset):  # wall times differ between any two runs
        del ds.attrs["train_seconds"], ds.attrs["probe_seconds"]
    xr.testing.assert_identical(resumed.dataset, fresh.dataset)
    assert resumed.steps == fresh.steps == 8
    _, line = _refused(tmp_path, capsys, "stale")
    assert "saved by another training" in line


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), torch.cuda.OutOfMemoryError("CUDA out of memory")])
def test_io_and_out_of_memory_errors_are_raised_and_the_state_kept(tmp_path, monkeypatch, error):
    from reproduce import state as states

    state = tmp_path / "state.pt"
    _small_run(state)
    saved = state.read_bytes()

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(states.torch, "load", fails)
    with pytest.raises(type(error)):
        _small_run(state)
    assert state.read_bytes() == saved and list(tmp_path.iterdir()) == [state]


def test_saved_records_round_trip_through_plain_values(tmp_path):
    """Probe pieces are saved as tensors and plain values (weights_only) and come back identical:
    float32 and bool data, string and datetime coordinates, numpy scalars in attrs."""
    from reproduce import state as states

    pieces = {"acc": xr.DataArray(np.array([[0.5, 0.25]], dtype=np.float32), dims=("replica", "k"),
                                  coords={"k": ["a", "bc"], "when": ("k", np.array(["2026-01-01", "2026-02-01"],
                                                                                   dtype="datetime64[ns]"))},
                                  attrs={"n": np.int64(3), "unit": "share", "grid": np.arange(3)}),
              "hit": xr.DataArray(np.array([True, False]), dims=("replica",), name="hit")}
    path = tmp_path / "s.pt"
    states.save_state({"records": [(0.0, pieces)], "step": 1}, path)
    back = states.read_state(path)
    assert back["step"] == 1 and back["records"][0][0] == 0.0
    for name, da in pieces.items():
        xr.testing.assert_identical(back["records"][0][1][name], da)
        assert back["records"][0][1][name].dtype == da.dtype


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_probes_run_in_full_float32_whatever_the_training_precision(precision, monkeypatch):
    """TF32 and autocast belong to the training step: a probe sees TF32 off (matmul precision
    "highest", cuDNN TF32 off) and no autocast, even where the caller left TF32 or autocast on;
    the step uses its own autocast only (bf16) and turns TF32 on for CUDA only with --precision
    tf32, and puts the flags back."""
    from reproduce.devices import NUMERICS, step_numerics

    monkeypatch.setattr(NUMERICS, "precision", precision)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # left on by a caller
    seen = []

    def probe(model):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                     torch.get_float32_matmul_precision(), torch.is_autocast_enabled("cpu")))
        return {}

    x, y = _problem()
    spec = TrainSpec(batch_size=24, epochs=2, checkpoints=(1.0,))
    inside, alone = (StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1]) for _ in range(2))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast reaches neither probes nor steps
            train(inside, x, y, spec, probe, order_seeds=[0, 1])
        assert seen == [(False, False, "highest", False)] * 3
        train(alone, x, y, spec, lambda m: {}, order_seeds=[0, 1])
        assert all(torch.equal(a, b) for a, b in zip(inside.parameters(), alone.parameters()))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # put back after each probe
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with step_numerics(torch.device("cuda")):  # sets flags only: no GPU needed to check them
            assert torch.backends.cuda.matmul.allow_tf32 == torch.backends.cudnn.allow_tf32 == (precision == "tf32")
            assert torch.get_float32_matmul_precision() == ("high" if precision == "tf32" else "highest")
        assert not torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
        with step_numerics(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_resolving_the_device_leaves_tf32_off_for_the_process():
    from reproduce.devices import resolve_device

    resolve_device("cpu", "tf32")
    assert torch.get_float32_matmul_precision() == "highest"


def test_saves_take_at_most_their_share_of_the_training_time():
    """A state is saved once `save_every_s` has passed, or later where one save is slow: a 0.3 s
    save (the quick ddmlp MLP7's 180 MB) keeps the 10 s gap, a 2.5 s one (a GPU tier's GB state)
    waits 50 s, so saving never takes more than SAVE_SHARE of the time."""
    from reproduce.engine import SAVE_SHARE, save_gap

    assert save_gap(10.0, 0.3) == 10.0
    assert save_gap(10.0, 2.5) == pytest.approx(2.5 / SAVE_SHARE) == pytest.approx(50.0)
    assert save_gap(0.0, 0.0) == 0.0

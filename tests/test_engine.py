"""The training engine: schedule, stacking, divergence, and resume after a kill."""

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


def test_training_leaves_denormals_as_it_found_them():
    """The engine flushes float32 denormals while it trains on the CPU (speed), and only then."""
    x, y = _problem()
    seen = []
    probe = lambda model: seen.append(float(torch.tensor(1e-40) * 1.0)) or _accuracy_probe(x, y[:1])(model)
    train(StackedMLP((1, 4, 4), [8], 3, seeds=[0]), x, y[:1], TrainSpec(batch_size=24, epochs=1), probe,
          order_seeds=[0])
    assert seen and seen[0] == 0.0  # flushed during training
    assert float(torch.tensor(1e-40) * 1.0) > 0.0  # and restored after it


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
    assert torch.load(state, weights_only=False)["step"] == 6  # the step where it was asked, not the checkpoint (12)
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


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: compares the whole-step CUDA graph with eager steps on the device")
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_cuda_graph_steps_equal_eager_steps(precision):
    """On CUDA, train() captures full batches in one CUDA graph (partial batches stay eager): the
    weights after three epochs match eager training on the same device."""
    from reproduce.devices import NUMERICS

    x, y = (t.cuda() for t in _problem(n=100))
    spec = TrainSpec(optimizer="adam", lr=1e-2, batch_size=16, epochs=3, warmup_epochs=0.5)
    models, saved = [], (NUMERICS.precision, NUMERICS.cuda_graphs)
    try:
        for graphs in (False, True):
            NUMERICS.precision, NUMERICS.cuda_graphs = precision, graphs
            model = StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2]).cuda()
            result = train(model, x, y, spec, lambda m: {}, order_seeds=[5, 6])
            assert result.dataset.attrs["cuda_graphs"] == int(graphs)
            models.append(model)
    finally:
        NUMERICS.precision, NUMERICS.cuda_graphs = saved
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

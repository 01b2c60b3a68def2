"""The GPU path, on a CUDA device only (ci/gpu-check.sh runs these on a GPU machine): whole-step
CUDA graphs give the numbers of eager steps for each optimizer and model family the tiers train
(Adam, SGD with momentum, AdamW with weight decay at full batch, the grouped-convolution
ConvNet), a killed run resumes with graphs to the same numbers, and probes run in full float32.
Without a GPU the module is skipped with one line."""

import pytest
import torch
import xarray as xr

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible: the GPU tests (CUDA graph vs eager steps, resume with graphs, probe "
                "numerics) run with ci/gpu-check.sh on a GPU machine", allow_module_level=True)

from reproduce.devices import NUMERICS  # noqa: E402
from reproduce.engine import TrainSpec, train  # noqa: E402
from reproduce.models import StackedConvNet, StackedMLP  # noqa: E402


def _problem(n=100, shape=(1, 4, 4), replicas=2, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=g)
    y = torch.randint(classes, (replicas, n), generator=g)
    return x.cuda(), y.cuda()


def _graphed_and_eager(build, spec, x, y, precision="tf32"):
    """The model trained with whole-step graphs and without, from the same initialization."""
    models, saved = [], (NUMERICS.precision, NUMERICS.cuda_graphs)
    try:
        for graphs in (False, True):
            NUMERICS.precision, NUMERICS.cuda_graphs = precision, graphs
            model = build().cuda()
            result = train(model, x, y, spec, lambda m: {}, order_seeds=[5, 6])
            assert result.dataset.attrs["cuda_graphs"] == int(graphs)
            models.append(model)
    finally:
        NUMERICS.precision, NUMERICS.cuda_graphs = saved
    return models


def _assert_same_weights(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_adam_graph_equals_eager(precision):
    """Adam on the MLP, with lr warm-up (eager) and a partial last batch (eager) between replays."""
    x, y = _problem()
    spec = TrainSpec(optimizer="adam", lr=1e-2, batch_size=16, epochs=3, warmup_epochs=0.5)
    _assert_same_weights(*_graphed_and_eager(lambda: StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2]), spec, x, y,
                                             precision))


def test_sgd_momentum_graph_equals_eager():
    """SGD keeps its momentum buffers on the device and no step count: the graph replays them."""
    x, y = _problem()
    spec = TrainSpec(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=4, weight_decay=5e-4)
    _assert_same_weights(*_graphed_and_eager(lambda: StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2]), spec, x, y))


def test_adamw_weight_decay_full_batch_graph_equals_eager():
    """modnoise's setting: AdamW, weight decay 1, full batch (every step replays the graph)."""
    x, y = _problem(n=60)
    spec = TrainSpec(optimizer="adamw", lr=1e-2, batch_size=0, epochs=40, weight_decay=1.0)
    graphed, eager = _graphed_and_eager(lambda: StackedMLP((1, 4, 4), [16], 3, seeds=[1, 2]), spec, x, y)
    _assert_same_weights(graphed, eager)
    start = StackedMLP((1, 4, 4), [16], 3, seeds=[1, 2]).cuda()
    assert not torch.allclose(graphed.weights[0], start.weights[0])  # the replays did train


def test_grouped_conv_convnet_graph_equals_eager():
    """The smooth ConvNet: R replicas as grouped convolutions, SGD with momentum."""
    x, y = _problem(n=48, shape=(3, 8, 8), classes=10)
    spec = TrainSpec(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=16, epochs=3)
    _assert_same_weights(*_graphed_and_eager(lambda: StackedConvNet((3, 8, 8), 2, 10, seeds=[1, 2]), spec, x, y))


def test_killed_run_resumes_with_graphs_to_the_same_numbers(tmp_path):
    """Stopped mid-epoch (the stand-in for a kill), resumed from the state with a new capture."""
    x, y = _problem()
    spec = TrainSpec(optimizer="adam", lr=1e-2, batch_size=16, epochs=6, checkpoints=(2.0, 4.0))

    def probe(model):
        return {"w0": xr.DataArray(model.weights[0].detach().reshape(2, -1).cpu().numpy(), dims=("replica", "p"))}

    def run(state=None, stop=None):
        model = StackedMLP((1, 4, 4), [8, 8], 3, seeds=[1, 2]).cuda()
        return train(model, x, y, spec, probe, order_seeds=[5, 6], state_path=state, stop_after_steps=stop)

    whole = run().dataset
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, stop=17)  # mid epoch 3, after its graph was captured
    resumed = run(state).dataset
    assert resumed.attrs["cuda_graphs"] == 1 and resumed.attrs["steps"] == whole.attrs["steps"]
    xr.testing.assert_allclose(resumed["w0"], whole["w0"], rtol=1e-5, atol=1e-6)


def test_probes_see_full_float32_while_training_in_tf32():
    x, y = _problem()
    seen = []

    def probe(model):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return {}

    saved = NUMERICS.precision
    NUMERICS.precision = "tf32"
    try:
        train(StackedMLP((1, 4, 4), [8], 3, seeds=[0, 1]).cuda(), x, y, TrainSpec(batch_size=16, epochs=2,
              checkpoints=(1.0,)), probe, order_seeds=[0, 1])
    finally:
        NUMERICS.precision = saved
    assert seen == [(False, False)] * 3

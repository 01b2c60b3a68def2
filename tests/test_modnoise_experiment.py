"""The modnoise experiment end to end on a tiny setting: what a run stores, and that it is consistent."""

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments import modnoise
from reproduce.experiments.shrink import SHRINK_ENV
from reproduce.store import Store

SPEC = TrainSpec(optimizer="adamw", lr=3e-3, batch_size=0, epochs=3, weight_decay=1.0, checkpoints=log_schedule(3))
SETTINGS = (("flip", 0.8), ("flip", 1.0), ("resample", 0.5), ("tag", 0.8))


@pytest.fixture(scope="module")
def tiny_runs():
    return {op: modnoise.execute(modnoise.Run(op, 9, SETTINGS, SPEC, seed=2, p=7), torch.device("cpu")) for op in ("add", "mul")}


def test_labels_noise_and_split_are_stored(tiny_runs):
    ds = tiny_runs["add"]
    original = ds.original_label.values
    assert (original == (ds.a.values + ds.b.values) % 7).all()
    flip = ds.sel(replica=0)
    mask = flip.noisy_mask.values.astype(bool)
    assert (flip.label.values[mask] != original[mask]).all() and (flip.label.values[~mask] == original[~mask]).all()
    tag = ds.sel(replica=3)
    assert (tag.label.values == original).all()
    assert (tag.noisy_mask.values == flip.noisy_mask.values).all()  # the control tags exactly the flipped samples
    assert ds.sel(replica=1).noisy_mask.values.all()  # 100% noise
    n_set = round(0.9 * 49)
    assert ds.sizes["sample"] == n_set and ds.in_holdout.values.sum() == round(0.1 * n_set)


def test_multiplication_excludes_zero_and_uses_the_log_basis(tiny_runs):
    ds = tiny_runs["mul"]
    assert ds.a.values.min() == 1 and ds.b.values.min() == 1
    assert "discrete log" in ds.attrs["basis"] and ds.sizes["frequency"] == 3  # (P-1)//2 for period 6


def test_probe_variables_and_final_partition(tiny_runs):
    ds = tiny_runs["add"]
    assert ds.accuracy.dims == ("epoch", "replica", "split")
    assert ds.test_accuracy.dims == ("epoch", "replica", "network")
    assert list(ds.epoch.values) == [0.0, 1.0, 2.0, 3.0]
    partition = ds.test_accuracy.sel(network="partition").values
    assert np.isnan(partition[:-1]).all() and np.isfinite(partition[-1]).all()  # scored once, at the end
    assert ds.power.dims == ("replica", "neuron", "frequency") and ds.sizes["neuron"] == 9
    assert str(ds.model.values) == "add-m9"


def test_runs_of_different_shapes_combine(tiny_runs, tmp_path):
    store = Store(tmp_path)
    for op, ds in tiny_runs.items():
        store.write(ds, "quick", "modnoise", op, {"op": op}, {})
    combined = store.combine("quick", "modnoise", ["add", "mul"])
    assert combined.sizes["run"] == 2 and list(combined.model.values) == ["add-m9", "mul-m9"]


def test_quick_tier_plan():
    runs = modnoise.runs("quick")
    assert {r.model for r in runs} == {"add-m513", "sub-m513", "mul-m513"}
    assert all(r.train.batch_size == 0 and r.train.optimizer == "adamw" and r.seeds_per_setting == 5 for r in runs)
    steps, flops = modnoise.steps_and_flops(runs[0])
    assert steps == 70 and flops > 0
    add = runs[0]
    assert ("tag", 0.8) in add.settings and modnoise.checkpoint_epochs(add)[:51] == [float(e) for e in range(51)]


def test_small_tier_plan(monkeypatch):
    """The paper's setting (P = 113, ReLU): the main addition run at 80% and 100% flip under AdamW weight
    decay 0.1; the learning order under Adam and AdamW at alpha = 0.05, 0.2, 0.3 with the tag control,
    every step a checkpoint, stopping once both subsets reach 50%; the width sweep at 20% flip and its 100%
    control under strong weight decay. The paper's setting trains with the first layer as a row lookup."""
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    runs = modnoise.runs("small")
    assert all(r.op == "add" and r.p == 113 and r.activation == "relu" and r.seeds_per_setting == 3 for r in runs)
    main, adam, adamw, *sweep = runs
    assert main.model == f"add-m{modnoise.SMALL_WIDTH}" and main.settings == (("flip", 0.8), ("flip", 1.0))
    assert main.train.optimizer == "adamw" and main.train.weight_decay == 0.1
    assert (adam.model, adamw.model) == (f"add-m{modnoise.ORDER_WIDTH}-adam", f"add-m{modnoise.ORDER_WIDTH}-adamw")
    assert adam.train.optimizer == "adam" and adamw.train.weight_decay == 0.1
    judged = ("flip", 0.3, modnoise.ORDER_SEEDS)
    assert adam.settings == (("flip", 0.05), ("flip", 0.2), judged, ("tag", 0.3)) and adamw.settings == (judged,)
    assert [len(r.replicas) for r in (adam, adamw)] == [9 + modnoise.ORDER_SEEDS, modnoise.ORDER_SEEDS]
    for order in (adam, adamw):
        assert modnoise.checkpoint_epochs(order) == [float(e) for e in range(order.train.epochs + 1)]
        assert order.stops_at_order
    assert not main.stops_at_order and all(modnoise._lookup(r) for r in runs)
    assert not any(modnoise._lookup(r) or r.stops_at_order for r in modnoise.runs("quick"))
    assert [r.width for r in sweep] == [17, 33, 65, 129, 257]
    assert all(r.settings == (("flip", 0.2), ("flip", 1.0)) and r.train.weight_decay >= 5 for r in sweep)
    assert len({r.name for r in runs}) == len(runs)


def test_order_reached_waits_for_every_replica_and_subset():
    """A learning-order run stops only once every replica's clean and noisy subsets have reached the
    level at some checkpoint (an empty subset, NaN, has nothing to time)."""
    def record(clean, noisy):
        acc = np.zeros((len(clean), len(modnoise.SPLITS)))
        acc[:, 0], acc[:, 1] = clean, noisy
        return 0.0, {"accuracy": xr.DataArray(acc, dims=("replica", "split"), coords={"split": list(modnoise.SPLITS)})}

    assert not modnoise.order_reached([record([0.6, 0.6], [0.7, 0.4])])
    assert modnoise.order_reached([record([0.6, 0.2], [0.7, 0.4]), record([0.4, 0.5], [0.3, 0.5])])
    assert modnoise.order_reached([record([0.5, 0.9], [np.nan, 0.5])])


def test_learning_order_run_stops_early_and_keeps_its_statistic():
    """A run checkpointed at every step to its end stops at the first step where every subset has
    reached ORDER_LEVEL; the steps before are those of the same run trained on."""
    spec = dataclasses.replace(SPEC, epochs=60, checkpoints=(), lr=3e-2)
    full = modnoise.Run("add", 33, (("flip", 0.3, 2),), spec, seed=1, p=11, order_until=50)
    stopping = dataclasses.replace(full, order_until=60)
    assert stopping.stops_at_order and not full.stops_at_order
    long, short = (modnoise.execute(r, torch.device("cpu")) for r in (full, stopping))
    last = short.epoch.values[-1]
    assert last < 50, "the test's run must reach the level early"
    acc = short.accuracy.sel(split=["clean", "noisy"])
    assert (acc.max("epoch") >= modnoise.ORDER_LEVEL).all() and not (acc.isel(epoch=-2).min() >= modnoise.ORDER_LEVEL)
    np.testing.assert_array_equal(long.accuracy.sel(epoch=short.epoch.values).values, short.accuracy.values)


def test_per_step_checkpoints_are_light():
    """Between the log-spaced checkpoints the probe records the subsets' accuracies at every step, and
    leaves the extractions (the costly part) NaN."""
    run = modnoise.Run("add", 9, (("flip", 0.8),), dataclasses.replace(SPEC, epochs=6, checkpoints=(3.0,)), seed=2, p=7,
                       order_until=5)
    ds = modnoise.execute(run, torch.device("cpu"))
    assert list(ds.epoch.values) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    fourier = ds.test_accuracy.sel(network="fourier").isel(replica=0).values
    assert np.isfinite(fourier[[0, 3, 6]]).all() and np.isnan(fourier[[1, 2, 4, 5]]).all()
    # what the learning order's claim and figure read, at every step; the hold-out and the losses only
    # at the full checkpoints
    assert np.isfinite(ds.accuracy.sel(split=["clean", "noisy", "noisy_original", "test"]).values).all()
    for name in ("accuracy", "loss"):
        holdout = ds[name].sel(split="holdout").isel(replica=0).values
        assert np.isfinite(holdout[[0, 3, 6]]).all() and np.isnan(holdout[[1, 2, 4, 5]]).all()
    assert np.isnan(ds.loss.sel(split="clean").isel(replica=0).values[[1, 2, 4, 5]]).all()


@pytest.mark.parametrize("p, activation", [(11, "quadratic"), (113, "relu")])
def test_light_probe_equals_the_full_probe_where_it_reads(p, activation):
    """The per-step probe reads the clean, noisy (both labels) and test accuracies from a forward on
    the trained-on samples only: the same numbers as the full probe's, to the bit, on a network whose
    predictions are planted away from chance (trained a few steps) and on the small tier's lookup."""
    from reproduce.engine import _run_probe
    from reproduce.step import make_step

    spec = dataclasses.replace(SPEC, epochs=8, checkpoints=(8.0,), lr=3e-2, weight_decay=0.0, optimizer="adam")
    run = modnoise.Run("add", 33, (("flip", 0.3, 2), ("tag", 0.3)), spec, seed=1, p=p, activation=activation, order_until=7)
    data = modnoise.prepare(run, torch.device("cpu"))
    model = modnoise._model(run)
    n_train = int((data.split == 0).sum())
    step = make_step(model, spec, modnoise._inputs(run, data.pairs[:n_train]), data.labels[:, :n_train], n_train)
    index = torch.arange(n_train).expand(len(run.replicas), -1)
    for _ in range(4):
        step(index)
    light, full = (_run_probe(model, modnoise.make_probe(run, data, done)) for done in (1, 0))
    kept = ["clean", "noisy", "noisy_original", "test"]
    np.testing.assert_array_equal(light["accuracy"].sel(split=kept).values, full["accuracy"].sel(split=kept).values)
    assert (full["accuracy"].sel(split="clean").values > 1.5 / p).all(), "planted: above chance"
    assert np.isnan(light["accuracy"].sel(split="holdout").values).all() and np.isnan(light["loss"].values).all()
    assert np.isfinite(full["loss"].values).all()


def test_learning_order_runs_skip_the_partitions():
    """A learning-order run (checkpointed at every step to its end) stores its partitions as NaN of
    the stored shapes (nothing reads them); a main run scores them."""
    spec = dataclasses.replace(SPEC, epochs=4, checkpoints=())
    main = modnoise.Run("add", 9, (("flip", 0.3),), spec, seed=2, p=7, activation="relu")
    order = dataclasses.replace(main, order_until=4)
    ran = {r.stops_at_order: modnoise.execute(r, torch.device("cpu")) for r in (main, order)}
    for stops, ds in ran.items():
        parts = ds.test_accuracy.isel(epoch=-1).sel(network=["partition", "strength", "ipr"]).values
        stored = [ds[k].values for k in ("partition_k", "strength_score", "ipr_score", "partition_score", "generalizing_fraction")]
        assert ds.strength_score.dims == ("replica", "neuron") and ds.partition_k.dims == ("replica", "scorer")
        assert all(np.isnan(v).all() for v in [parts, *stored]) if stops else all(np.isfinite(v).all() for v in [parts, *stored])
        assert np.isfinite(ds.power.values).all()  # the spectrum is kept (cheap)


def test_calibrations_time_the_cpu_tiers_only():
    """The dry run times a small-tier-shaped run's step, its probes (full and light) and its partitions;
    a GPU tier's run counts 0 for probes and partitions, so that its dry run stays seconds long."""
    spec = dataclasses.replace(SPEC, epochs=6, checkpoints=(3.0,))
    run = modnoise.Run("add", 33, (("flip", 0.3),), spec, seed=1, p=11, activation="relu")
    cpu = torch.device("cpu")
    assert modnoise.calibrate(run, cpu) > 0 and modnoise.calibrate_after(run, cpu) > 0
    full_only = modnoise.calibrate_probes(run, cpu)
    with_light = modnoise.calibrate_probes(dataclasses.replace(run, order_until=6), cpu)
    assert 0 < full_only < with_light
    assert modnoise.calibrate_after(dataclasses.replace(run, order_until=6), cpu) == 0.0  # no partitions there
    gpu_tier = dataclasses.replace(run, train=dataclasses.replace(spec, epochs=modnoise.CALIBRATED_EPOCHS + 1))
    assert modnoise.calibrate_probes(gpu_tier, cpu) == 0.0 and modnoise.calibrate_after(gpu_tier, cpu) == 0.0


def test_medium_tier_plan(monkeypatch):
    """The paper's setting (P = 113, ReLU, AdamW at its lr and weight decay 0.1) on the paper's widths 2^k + 1
    (k = 4..12), three operations at the largest, the learning order in its own Adam and AdamW runs at the
    paper's M = 2049, 3 seeds; the shrink hook keeps every name, width and setting and only makes the task
    small."""
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    runs = modnoise.runs("medium")
    main = [r for r in runs if r.width == modnoise.PAPER_WIDTHS[-1]]
    order = [r for r in runs if r.variant]
    assert {r.width for r in runs if r.op == "add" and not r.variant} == set(modnoise.PAPER_WIDTHS)
    assert {r.op for r in main} == {"add", "sub", "mul"} and all(r.seeds_per_setting == 3 for r in runs)
    assert all((r.p, r.activation) == (modnoise.PAPER_P, modnoise.PAPER_ACTIVATION) for r in runs)
    assert all((r.train.optimizer, r.train.lr, r.train.weight_decay) == ("adamw", modnoise.PAPER_LR, modnoise.PAPER_WEIGHT_DECAY)
               for r in main)
    assert [(r.model, r.train.lr, r.order_until) for r in order] == [
        (f"add-m{modnoise.MEDIUM_ORDER_WIDTH}-{o}", modnoise.PAPER_LR, modnoise.MEDIUM_ORDER_EPOCHS) for o in ("adam", "adamw")]
    assert all(modnoise._lookup(r) for r in runs)
    monkeypatch.setenv(SHRINK_ENV, "1")
    shrunk = modnoise.runs("medium")
    assert [(r.name, r.settings) for r in shrunk] == [(r.name, r.settings) for r in runs]
    assert all(r.p == 11 and r.train.epochs == 3 for r in shrunk)


def test_full_tier_is_the_paper_s_setting():
    """full: P = 113, ReLU, AdamW lr 1e-3 with weight decay 0.1 for the paper's 200k epochs, every operation
    at every paper width; the learning order judged at alpha = 0.3 with ORDER_SEEDS seeds and its tag control."""
    runs = modnoise.runs("full")
    assert {(r.op, r.width) for r in runs} == {(o, w) for o in ("add", "sub", "mul") for w in modnoise.PAPER_WIDTHS}
    for r in runs:
        assert (r.p, r.activation, r.train.optimizer, r.train.lr, r.train.weight_decay, r.train.epochs) == (
            modnoise.PAPER_P, modnoise.PAPER_ACTIVATION, "adamw", modnoise.PAPER_LR, modnoise.PAPER_WEIGHT_DECAY,
            modnoise.PAPER_EPOCHS)
        assert ("flip", modnoise.ORDER_RATES[-1], modnoise.ORDER_SEEDS) in r.settings and ("tag", modnoise.ORDER_TAG) in r.settings


def test_medium_path_end_to_end_shrunk(shrunk_medium, tmp_path):
    """The medium configuration, shrunk by REPRODUCE_SHRINK=1, through the store and every medium claim
    case (16: Fourier 9, width 2, partition 2, learning order 3): each case runs (its verdict on 3 epochs means
    nothing) and claims.json lists every claim."""
    text, by_id = shrunk_medium("modnoise")
    cases = [c for e in by_id.values() for c in e["cases"]]
    assert len(cases) == 16 and all(c["verdict"] not in ("not_run", "error") for c in cases), text
    figures = {f.name for f in (tmp_path / "medium" / "figures").glob("*.paper.png")}
    assert len(figures) == 4, figures  # one paper figure per claim: the figure functions ran on the medium layout
    entries = list(by_id.values())
    for case in (case for c in entries for case in c["cases"]):
        for j in case["conditions"]:  # the learning order's judged alpha has ORDER_SEEDS seeds, as at small
            judged_order = j["instance"] == "30%" and not case["control"]
            assert j["n"] == (modnoise.ORDER_SEEDS if judged_order else 3), (case["case"], j["name"])
    assert all(c["cases"] and all(case["conditions"] for case in c["cases"]) for c in entries)
    assert {c["id"] for c in entries} == {f"modnoise.{c}" for c in ("fourier_extraction_recovers", "larger_width_generalizes_better",
                                                                     "partition_weaker_than_fourier", "noisy_memorized_faster_early")}


def test_small_path_end_to_end_shrunk(shrunk_medium, tmp_path):
    """The small configuration, shrunk by REPRODUCE_SHRINK=1, through the store and every small claim
    case (Fourier 3, width 2, partition 2, learning order 3: Adam, AdamW, Adam's tag control), with n = 3
    per condition and ORDER_SEEDS at the learning order's judged alpha; the learning order shows every alpha."""
    text, by_id = shrunk_medium("modnoise", "small")
    cases = [c for e in by_id.values() for c in e["cases"]]
    assert len(cases) == 10 and all(c["verdict"] not in ("not_run", "error") for c in cases), text
    for e in by_id.values():
        for case in e["cases"]:
            for j in case["conditions"]:
                judged_order = j["instance"] == "30%" and not case["control"]
                assert j["n"] == (modnoise.ORDER_SEEDS if judged_order else 3), (case["case"], j["name"])
    order = by_id["modnoise.noisy_memorized_faster_early"]["cases"][0]
    assert {j["instance"] for j in order["conditions"]} == {"5%", "20%", "30%"}
    assert {j["instance"] for j in order["conditions"] if not j["reported"]} == {"30%"}


def test_relu_option_and_bad_activation():
    from reproduce.models import StackedTwoLayer

    x = modnoise.one_hot_pairs(modnoise.table("add", 5)[0], 5)
    relu = StackedTwoLayer(5, 4, 5, seeds=[0, 1], activation="relu")
    logits, hidden = relu(x, return_hidden=True)
    assert logits.shape == (2, 25, 5) and (hidden >= 0).all()
    with pytest.raises(ValueError, match="unknown activation"):
        StackedTwoLayer(5, 4, 5, seeds=[0], activation="tanh")


def test_replicas_train_independently_of_their_stack():
    """A replica's numbers do not depend on which other noise settings share its run."""
    one = modnoise.execute(modnoise.Run("add", 9, (("flip", 0.8),), SPEC, seed=2, p=7), torch.device("cpu"))
    both = modnoise.execute(modnoise.Run("add", 9, (("flip", 0.2), ("flip", 0.8)), SPEC, seed=2, p=7), torch.device("cpu"))
    assert np.allclose(one.accuracy.sel(replica=0).values, both.accuracy.sel(replica=1).values, equal_nan=True)


def _killed_then_run(run: modnoise.Run, state, monkeypatch, kill_after: int, rerun: modnoise.Run):
    """Execute `run` until `kill_after` steps (then a stand-in for a kill), then `rerun` on the same state."""
    from reproduce import engine

    with monkeypatch.context() as patch:
        patch.setattr(modnoise, "train", lambda *a, **k: engine.train(*a, **k, stop_after_steps=kill_after))
        with pytest.raises(KeyboardInterrupt):
            modnoise.execute(run, torch.device("cpu"), state_path=state)
    return modnoise.execute(rerun, torch.device("cpu"), state_path=state)


@pytest.mark.parametrize("rerun", ["same", "edited"])
def test_a_resumed_run_probes_the_epochs_of_an_uninterrupted_one(tmp_path, monkeypatch, rerun):
    """The probe counts the checkpoints a resumed run probed already, so the light (per-step) and full
    probes fall on the same epochs as in an uninterrupted run; a state of another training (the
    settings edited before the rerun) is refused by the engine and counts none."""
    spec = TrainSpec(optimizer="adamw", lr=3e-3, batch_size=0, epochs=12, weight_decay=1.0, checkpoints=log_schedule(12))
    run = modnoise.Run("add", 9, SETTINGS[:2], spec, seed=2, p=7, order_until=6)
    other = dataclasses.replace(run, train=dataclasses.replace(spec, lr=5e-3)) if rerun == "edited" else run
    resumed = _killed_then_run(run, tmp_path / "state.pt", monkeypatch, kill_after=4, rerun=other)
    whole = modnoise.execute(other, torch.device("cpu"))
    for name in ("accuracy", "test_accuracy", "power"):
        np.testing.assert_array_equal(resumed[name].values, whole[name].values, err_msg=name)
    assert list(tmp_path.glob("state.pt.stale-*")) if rerun == "edited" else not list(tmp_path.glob("state.pt.*"))


@pytest.mark.parametrize("shared", [True, False])
def test_row_lookup_equals_the_dense_first_layer(shared):
    """The paper's setting trains with the first layer as a row lookup: the same logits to the bit as
    the dense product with the one-hot pairs (shared by the replicas or per replica), gradients equal
    up to rounding."""
    from reproduce.models import StackedTwoLayer

    p, g = 13, torch.Generator().manual_seed(3)
    shape = (40,) if shared else (2, 40)
    a, b = torch.randint(0, p, shape, generator=g), torch.randint(0, p, shape, generator=g)
    x = torch.cat([torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], -1).float()
    y = torch.randint(0, p, (2, 40), generator=g)
    dense, lookup = (StackedTwoLayer(p, 17, p, seeds=[0, 1], activation="relu", lookup=k) for k in (False, True))
    grads = []
    for model in (dense, lookup):
        logits = model(x)
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), y).backward()
        grads.append((logits.detach(), model.w_in.grad, model.w_out.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-5, atol=1e-7)


def test_row_inputs_equal_one_hot_inputs_to_the_bit():
    """The lookup fed the pairs' rows (a, P + b) gives the one-hot input's logits and gradients to the
    bit: the same rows summed and scattered in the same order (the small runs train on rows)."""
    from reproduce.models import StackedTwoLayer, pair_rows

    p, g = 13, torch.Generator().manual_seed(5)
    pairs = torch.randint(0, p, (50, 2), generator=g)
    index = torch.stack([torch.randperm(50, generator=g) for _ in range(3)])
    y = torch.randint(0, p, (3, 50), generator=g)
    out = []
    for x in (modnoise.one_hot_pairs(pairs, p), pair_rows(pairs, p)):
        model = StackedTwoLayer(p, 17, p, seeds=[0, 1, 2], activation="relu", lookup=True)
        batch = x.reshape(50, -1).index_select(0, index.reshape(-1)).view(3, 50, -1)  # as the engine's step gathers
        logits = model(batch)
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), y).backward()
        out.append((logits.detach(), model.w_in.grad, model.w_out.grad))
    assert all(torch.equal(a, b) for a, b in zip(*out))
    assert torch.equal(pair_rows(pairs, p)[:, 1] - p, pairs[:, 1])

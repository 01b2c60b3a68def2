"""The masc experiment end to end on a tiny setting, its tier configs, early stopping and the stacked CNN."""

import dataclasses

import numpy as np
import pytest
import torch

from reproduce.engine import TrainSpec
from reproduce.experiments import masc
from reproduce.experiments.shrink import SHRINK_ENV
from reproduce.figures.masc import (degree_summary, masc_by_layer, masc_retraining, masc_table1, masc_true_vs_corrupted,
                                   run_of)
from reproduce.models import StackedCNN


@pytest.fixture(scope="module")
def tiny_run(fashion_mnist):
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=2)
    run = masc.Run("mlp-fashion_mnist", "mlp", (16, 8), "fashion_mnist", spec, seed=3, n_train=300, n_test=100,
                   extra_seeds=((1.0, 2),), retrain=TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=3))
    return masc.execute(run, torch.device("cpu")).expand_dims(run=["x"])


def test_stored_results_have_every_layer_subspace_and_split(tiny_run):
    one = run_of(tiny_run, "mlp-fashion_mnist")
    assert list(one.layer_name.values) == ["Input", "FC1(16)", "FC2(8)"]
    assert one.masc_accuracy.sizes == {"replica": 7, "subspace": len(masc.SUBSPACES), "layer": 3, "split": 4}
    assert list(one.degree.values) == [*masc.DEGREES, 1.0]  # two seeds at p = 1.0 (extra_seeds), one elsewhere
    assert int(one.test_select.sum()) == 20  # the fixed 20% split


def test_true_and_corrupted_subspaces_coincide_without_noise(tiny_run):
    one = run_of(tiny_run, "mlp-fashion_mnist").isel(replica=0)
    assert (one.label.values == one.original_label.values).all()
    for other in ("true", "independent", "independent2"):  # at p = 0 every subspace is built from the clean labels
        np.testing.assert_array_equal(one.masc_test_prediction.sel(subspace="corrupted"),
                                      one.masc_test_prediction.sel(subspace=other))


def test_independent_corruption_has_the_degree_but_not_the_trained_labels(fashion_mnist):
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=1)
    run = masc.Run("mlp-fashion_mnist", "mlp", (8,), "fashion_mnist", spec, n_train=2000, n_test=100, degrees=(0.8,))
    data, labels, _, _ = masc.prepare(run, torch.device("cpu"))
    first, second = masc.independent_labels(run, data)[:, 0]
    true = data.train_y
    # resample noise at 80%: a label keeps its class with probability 0.2 + 0.8 / 10 = 0.28
    for noisy in (labels[0], first, second):
        assert abs(float((noisy == true).double().mean()) - 0.28) < 0.04
    # independent of the trained labels and of each other: two independent draws agree with
    # probability 0.28^2 + 0.72^2 / 9
    for a, b in ((first, labels[0]), (second, labels[0]), (first, second)):
        assert abs(float((a == b).double().mean()) - (0.28**2 + 0.72**2 / 9)) < 0.04


def test_accuracies_recompute_from_stored_predictions(tiny_run):
    one = run_of(tiny_run, "mlp-fashion_mnist")
    select = one.test_select.values.astype(bool)
    pred = one.masc_test_prediction.sel(subspace="true", layer=1).values
    expected = (pred[:, ~select] == one.test_label.values[~select]).mean(1)
    np.testing.assert_allclose(one.masc_accuracy.sel(subspace="true", layer=1, split="test_eval"), expected)


def test_input_layer_is_the_same_for_every_replica_with_the_same_labels(tiny_run):
    one = run_of(tiny_run, "mlp-fashion_mnist")
    true_input = one.masc_accuracy.sel(subspace="true", layer=0, split=["train_true", "test_select", "test_eval"]).values
    assert np.allclose(true_input, true_input[0])  # true labels and the input do not depend on training


def test_summary_table_and_figure(tiny_run):
    summary = degree_summary(run_of(tiny_run, "mlp-fashion_mnist"))
    assert set(summary) == set(masc.DEGREES)
    assert all("retrained" in row and "retrained_own" in row and row["layers"][0] != "Input" for row in summary.values())
    assert all(row["seeds"]["train_fit"].shape == (row["replicas"],) for row in summary.values())
    columns, rows = masc_table1(tiny_run)
    assert len(rows) == 6 and len(columns) == len(rows[0])
    assert masc_by_layer(tiny_run).axes and masc_true_vs_corrupted(tiny_run).axes and masc_retraining(tiny_run).axes
    assert all(len(row["seeds"]["gain"]) == row["replicas"] for row in summary.values())
    assert summary[1.0]["replicas"] == 2 and summary[0.0]["replicas"] == 1


def test_per_degree_table_has_intervals_and_the_paper_row(tiny_run):
    from reproduce.figures.masc import PAPER_MLP_MNIST, masc_per_degree
    columns, rows = masc_per_degree(tiny_run)
    assert len(rows) == 6 and all(len(r) == len(columns) for r in rows)
    by_degree = {r[1]: r for r in rows}
    assert by_degree["20%"][-1] == "{:.1f} -> {:.1f}".format(*PAPER_MLP_MNIST[0.2])
    assert by_degree["0%"][5].endswith("(one seed)")  # one seed: no interval
    assert "[" in by_degree["100%"][6]  # two seeds at p = 1.0: mean [interval]


def test_true_label_claim_judges_100_percent_at_small_only(tiny_run):
    from reproduce.claims.masc import true_label_degrees, true_label_subspaces
    from reproduce.judge import Case
    assert 1.0 in true_label_degrees("small") and 1.0 not in true_label_degrees("quick")
    main = true_label_subspaces(tiny_run, Case("small", "mlp-fashion_mnist")).conditions
    placebo = true_label_subspaces(tiny_run, Case("small", "mlp-fashion_mnist", "placebo")).conditions
    quick = true_label_subspaces(tiny_run, Case("quick", "mlp-fashion_mnist")).conditions
    judged = lambda cs: {c.instance for c in cs if not c.reported}  # noqa: E731
    assert judged(main) == judged(placebo) == {"20%", "40%", "60%", "80%", "100%"}
    assert judged(quick) == {"20%", "40%", "60%", "80%"}
    # at 100% the judged statistic is true minus independent corruption; the model's chance level is reported
    at100 = [c for c in main if c.instance == "100%"]
    assert [c.reported for c in at100] == [False, True, True]


def test_early_stopping_keeps_the_best_epoch_before_patience_runs_out():
    assert masc.early_stopped(np.array([0.9, 0.5, 0.6, 0.55, 0.58, 0.59, 0.9]), 3) == (2, True)
    assert masc.early_stopped(np.array([0.9, 0.5, 0.4]), 3) == (1, False)  # never the model before retraining


def test_best_layer_never_picks_the_input():
    assert masc.best_layer(np.array([[0.9, 0.5, 0.6], [0.1, 0.7, 0.7]])).tolist() == [2, 1]


def test_doubled_model_is_two_identical_copies():
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=1)
    for arch, hidden in (("mlp", (6, 5)), ("cnn", (5,))):
        run = masc.Run("x", arch, hidden, "fashion_mnist", spec, degrees=(0.0, 0.5), extra_seeds=((0.5, 2),))
        model = masc._model(run)
        twice = masc._doubled(run, model)
        x = torch.rand(4, 1, 28, 28)
        with torch.no_grad():
            one, two = model(x), twice(x)
        assert two.shape[0] == 2 * one.shape[0] == 6
        assert torch.allclose(two[:3], one, atol=1e-6) and torch.allclose(two[3:], one, atol=1e-6)


def test_first_memorized_epoch_and_stop_rule():
    import xarray as xr
    acc = xr.DataArray(np.array([[0.1, 0.1, 0.1], [0.995, 0.5, 0.2], [1.0, 0.99, 0.3]]), dims=("epoch", "replica"),
                       coords={"epoch": [0.0, 5.0, 10.0]})
    assert masc.first_memorized(acc, 0.99).tolist() == [5.0, 10.0, np.inf]
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=1)
    run = masc.Run("x", "mlp", (4,), "fashion_mnist", spec, degrees=(0.4, 0.8, 1.0), memorize=0.99)
    stop = masc.memorized(run)
    record = lambda v: (1.0, {"model_accuracy": xr.DataArray(np.array(v)[:, None], dims=("replica", "split"),  # noqa: E731
                                                            coords={"split": ["train_corrupted"]})})
    assert not stop([record([1.0, 0.98, 0.2])])
    assert stop([record([1.0, 0.99, 0.2])])  # p = 1.0, the control, is not waited for


@pytest.mark.parametrize("tier", ["quick", "small", "medium", "full"])
def test_tier_configs(tier):
    runs = masc.runs(tier)
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    for run in runs:
        assert run.degrees == masc.DEGREES and (run.retrain is not None) == (tier != "quick")
        dataclasses.asdict(run)  # hashable into the store
    assert ("alexnet-cifar100" in [r.model for r in runs]) == (tier == "full")
    seeds = {"quick": masc.QUICK_SEEDS, "small": masc.SMALL_SEEDS, "medium": masc.MEDIUM_SEEDS,
             "full": masc.MEDIUM_SEEDS}[tier]
    assert all(r.seeds_per_degree == seeds for r in runs)
    if tier == "medium":
        assert [r.model for r in runs] == ["cnn-fashion_mnist", "mlp-fashion_mnist"]
        assert all(r.n_train is None and r.n_test is None for r in runs)  # the full Fashion-MNIST
    if tier == "full":
        assert all(r.train.epochs == 500 for r in runs)


def test_shrunk_medium_runs_keep_names_and_code_path(monkeypatch):
    monkeypatch.setenv(SHRINK_ENV, "1")
    shrunk = masc.runs("medium")
    monkeypatch.delenv(SHRINK_ENV)
    medium = masc.runs("medium")
    assert [r.name for r in shrunk] == [r.name for r in medium]
    assert [r.arch for r in shrunk] == [r.arch for r in medium]
    assert all(r.n_train == 160 and r.train.epochs == 2 and r.seeds_per_degree == 2 for r in shrunk)


@pytest.mark.parametrize("tier", ["small", "medium"])
def test_claims_run_end_to_end_on_the_shrunk_runs(tier, fashion_mnist, shrunk_medium, tmp_path):
    """The small and medium paths (runs, store, every claim case, claims.json) on CPU-sized copies of
    the runs (REPRODUCE_SHRINK=1). The verdicts themselves mean nothing at this size."""
    stdout, entries = shrunk_medium("masc", tier)
    cases = [c for e in entries.values() for c in e["cases"]]
    for case in cases:  # a verdict: never not run, never an error
        assert case["verdict"] not in ("not_run", "error"), (case["case"], case["message"])
    models = [r.model for r in masc.runs(tier)]
    assert len(cases) == 3 * 2 * len(models), stdout[-3000:]  # 3 claims x (main + control) x models
    claims = list(entries.values())
    assert {c["id"] for c in claims} == {"masc.beats_model", "masc.true_label_subspaces_better",
                                         "masc.relabel_retraining_improves"}
    seeds = {run.seeds_per_degree for run in masc.runs(tier)}  # the shrunk runs' (REPRODUCE_SHRINK is still set)
    for claim in claims:
        # a Welch step counts the seeds of both degrees
        ns = {j.get("n_a", j["n"]) for c in claim["cases"] for j in c["conditions"]}
        assert claim["cases"] and ns == seeds, claim


def test_stacked_cnn_replicas_are_independent():
    convs = ((4, 3, 1, True), (6, 3, 0, False))
    stacked = StackedCNN((3, 12, 12), convs, (5,), 7, seeds=[1, 2, 3])
    alone = StackedCNN((3, 12, 12), convs, (5,), 7, seeds=[2])
    x = torch.rand(3, 4, 3, 12, 12)
    logits, hidden = stacked(x, return_hidden=True)
    assert logits.shape == (3, 4, 7) and [h.shape for h in hidden] == [(3, 4, stacked.flat_width), (3, 4, 5)]
    assert torch.allclose(alone(x[1:2]), logits[1:2], atol=1e-5)
    loss = logits[0].sum()
    loss.backward()
    grad = stacked.conv_weights[0].grad.view(3, 4, 3, 3, 3)
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0  # replica 0's loss reaches only its own filters


def test_engine_stop_when_ends_training_at_a_checkpoint():
    """engine.train's `stop_when` (early stopping for the relabel-retraining) ends at the checkpoint it says."""
    from reproduce.engine import train
    from reproduce.models import StackedMLP

    x = torch.rand(40, 1, 2, 2)
    y = torch.randint(3, (2, 40))
    model = StackedMLP((1, 2, 2), (5,), 3, seeds=[0, 1])
    spec = TrainSpec(batch_size=10, epochs=10, checkpoints=tuple(float(e) for e in range(1, 10)))
    probe = lambda m: {"one": __import__("xarray").DataArray(np.zeros(2), dims="replica")}  # noqa: E731
    result = train(model, x, y, spec, probe, order_seeds=[0, 1], stop_when=lambda records: records[-1][0] >= 3)
    assert list(result.dataset.epoch.values) == [0.0, 1.0, 2.0, 3.0] and result.steps == 12

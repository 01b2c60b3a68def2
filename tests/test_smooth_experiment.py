"""The smooth experiment end to end on a tiny setting: what a run stores, and the sweep helpers;
the small and medium paths shrunk to CPU size through their claim cases."""

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec
from reproduce.experiments import smooth
from reproduce.experiments.shrink import SHRINK_ENV
from reproduce.figures.smooth import sweep, threshold_of, thresholds
from reproduce.measures.sharpness import VolumeSpec, interpolation_threshold, peak_at_threshold
from reproduce.verdict import StatisticError


@pytest.fixture(scope="module")
def tiny_runs(fashion_mnist):
    spec = TrainSpec(optimizer="sgd", lr=0.05, batch_size=50, epochs=1, warmup_epochs=0.5)
    volumes = VolumeSpec(paths=2, strengths=2, hessian_directions=2, chunk=64)
    out = []
    for w in (1, 2):
        run = smooth.Run("tiny", w, "fashion_mnist", "flip", 0.2, spec, volumes, seed=3, seeds=2,
                         n_train=101, n_test=50, downsample=2)
        out.append(smooth.execute(run, torch.device("cpu")).expand_dims(run=[run.name]))
    return xr.concat(out, "run", data_vars="all", coords="different", compat="equals", join="outer")


def test_exactly_round_n_p_labels_flipped(tiny_runs):
    one = tiny_runs.isel(run=0)
    mask = one.noisy_mask.values.astype(bool)  # (replica, sample)
    assert (mask.sum(1) == round(101 * 0.2)).all()
    assert (one.label.values[mask] != np.broadcast_to(one.original_label.values, mask.shape)[mask]).all()
    assert not (mask[0] == mask[1]).all()  # each seed its own noise
    assert (tiny_runs.isel(run=1).noisy_mask.values == one.noisy_mask.values).all()  # same noise at every width


def test_probe_variables_and_sweep(tiny_runs):
    assert tiny_runs.volume_measure.dims == ("run", "epoch", "replica", "measure", "subset", "volume")
    assert list(tiny_runs.epoch.values) == [0.0, 1.0]
    assert list(tiny_runs.volume.values) == [0, 1, 2]
    sw = sweep(tiny_runs, "tiny")
    assert list(sw.width.values) == [1, 2]
    jac = sw.volume_measure.sel(measure="jacobian", volume=0)
    all_, clean, noisy = (jac.sel(subset=s).values for s in ("all", "clean", "noisy"))
    np.testing.assert_allclose(all_, 0.8 * clean + 0.2 * noisy, rtol=0.05)  # 20 of 101 noisy
    assert np.isnan(sw.volume_measure.sel(subset="untouched")).all()  # flip touches every class
    assert threshold_of(tiny_runs, "tiny", 1.1) == 1
    assert thresholds(tiny_runs, "tiny", 1.1) == [1, 1]  # one per seed
    assert sweep(tiny_runs, "tiny", seeds=True).volume_measure.sizes["replica"] == 2


def test_threshold_and_peak_criterion_on_planted_sweeps():
    widths = [1, 2, 3, 4, 6, 8]
    assert interpolation_threshold(widths, [0.3, 0.1, 0.02, 0.0, 0.0, 0.0], 0.01) == 4
    assert interpolation_threshold(widths, [0.3] * 6, 0.01) is None
    peaked = peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=4)
    assert peaked["holds"] and peaked["peak_width"] == 3 and peaked["ratio"] == pytest.approx(1 / 9)
    assert not peak_at_threshold(widths, [1, 9, 5, 4, 2, 1], threshold=4)["holds"]  # two steps away
    assert not peak_at_threshold(widths, [1, 5, 9, 8, 7, 6], threshold=4)["holds"]  # no fall
    assert not peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=None)["holds"]
    with pytest.raises(StatisticError, match=r"width\(s\) \[3\]"):  # a NaN width is never dropped silently
        peak_at_threshold(widths, [1, 5, float("nan"), 4, 2, 1], threshold=4)
    with pytest.raises(StatisticError, match="training error"):
        interpolation_threshold(widths, [0.3, float("nan"), 0.0, 0.0, 0.0, 0.0], 0.01)


def test_quick_tier_is_the_stated_sweep(monkeypatch):
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    quick = smooth.runs("quick")
    assert [r.width for r in quick] == list(smooth.QUICK_WIDTHS) and all(r.seeds == 6 for r in quick)
    assert {r.train.optimizer for r in quick} == {"adam"} and all(r.train.weight_decay == 0 for r in quick)
    small = smooth.runs("small")
    assert [r.width for r in small] == list(smooth.SMALL_WIDTHS) and all(r.seeds == 4 for r in small)
    assert {(r.train.optimizer, r.train.momentum, r.n_train, r.downsample) for r in small} == {("sgd", 0.9, 500, 2)}
    assert all(r.volumes.hessian_directions == 4 and r.volumes.step == 0.1 for r in quick + small)
    medium = smooth.runs("medium")
    assert [r.width for r in medium] == list(smooth.MEDIUM_WIDTHS) and all(r.seeds == 3 for r in medium)
    assert all(r.dataset == "fashion_mnist" and r.downsample == 1 and r.noise == "flip" for r in medium)
    full = smooth.runs("full")
    assert {r.setting for r in full} == {"cifar10-flip20", "cifar100", "cifar100-asym"}
    assert len(full) == 3 * 64 and all(r.train.epochs == 4000 and r.seeds == 3 for r in full)


MEDIUM_CLAIMS = ("smooth.sharpness_peaks_at_threshold", "smooth.noisy_peak_higher", "smooth.hessian_peaks_too",
                 "smooth.volume_accuracy_grows")
SMALL_CLAIMS = MEDIUM_CLAIMS  # every claim from small on: the quick grid stops below the threshold (issue 32)


def test_small_and_medium_paths_shrunk_run_every_claim_case(shrunk_medium, monkeypatch, fashion_mnist):
    """The small and medium configurations, shrunk by REPRODUCE_SHRINK=1 to CPU size (same names,
    same code path), made and judged end to end: every case of the tier must run (not skip, not
    error) and claims.json must list each of its claims with its seeds (4 small, 3 medium). The
    verdicts wait for the real runs (small: one CPU, medium: a GPU)."""
    monkeypatch.setenv(SHRINK_ENV, "1")
    assert [r.name for r in smooth.runs("medium")] == [f"fmnist-flip20-w{w}-s0" for w in smooth.MEDIUM_WIDTHS[:3]]
    assert [r.name for r in smooth.runs("small")] == [f"{smooth.SMALL_SETTING}-w{w}-s0" for w in smooth.SMALL_WIDTHS[:3]]
    for tier, claims, seeds in (("small", SMALL_CLAIMS, 4), ("medium", MEDIUM_CLAIMS, 3)):
        stdout, entries = shrunk_medium("smooth", tier)
        assert set(entries) >= set(claims), stdout[-3000:]
        for claim_id in claims:
            cases = entries[claim_id]["cases"]
            assert len(cases) == 2, (tier, claim_id, stdout[-3000:])  # the main case and its control
            for case in cases:
                assert case["verdict"] not in ("not_run", "error"), (tier, claim_id, case["case"], case["message"])
                assert {c["n"] for c in case["conditions"]} == {seeds}, (tier, claim_id, case["case"])
        if tier == "small":  # the epoch-wise claim: two epochs fit no width, so its main case reads absent
            cases = entries["smooth.epochwise_jacobian_peak"]["cases"]
            assert [c["control"] for c in cases] == [False, True], stdout[-3000:]
            assert all(c["verdict"] not in ("not_run", "error") for c in cases), [c["message"] for c in cases]


# --- the epoch-wise view (Fig. 5, issue 32): light probes and smooth.epochwise_jacobian_peak ---------

EPOCHS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 300]
RISE_AND_FALL = [0.01, 0.02, 0.1, 0.5, 2.0, 8.0, 5.0, 3.0, 0.1, 0.05]  # peak 8 at epoch 20
FITTED_AT_100 = [0.9, 0.9, 0.9, 0.9, 0.8, 0.6, 0.3, 0.0, 0.0, 0.0]  # noisy-subset error: fitted at epoch 100
RISING = [0.01, 0.02, 0.1, 0.5, 2.0, 4.0, 6.0, 7.0, 7.5, 8.0]  # never falls (a width below the threshold)
NEVER_FITTED = [0.9, 0.9, 0.9, 0.9, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3]


def test_epochwise_peak_on_planted_curves():
    from reproduce.measures.sharpness import epochwise_peak

    stat = epochwise_peak(EPOCHS, RISE_AND_FALL, FITTED_AT_100, 0.01)
    assert stat["peak_epoch"] == 20 and stat["peak"] == 8.0 and stat["fit_epoch"] == 100 and stat["fitted"]
    assert stat["steps"] == -2  # two checkpoints before the fit
    assert stat["start_ratio"] == pytest.approx(0.01 / 8) and stat["end_ratio"] == pytest.approx(0.05 / 8)
    order = np.random.default_rng(0).permutation(len(EPOCHS))  # checkpoints in any order: sorted by epoch
    shuffled = epochwise_peak(np.array(EPOCHS)[order], np.array(RISE_AND_FALL)[order], np.array(FITTED_AT_100)[order], 0.01)
    assert shuffled == stat
    never = epochwise_peak(EPOCHS, RISING, NEVER_FITTED, 0.01)
    assert never["fit_epoch"] is None and never["steps"] is None and not never["fitted"]
    assert never["end_ratio"] == 1.0 and never["peak_epoch"] == 300
    late = epochwise_peak(EPOCHS, RISING, FITTED_AT_100, 0.01)  # the norm still rising after the fit
    assert late["steps"] == 2 and late["fit_epoch"] == 100
    lost = epochwise_peak(EPOCHS, RISE_AND_FALL, FITTED_AT_100[:-1] + [0.02], 0.01)  # fitted, then not at the end
    assert lost["fit_epoch"] == 100 and not lost["fitted"]
    with pytest.raises(StatisticError, match=r"epoch\(s\) \[20.0\]"):
        epochwise_peak(EPOCHS, RISE_AND_FALL[:5] + [float("nan")] + RISE_AND_FALL[6:], FITTED_AT_100, 0.01)


def _planted_sweep(seeds: int = 4) -> xr.Dataset:
    """A stored-like sweep over epochs: widths 1 and 2 never fit their noisy labels and their norm
    keeps rising; widths 4 and 8 rise, peak two or three checkpoints before the noisy fit and fall.
    The seeds differ a little (scaled curves, w = 8 peaking one checkpoint earlier in odd seeds)."""
    runs = []
    for width in (1, 2, 4, 8):
        jac = np.empty((len(EPOCHS), seeds))
        err = np.empty((len(EPOCHS), seeds))
        for r in range(seeds):
            if width <= 2:
                jac[:, r], err[:, r] = np.array(RISING) * (1 + 0.1 * r), NEVER_FITTED
            else:
                shift = 1 if width == 8 and r % 2 else 0
                jac[:, r] = np.roll(RISE_AND_FALL, -shift) * (1 + 0.1 * r)
                jac[-1, r] = RISE_AND_FALL[-1] * (1 + 0.2 * r)
                err[:, r] = FITTED_AT_100
        measure = np.full((len(EPOCHS), seeds, len(smooth.MEASURES), len(smooth.SUBSETS), 2), np.nan)
        measure[:, :, smooth.MEASURES.index("jacobian"), smooth.SUBSETS.index("all"), 0] = jac
        accuracy = np.full((len(EPOCHS), seeds, len(smooth.SPLITS)), np.nan)
        accuracy[:, :, smooth.SPLITS.index("noisy")] = 1 - err
        accuracy[:, :, smooth.SPLITS.index("train")] = 1 - 0.2 * err
        runs.append(xr.Dataset(
            {"volume_measure": (("epoch", "replica", "measure", "subset", "volume"), measure),
             "accuracy": (("epoch", "replica", "split"), accuracy)},
            coords={"epoch": np.array(EPOCHS, float), "measure": list(smooth.MEASURES), "subset": list(smooth.SUBSETS),
                    "volume": [0, 1], "split": list(smooth.SPLITS), "setting": "planted", "width": width})
                    .expand_dims(run=[f"planted-w{width}"]))
    ds = xr.concat(runs, "run", data_vars="all", coords="different", compat="equals", join="outer")
    ds.attrs["interpolation_tolerance"] = 0.01
    return ds


def test_epochwise_claim_on_a_planted_sweep():
    """The claim's statistic on curves with a known peak and fit: the fitted widths pass all three
    conditions, the unfitted ones (control) fail the fall; a fitted width whose norm still rises
    after the fit fails the timing."""
    from reproduce.claims.smooth import epochwise_jacobian_peak
    from reproduce.judge import Case
    from reproduce.verdict import judge

    ds = _planted_sweep()
    main = epochwise_jacobian_peak(ds, Case("small", "planted"))
    verdict, judged = judge(main.conditions)
    assert verdict == "reproduced", judged
    steps = next(j for j in judged if j["name"].startswith("checkpoints"))
    assert steps["values"] == [-2.0] * 4  # the latest peak of each seed: w = 4 (w = 8 of odd seeds is earlier still)
    assert all(j["n"] == 4 for j in judged)
    control = epochwise_jacobian_peak(ds, Case("small", "planted", "unfitted"))
    verdict, judged = judge(control.conditions)
    assert verdict == "not_reproduced" and len(judged) == 2  # no fit epoch: the timing is not judged
    fall = next(j for j in judged if "end" in j["name"])
    assert fall["values"] == [1.0] * 4 and fall["verdict"] == "not_reproduced"
    late = ds.copy(deep=True)  # w = 8 keeps rising after its fit in every seed
    jac = late.volume_measure.loc[dict(run="planted-w8", measure="jacobian", subset="all", volume=0)]
    late.volume_measure.loc[dict(run="planted-w8", measure="jacobian", subset="all", volume=0)] = (
        np.array(RISING)[:, None] * np.ones_like(jac.values))
    verdict, judged = judge(epochwise_jacobian_peak(late, Case("small", "planted")).conditions)
    assert verdict == "not_reproduced"
    assert next(j for j in judged if j["name"].startswith("checkpoints"))["values"] == [2.0] * 4


def test_light_probe_reads_what_the_full_probe_reads_at_the_points(fashion_mnist):
    """The light probe's Jacobian norm, accuracy and loss at the training points (volume 0) and its
    training splits are the full probe's; the volumes, the tangent Hessian and the test set are NaN."""
    run = smooth.Run("tiny", 1, "fashion_mnist", "flip", 0.2, TrainSpec(optimizer="sgd", lr=0.05, batch_size=50, epochs=1),
                     VolumeSpec(paths=2, strengths=2, hessian_directions=2, chunk=64), seed=3, seeds=2,
                     n_train=101, n_test=50, downsample=2)
    data, labels, noisy = smooth.prepare(run, torch.device("cpu"))
    model = smooth._model(run, tuple(data.train_x.shape[1:])).eval()
    probe = smooth.make_probe(data, labels, noisy, run.volumes, full=[True, False])
    with torch.no_grad():
        full, light = probe(model), probe(model)
    at_points = dict(measure=["accuracy", "loss", "jacobian"], volume=0)
    np.testing.assert_allclose(light["volume_measure"].sel(**at_points), full["volume_measure"].sel(**at_points), rtol=1e-5)
    train_splits = ["train", "clean", "noisy", "noisy_original"]
    for name in ("accuracy", "loss"):
        np.testing.assert_allclose(light[name].sel(split=train_splits), full[name].sel(split=train_splits), rtol=1e-5)
        assert np.isnan(light[name].sel(split=["test", "test_untouched", "test_touched"])).all()
    assert np.isnan(light["volume_measure"].sel(measure="hessian")).all()
    assert np.isnan(light["volume_measure"].sel(volume=[1, 2])).all()
    assert not np.isnan(full["volume_measure"].sel(measure="hessian", subset="all")).any()


def test_small_tier_probes_full_at_the_ends_and_light_between(fashion_mnist, monkeypatch):
    """The small runs' plan: full probes at epoch 0 and 300, light ones at log-spaced epochs between
    (ten a decade); a run with checkpoints stores exactly that (volumes only at the first and last)."""
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    plan = smooth.full_probes(smooth.small_runs()[0])
    assert plan[0] and plan[-1] and not any(plan[1:-1]) and len(plan) == 27
    spec = TrainSpec(optimizer="sgd", lr=0.05, batch_size=50, epochs=2, checkpoints=(0.5, 1, 1.5))
    run = smooth.Run("tiny", 1, "fashion_mnist", "flip", 0.2, spec, VolumeSpec(paths=2, strengths=2, hessian_directions=2,
                     chunk=64), seed=3, seeds=2, n_train=100, n_test=50, downsample=2)  # 2 steps an epoch
    assert smooth.full_probes(run) == [True, False, False, False, True]
    ds = smooth.execute(run, torch.device("cpu"))
    assert list(ds.epoch.values) == [0, 0.5, 1, 1.5, 2]
    hessian = ds.volume_measure.sel(measure="hessian", subset="all", volume=0)
    assert not np.isnan(hessian.isel(epoch=[0, -1])).any() and np.isnan(hessian.isel(epoch=[1, 2, 3])).all()
    assert not np.isnan(ds.volume_measure.sel(measure="jacobian", subset="all", volume=0)).any()

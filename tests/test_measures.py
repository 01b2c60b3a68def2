"""Measures of the double-descent paper against planted ground truth."""

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.measures.activations import (
    cell_spreads,
    class_mean_cs,
    cosine_similarity,
    fall_from_first_peak,
    first_crossing,
    group_sums,
    largest_drop,
    outlier_ratio,
    runner_up_ratio,
    SMOOTHING_DECADES,
    smoothed_over_log_epochs,
    tracked_outlier_ratio,
)
from reproduce.spec import log_schedule
from reproduce.verdict import StatisticError


def test_group_sums_match_a_loop():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 50, 7, generator=g)
    group = torch.randint(-1, 4, (2, 50), generator=g)
    sums, counts = group_sums(h, group, 4)
    for r in range(2):
        for k in range(4):
            mask = group[r] == k
            assert torch.allclose(sums[r, k], h[r, mask].sum(0).double())
            assert counts[r, k] == mask.sum()


def test_planted_separation_is_found_by_layer():
    """Layer l shifts noisy samples away from clean ones by an angle that grows with l."""
    rng = np.random.default_rng(0)
    width, n = 64, 400
    base = np.abs(rng.normal(size=width))
    cs_by_layer = []
    for layer, angle in enumerate([0.0, 0.3, 0.6, 0.9]):
        other = np.abs(rng.normal(size=width))
        noisy_dir = np.cos(angle) * base + np.sin(angle) * other
        clean = base + 0.01 * rng.normal(size=(n, width))
        noisy = noisy_dir + 0.01 * rng.normal(size=(n, width))
        h = torch.tensor(np.concatenate([clean, noisy]))[None]
        group = torch.tensor([0] * n + [1] * n)[None]
        sums, _ = group_sums(h, group, 2)
        cs_by_layer.append(float(cosine_similarity(sums[:, 0], sums[:, 1])))
        expected = base @ noisy_dir / np.linalg.norm(base) / np.linalg.norm(noisy_dir)
        assert cs_by_layer[-1] == pytest.approx(expected, abs=1e-3)
    assert cs_by_layer[0] == pytest.approx(1.0, abs=1e-4)
    assert all(a > b for a, b in zip(cs_by_layer, cs_by_layer[1:]))


def test_cosine_similarity_of_empty_group_is_nan():
    a = torch.ones(3, 5)
    b = torch.zeros(3, 5)
    assert torch.isnan(cosine_similarity(a, b)).all()


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_cosine_similarity_ignores_scale(scale, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(4, 9, generator=g) + 0.1, torch.rand(4, 9, generator=g) + 0.1
    assert torch.allclose(cosine_similarity(a * scale, b), cosine_similarity(a, b), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(width=st.integers(20, 300), height=st.floats(15, 200), seed=st.integers(0, 10_000))
def test_planted_outlier_neuron(width, height, seed):
    """One neuron planted `height` times the others' RMS is found, its ratio recovered, the runner-up small."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.5, size=width)
    star = int(rng.integers(width))
    rms = np.sqrt(np.mean(np.delete(a, star) ** 2))
    a[star] = height * rms
    neuron, ratio = tracked_outlier_ratio(np.stack([np.ones(width), a]))
    assert neuron == star
    assert ratio[-1] == pytest.approx(height)
    assert ratio[0] == pytest.approx(1.0)
    assert runner_up_ratio(a) < 2.0


def test_two_outliers_show_in_the_runner_up():
    a = np.ones(100)
    a[3], a[7] = 50.0, 40.0
    assert outlier_ratio(a, 3) > 10
    assert runner_up_ratio(a) == pytest.approx(40.0)


def test_outlier_ratio_ignores_padding():
    a = np.array([1.0, 1.0, 30.0, np.nan, np.nan])
    assert outlier_ratio(a, 2) == pytest.approx(30.0)


def test_first_crossing():
    epochs = np.array([0, 1, 2, 5, 10])
    assert first_crossing(epochs, np.array([0.1, 0.2, 0.6, 0.9, 1.0])) == 2
    assert first_crossing(epochs, np.array([0.1, 0.1, 0.1, 0.1, 0.1])) == 0


def test_largest_drop_finds_the_fall_after_the_first_peak():
    # Fig. 1's shape: rise, fall while noisy labels are fitted, partial recovery
    acc = np.array([0.1, 0.85, 0.87, 0.80, 0.72, 0.75, 0.78])
    fall, at = largest_drop(acc)
    assert fall == pytest.approx(0.15) and at == 4
    assert largest_drop(np.array([0.1, 0.5, 0.9]))[0] == 0  # rising throughout: no fall


def test_outlier_by_cell_picks_the_largest_neuron_and_averages_per_cell():
    from reproduce.experiments.ddmlp import outlier_by_cell

    k = 2
    magnitude = [torch.tensor([[1.0, 5.0, 2.0]], dtype=torch.float64)]  # one replica, neuron 1 largest
    sums = torch.zeros(1, k * k, 3, dtype=torch.float64)
    sums[0, :, 1] = torch.tensor([0.0, 6.0, 4.0, 0.0])  # cells (true, noisy): (0,1) sum 6, (1,0) sum 4
    sums[0, :, 0] = 100.0  # another neuron: must not be picked
    counts = torch.tensor([[0.0, 3.0, 1.0, 0.0]], dtype=torch.float64)
    out = outlier_by_cell(magnitude, [sums], counts, k)
    assert out.shape == (1, 1, k, k)
    assert out[0, 0, 0, 1] == 2.0 and out[0, 0, 1, 0] == 4.0
    assert torch.isnan(out[0, 0, 0, 0]) and torch.isnan(out[0, 0, 1, 1])  # empty cells (the diagonal) are NaN


def test_cell_spreads_tell_a_true_class_neuron_from_a_noisy_label_neuron():
    k = 10
    true_class, noisy_label = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    off = true_class != noisy_label
    follows_input = np.where(off, true_class.astype(float), np.nan)  # activation = the true class
    t, l, empty = cell_spreads(follows_input)
    assert l == pytest.approx(0) and t > 2 and empty == 0  # each column: 9 true classes, std about 2.85
    follows_label = follows_input.T  # activation = the noisy label
    t, l, _ = cell_spreads(follows_label)
    assert t == pytest.approx(0) and l > 2
    # equal footing: a neuron that follows both equally has equal spreads
    both = np.where(off, true_class + noisy_label, np.nan).astype(float)
    t, l, _ = cell_spreads(both)
    assert t == pytest.approx(l)
    holed = follows_input.copy()
    holed[3, 5] = np.nan
    assert cell_spreads(holed)[2] == 1  # an empty off-diagonal cell is counted, not hidden


def test_class_mean_cs_refuses_a_class_without_noisy_samples():
    cs = xr.DataArray(np.array([[0.9, 0.8, 0.7]]), dims=("layer", "class"), coords={"class": [0, 1, 2]})
    assert class_mean_cs(cs).values.tolist() == [pytest.approx(0.8)]
    cs[0, 1] = np.nan
    with pytest.raises(StatisticError, match=r"class\(es\) \[1\]"):
        class_mean_cs(cs)


def test_fall_from_first_peak_takes_the_peak_before_the_noisy_labels_are_half_fitted():
    # an early dip 0.423 -> 0.307 at epoch 0.2, the first peak 0.698 before half of the noisy subset is
    # fitted, the memorization fall to 0.636, then a recovery to 0.68
    acc = np.array([0.041, 0.1, 0.423, 0.307, 0.343, 0.316, 0.521, 0.616, 0.693, 0.698, 0.644, 0.636, 0.66, 0.68])
    fitted = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.0, 1.0])
    peak, at = fall_from_first_peak(acc, fitted)
    assert (peak, at) == (9, 11)
    assert acc[peak] - acc[at] == pytest.approx(0.062) and acc[-1] - acc[at] == pytest.approx(0.044)
    # a later, higher test accuracy (after the subset is half fitted) is not the first peak
    acc2 = acc.copy()
    acc2[-1] = 0.75
    assert fall_from_first_peak(acc2, fitted) == (9, 11)
    # rising throughout: the peak is the minimum after it, no fall
    peak, at = fall_from_first_peak(np.array([0.1, 0.5, 0.9]), np.array([0.1, 0.6, 1.0]))
    assert peak == at


# Fig. 1 planted (the probe's shape, ../shared/ENGINEERING-NOTES.md): rise to 0.66 by epoch 5, flat to
# epoch 31, a fall to 0.53 by epoch 50, flat to epoch 158, a rise to 0.59 by epoch 200, flat to the end
# (400): fall 13 points, recovery 6. The bottom is 0.5 decades wide and the end 0.3, at least the
# smoothing window (+-0.25 decades, cut at the end), so the running mean reads them exactly.
SMALL_CHECKPOINTS = np.array(log_schedule(400, first=0.1, mantissas=(1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8)))
PLANTED_FALL, PLANTED_RECOVERY = 0.13, 0.06


def planted_test_curve(epochs: np.ndarray) -> np.ndarray:
    x = np.log10(np.maximum(epochs, 0.05))
    return np.interp(x, [-1.3, 0.7, 1.5, 1.7, 2.2, 2.3], [0.1, 0.66, 0.66, 0.53, 0.53, 0.59])


def planted_fitted(epochs: np.ndarray) -> np.ndarray:
    """The noisy subset's accuracy on its noisy labels: half fitted at epoch 50, fully by 200."""
    return np.clip(np.interp(np.log10(np.maximum(epochs, 0.05)), [1.0, 1.7, 2.3], [0.0, 0.5, 1.0]), 0, 1)


def read_fall(acc: np.ndarray, epochs: np.ndarray, decades: float) -> tuple[float, float]:
    smooth = smoothed_over_log_epochs(acc, epochs, decades)
    peak, at = fall_from_first_peak(smooth, planted_fitted(epochs))
    return smooth[peak] - smooth[at], smooth[-1] - smooth[at]


def test_smoothing_keeps_single_checkpoints_at_zero_width_and_constants_everywhere():
    e = SMALL_CHECKPOINTS
    v = np.random.default_rng(0).normal(size=e.size)
    assert np.array_equal(smoothed_over_log_epochs(v, e, 0), v)
    assert np.allclose(smoothed_over_log_epochs(np.full(e.size, 0.4), e), 0.4)
    # epoch 0 has no log epoch: kept as it is and in no other's window
    w = v.copy()
    w[0] = 1e6
    assert smoothed_over_log_epochs(w, e)[0] == 1e6 and np.allclose(smoothed_over_log_epochs(w, e)[1:],
                                                                     smoothed_over_log_epochs(v, e)[1:])
    # ten checkpoints a decade (rounded mantissas, neighbours 0.08-0.11 decades apart): an inner checkpoint
    # averages five, itself and two either side
    i = 20
    assert smoothed_over_log_epochs(v, e)[i] == pytest.approx(v[i - 2:i + 3].mean())
    with pytest.raises(ValueError, match="differ in shape"):
        smoothed_over_log_epochs(v, e[1:])


def test_smoothed_fall_and_recovery_read_a_noiseless_planted_dip_exactly():
    fall, recovery = read_fall(planted_test_curve(SMALL_CHECKPOINTS), SMALL_CHECKPOINTS, SMOOTHING_DECADES)
    assert fall == pytest.approx(PLANTED_FALL, abs=2e-3) and recovery == pytest.approx(PLANTED_RECOVERY, abs=2e-3)


def test_smoothing_recovers_the_planted_dip_where_single_checkpoint_minima_exaggerate_it():
    """Checkpoint noise of 2 points (sd; the probe's jumps reached 6): over 400 draws the smoothed fall
    and recovery stay within a point of the planted 13 and 6, while the raw ones, a maximum and a
    minimum over noisy single checkpoints, read the fall 3+ points and the recovery 1+ point too large."""
    rng = np.random.default_rng(7)
    truth = planted_test_curve(SMALL_CHECKPOINTS)
    smooth, raw = [], []
    for _ in range(400):
        acc = truth + rng.normal(0, 0.02, truth.size)
        smooth.append(read_fall(acc, SMALL_CHECKPOINTS, SMOOTHING_DECADES))
        raw.append(read_fall(acc, SMALL_CHECKPOINTS, 0))
    smooth_fall, smooth_recovery = np.mean(smooth, axis=0)
    raw_fall, raw_recovery = np.mean(raw, axis=0)
    assert abs(smooth_fall - PLANTED_FALL) < 0.01 and abs(smooth_recovery - PLANTED_RECOVERY) < 0.01
    assert raw_fall - PLANTED_FALL > 0.03 and raw_recovery - PLANTED_RECOVERY > 0.01
    # and the smoothed reading varies less from draw to draw
    assert (np.std(smooth, axis=0) < 0.8 * np.std(raw, axis=0)).all()


def test_the_claim_reads_the_planted_dip_smoothed_and_the_epoch_the_training_set_is_fitted():
    """reproduce.claims.ddmlp.double_descent on a stored-run-shaped Dataset: the smoothed reading by
    default, single checkpoints with decades=0, and the first checkpoint where both subsets are at 1."""
    from reproduce.claims.ddmlp import double_descent, fitted_epoch, loss_rise_and_fall

    e = SMALL_CHECKPOINTS
    acc = planted_test_curve(e) + np.random.default_rng(3).normal(0, 0.02, e.size)
    fitted = planted_fitted(e)
    splits = ["clean", "noisy", "noisy_original", "test"]
    clean = np.minimum(1.0, 0.5 + e / 100)  # 1 from epoch 50
    table = np.stack([clean, fitted, 1 - fitted, acc], 1)
    run = xr.Dataset({"accuracy": (("epoch", "split"), table), "loss": (("epoch", "split"), -table)},
                     coords={"epoch": e, "split": splits})
    smooth, raw = double_descent(run), double_descent(run, decades=0)
    assert abs(smooth["fall"] - PLANTED_FALL) < abs(raw["fall"] - PLANTED_FALL)
    assert smooth["recovery_minus_quarter_fall"] == pytest.approx(smooth["recovery"] - smooth["fall"] / 4)
    assert smooth["fitted_epoch"] == fitted_epoch(run) == 200  # planted_fitted reaches 1 at 10^2.3
    never = run.copy(deep=True)
    never["accuracy"].loc[dict(split="noisy")] = 0.99
    assert fitted_epoch(never) == float("inf")
    # the loss is -accuracy here: its rise is the accuracy's fall, read from the same smoothed curve
    assert loss_rise_and_fall(run)["rise"] >= smooth["fall"] - 1e-12

"""Claims of the smooth-interpolation paper (papers/smooth-interpolation-sharpness.txt).

Each statistic is computed here from the stored sweep (one run per base width); the criteria are
CLAIMS.md's and the issue's, word for word in data/claims/smooth.json. The interpolation threshold
is found from the same results (smallest width with training error below the stored tolerance) and
recorded with every case. Controls judge the same widths at initialization (epoch 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from claims.conftest import Case, cases
from reproduce.figures.smooth import smooth_measures, smooth_subsets, smooth_test_error, sweep, threshold_of
from reproduce.measures.sharpness import peak_at_threshold
from reproduce.report import Claim

PAPER = "smooth"
# "model" of a case = the sweep (setting) it judges
SETTINGS = {"quick": ["fmnist14-flip20"], "medium": ["cifar10-flip20"], "full": ["cifar10-flip20", "cifar100"]}
NOISY_SETTINGS = {"quick": ["fmnist14-flip20"], "medium": ["cifar10-flip20"], "full": ["cifar10-flip20"]}

PEAK = Claim.load("smooth.sharpness_peaks_at_threshold", figure=smooth_measures)
NOISY = Claim.load("smooth.noisy_peak_higher", figure=smooth_subsets)
HESSIAN = Claim.load("smooth.hessian_peaks_too", figure=smooth_test_error)
ACCURACY = Claim.load("smooth.volume_accuracy_grows")
ASYMMETRIC = Claim.load("smooth.asymmetric_untouched_only")


def _sweep_and_threshold(ds, case: Case):
    tolerance = float(ds.attrs.get("interpolation_tolerance", 0.01))
    threshold = threshold_of(ds, case.model, tolerance)
    return sweep(ds, case.model, at="init" if case.control else "end"), threshold, tolerance


def peak_statistic(ds, case: Case, measure: str, subset: str = "all") -> dict:
    """The peak criterion on one measure at the training points (volume 0), plus every volume's view."""
    sw, threshold, tolerance = _sweep_and_threshold(ds, case)
    values = sw.volume_measure.sel(measure=measure, subset=subset)
    stat = peak_at_threshold(sw.width.values, values.sel(volume=0).values, threshold)
    stat["by_volume"] = {int(v): peak_at_threshold(sw.width.values, values.sel(volume=v).values, threshold)["peak_width"]
                         for v in sw.volume.values}
    stat["values"] = [round(float(x), 5) for x in values.sel(volume=0).values]
    stat["widths"] = [int(w) for w in sw.width.values]
    stat["tolerance"] = tolerance
    return stat


def _summary(stat: dict, what: str) -> str:
    return (f"{what}: threshold w={stat['threshold_width']}, peak w={stat['peak_width']} ({stat['peak']:.3g}), "
            f"largest w={stat['largest_width']} at {stat['ratio']:.2g} x peak; per width {stat['values']}")


@pytest.mark.claim(PEAK)
@pytest.mark.parametrize("case", cases(SETTINGS))
def test_sharpness_peaks_at_threshold(case: Case, paper_results, record_statistic):
    stat = peak_statistic(paper_results(PAPER, case.tier), case, "jacobian")
    record_statistic(_summary(stat, "Jacobian norm"), **stat)
    assert stat["holds"] != case.control, stat


@pytest.mark.claim(NOISY)
@pytest.mark.parametrize("case", cases(NOISY_SETTINGS))
def test_noisy_peak_higher(case: Case, paper_results, record_statistic):
    ds = paper_results(PAPER, case.tier)
    noisy, clean = peak_statistic(ds, case, "jacobian", "noisy"), peak_statistic(ds, case, "jacobian", "clean")
    height_noisy, height_clean = noisy["peak"] - noisy["largest"], clean["peak"] - clean["largest"]
    holds = bool(noisy["holds"] and height_noisy > height_clean)
    record_statistic(f"noisy subset: peak w={noisy['peak_width']} height {height_noisy:.3g} "
                     f"(largest at {noisy['ratio']:.2g} x peak); clean subset: peak w={clean['peak_width']} "
                     f"height {height_clean:.3g}; threshold w={noisy['threshold_width']}",
                     noisy=noisy, clean=clean, height_noisy=height_noisy, height_clean=height_clean, holds=holds)
    assert holds != case.control, (noisy, clean)


@pytest.mark.claim(HESSIAN)
@pytest.mark.parametrize("case", cases(SETTINGS))
def test_hessian_peaks_too(case: Case, paper_results, record_statistic):
    stat = peak_statistic(paper_results(PAPER, case.tier), case, "hessian")
    record_statistic(_summary(stat, "tangent Hessian norm"), **stat)
    assert stat["holds"] != case.control, stat


@pytest.mark.claim(ACCURACY)
@pytest.mark.parametrize("case", cases(SETTINGS))
def test_volume_accuracy_grows(case: Case, paper_results, record_statistic):
    sw, threshold, _ = _sweep_and_threshold(paper_results(PAPER, case.tier), case)
    accuracy = sw.volume_measure.sel(measure="accuracy", subset="all")
    per_volume = {}
    for v in sw.volume.values:
        a = accuracy.sel(volume=v).values
        per_volume[int(v)] = dict(largest_drop=float(max(0.0, -np.diff(a).min())), rise=float(a[-1] - a[0]),
                                  values=[round(float(x), 3) for x in a])
    holds = all(p["largest_drop"] <= 0.02 and p["rise"] >= 0.1 for p in per_volume.values())
    worst = max(per_volume.values(), key=lambda p: p["largest_drop"])
    record_statistic(f"largest drop between widths {worst['largest_drop']:.3f}, smallest rise "
                     f"{min(p['rise'] for p in per_volume.values()):.3f}; volume 0: {per_volume[0]['values']}",
                     per_volume=per_volume, threshold_width=threshold, holds=holds)
    assert holds != case.control, per_volume


@pytest.mark.claim(ASYMMETRIC)
@pytest.mark.parametrize("case", cases({"full": ["cifar100-asym"]}))
def test_asymmetric_untouched_only(case: Case, paper_results, record_statistic):
    ds = paper_results(PAPER, case.tier)
    threshold = threshold_of(ds, case.model, float(ds.attrs.get("interpolation_tolerance", 0.01)))
    sw = sweep(ds, case.model)
    split = "test_touched" if case.control else "test_untouched"
    error = 1 - sw.accuracy.sel(split=split).values
    widths = list(sw.width.values)
    near = [i for i in range(len(widths)) if threshold in widths and abs(i - widths.index(threshold)) <= 1]
    bump = float(max(error[i] for i in near) - error[-1]) if near else float("nan")
    holds = bool(near and bump >= 0.02)
    record_statistic(f"{split} error: max near threshold w={threshold} minus largest width = {bump:.3f}",
                     threshold_width=threshold, bump=bump, holds=holds)
    assert holds != case.control

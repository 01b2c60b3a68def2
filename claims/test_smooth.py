"""Claims of the smooth-interpolation paper (papers/smooth-interpolation-sharpness.txt).

Each statistic is computed here from the stored sweep (one run per base width, the seeds stacked
as replicas), per seed, and judged over the seeds by the `judge` fixture under the claim's rule
(data/claims/smooth.json). The interpolation threshold is found per seed from the same results
(smallest width with training error on its noisy labels below the stored tolerance) and reported
with its spread. Controls judge the same widths at initialization (epoch 0) against the trained
seeds' thresholds: there the criterion can hold in principle (a peak at the threshold and a fall
past it) but the phenomenon is absent.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from claims.conftest import Case, cases
from reproduce.figures.smooth import (smooth_hessian, smooth_measures, smooth_subsets, smooth_test_error,
                                      smooth_volume_accuracy, sweep, thresholds, tolerance)
from reproduce.measures.sharpness import peak_at_threshold
from reproduce.report import Claim
from reproduce.verdict import Condition

PAPER = "smooth"
# "model" of a case = the sweep (setting) it judges
SETTINGS = {"quick": ["fmnist14-flip20"], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20", "cifar100"]}
NOISY_SETTINGS = {"quick": ["fmnist14-flip20"], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20"]}

PEAK = Claim.load("smooth.sharpness_peaks_at_threshold", figure=smooth_measures)
NOISY = Claim.load("smooth.noisy_peak_higher", figure=smooth_subsets)
HESSIAN = Claim.load("smooth.hessian_peaks_too", figure=smooth_hessian)
ACCURACY = Claim.load("smooth.volume_accuracy_grows", figure=smooth_volume_accuracy)
ASYMMETRIC = Claim.load("smooth.asymmetric_untouched_only", figure=smooth_test_error)

# At the quick budget (400 Adam steps a width) no width of the grid fits its noisy labels, so there
# is no interpolation threshold for an argmax to sit next to.
QUICK_UNDERTRAINED = {"quick": "the quick budget trains too few steps for any width of the grid to fit its noisy "
                               "labels, so there is no interpolation threshold to peak at; see docs/smooth.md"}
GRID_STEP = 1  # grid steps from the argmax to the threshold are whole numbers: quantum 1


def peaks(ds, case: Case, measure: str, subset: str = "all") -> list[dict]:
    """The peak criterion per seed on one measure at the training points (volume 0), each seed
    judged against its own interpolation threshold; the control reads the same seeds at epoch 0."""
    seed_thresholds = thresholds(ds, case.model, tolerance(ds))
    sw = sweep(ds, case.model, at="init" if case.control else "end", seeds=True)
    widths = [int(w) for w in sw.width.values]
    values = sw.volume_measure.sel(measure=measure, subset=subset).transpose("replica", "volume", "width")
    out = []
    for per_volume, threshold in zip(values.values, seed_thresholds):
        stat = peak_at_threshold(widths, per_volume[0], threshold)
        stat["steps"] = math.inf if stat["grid_steps"] is None else float(stat["grid_steps"])  # inf: no width fits
        stat["at_threshold"] = float(per_volume[0][widths.index(threshold)]) if threshold in widths else math.nan
        stat["peak_width_by_volume"] = [peak_at_threshold(widths, v, threshold)["peak_width"] for v in per_volume]
        stat["values"] = [float(f"{x:.4g}") for x in per_volume[0]]
        out.append(stat)
    return out


def _spread(seeds: list[dict]) -> str:
    counts = Counter(s["threshold_width"] for s in seeds)
    return ", ".join(f"w={w} in {k}/{len(seeds)}" for w, k in sorted(counts.items(), key=lambda x: (x[0] is None, x[0])))


def _peak_conditions(seeds: list[dict], what: str) -> list[Condition]:
    """CLAIMS.md's peak criterion as two inequalities per seed."""
    return [Condition(f"{what}: grid steps from argmax to threshold", [s["steps"] for s in seeds], "<=", 1,
                      quantum=GRID_STEP),
            Condition(f"{what}: largest width / peak", [s["ratio"] for s in seeds], "<", 0.5)]


def _peak_summary(seeds: list[dict], what: str) -> str:
    peak_widths = Counter(s["peak_width"] for s in seeds)
    at_threshold = [s["at_threshold"] for s in seeds if not math.isnan(s["at_threshold"])]
    at = f"{np.median(at_threshold):.3g}" if at_threshold else "nothing (no width fits)"
    return (f"{what}: threshold {_spread(seeds)}; argmax " + ", ".join(f"w={w} in {k}" for w, k in sorted(peak_widths.items()))
            + f"; at the threshold {at} against the peak "
            f"{np.median([s['peak'] for s in seeds]):.3g} (medians); largest width at "
            f"{np.median([s['ratio'] for s in seeds]):.2g} x peak")


@pytest.mark.claim(PEAK)
@pytest.mark.parametrize("case", cases(SETTINGS, xfail=QUICK_UNDERTRAINED))
def test_sharpness_peaks_at_threshold(case: Case, paper_results, judge):
    seeds = peaks(paper_results(PAPER, case.tier), case, "jacobian")
    judge(*_peak_conditions(seeds, "Jacobian norm"), summary=_peak_summary(seeds, "Jacobian norm"), seeds=seeds)


@pytest.mark.claim(NOISY)
@pytest.mark.parametrize("case", cases(NOISY_SETTINGS, xfail=QUICK_UNDERTRAINED))
def test_noisy_peak_higher(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    noisy, clean = peaks(ds, case, "jacobian", "noisy"), peaks(ds, case, "jacobian", "clean")
    heights = [(n["peak"] - n["largest"]) - (c["peak"] - c["largest"]) for n, c in zip(noisy, clean)]
    judge(*_peak_conditions(noisy, "noisy subset"),
          Condition("noisy minus clean peak height", heights, ">", 0),
          summary=_peak_summary(noisy, "noisy subset") + f"; noisy peak height above the clean one by "
                  f"{np.median(heights):.3g} (median)", noisy=noisy, clean=clean)


@pytest.mark.claim(HESSIAN)
@pytest.mark.parametrize("case", cases(SETTINGS, xfail=QUICK_UNDERTRAINED))
def test_hessian_peaks_too(case: Case, paper_results, judge):
    seeds = peaks(paper_results(PAPER, case.tier), case, "hessian")
    judge(*_peak_conditions(seeds, "tangent Hessian norm"), summary=_peak_summary(seeds, "tangent Hessian norm"),
          seeds=seeds)


@pytest.mark.claim(ACCURACY)
@pytest.mark.parametrize("case", cases(SETTINGS))
def test_volume_accuracy_grows(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    sw = sweep(ds, case.model, at="init" if case.control else "end", seeds=True)
    accuracy = sw.volume_measure.sel(measure="accuracy", subset="all").transpose("replica", "volume", "width").values
    drops = [float(max(0.0, -np.diff(a, axis=-1).min())) for a in accuracy]  # worst volume, worst step
    rises = [float((a[:, -1] - a[:, 0]).min()) for a in accuracy]  # worst volume
    quantum = 1 / ds.sizes["sample"]  # accuracy on the n training samples
    judge(Condition("largest drop from one width to the next", drops, "<=", 0.02, quantum=quantum, unit="points"),
          Condition("rise from smallest to largest width", rises, ">=", 0.1, quantum=quantum, unit="points"),
          summary=f"largest drop between widths {100 * max(drops):.1f} points (worst seed), rise "
                  f"{100 * np.median(rises):+.1f} points (median seed, worst volume)",
          threshold_widths=thresholds(ds, case.model, tolerance(ds)))


@pytest.mark.claim(ASYMMETRIC)
@pytest.mark.parametrize("case", cases({"full": ["cifar100-asym"]}))
def test_asymmetric_untouched_only(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    split = "test_touched" if case.control else "test_untouched"
    sw = sweep(ds, case.model, seeds=True)
    widths = [int(w) for w in sw.width.values]
    error = 1 - sw.accuracy.sel(split=split).transpose("replica", "width").values
    bumps = []
    for e, threshold in zip(error, thresholds(ds, case.model, tolerance(ds))):
        near = [i for i in range(len(widths)) if threshold in widths and abs(i - widths.index(threshold)) <= 1]
        bumps.append(float(max(e[i] for i in near) - e[-1]) if near else -math.inf)  # -inf: no width fits
    judge(Condition(f"{split} error near the threshold minus largest width", bumps, ">=", 0.02),
          summary=f"{split} error: bump {100 * np.median(bumps):+.1f} points (median seed)", bumps=bumps)

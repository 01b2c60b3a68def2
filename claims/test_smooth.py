"""Claims of the smooth-interpolation paper (Gamba et al., "Deep double descent via smooth interpolation", 2023).

Each statistic is computed here from the stored sweep (one run per base width, the seeds stacked
as replicas), per seed, and judged over the seeds by the `judge` fixture under the claim's rule
(data/claims/smooth.json). The interpolation threshold is found per seed from the same results
(smallest width with training error on its noisy labels below the stored tolerance) and reported
with its spread. Controls judge the same widths at initialization (epoch 0) against the trained
seeds' thresholds: there the criterion can hold in principle (a peak at the threshold and a fall
past it) but the phenomenon is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from claims.conftest import Case, cases
from reproduce.figures.smooth import (smooth_hessian, smooth_measures, smooth_subsets, smooth_test_error,
                                      smooth_volume_accuracy, sweep, thresholds, tolerance)
from reproduce.experiments.smooth import SMALL_SETTING
from reproduce.measures.sharpness import peak_at_threshold
from reproduce.report import Claim
from reproduce.verdict import Condition

PAPER = "smooth"
# "model" of a case = the sweep (setting) it judges. The peak claims need an interpolation threshold
# inside the width grid, which the quick budget cannot train (docs/smooth.md): they are judged from
# the small tier on; the volume accuracy fits the quick budget and stays there.
PEAK_SETTINGS = {"small": [SMALL_SETTING], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20", "cifar100"]}
NOISY_SETTINGS = {"small": [SMALL_SETTING], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20"]}
ACCURACY_SETTINGS = {"quick": ["fmnist14-flip20"], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20", "cifar100"]}

PEAK = Claim.load("smooth.sharpness_peaks_at_threshold", figure=smooth_measures)
NOISY = Claim.load("smooth.noisy_peak_higher", figure=smooth_subsets)
HESSIAN = Claim.load("smooth.hessian_peaks_too", figure=smooth_hessian)
ACCURACY = Claim.load("smooth.volume_accuracy_grows", figure=smooth_volume_accuracy)
ASYMMETRIC = Claim.load("smooth.asymmetric_untouched_only", figure=smooth_test_error)

# The small sweep has a threshold inside the grid in every seed, but the widths below it have not
# fitted their noisy labels and all carry large loss gradients: the argmax falls on either of them.
SMALL_PLATEAU = {"small": "the unfitted widths below the threshold (w = 1 and 2) are equally sharp from their misfitted "
                          "noisy samples, so the argmax falls one to three grid steps below the threshold; the fall past "
                          "it holds; see docs/smooth.md"}
GRID_STEP = 1  # grid steps from the argmax to the threshold are whole numbers: quantum 1


def peaks(ds, case: Case, measure: str, subset: str = "all") -> list[dict]:
    """The peak criterion per seed on one measure at the training points (volume 0), each seed
    judged against its own interpolation threshold; the control reads the same seeds at epoch 0.
    A seed with no width that fits gets the grid size as its grid steps (more than any argmax can
    be away: counted on the failing side)."""
    seed_thresholds = thresholds(ds, case.model, tolerance(ds))
    sw = sweep(ds, case.model, at="init" if case.control else "end", seeds=True)
    widths = [int(w) for w in sw.width.values]
    values = sw.volume_measure.sel(measure=measure, subset=subset).transpose("replica", "volume", "width")
    out = []
    for per_volume, threshold in zip(values.values, seed_thresholds):
        stat = peak_at_threshold(widths, per_volume[0], threshold)
        stat["steps"] = float(len(widths) if stat["grid_steps"] is None else stat["grid_steps"])
        stat["at_threshold"] = float(per_volume[0][widths.index(threshold)]) if threshold in widths else None
        stat["peak_width_by_volume"] = [peak_at_threshold(widths, v, threshold)["peak_width"] for v in per_volume]
        stat["values"] = [float(f"{x:.4g}") for x in per_volume[0]]
        out.append(stat)
    return out


def _peak_conditions(seeds: list[dict], what: str) -> list[Condition]:
    """The peak criterion of data/claims/smooth.json as two inequalities per seed: grid steps (whole
    numbers, the grid size where no width fits) and the fall, a ratio of norms judged on the log scale."""
    grid = max(len(s["values"]) for s in seeds)
    return [Condition(f"{what}: grid steps from argmax to threshold", [s["steps"] for s in seeds], "<=", 1,
                      quantum=GRID_STEP, bounds=(0, grid)),
            Condition(f"{what}: largest width / peak", [s["ratio"] for s in seeds], "<", 0.5, scale="log",
                      bounds=(0, 1))]


def _peak_summary(seeds: list[dict], what: str) -> str:
    """Per seed: its threshold, the argmax with its value and the value at the threshold width."""
    def one(k: int, s: dict) -> str:
        if s["threshold_width"] is None:
            return f"seed {k}: no width fits, argmax w={s['peak_width']} ({s['peak']:.3g})"
        return (f"seed {k}: threshold w={s['threshold_width']} ({s['at_threshold']:.3g}), argmax w={s['peak_width']} "
                f"({s['peak']:.3g}), largest at {s['ratio']:.2g} x peak")
    return f"{what}: " + "; ".join(one(k, s) for k, s in enumerate(seeds))


@pytest.mark.claim(PEAK)
@pytest.mark.parametrize("case", cases(PEAK_SETTINGS, xfail=SMALL_PLATEAU))
def test_sharpness_peaks_at_threshold(case: Case, paper_results, judge):
    seeds = peaks(paper_results(PAPER, case.tier), case, "jacobian")
    judge(*_peak_conditions(seeds, "Jacobian norm"), summary=_peak_summary(seeds, "Jacobian norm"), seeds=seeds)


@pytest.mark.claim(NOISY)
@pytest.mark.parametrize("case", cases(NOISY_SETTINGS, xfail=SMALL_PLATEAU))
def test_noisy_peak_higher(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    noisy, clean = peaks(ds, case, "jacobian", "noisy"), peaks(ds, case, "jacobian", "clean")
    heights = [(n["peak"] - n["largest"]) - (c["peak"] - c["largest"]) for n, c in zip(noisy, clean)]
    judge(*_peak_conditions(noisy, "noisy subset"),
          Condition("noisy minus clean peak height", heights, ">", 0),
          summary=_peak_summary(noisy, "noisy subset") + "; noisy minus clean peak height per seed "
                  + ", ".join(f"{h:.3g}" for h in heights), noisy=noisy, clean=clean)


@pytest.mark.claim(HESSIAN)
@pytest.mark.parametrize("case", cases(PEAK_SETTINGS, xfail=SMALL_PLATEAU))
def test_hessian_peaks_too(case: Case, paper_results, judge):
    seeds = peaks(paper_results(PAPER, case.tier), case, "hessian")
    judge(*_peak_conditions(seeds, "tangent Hessian norm"), summary=_peak_summary(seeds, "tangent Hessian norm"),
          seeds=seeds)


@pytest.mark.claim(ACCURACY)
@pytest.mark.parametrize("case", cases(ACCURACY_SETTINGS))
def test_volume_accuracy_grows(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    sw = sweep(ds, case.model, at="init" if case.control else "end", seeds=True)
    accuracy = sw.volume_measure.sel(measure="accuracy", subset="all").transpose("replica", "volume", "width").values
    drops = [float(max(0.0, -np.diff(a, axis=-1).min())) for a in accuracy]  # worst volume, worst step
    rises = [float((a[:, -1] - a[:, 0]).min()) for a in accuracy]  # worst volume
    quantum = 1 / ds.sizes["sample"]  # accuracy on the n training samples
    judge(Condition("largest drop from one width to the next", drops, "<=", 0, quantum=quantum, unit="points",
                    bounds=(0, 1)),
          Condition("rise from smallest to largest width", rises, ">=", 0.1, quantum=quantum, unit="points",
                    bounds=(-1, 1)),
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
        bumps.append(float(max(e[i] for i in near) - e[-1]) if near else -1.0)  # no width fits: the lowest bump
    judge(Condition(f"{split} error near the threshold minus largest width", bumps, ">=", 0.02, unit="points",
                    bounds=(-1, 1)),
          summary=f"{split} error: bump {100 * np.median(bumps):+.1f} points (median seed)", bumps=bumps)

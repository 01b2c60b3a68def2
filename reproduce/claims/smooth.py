"""Claims of the smooth-interpolation paper ("Deep double descent via smooth interpolation").

Each statistic is computed from the stored sweep (one run per base width, the seeds stacked as
replicas), per seed. The interpolation threshold is found per seed from the same results (smallest
width with training error on its noisy labels below the stored tolerance) and reported with its
spread. Controls judge the same widths at initialization (epoch 0) against the trained seeds'
thresholds: there the criterion can hold in principle (a peak at the threshold and a fall past it)
but the phenomenon is absent; the epoch-wise claim (Fig. 5) is controlled by the widths that never
fit their noisy labels instead. The `model` of a case is the sweep (setting) it judges.
"""

from __future__ import annotations

import numpy as np

from reproduce.experiments.smooth import SMALL_SETTING
from reproduce.figures.smooth import (epoch_curves, smooth_epochwise, smooth_hessian, smooth_measures, smooth_subsets,
                                      smooth_test_error, smooth_volume_accuracy, sweep, thresholds, tolerance)
from reproduce.judge import Absent, Case, Claim, Evidence, cases
from reproduce.measures.sharpness import epochwise_peak, peak_at_threshold
from reproduce.verdict import Condition

# Every claim needs an interpolation threshold inside the width grid, which the quick budget cannot
# train (docs/smooth.md): all are judged from the small tier on. The volume accuracy too (issue 32):
# "monotone in width" is tested past the threshold only where widths past it are trained; the
# quick grid (1, 2, 4) stops below it (training accuracy 0.55-0.81).
PEAK_SETTINGS = {"small": [SMALL_SETTING], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20", "cifar100"]}
NOISY_SETTINGS = {"small": [SMALL_SETTING], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20"]}
ACCURACY_SETTINGS = {"small": [SMALL_SETTING], "medium": ["fmnist-flip20"], "full": ["cifar10-flip20", "cifar100"]}
# the epoch-wise view needs checkpoints between 0 and the end: small (log-spaced light probes) and full
EPOCHWISE_SETTINGS = {"small": [SMALL_SETTING], "full": ["cifar10-flip20"]}
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
    """The peak criterion as two inequalities per seed: grid steps (whole numbers, the grid size where
    no width fits) and the fall, a ratio of norms judged on the log scale."""
    grid = max(len(s["values"]) for s in seeds)
    return [Condition(f"{what}: grid steps from argmax to threshold", [s["steps"] for s in seeds], "<=", 1,
                      quantum=GRID_STEP, bounds=(0, grid)),
            Condition(f"{what}: largest width / peak", [s["ratio"] for s in seeds], "<", 0.5, scale="log", bounds=(0, 1))]


def _peak_summary(seeds: list[dict], what: str) -> str:
    """Per seed: its threshold, the argmax with its value and the value at the threshold width."""
    def one(k: int, s: dict) -> str:
        if s["threshold_width"] is None:
            return f"seed {k}: no width fits, argmax w={s['peak_width']} ({s['peak']:.3g})"
        return (f"seed {k}: threshold w={s['threshold_width']} ({s['at_threshold']:.3g}), argmax w={s['peak_width']} "
                f"({s['peak']:.3g}), largest at {s['ratio']:.2g} x peak")
    return f"{what}: " + "; ".join(one(k, s) for k, s in enumerate(seeds))


def sharpness_peaks(ds, case: Case) -> Evidence:
    seeds = peaks(ds, case, "jacobian")
    return Evidence(_peak_conditions(seeds, "Jacobian norm"), _peak_summary(seeds, "Jacobian norm"), dict(seeds=seeds))


def noisy_peak_higher(ds, case: Case) -> Evidence:
    noisy, clean = peaks(ds, case, "jacobian", "noisy"), peaks(ds, case, "jacobian", "clean")
    heights = [(n["peak"] - n["largest"]) - (c["peak"] - c["largest"]) for n, c in zip(noisy, clean)]
    return Evidence(_peak_conditions(noisy, "noisy subset") + [Condition("noisy minus clean peak height", heights, ">", 0)],
                    _peak_summary(noisy, "noisy subset") + "; noisy minus clean peak height per seed "
                    + ", ".join(f"{h:.3g}" for h in heights), dict(noisy=noisy, clean=clean))


def hessian_peaks(ds, case: Case) -> Evidence:
    seeds = peaks(ds, case, "hessian")
    return Evidence(_peak_conditions(seeds, "tangent Hessian norm"), _peak_summary(seeds, "tangent Hessian norm"),
                    dict(seeds=seeds))


def volume_accuracy_grows(ds, case: Case) -> Evidence:
    """Per seed: accuracy on the training volumes never drops from one width to the next (in most
    seeds: the binomial rule), and rises from the smallest to the largest width (worst volume). The
    rise is the informative condition."""
    sw = sweep(ds, case.model, at="init" if case.control else "end", seeds=True)
    accuracy = sw.volume_measure.sel(measure="accuracy", subset="all").transpose("replica", "volume", "width").values
    drops = [float(max(0.0, -np.diff(a, axis=-1).min())) for a in accuracy]  # worst volume, worst step
    rises = [float((a[:, -1] - a[:, 0]).min()) for a in accuracy]  # worst volume
    quantum = 1 / ds.sizes["sample"]  # accuracy on the n training samples
    return Evidence(
        # "never drops" holds or not in each seed, and a drop is bounded below by 0: the share of seeds
        # (binomial rule), since a t-interval of seeds that all read 0 straddles its own resolution
        [Condition("largest drop from one width to the next", drops, "<=", 0, quantum=quantum, unit="points", bounds=(0, 1),
                   rule="binomial"),
         Condition("rise from smallest to largest width", rises, ">=", 0.1, quantum=quantum, unit="points", bounds=(-1, 1))],
        f"largest drop between widths {100 * max(drops):.1f} points (worst seed), rise {100 * np.median(rises):+.1f} "
        f"points (median seed, worst volume)", dict(threshold_widths=thresholds(ds, case.model, tolerance(ds))))


def epochwise_jacobian_peak(ds, case: Case) -> Evidence:
    """Fig. 5 (Sec. 4.3): a model that fits its noisy labels has a Jacobian norm at the training
    points that rises over epochs and falls again, peaking no later than the checkpoint where the
    noisy subset is fitted. Per seed, over the widths whose noisy subset is fitted at the end (main
    case) or not (control, `unfitted`; the paper: below the threshold the norm does not decrease),
    the least favourable width: the largest norm(epoch 0) / peak and norm(end) / peak, and (main
    case) the latest peak counted in checkpoints from the fit. A seed with no width of the case's
    kind is left out and said so; none at all: the precondition is absent."""
    unfitted = bool(case.control)
    curves = epoch_curves(ds, case.model)
    per_seed: list[list[dict]] = []
    for r in range(next(iter(curves.values())).sizes["replica"]):
        stats = []
        for width, c in curves.items():
            stat = epochwise_peak(c.epoch.values, c.jacobian.values[r], c.noisy_error.values[r], tolerance(ds))
            if stat["fitted"] != unfitted:
                stats.append({"width": width, **stat})
        per_seed.append(stats)
    kept = [k for k, stats in enumerate(per_seed) if stats]
    left_out = tuple(f"seed {k}: {'every' if unfitted else 'no'} width fits its noisy labels"
                     for k, stats in enumerate(per_seed) if not stats)
    if not kept:
        raise Absent(f"no seed has a width that {'does not fit' if unfitted else 'fits'} its noisy labels")
    checkpoints = max(c.sizes["epoch"] for c in curves.values())
    rises = [max(s["start_ratio"] for s in per_seed[k]) for k in kept]
    falls = [max(s["end_ratio"] for s in per_seed[k]) for k in kept]
    conditions = [Condition("Jacobian norm at epoch 0 / peak over epochs", rises, "<", 0.5, scale="log", bounds=(0, 1),
                            left_out=left_out),
                  Condition("Jacobian norm at the end / peak over epochs", falls, "<", 0.5, scale="log", bounds=(0, 1),
                            left_out=left_out)]
    if not unfitted:  # the fit epoch exists only where the noisy subset is fitted
        steps = [float(max(s["steps"] for s in per_seed[k])) for k in kept]
        conditions.append(Condition("checkpoints from the noisy fit to the peak", steps, "<=", 0, quantum=1,
                                    bounds=(-checkpoints, checkpoints), left_out=left_out))

    def one(s: dict) -> str:
        fit = "never" if s["fit_epoch"] is None else f"{s['fit_epoch']:g}"
        return (f"w{s['width']}: peak {s['peak']:.3g} at epoch {s['peak_epoch']:g}, noisy fitted at {fit}, "
                f"end/peak {s['end_ratio']:.2g}")
    summary = "; ".join(f"seed {k}: " + ", ".join(one(s) for s in per_seed[k]) for k in kept)
    return Evidence(conditions, summary, dict(seeds=per_seed))


def asymmetric_untouched_only(ds, case: Case) -> Evidence:
    """Main: the test error of the classes the asymmetric noise leaves untouched bumps near the
    threshold; control: the touched classes."""
    split = "test_touched" if case.control else "test_untouched"
    sw = sweep(ds, case.model, seeds=True)
    widths = [int(w) for w in sw.width.values]
    error = 1 - sw.accuracy.sel(split=split).transpose("replica", "width").values
    bumps = []
    for e, threshold in zip(error, thresholds(ds, case.model, tolerance(ds))):
        near = [i for i in range(len(widths)) if threshold in widths and abs(i - widths.index(threshold)) <= 1]
        bumps.append(float(max(e[i] for i in near) - e[-1]) if near else -1.0)  # no width fits: the lowest bump
    return Evidence([Condition(f"{split} error near the threshold minus largest width", bumps, ">=", 0.02, unit="points",
                               bounds=(-1, 1))],
                    f"{split} error: bump {100 * np.median(bumps):+.1f} points (median seed)", dict(bumps=bumps))


# --- the declarations --------------------------------------------------------------------
SMALL_PLATEAU = ("the unfitted widths below the threshold (w = 1 and 2) are equally sharp from their misfitted noisy "
                 "samples, so the argmax falls one to three grid steps below the threshold; the fall past it holds; "
                 "the train cross-entropy is highest at w = 1 or 2 (3 of 4 seeds w = 1), where the "
                 "paper's peaks at the threshold; the regime search (issue 32) found none within a CPU budget that moves it; see docs/smooth.md")
SMALL_DROPS = ("past the threshold every width fits, and the accuracy over the volumes moves by at most one sample between "
               "fitted widths (seed 1 drops 0.2 points, over the half-sample tolerance), so 'never drops' holds in 3 of 4 "
               "seeds and the binomial share straddles; the rise of 33 points holds; see docs/smooth.md")
PAPER_SCALE = ("the paper reports it on CIFAR-10 at w = 15; this tier's threshold and budget were set from probes, "
               "no run of it is kept")
PAPER_SETTING = "the paper's own setting, where it reports the phenomenon; no run of this tier is kept"
# small: measured (data/expected/small.json, issue 32)
PEAKS = {"medium": ("reproduced", PAPER_SCALE),
         "full": ("reproduced", PAPER_SETTING)}

CLAIMS = [
    Claim("smooth.sharpness_peaks_at_threshold", sharpness_peaks, cases(PEAK_SETTINGS, "init"), figure=smooth_measures,
          why={"small": SMALL_PLATEAU}, predicted=PEAKS),
    Claim("smooth.noisy_peak_higher", noisy_peak_higher, cases(NOISY_SETTINGS, "init"), figure=smooth_subsets,
          why={"small": SMALL_PLATEAU}, predicted=PEAKS),
    Claim("smooth.hessian_peaks_too", hessian_peaks, cases(PEAK_SETTINGS, "init"), figure=smooth_hessian,
          why={"small": SMALL_PLATEAU}, predicted=PEAKS),
    Claim("smooth.volume_accuracy_grows", volume_accuracy_grows, cases(ACCURACY_SETTINGS, "init"),
          figure=smooth_volume_accuracy, why={"small": SMALL_DROPS},
          predicted={"medium": ("reproduced", "the accuracy at the training points reaches 1 past the threshold at small "
                                              "(docs/smooth.md); no run of this tier is kept"),
                     "full": ("reproduced", PAPER_SETTING)}),
    # issue 32: a new claim, the epoch-wise view (Fig. 5) at the training points; control: the widths
    # that never fit their noisy labels, whose norm the paper sees non-decreasing
    Claim("smooth.epochwise_jacobian_peak", epochwise_jacobian_peak, cases(EPOCHWISE_SETTINGS, "unfitted"),
          figure=smooth_epochwise, predicted={"full": ("reproduced", PAPER_SETTING)}),
    Claim("smooth.asymmetric_untouched_only", asymmetric_untouched_only, cases({"full": ["cifar100-asym"]}, "touched"),
          figure=smooth_test_error, predicted={"full": ("reproduced", PAPER_SETTING)}),
]

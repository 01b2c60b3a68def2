"""Claims of the modular-arithmetic label-noise paper ("Unveiling Memorization-Generalization
Coexistence: A Case Study on Arithmetic Tasks with Label Noise").

Each statistic is computed per seed from the stored results (the seeds of a setting are stacked
replicas of one run). Controls apply the same criterion where the phenomenon must be absent (an
untrained network, 100% noise, tagged-only noise) and must clearly fail there.

The reference setting is the paper's (experiments/modnoise.py: P = 113, ReLU, cross-entropy, full-batch
AdamW with weight decay 0.1, the output bias μ, which a partition's subnetwork keeps and the Fourier
extraction discards with the residual), trained at the small, medium and full tiers (small is the CPU
tier that judges it; medium and full wait for a GPU). The quick tier differs, for its 66 s: Gromov's bias-free
network with the quadratic activation at P = 59 under AdamW lr 3e-3 and weight decay 1 (memorized and Fourier-structured
within 70 steps, where the paper's ReLU setting at P = 113 needs some 300), and it judges the learning
order at 80% noise, where the paper states none (docs/modnoise.md).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from reproduce.experiments.modnoise import (MEDIUM_ORDER_WIDTH, ORDER_CONTROLLED, ORDER_LEVEL, ORDER_RATES, ORDER_SPECS,
                                             ORDER_WIDTH, SMALL_WIDTH, WIDTH_NOISE)
from reproduce.figures.modnoise import (final_accuracy, models, modnoise_heatmap, modnoise_learning_curves,
                                        modnoise_partition, modnoise_width, replicas, run_of)
from reproduce.judge import Case, Claim, Evidence, cases
from reproduce.verdict import Condition, spearman_quantum

LARGEST = {"quick": 513, "small": SMALL_WIDTH, "medium": 4097, "full": 4097}  # the width of the main runs
OPS = ("add", "sub", "mul")
# small trains addition only at the paper's setting (subtraction and multiplication at P = 113 would
# double its time; quick checks them at P = 59)
MODELS = {tier: [f"{op}-m{w}" for op in (("add",) if tier == "small" else OPS)] for tier, w in LARGEST.items()}
ADD = {tier: [f"add-m{w}"] for tier, w in LARGEST.items()}
# the learning order: small and medium judge it in their own runs under Adam and AdamW (the paper's regime);
# quick and full in the main addition run
ORDER_RUN_WIDTHS = {"small": ORDER_WIDTH, "medium": MEDIUM_ORDER_WIDTH}
ORDER = {**ADD, **{t: [f"add-m{w}-{o}" for o in ORDER_SPECS] for t, w in ORDER_RUN_WIDTHS.items()}}
# the tag control: in the Adam run where the order has its own runs (AdamW's duplicated it,
# experiments/modnoise.py: order_settings)
ORDER_TAGGED = {**ORDER, **{t: [f"add-m{w}-{ORDER_CONTROLLED}"] for t, w in ORDER_RUN_WIDTHS.items()}}
ALL = {tier: ["all"] for tier in ("small", "medium", "full")}  # the width sweeps
ACCURACY, POINTS, RANK = (0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0)  # the ranges the statistics can take


TABLE_NETWORKS = {"model": "model", "fourier": "Fourier extraction", "strength": "Strength top k (paper)",
                  "ipr": "IPR top k (task-aware)", "partition": "held-out ablation"}


def _table(ds) -> tuple[list[str], list[list]]:
    """Seed-mean test accuracy of model, Fourier extraction and partition per operation, width and noise."""
    rows = []
    for op in OPS:
        for width, model in models(ds, op):
            one = ds.isel(run=list(ds["model"].values).index(model))
            for setting, rate in sorted(set(zip(one.setting.values, one.noise_rate.values)), key=str):
                if setting not in ("flip", "resample"):  # the tag control, or padding of a run with fewer replicas
                    continue
                seeds = [final_accuracy(r) for r in replicas(ds, model, str(setting), float(rate))]
                acc = {k: np.mean([s[k] for s in seeds]) for k in seeds[0]}
                rows.append([op, width, f"{setting} {float(rate):.0%}", len(seeds)]
                            + [f"{acc[n]:.1%}" if n in acc else "" for n in TABLE_NETWORKS])
    return ["operation", "width", "noise", "seeds"] + list(TABLE_NETWORKS.values()), rows


def n_test(run) -> int:
    """Test pairs of a run (all pairs minus the stored noisy training set, whose `sample` axis is
    NaN-padded where runs of different sizes combine): its accuracies move in steps of 1/n_test."""
    pairs = int((run.p.item() - (str(run.op.values) == "mul")) ** 2)
    return pairs - int(np.isfinite(run.a.values.astype(float)).sum())


# --- modnoise.fourier_extraction_recovers ----------------------------------------------------

def recovers(run, epoch: int = -1) -> dict:
    acc = run.test_accuracy.isel(epoch=epoch)
    model, extracted = float(acc.sel(network="model")), float(acc.sel(network="fourier"))
    return dict(model=model, extracted=extracted, epoch=float(run.epoch.values[epoch]))


def fourier_extraction(ds, case: Case) -> Evidence:
    """Main: 80% flip noise at the end of training. Controls: the same replicas untrained (their
    epoch-0 checkpoint) and the replicas trained on 100% flip noise: the same criterion, where it can
    hold only by the extraction alone making a network generalize."""
    runs = replicas(ds, case.model, "flip", 1.0 if case.control == "noise100" else 0.8)
    seeds = [recovers(r, epoch=0 if case.control == "untrained" else -1) for r in runs]
    quantum = 1 / n_test(runs[0])
    extracted, own = [s["extracted"] for s in seeds], [s["model"] for s in seeds]
    label = {"untrained": "untrained (epoch 0), 80% flip replicas", "noise100": "100% flip"}.get(case.control, "80% flip")
    return Evidence(
        [Condition("extracted test accuracy", extracted, ">=", 0.95, quantum=quantum, unit="accuracy", bounds=ACCURACY),
         Condition("extracted minus model", [e - m for e, m in zip(extracted, own)], ">=", 0.5, quantum=quantum,
                   unit="points", bounds=POINTS)],
        f"{label}: extracted {np.mean(extracted):.1%}, model {np.mean(own):.1%} (mean of {len(seeds)} seeds)",
        dict(seeds=seeds))


# --- modnoise.larger_width_generalizes_better -----------------------------------------------

def _sweep(ds) -> set[str]:
    """The addition runs of the width sweep: those trained at the width claim's noise level (medium's
    largest width is not); its control is judged over the same widths."""
    return {m for _, m in models(ds, "add") if np.isclose(run_of(ds, m).noise_rate.values, WIDTH_NOISE).any()}


def width_trend(ds, rate: float) -> list[dict]:
    """Per seed: final test accuracy of the model at every width (addition), Spearman over widths
    and the gain of the largest over the smallest width."""
    pairs = [(w, m) for w, m in models(ds, "add") if m in _sweep(ds)]
    widths = [w for w, _ in pairs]
    per_width = [[final_accuracy(r)["model"] for r in replicas(ds, m, "flip", rate)] for _, m in pairs]
    seeds = []
    for acc in zip(*per_width):
        rho = float(spearmanr(widths, acc).statistic) if np.ptp(acc) > 0 else 0.0  # flat: no trend (see flat_seeds)
        seeds.append(dict(widths=widths, accuracy=[round(a, 4) for a in acc], spearman=rho, gain=acc[-1] - acc[0]))
    return seeds


def larger_width(ds, case: Case) -> Evidence:
    """Main: 20% flip noise under strong AdamW weight decay; control: 100% flip noise, where no width can."""
    rate = 1.0 if case.control else WIDTH_NOISE
    seeds = width_trend(ds, rate)
    widths = seeds[0]["widths"]
    quantum = 1 / n_test(replicas(ds, sorted(_sweep(ds))[0], "flip", rate)[0])
    mean_acc = np.mean([s["accuracy"] for s in seeds], 0)
    flat = tuple(f"seed {i}: test accuracy equal at every width, Spearman undefined, taken as 0 (no trend)"
                 for i, s in enumerate(seeds) if np.ptp(s["accuracy"]) == 0)
    return Evidence(
        [Condition("Spearman(width, accuracy)", [s["spearman"] for s in seeds], ">=", 0.8,
                   quantum=spearman_quantum(len(widths)), bounds=RANK, left_out=flat),
         Condition("largest minus smallest width", [s["gain"] for s in seeds], ">=", 0.1, quantum=quantum, unit="points",
                   bounds=POINTS)],
        f"{rate:.0%} flip: test accuracy " + ", ".join(f"{a:.1%}" for a in mean_acc)
        + f" at widths {widths} (mean of {len(seeds)} seeds)", dict(seeds=seeds))


# --- modnoise.partition_weaker_than_fourier -------------------------------------------------
# The paper's partition (Algorithm 1): the top k neurons by Strength, task-agnostic, k chosen on the
# held-out split. Beside it, shown and not judged: the top k by IPR (task-aware, the ceiling of a
# neuron-level score) and the project's held-out ablation (fixed point).
# The margin: the paper calls the partition's gain over the model "marginal" next to frequency
# filtration and gives no number for it (../shared/papers/modular-arithmetic-label-noise-details.md),
# so the 5-point margin stands (old 0.05, new 0.05): the text supports no other.
MARGIN = 0.05
SHOWN = {"ipr": "IPR top k (task-aware)", "partition": "held-out ablation (fixed point)"}


def partition_weaker(ds, case: Case) -> Evidence:
    """Main: 80% flip noise; control: 100% flip noise, where the partition has nothing to keep.
    Runs made before the paper's scores were stored are judged on the held-out ablation (`partition`)."""
    rate = 1.0 if case.control else 0.8
    runs = replicas(ds, case.model, "flip", rate)
    seeds = [final_accuracy(r) for r in runs]
    quantum = 1 / n_test(runs[0])
    main = "strength" if "strength" in seeds[0] else "partition"
    mean = {k: np.mean([s[k] for s in seeds]) for k in seeds[0]}
    chosen = ({str(n): [int(r.partition_k.sel(scorer=n)) for r in runs] for n in runs[0].scorer.values}
              if "partition_k" in runs[0] else {})  # the k of each top-k partition, per seed
    label = {"strength": "Strength top k", "partition": "held-out ablation"}[main]
    conditions = [
        Condition(f"{label} minus model", [s[main] - s["model"] for s in seeds], ">=", MARGIN, quantum=quantum,
                  unit="points", bounds=POINTS),
        Condition(f"Fourier minus {label}", [s["fourier"] - s[main] for s in seeds], ">=", MARGIN, quantum=quantum,
                  unit="points", bounds=POINTS)]
    conditions += [Condition(f"{name} minus model", [s[key] - s["model"] for s in seeds], ">=", MARGIN, quantum=quantum,
                             unit="points", bounds=POINTS, reported=True)
                   for key, name in SHOWN.items() if key != main and key in seeds[0]]
    shown = "; shown: " + ", ".join(f"{SHOWN.get(n, n)} {mean[n]:.1%}" for n in SHOWN if n != main and n in mean)
    shown = shown if main == "strength" else ""
    ks = "; k chosen on the held-out split: " + ", ".join(f"{n} {v}" for n, v in chosen.items()) if chosen else ""
    return Evidence(conditions,
                    f"{rate:.0%} flip: model {mean['model']:.1%}, {label} {mean[main]:.1%}, Fourier {mean['fourier']:.1%} "
                    f"(mean of {len(seeds)} seeds){shown}{ks}", dict(seeds=seeds, k=chosen))


# --- modnoise.noisy_memorized_faster_early ---------------------------------------------------
# Both subsets are timed to the same absolute level, half-way to memorized and far above chance
# (1/P): the paper's MNIST numbers at epoch 1 (noisy 10.9%, clean 2.9%) sit at chance for 10
# classes, so a lead near chance is no evidence; a lead at 50% accuracy is.
ORDER_JUDGED = {"quick": 0.8}  # the noise level judged per tier; elsewhere the paper's alpha = 0.3 (ORDER_RATES shown)


def memorized_early(run) -> dict:
    """First epoch at which the clean subset and the noisy subset (against its noisy labels) reach
    ORDER_LEVEL; a subset that does not within the run counts as reaching it at the last epoch (a
    bound that can only shrink the factor of the subset that got there: conservative). Factor = clean
    / noisy epoch; lead = noisy minus clean accuracy at the noisy subset's epoch."""
    epochs = run.epoch.values
    clean_acc = run.accuracy.sel(split="clean").values
    noisy_acc = run.accuracy.sel(split="noisy").values
    clean, noisy = (_reached(epochs, acc) for acc in (clean_acc, noisy_acc))
    at = int(np.nonzero(epochs == noisy)[0][0])
    lead = float(noisy_acc[at] - clean_acc[at])
    smallest = epochs[epochs > 0].min()
    before = (epochs > 0) & (epochs < min(clean, noisy))
    early_gap = float(np.mean(noisy_acc[before] - clean_acc[before])) if before.any() else 0.0  # shown, not judged
    return dict(clean_epoch=float(clean), noisy_epoch=float(noisy), factor=float(clean / max(noisy, smallest)), lead=lead,
                early_gap=early_gap, censored=bool(clean_acc.max() < ORDER_LEVEL or noisy_acc.max() < ORDER_LEVEL))


def _reached(epochs: np.ndarray, acc: np.ndarray) -> float:
    hits = np.nonzero(acc >= ORDER_LEVEL)[0]
    return float(epochs[hits[0]] if hits.size else epochs[-1])


def _order_rates(run_ds, tier: str) -> tuple[float, list[float]]:
    """The judged flip-noise level of this run and the others it holds (shown, per level)."""
    rates = sorted({float(r) for s, r in zip(run_ds.setting.values, run_ds.noise_rate.values) if s == "flip"})
    judged = ORDER_JUDGED.get(tier, ORDER_RATES[-1] if ORDER_RATES[-1] in rates else 0.8)
    return judged, [r for r in rates if r != judged and r in ORDER_RATES]


def noisy_faster_early(ds, case: Case) -> Evidence:
    """Main: flip noise at the judged level (the paper's alpha = 0.3; 80% at quick), the other levels
    of the run shown per level; control "tag": the same samples only tagged noisy (labels unchanged)."""
    judged, shown = _order_rates(run_of(ds, case.model), case.tier)
    conditions, per_rate = [], {}
    for rate in [judged] + ([] if case.control else shown):
        seeds = [memorized_early(r) for r in replicas(ds, case.model, "tag" if case.control else "flip", rate)]
        per_rate[f"{rate:.0%}"] = seeds
        reported, instance = rate != judged, f"{rate:.0%}"
        never = tuple(f"seed {i}: a subset stays below {ORDER_LEVEL:.0%} to the last epoch, timed there"
                      for i, s in enumerate(seeds) if s["censored"])
        conditions += [
            Condition(f"clean/noisy epoch at {ORDER_LEVEL:.0%} accuracy, {instance}", [s["factor"] for s in seeds], ">=", 1.4,
                      scale="log", bounds=(0.0, np.inf), instance=instance, reported=reported, left_out=never),
            Condition(f"noisy minus clean accuracy there, {instance}", [s["lead"] for s in seeds], ">=", 0.1,
                      bounds=POINTS, instance=instance, reported=reported)]
    factors = "; ".join(f"{r}: x{np.exp(np.mean(np.log([s['factor'] for s in v]))):.2f}" for r, v in per_rate.items())
    what = "tagged" if case.control else "noisy"
    return Evidence(conditions, f"{case.model}, {what} subset reaches {ORDER_LEVEL:.0%} earlier than clean by (geometric "
                                f"mean of seeds) {factors}", dict(seeds=per_rate))


# --- the declarations --------------------------------------------------------------------
PAPER = "the paper reports it; this tier's setting was set from probes, no run of it is kept"
# Controls per operation: the same replicas untrained (their epoch-0 checkpoint), and trained on 100% flip noise.
FOURIER_CASES = (cases(MODELS, None) + cases({}, "untrained", controls=MODELS) + cases({}, "noise100", controls=MODELS))

CLAIMS = [
    Claim("modnoise.fourier_extraction_recovers", fourier_extraction, FOURIER_CASES, figure=modnoise_heatmap, table=_table,
          predicted={"medium": ("reproduced", "small reproduces it at the paper's setting at width 2049 "
                                              "(data/expected/small.json), and the extraction's plateau rose with width "
                                              "(docs/modnoise.md); medium trains width 4097 five times as long"),
                     "full": ("reproduced", "the paper reports near-perfect extraction at 80% noise at its own "
                                            "setting, which full trains")}),
    Claim("modnoise.larger_width_generalizes_better", larger_width, cases(ALL, "noise100"), figure=modnoise_width,
          predicted={"medium": ("reproduced", "small reproduces it on widths 17-257 under the same optimizer "
                                              "(data/expected/small.json); medium adds widths 513-2049"),
                     "full": ("reproduced", PAPER)}),
    Claim("modnoise.partition_weaker_than_fourier", partition_weaker, cases(ADD, "noise100"), figure=modnoise_partition,
          why={"quick": "at 80% flip noise the partition's subnetwork barely beats the model: under heavy noise the "
                        "neurons' spectra are diffuse, no neuron is purely generalizing; see docs/modnoise.md",
               "small": "at 80% flip noise no top k by Strength, by IPR or by the held-out ablation beats the model by "
                        "more than one point in any seed while the Fourier extraction recovers 99%: the paper's own "
                        "words, a marginal gain next to frequency filtration; see docs/modnoise.md"},
          predicted={"medium": ("not_reproduced", "at the paper's setting the partition does not beat the model at 80% "
                                                  "noise at small (data/expected/small.json), and the paper calls its "
                                                  "gain marginal next to frequency filtration"),
                     "full": ("not_reproduced", "the paper calls the partition's gain marginal next to frequency "
                                                "filtration; the criterion asks a clear margin over the model")}),
    Claim("modnoise.noisy_memorized_faster_early", noisy_faster_early, cases(ORDER, "tag", controls=ORDER_TAGGED),
          figure=modnoise_learning_curves,
          contradicts="ddmlp.noisy_learned_later",
          why={"quick": "checkpointed at every step, both subsets reach 50% accuracy within a few steps of each other: "
                        "they are memorized together at 80% noise (quadratic, P = 59), where the paper makes no such "
                        "statement; small judges the paper's alpha = 0.3; see docs/modnoise.md"},
          predicted={"medium": ("reproduced", "small reproduces it at the paper's alpha = 0.3 under Adam and AdamW "
                                              "(data/expected/small.json); medium runs the paper's own M = 2049 and lr "
                                              "1e-3"),
                     "full": ("reproduced", "small reproduces it at alpha = 0.3 under AdamW (data/expected/small.json); "
                                            "full judges alpha = 0.3 in its AdamW run at the paper's setting")}),
]

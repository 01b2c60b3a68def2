"""Claims of Kubo et al., "Deep Exploration of Epoch-wise Double Descent in Noisy Data" (2025).

Each statistic is computed here per seed from the stored results and judged by the `judge`
fixture (reproduce/verdict.py) under the claim's rule; the criteria are the catalogue's, in
data/claims/ddmlp.json. The `control` cases apply the criterion where it can hold in principle but
the phenomenon is absent (the clean-label twins; the network at initialization), and the judge
expects it to fail there.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from claims.conftest import Case, cases
from reproduce.figures.ddmlp import (ddmlp_learning_curves, ddmlp_outlier, ddmlp_outlier_by_class, ddmlp_outlier_layers,
                                     ddmlp_separation, ddmlp_test_accuracy, ddmlp_test_loss, replicas)
from reproduce.measures.activations import (cell_spreads, class_mean_cs, fall_from_first_peak, first_crossing,
                                           largest_drop, runner_up_ratio, tracked_outlier_ratio)
from reproduce.report import Claim
from reproduce.verdict import Condition, judge as judge_conditions, spearman_quantum

PAPER = "ddmlp"
MODELS = {"quick": ["mlp7", "mlp5", "mlp3"], "medium": ["mlp7", "mlp5", "mlp3"], "full": ["mlp7", "mlp5", "mlp3"]}
# The paper states depth-wise separation for MLP7 and MLP5 (Sec. 4 and conclusion item 2) and finds
# MLP3's "considerably weaker"; MLP3 enters the claim through test_mlp3_separates_least.
DEEP_MODELS = {tier: ["mlp7", "mlp5"] for tier in MODELS}
# Claims that the quick tier cannot show (test accuracy falls but does not recover, and no outlier
# grows, within 60 epochs on 512 images): they have small, medium and full cases, and the quick
# report lists them as not at this tier. The small tier trains MLP7 and MLP3 only (docs/ddmlp.md).
SMALL = {"small": ["mlp7", "mlp3"]}
BEYOND_QUICK = {"small": SMALL["small"], **{tier: MODELS[tier] for tier in ("medium", "full")}}
LARGEST = {tier: ["mlp7"] for tier in BEYOND_QUICK}  # Fig. 1 shows the double descent for MLP7
BOTH_ENDS = {tier: ["all"] for tier in BEYOND_QUICK}
OUTLIER_MODELS = {**MODELS, **SMALL}
# The outlier's layer and class tracking need an outlier: not at the CPU tiers, where none grows.
WITH_OUTLIER = {tier: MODELS[tier] for tier in ("medium", "full")}
DEEP_WITH_OUTLIER = {tier: ["mlp7", "mlp5"] for tier in WITH_OUTLIER}

LEARNED_LATER = Claim.load("ddmlp.noisy_learned_later", figure=ddmlp_learning_curves)
SEPARATION = Claim.load("ddmlp.separation_deepens_with_layers", figure=ddmlp_separation)
OUTLIER = Claim.load("ddmlp.single_outlier_neuron", figure=ddmlp_outlier)
DOUBLE_DESCENT = Claim.load("ddmlp.epochwise_double_descent", figure=ddmlp_test_accuracy)
ONLY_LARGEST = Claim.load("ddmlp.double_descent_only_largest", figure=ddmlp_test_loss)
SHALLOW = Claim.load("ddmlp.outlier_in_shallow_layers", figure=ddmlp_outlier_layers)
TRACKS_CLASS = Claim.load("ddmlp.outlier_tracks_input_class", figure=ddmlp_outlier_by_class)


def _setting(case: Case) -> str:
    return "control" if case.control else "noisy"


# --- ddmlp.noisy_learned_later ------------------------------------------------------------

def learned_later(run) -> dict:
    """Half-way epochs of clean accuracy and of noisy-label accuracy on the noisy subset."""
    epochs = run.epoch.values
    acc = run.accuracy
    clean = first_crossing(epochs, acc.sel(split="clean").values)
    noisy = first_crossing(epochs, acc.sel(split="noisy").values)
    at = int(np.nonzero(epochs == clean)[0][0]) if np.isfinite(clean) else -1
    as_original = float(acc.sel(split="noisy_original").values[at])
    as_noisy = float(acc.sel(split="noisy").values[at])
    smallest = epochs[epochs > 0].min()  # a half-way epoch of 0 counts as the first checkpoint: the factor stays finite
    factor = max(noisy, smallest) / max(clean, smallest)
    return dict(clean_epoch=clean, noisy_epoch=noisy, factor=float(factor), as_original=as_original,
                as_noisy_label=as_noisy, holds=bool(factor >= 3 and as_original > as_noisy))


@pytest.mark.claim(LEARNED_LATER)
@pytest.mark.parametrize("case", cases(MODELS))
def test_noisy_learned_later(case: Case, paper_results, judge):
    runs = replicas(paper_results(PAPER, case.tier), case.model, _setting(case))
    seeds = [learned_later(r) for r in runs]
    n_noisy = int(runs[0].noisy_mask.sum())  # accuracies on the noisy subset move in steps of 1/n_noisy
    # the factor is a ratio of epochs, multiplicative and heavy-tailed: judged on the log scale
    conditions = [Condition("noisy/clean half-way epoch", [s["factor"] for s in seeds], ">=", 3, scale="log")]
    if not case.control:  # in the twins the noisy label is the original label: the difference is identically 0
        conditions.append(Condition("as original minus as noisy label", [s["as_original"] - s["as_noisy_label"] for s in seeds],
                                    ">", 0, quantum=1 / n_noisy, unit="points", bounds=(-1, 1)))
    judge(*conditions, summary=f"{'clean-label twins: ' if case.control else ''}noisy reaches half its final accuracy "
                               f"x{np.exp(np.mean(np.log([s['factor'] for s in seeds]))):.1f} later (geometric mean over "
                               f"{len(seeds)} seeds)", seeds=seeds)


# --- ddmlp.separation_deepens_with_layers --------------------------------------------------

def separation(run) -> dict:
    """CS(l) (Eq. 4) at the final checkpoint over hidden layers, and its change over training."""
    cs = class_mean_cs(run.cs)
    final, first = cs.isel(epoch=-1).values, cs.isel(epoch=0).values
    rho = float(spearmanr(np.arange(len(final)), final).statistic) if np.ptp(final) > 0 else float("nan")
    return dict(cs_final=[round(float(v), 4) for v in final], spearman=rho,
                first_minus_deepest=float(final[0] - final[-1]), start_minus_end=float(first.mean() - final.mean()))


@pytest.mark.claim(SEPARATION)
@pytest.mark.parametrize("case", cases(DEEP_MODELS, controls=MODELS))
def test_separation_deepens_with_layers(case: Case, paper_results, judge):
    seeds = [separation(r) for r in replicas(paper_results(PAPER, case.tier), case.model, _setting(case))]
    layers = len(seeds[0]["cs_final"])
    judge(Condition("Spearman(layer, CS)", [s["spearman"] for s in seeds], "<=", -0.8, quantum=spearman_quantum(layers),
                    bounds=(-1, 1)),
          # ReLU activations are non-negative, so CS lies in [0, 1] and its differences in [-1, 1]
          Condition("CS first minus deepest layer", [s["first_minus_deepest"] for s in seeds], ">=", 0.05, bounds=(-1, 1)),
          Condition("mean CS start minus end", [s["start_minus_end"] for s in seeds], ">", 0, bounds=(-1, 1)),
          summary=f"CS first minus deepest layer {np.mean([s['first_minus_deepest'] for s in seeds]):.3f} "
                  f"(mean of {len(seeds)} seeds), Spearman {np.mean([s['spearman'] for s in seeds]):.2f}",
          seeds=seeds)


def deepest_cs(run) -> float:
    """CS (Eq. 4) of the deepest hidden layer at the final checkpoint: lower is stronger separation."""
    return float(class_mean_cs(run.cs).isel(epoch=-1, layer=-1))


@pytest.mark.claim(SEPARATION)
@pytest.mark.parametrize("case", cases({t: ["all"] for t in MODELS}, controls={}))
def test_mlp3_separates_least(case: Case, paper_results, judge):
    """Seeds are paired by index (replica k of every model shares the replica seed); per seed the
    margin is MLP3's deepest-layer CS minus the highest of the deeper models'."""
    ds = paper_results(PAPER, case.tier)
    deepest = {m: [deepest_cs(r) for r in replicas(ds, m, "noisy")] for m in MODELS[case.tier]}
    others = [m for m in deepest if m != "mlp3"]
    margin = [d3 - max(deepest[m][k] for m in others) for k, d3 in enumerate(deepest["mlp3"])]
    judge(Condition("MLP3 deepest CS minus the deeper models' highest", margin, ">", 0, bounds=(-1, 1)),
          summary="deepest-layer CS (seed mean): " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in deepest.items()),
          deepest_cs=deepest)


# --- ddmlp.single_outlier_neuron ---------------------------------------------------------
# At the quick tier the largest neurons sit in layer 1 with a runner-up close behind, in the noisy
# replicas and their clean-label twins alike; a lone outlier needs many more epochs than the
# quick budget (docs/quick-settings.md). The H200 probes of the medium setting found none in the
# noisy replicas either, while some twins grew one (docs/ddmlp-medium.md). The evidence is what
# the cases record from the results.
OUTLIER_XFAIL = {
    "quick": "no single outlier neuron within the quick budget: the largest first-layer neurons grow together; "
             "see docs/quick-settings.md",
    "small": "no lone outlier at the small setting (lr x steps = 10): one noisy MLP7 seed of five grows one, the "
             "others' largest neurons have close runner-ups; see docs/ddmlp.md",
    "medium": "the medium budget is a few hundred epochs against the paper's 1e5-1e6; the GPU probes found no "
              "lone outlier in the noisy replicas; see docs/ddmlp-medium.md",
}


def outlier_layers(run) -> dict[int, dict]:
    """Per hidden layer: i* (the largest neuron at the last checkpoint), r(i*) (Eq. 5) at the first and
    last checkpoints, and the runner-up's ratio against the rest without i*."""
    layers = {}
    for layer in run.layer.values:
        mag = run.magnitude.sel(layer=layer).dropna("neuron", how="all").values
        neuron, ratio = tracked_outlier_ratio(mag)
        layers[int(layer)] = dict(neuron=neuron, r_end=float(ratio[-1]), r_first=float(ratio[0]),
                                  runner_up=runner_up_ratio(mag[-1]))
    return layers


def outlier(run) -> dict:
    """The outlier layer (largest r at the end) and the criterion's three numbers there. The growth is
    r(end) / max(r(first), 1): a neuron silent at the first checkpoint (r = 0) would make the ratio
    infinite, so r(first) is floored at 1 (a neuron as large as the rest's RMS), which can only
    lower the growth: such a seed is counted on the failing side, never as an infinite success."""
    layers = outlier_layers(run)
    best = max(layers, key=lambda l: layers[l]["r_end"])
    v = layers[best]
    return dict(layer=best, neuron=v["neuron"], r=v["r_end"], runner_up_share=v["runner_up"] / v["r_end"],
                growth=v["r_end"] / max(v["r_first"], 1.0), layers=layers)


def is_outlier(seed: dict) -> bool:
    """A lone outlier as the criterion defines it: r > 10 and the runner-up below half of r."""
    return seed["r"] > 10 and seed["runner_up_share"] < 0.5


def outlier_conditions(seeds: list[dict]) -> list[Condition]:
    """r and its growth are ratios of magnitudes spanning orders of magnitude across seeds: judged on the log scale."""
    return [Condition("largest r over layers", [s["r"] for s in seeds], ">", 10, scale="log"),
            Condition("runner-up / r", [s["runner_up_share"] for s in seeds], "<", 0.5, scale="log"),
            Condition("r(end) / max(r(first checkpoint), 1)", [s["growth"] for s in seeds], ">=", 2, scale="log")]


def outlier_summary(seeds: list[dict]) -> str:
    return (f"largest r {np.median([s['r'] for s in seeds]):.1f} (median of {len(seeds)} seeds; layers "
            f"{sorted({s['layer'] for s in seeds})}), runner-up / r {np.median([s['runner_up_share'] for s in seeds]):.2f}")


@pytest.mark.claim(OUTLIER)
@pytest.mark.parametrize("case", cases(OUTLIER_MODELS, xfail=OUTLIER_XFAIL))
def test_single_outlier_neuron(case: Case, paper_results, judge):
    """Main: the noisy replicas. Control: the same networks at initialization, where only the
    criterion's first inequality can be applied (r cannot have grown at its own start): no layer
    may reach r > 10 there."""
    runs = replicas(paper_results(PAPER, case.tier), case.model, "noisy")
    if case.control:
        at_init = [max(outlier_layers(r.isel(epoch=[0])).values(), key=lambda v: v["r_end"])["r_end"] for r in runs]
        judge(Condition("largest r over layers at initialization", at_init, ">", 10, scale="log"),
              summary=f"at initialization: largest r {np.median(at_init):.1f} (median of {len(at_init)} seeds)")
        return
    seeds = [outlier(r) for r in runs]
    twins = [outlier(r)["r"] for r in replicas(paper_results(PAPER, case.tier), case.model, "control")]
    judge(*outlier_conditions(seeds), summary=outlier_summary(seeds) + f"; clean-label twins: largest r "
          f"{np.median(twins):.1f} (median), up to {max(twins):.1f}", seeds=seeds, twin_r=twins)


@pytest.mark.claim(OUTLIER)
@pytest.mark.parametrize("case", cases({}, controls=OUTLIER_MODELS, xfail=OUTLIER_XFAIL))
def test_single_outlier_neuron_twin(case: Case, paper_results, judge):
    """Control: the clean-label twins (same initialization, data order and mask, labels kept). The
    paper ties the outlier to re-generalization after noisy labels, so the criterion must fail here.
    Where the main case is a strict expected failure this control is reported, not enforced."""
    seeds = [outlier(r) for r in replicas(paper_results(PAPER, case.tier), case.model, "control")]
    conditions = outlier_conditions(seeds)
    verdict, _ = judge_conditions(conditions, OUTLIER.rule)
    words = {"reproduced": "; an outlier grows, but not specifically with label noise",
             "inconclusive": "; the twins may grow an outlier too: not clearly specific to label noise"}
    judge(*conditions, summary="clean-label twins: " + outlier_summary(seeds) + words.get(verdict, ""), seeds=seeds)


# --- ddmlp.epochwise_double_descent -------------------------------------------------------

def double_descent(run) -> dict:
    """Fig. 1: the fall of test accuracy from its first peak (the highest before the noisy subset is
    half fitted to its noisy labels) to its later minimum, and the recovery from there to the end."""
    acc = run.accuracy.sel(split="test").values
    peak, at = fall_from_first_peak(acc, run.accuracy.sel(split="noisy").values)
    fall, recovery = float(acc[peak] - acc[at]), float(acc[-1] - acc[at])
    epochs = run.epoch.values
    return dict(fall=fall, recovery=recovery, peak_epoch=float(epochs[peak]), minimum_epoch=float(epochs[at]),
                recovery_minus_quarter_fall=recovery - fall / 4)


# At the small setting the noisy subset is fully fitted and test accuracy falls, but it does not rise
# again within 2000 full-batch steps, and the test loss keeps rising (docs/ddmlp.md has the search).
DOUBLE_DESCENT_XFAIL = {"small": "test accuracy falls while the noisy labels are fitted but does not recover within the "
                                 "small budget, though the noisy subset is fully fitted; see docs/ddmlp.md"}


@pytest.mark.claim(DOUBLE_DESCENT)
@pytest.mark.parametrize("case", cases(LARGEST, xfail=DOUBLE_DESCENT_XFAIL))
def test_epochwise_double_descent(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    seeds = [double_descent(r) for r in replicas(ds, case.model, _setting(case))]
    quantum = 1 / int(ds.attrs["n_test"])  # test accuracies move in steps of 1 / n_test
    judge(Condition("test accuracy fall from its first peak", [s["fall"] for s in seeds], ">=", 0.05, quantum=quantum,
                    unit="points", bounds=(0, 1)),
          Condition("recovery minus a quarter of the fall", [s["recovery_minus_quarter_fall"] for s in seeds], ">=", 0,
                    quantum=quantum, unit="points", bounds=(-0.25, 1)),
          summary=f"{'clean-label twins: ' if case.control else ''}test accuracy falls "
                  f"{100 * np.mean([s['fall'] for s in seeds]):.1f} points, recovers "
                  f"{100 * np.mean([s['recovery'] for s in seeds]):+.1f} points (seed means)", seeds=seeds)


# --- ddmlp.double_descent_only_largest ----------------------------------------------------

def loss_rise_and_fall(run) -> dict:
    """Test loss: the largest rise from a minimum to a later maximum, and the fall from there to the end."""
    loss = run.loss.sel(split="test").values
    rise, at = largest_drop(-loss)
    fall = float(loss[at] - loss[-1])
    return dict(rise=rise, fall=fall, fall_minus_quarter_rise=fall - rise / 4)


@pytest.mark.claim(ONLY_LARGEST)
@pytest.mark.parametrize("case", cases(BOTH_ENDS, controls={}, xfail=DOUBLE_DESCENT_XFAIL))
def test_double_descent_only_largest(case: Case, paper_results, judge):
    ds = paper_results(PAPER, case.tier)
    mlp7 = [loss_rise_and_fall(r) for r in replicas(ds, "mlp7", "noisy")]
    mlp3 = [loss_rise_and_fall(r) for r in replicas(ds, "mlp3", "noisy")]
    judge(Condition("MLP7 test-loss rise", [s["rise"] for s in mlp7], ">=", 0.1),
          Condition("MLP7 fall minus a quarter of the rise", [s["fall_minus_quarter_rise"] for s in mlp7], ">=", 0),
          Condition("MLP3 fall minus a quarter of the rise", [s["fall_minus_quarter_rise"] for s in mlp3], "<", 0),
          summary=f"test loss rise / fall after: MLP7 {np.mean([s['rise'] for s in mlp7]):.2f} / "
                  f"{np.mean([s['fall'] for s in mlp7]):.2f}, MLP3 {np.mean([s['rise'] for s in mlp3]):.2f} / "
                  f"{np.mean([s['fall'] for s in mlp3]):.2f} nats (seed means)", mlp7=mlp7, mlp3=mlp3)


# --- ddmlp.outlier_in_shallow_layers and ddmlp.outlier_tracks_input_class ----------------
# Both describe the outlier, so they are judged only on the seeds where one grew (is_outlier); a case
# with none says so instead of locating the largest first-layer neuron. "Layer <= 3" can fail only in
# a model with more than three hidden layers: MLP7 (6) and MLP5 (4), not MLP3 (2).

def seeds_with_outlier(runs, case: Case) -> list[dict]:
    seeds = [outlier(r) for r in runs]
    found = [s for s in seeds if is_outlier(s)]
    if not found:
        pytest.skip(f"no outlier to locate: no seed of {case.model} grows a lone outlier (largest r "
                    f"{', '.join(format(s['r'], '.1f') for s in seeds)}, runner-up / r "
                    f"{', '.join(format(s['runner_up_share'], '.2f') for s in seeds)})")
    return found


@pytest.mark.claim(SHALLOW)
@pytest.mark.parametrize("case", cases(DEEP_WITH_OUTLIER, controls={}))
def test_outlier_in_shallow_layers(case: Case, paper_results, judge):
    runs = replicas(paper_results(PAPER, case.tier), case.model, "noisy")
    seeds = seeds_with_outlier(runs, case)
    judge(Condition("layer of the largest r", [s["layer"] for s in seeds], "<=", 3, quantum=1, bounds=(1, len(runs[0].layer))),
          summary=f"outlier in layers {[s['layer'] for s in seeds]} (r {', '.join(format(s['r'], '.1f') for s in seeds)}; "
                  f"{len(seeds)} of {len(runs)} seeds grow one)", seeds=seeds)


def class_tracking(run, layer: int) -> dict:
    """Fig. 8 on equal footing (measures.activations.cell_spreads): for the largest neuron of `layer`
    at the final checkpoint, the spread of its mean |activation| on noisy samples over true classes
    (noisy label fixed) against its spread over noisy labels (true class fixed)."""
    cells = run.outlier_by_cell.isel(epoch=-1).sel(layer=layer).values
    true_spread, label_spread, empty = cell_spreads(cells)
    return dict(layer=layer, true_class_spread=true_spread, noisy_label_spread=label_spread, empty_cells=empty,
                ratio=true_spread / label_spread)


@pytest.mark.claim(TRACKS_CLASS)
@pytest.mark.parametrize("case", cases(WITH_OUTLIER))
def test_outlier_tracks_input_class(case: Case, paper_results, judge):
    """Main: the outlier neuron (seeds where one grew). Control: the largest neuron of the last hidden
    layer of every noisy seed, which once the noisy labels are memorized follows the noisy label:
    the same criterion must fail there."""
    runs = replicas(paper_results(PAPER, case.tier), case.model, "noisy")
    if case.control:
        seeds = [class_tracking(r, int(r.layer[-1])) for r in runs]
    else:
        found = seeds_with_outlier(runs, case)
        seeds = [class_tracking(r, s["layer"]) for r, s in zip(runs, [outlier(r) for r in runs]) if is_outlier(s)]
        assert len(seeds) == len(found)
    left_out = [f"seed {k}: {s['empty_cells']} of 90 (true class, noisy label) cells have no noisy sample"
                for k, s in enumerate(seeds) if s["empty_cells"]]
    judge(Condition("spread over true classes / over noisy labels", [s["ratio"] for s in seeds], ">=", 2, scale="log",
                    left_out=left_out),
          summary=f"{'last hidden layer, control: ' if case.control else ''}the largest neuron's |activation| on noisy "
                  f"samples varies x{np.exp(np.mean(np.log([s['ratio'] for s in seeds]))):.1f} more with the true class "
                  f"than with the noisy label (geometric mean of {len(seeds)} seeds)", seeds=seeds)

"""Claims of the epoch-wise double-descent paper (papers/epochwise-double-descent-mlp.txt).

Each statistic is computed here from the stored results; the criteria are CLAIMS.md's, word for
word in data/claims/ddmlp.json. The `control` cases apply the same criterion where the phenomenon must
be absent and assert that it fails there.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from claims.conftest import Case, cases
from reproduce.figures.ddmlp import ddmlp_learning_curves, ddmlp_outlier, ddmlp_separation, replica, replicas
from reproduce.measures.activations import first_crossing, runner_up_ratio, tracked_outlier_ratio
from reproduce.report import Claim
from reproduce.verdict import Condition

PAPER = "ddmlp"
MODELS = {"quick": ["mlp7", "mlp5", "mlp3"], "medium": ["mlp7", "mlp5", "mlp3"], "full": ["mlp7", "mlp5", "mlp3"]}
# The paper states depth-wise separation for MLP7 and MLP5 (Sec. 4 and conclusion item 2) and finds
# MLP3's "considerably weaker"; MLP3 enters the claim through test_mlp3_separates_least.
DEEP_MODELS = {tier: ["mlp7", "mlp5"] for tier in MODELS}

LEARNED_LATER = Claim.load("ddmlp.noisy_learned_later", figure=ddmlp_learning_curves)
SEPARATION = Claim.load("ddmlp.separation_deepens_with_layers", figure=ddmlp_separation)
OUTLIER = Claim.load("ddmlp.single_outlier_neuron", figure=ddmlp_outlier)


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
    smallest = epochs[epochs > 0].min()
    factor = noisy / max(clean, smallest)
    return dict(clean_epoch=clean, noisy_epoch=noisy, factor=float(factor), as_original=as_original,
                as_noisy_label=as_noisy, holds=bool(factor >= 3 and as_original > as_noisy))


@pytest.mark.claim(LEARNED_LATER)
@pytest.mark.parametrize("case", cases(MODELS))
def test_noisy_learned_later(case: Case, paper_results, judge):
    runs = replicas(paper_results(PAPER, case.tier), case.model, _setting(case))
    seeds = [learned_later(r) for r in runs]
    n_noisy = int(runs[0].noisy_mask.sum())  # accuracies on the noisy subset move in steps of 1/n_noisy
    judge(Condition("noisy/clean half-way epoch", [s["factor"] for s in seeds], ">=", 3),
          Condition("as original minus as noisy label", [s["as_original"] - s["as_noisy_label"] for s in seeds], ">", 0,
                    quantum=1 / n_noisy),
          summary=f"noisy reaches half its final accuracy x{np.median([s['factor'] for s in seeds]):.1f} later (median over "
                  f"{len(seeds)} seeds)", seeds=seeds)


# --- ddmlp.separation_deepens_with_layers --------------------------------------------------

def separation(run) -> dict:
    """CS(l) (Eq. 4) at the final checkpoint over hidden layers, and its change over training."""
    cs = run.cs.mean("class")
    final, first = cs.isel(epoch=-1).values, cs.isel(epoch=0).values
    rho = float(spearmanr(np.arange(len(final)), final).statistic) if np.ptp(final) > 0 else float("nan")
    drop = float(final[0] - final[-1])
    holds = bool(rho <= -0.8 and drop >= 0.05 and final.mean() < first.mean())
    return dict(cs_final=[round(float(v), 4) for v in final], spearman=rho, first_minus_deepest=drop,
                mean_start=float(first.mean()), mean_end=float(final.mean()), holds=holds)


@pytest.mark.claim(SEPARATION)
@pytest.mark.parametrize("case", cases(DEEP_MODELS, controls=MODELS))
def test_separation_deepens_with_layers(case: Case, paper_results, record_statistic):
    stat = separation(replica(paper_results(PAPER, case.tier), case.model, _setting(case)))
    record_statistic(f"CS by layer {stat['cs_final']}, Spearman {stat['spearman']:.2f}, "
                     f"first-deepest {stat['first_minus_deepest']:.3f}", **stat)
    assert stat["holds"] != case.control, stat


@pytest.mark.claim(SEPARATION)
@pytest.mark.parametrize("case", cases({t: ["all"] for t in MODELS}, controls={}))
def test_mlp3_separates_least(case: Case, paper_results, record_statistic):
    ds = paper_results(PAPER, case.tier)
    deepest = {m: float(replica(ds, m, "noisy").cs.mean("class").isel(epoch=-1).min()) for m in MODELS[case.tier]}
    record_statistic("lowest CS over layers: " + ", ".join(f"{m} {v:.3f}" for m, v in deepest.items()), **deepest)
    assert deepest["mlp3"] == max(deepest.values()), deepest


# --- ddmlp.single_outlier_neuron ---------------------------------------------------------
# Evidence behind the quick-tier xfail (docs/quick-settings.md has every run): at the quick setting
# the largest neuron sits in layer 1 with a runner-up close behind (r 7.0 / 6.1 for MLP7q at 150
# epochs; 13.0 / 10.7 at lr 3e-3), and the 0%-noise control grows the same. A lone outlier took
# 300-600 epochs (the three models at 300 epochs: about 9.5 min on both cores, twice the tier's
# budget), appeared in the control as often as in the noisy replica, and then broke the layer-wise
# separation. The paper needs 1e5-1e6 epochs; the medium and full tiers check it at its setting.
OUTLIER_XFAIL = {
    "quick": "no single outlier neuron within the quick budget: the largest layer-1 neurons grow together "
             "(r 7.0, runner-up 6.1 at 150 epochs); a lone one needed 300-600 epochs (about 9.5 min "
             "for the tier) and grew in the 0%-noise control too; see docs/quick-settings.md",
}


def outlier(run) -> dict:
    """Per layer: r of the final-epoch largest neuron (Eq. 5) over training, and the runner-up."""
    layers = {}
    for layer in run.layer.values:
        mag = run.magnitude.sel(layer=layer).dropna("neuron", how="all").values
        neuron, ratio = tracked_outlier_ratio(mag)
        layers[int(layer)] = dict(neuron=neuron, r_end=float(ratio[-1]), r_first=float(ratio[0]),
                                  runner_up=runner_up_ratio(mag[-1]))
    holding = [l for l, v in layers.items()
               if v["r_end"] > 10 and v["runner_up"] < v["r_end"] / 2 and v["r_end"] >= 2 * v["r_first"]]
    best = max(layers, key=lambda l: layers[l]["r_end"])
    return dict(layers=layers, best_layer=best, holding_layers=holding, holds=bool(holding))


@pytest.mark.claim(OUTLIER)
@pytest.mark.parametrize("case", cases(MODELS, xfail=OUTLIER_XFAIL))
def test_single_outlier_neuron(case: Case, paper_results, record_statistic):
    run = replica(paper_results(PAPER, case.tier), case.model, "noisy")
    if case.control:  # the same network at initialization
        run = run.isel(epoch=[0])
    stat = outlier(run)
    best = stat["layers"][stat["best_layer"]]
    record_statistic(f"largest r {best['r_end']:.1f} in layer {stat['best_layer']} (neuron {best['neuron']}), "
                     f"runner-up {best['runner_up']:.1f}, r at start {best['r_first']:.1f}", **stat)
    assert stat["holds"] != case.control, stat

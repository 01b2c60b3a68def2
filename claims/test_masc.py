"""Claims of the MASC paper (papers/masc-decoding-generalization.txt).

Each statistic is recomputed from the stored per-layer MASC accuracies (reproduce/figures/masc.py,
`degree_summary`): the best hidden layer is chosen on the fixed 20% split of the test set and
scored on the other 80%, replicas of a degree are averaged. Criteria are in data/claims/masc.json.
The input layer's MASC is reported beside the statistic as the baseline it is, never counted.
"""

from __future__ import annotations

import pytest

from claims.conftest import Case, cases
from reproduce.figures.masc import degree_summary, masc_by_layer, masc_table1, run_of
from reproduce.report import Claim

PAPER = "masc"
MEDIUM = ["mlp-mnist", "mlp-cifar10", "cnn-mnist", "cnn-fashion_mnist", "cnn-cifar10"]
MODELS = {"quick": ["mlp-fashion_mnist"], "medium": MEDIUM, "full": [*MEDIUM, "alexnet-cifar100"]}
MEMORIZED = (0.2, 0.4, 0.6, 0.8)

BEATS = Claim.load("masc.beats_model", figure=masc_by_layer, table=masc_table1)
TRUE_BETTER = Claim.load("masc.true_label_subspaces_better")
RELABEL = Claim.load("masc.relabel_retraining_improves")


def _summary(paper_results, case: Case) -> dict[float, dict]:
    return degree_summary(run_of(paper_results(PAPER, case.tier), case.model))


def _fmt(values: dict) -> str:
    return ", ".join(f"{p:.0%} {v:+.3f}" for p, v in values.items())


# --- masc.beats_model ------------------------------------------------------------------------

def beats_model(summary: dict[float, dict], degrees: tuple[float, ...]) -> dict:
    """Gain of best-hidden-layer MASC over the model, in points and relative, per degree."""
    gain = {p: summary[p]["gain"] for p in degrees}
    relative = {p: summary[p]["relative_gain"] for p in degrees}
    rel = [relative[p] for p in degrees]
    holds = all(g >= 0.02 for g in gain.values()) and all(a < b for a, b in zip(rel, rel[1:]))
    return dict(gain=gain, relative_gain=relative, model={p: summary[p]["model"] for p in degrees},
                masc={p: summary[p]["masc"] for p in degrees}, input={p: summary[p]["input"] for p in degrees},
                layers={p: summary[p]["layers"] for p in degrees}, holds=bool(holds))


@pytest.mark.claim(BEATS)
@pytest.mark.parametrize("case", cases(MODELS))
def test_beats_model(case: Case, paper_results, record_statistic):
    degrees = (1.0,) if case.control else MEMORIZED
    stat = beats_model(_summary(paper_results, case), degrees)
    record_statistic(f"gain (points) {_fmt(stat['gain'])}; relative {_fmt(stat['relative_gain'])}; "
                     f"model {_fmt(stat['model'])}; input-layer MASC {_fmt(stat['input'])}", **stat)
    assert stat["holds"] != case.control, stat


# --- masc.true_label_subspaces_better --------------------------------------------------------

def true_better(summary: dict[float, dict], degrees: tuple[float, ...]) -> dict:
    margin = {p: summary[p]["masc_true"] - summary[p]["masc"] for p in degrees}
    return dict(margin=margin, true={p: summary[p]["masc_true"] for p in degrees},
                corrupted={p: summary[p]["masc"] for p in degrees},
                holds=bool(all(m >= 0.01 for m in margin.values())))


@pytest.mark.claim(TRUE_BETTER)
@pytest.mark.parametrize("case", cases(MODELS))
def test_true_label_subspaces_better(case: Case, paper_results, record_statistic):
    degrees = (0.0,) if case.control else MEMORIZED
    stat = true_better(_summary(paper_results, case), degrees)
    record_statistic(f"true minus corrupted subspaces {_fmt(stat['margin'])}; true {_fmt(stat['true'])}", **stat)
    assert stat["holds"] != case.control, stat


# --- masc.relabel_retraining_improves --------------------------------------------------------

def relabel_improves(summary: dict[float, dict], degrees: tuple[float, ...]) -> dict:
    if any("retrained" not in summary[p] for p in degrees):
        pytest.fail("these results have no relabel-retraining (run.retrain was None)")
    change = {p: summary[p]["retrained"] - summary[p]["model"] for p in degrees}
    return dict(change=change, before={p: summary[p]["model"] for p in degrees},
                after={p: summary[p]["retrained"] for p in degrees},
                holds=bool(all(c >= 0.02 for c in change.values())))


# Evidence behind the quick-tier xfail (docs/masc.md): at the quick setting (three seeds averaged,
# base seed 0) retraining on MASC's relabeling raised test accuracy by +7.4, +9.9 and +10.9 points at
# 40/60/80%, but by +1.1 at 20%, below the 2-point criterion; with one seed it was +0.2 at 20%, and
# 100 epochs on 1000 samples gave +0.0/+0.3/+1.9/+1.6/+1.8 points at 0-80%. At base seed 1 the 20%
# gain was +5.2 (the strict xfail then reports an unexpected pass): the margin at 20% is seed-bound.
RELABEL_XFAIL = {
    "quick": "retraining gains +7.4/+9.9/+10.9 points at 40/60/80% but only +1.1 at 20% (three seeds, base "
             "seed 0): the 2-point margin fails at 20% on the quick subset; see docs/masc.md",
}


@pytest.mark.claim(RELABEL)
@pytest.mark.parametrize("case", cases(MODELS, xfail=RELABEL_XFAIL))
def test_relabel_retraining_improves(case: Case, paper_results, record_statistic):
    degrees = (1.0,) if case.control else MEMORIZED
    stat = relabel_improves(_summary(paper_results, case), degrees)
    record_statistic(f"test accuracy after minus before {_fmt(stat['change'])}; before {_fmt(stat['before'])}", **stat)
    assert stat["holds"] != case.control, stat

"""Claims of the MASC paper (papers/masc-decoding-generalization.txt).

Each statistic is recomputed per seed from the stored per-layer MASC accuracies
(reproduce/figures/masc.py, `degree_summary`): the best hidden layer is chosen per replica on the
fixed 20% split of the test set and scored on the other 80%; seed k of one degree pairs with seed k
of the next (same initialization seed). Criteria and rules are in data/claims/masc.json; every
condition is judged over the seeds by the `judge` fixture. Accuracies on the eval split move in
steps of 1/n_eval, so their margins carry that quantum. The input layer's MASC is reported beside
the statistic as the baseline it is, never counted.
"""

from __future__ import annotations

import numpy as np
import pytest

from claims.conftest import Case, cases
from reproduce.figures.masc import (degree_summary, eval_size, masc_by_layer, masc_retraining, masc_table1,
                                   masc_true_vs_corrupted, run_of)
from reproduce.report import Claim
from reproduce.verdict import Condition

PAPER = "masc"
MEDIUM = ["cnn-fashion_mnist", "mlp-fashion_mnist"]
FULL = ["mlp-mnist", "mlp-cifar10", "cnn-mnist", "cnn-fashion_mnist", "cnn-cifar10", "alexnet-cifar100"]
MODELS = {"quick": ["mlp-fashion_mnist"], "medium": MEDIUM, "full": FULL}
MEMORIZED = (0.2, 0.4, 0.6, 0.8)

BEATS = Claim.load("masc.beats_model", figure=masc_by_layer, table=masc_table1)
TRUE_BETTER = Claim.load("masc.true_label_subspaces_better", figure=masc_true_vs_corrupted)
RELABEL = Claim.load("masc.relabel_retraining_improves", figure=masc_retraining)


def _run(paper_results, case: Case):
    return run_of(paper_results(PAPER, case.tier), case.model)


def _points(values) -> str:
    return "/".join(f"{100 * v:+.1f}" for v in values)


def _percent(values) -> str:
    return "/".join(f"{100 * v:.1f}%" for v in values)


def _degrees(degrees) -> str:
    return "/".join(f"{100 * p:.0f}" for p in degrees) + "%"


# --- masc.beats_model ------------------------------------------------------------------------

def beats_model(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """MASC minus model (points) at each degree, and each step up of the relative gain (Table 1), per seed."""
    seeds = {p: summary[p]["seeds"] for p in degrees}
    conditions = [Condition(f"MASC minus model at {p:.0%}", seeds[p]["gain"], ">=", 0.02, quantum=quantum, unit="points")
                  for p in degrees]
    for a, b in zip(degrees, degrees[1:]):
        n = min(len(seeds[a]["relative_gain"]), len(seeds[b]["relative_gain"]))  # seed k pairs with seed k
        step = seeds[b]["relative_gain"][:n] - seeds[a]["relative_gain"][:n]
        conditions.append(Condition(f"relative gain {b:.0%} minus {a:.0%}", step, ">", 0))
    return conditions


# At the quick scale (150 training samples per class) the corrupted-label subspaces at 80% noise
# are too noisy for the relative gain to keep rising from 60% to 80%; see docs/masc.md.
BEATS_XFAIL = {"quick": "the relative gain does not rise from 60% to 80% on the quick subset: with few samples per "
                        "class the 80%-noise subspaces are too noisy; see docs/masc.md"}


@pytest.mark.claim(BEATS)
@pytest.mark.parametrize("case", cases(MODELS, xfail=BEATS_XFAIL))
def test_beats_model(case: Case, paper_results, judge):
    run = _run(paper_results, case)
    summary = degree_summary(run)
    degrees = (1.0,) if case.control else MEMORIZED
    rows = [summary[p] for p in degrees]
    judge(*beats_model(summary, degrees, 1 / eval_size(run)),
          summary=f"at {_degrees(degrees)}: MASC minus model {_points(r['gain'] for r in rows)} points, relative gain "
                  f"{_percent(r['relative_gain'] for r in rows)} (seed means); input-layer MASC "
                  f"{_percent(r['input'] for r in rows)}, model {_percent(r['model'] for r in rows)}",
          layers={f"{p:.0%}": summary[p]["layers"] for p in degrees})


# --- masc.true_label_subspaces_better --------------------------------------------------------

def true_better(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """True-label minus corrupted-label MASC (best hidden layer each) at each degree, per seed."""
    return [Condition(f"true minus corrupted subspaces at {p:.0%}",
                      summary[p]["seeds"]["masc_true"] - summary[p]["seeds"]["masc"], ">=", 0.01, quantum=quantum,
                      unit="points")
            for p in degrees]


def other_network(summary: dict[float, dict], quantum: float) -> list[Condition]:
    """The control at p = 0: each seed's true-label MASC against the (identical-label) MASC of the
    next seed's network. No label knowledge separates them, only another initialization and data
    order, so a 1-point margin could appear by chance but must not show over the seeds."""
    seeds = summary[0.0]["seeds"]
    return [Condition("true minus another network's subspaces at 0%",
                      seeds["masc_true"] - np.roll(seeds["masc"], -1), ">=", 0.01, quantum=quantum,
                      unit="points")]


@pytest.mark.claim(TRUE_BETTER)
@pytest.mark.parametrize("case", cases(MODELS))
def test_true_label_subspaces_better(case: Case, paper_results, judge):
    run = _run(paper_results, case)
    summary = degree_summary(run)
    quantum = 1 / eval_size(run)
    if case.control:
        seeds = summary[0.0]["seeds"]
        judge(*other_network(summary, quantum),
              summary=f"at 0%: true-label MASC {_percent([summary[0.0]['masc_true']])}, another seed's network "
                      f"{_points([float(np.mean(seeds['masc_true'] - np.roll(seeds['masc'], -1)))])} points below it")
        return
    rows = [summary[p] for p in MEMORIZED]
    judge(*true_better(summary, MEMORIZED, quantum),
          summary=f"at {_degrees(MEMORIZED)}: true minus corrupted subspaces {_points(r['masc_true'] - r['masc'] for r in rows)} "
                  f"points; true-label MASC {_percent(r['masc_true'] for r in rows)}")


# --- masc.relabel_retraining_improves --------------------------------------------------------

def relabel_improves(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """Model test accuracy after relabel-retraining minus before, at each degree, per seed."""
    if any("retrained" not in summary[p]["seeds"] for p in degrees):
        pytest.fail("these results have no relabel-retraining (run.retrain was None)")
    return [Condition(f"after minus before retraining at {p:.0%}",
                      summary[p]["seeds"]["retrained"] - summary[p]["seeds"]["model"], ">=", 0.02, quantum=quantum,
                      unit="points")
            for p in degrees]


# At the quick scale the gain at 20% (and at some seeds at 40-80%) lies within the seed-to-seed
# spread of retraining with early stopping; the verdict is inconclusive, not a reproduction.
RELABEL_XFAIL = {"quick": "the retraining gain is within the seed-to-seed spread at some degrees on the quick subset "
                          "(inconclusive over the seeds); see docs/masc.md"}


@pytest.mark.claim(RELABEL)
@pytest.mark.parametrize("case", cases(MODELS, xfail=RELABEL_XFAIL))
def test_relabel_retraining_improves(case: Case, paper_results, judge):
    run = _run(paper_results, case)
    summary = degree_summary(run)
    degrees = (1.0,) if case.control else MEMORIZED
    rows = [summary[p] for p in degrees]
    judge(*relabel_improves(summary, degrees, 1 / eval_size(run)),
          summary=f"at {_degrees(degrees)}: test accuracy after minus before retraining "
                  f"{_points(r['retrained'] - r['model'] for r in rows)} points; before {_percent(r['model'] for r in rows)}")

"""Claims of the MASC paper ("Decoding Generalization from Memorization in Deep Neural Networks" (anonymous, under review)).

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
from reproduce.verdict import Condition, Difference

PAPER = "masc"
MEDIUM = ["cnn-fashion_mnist", "mlp-fashion_mnist"]
FULL = ["mlp-mnist", "mlp-cifar10", "cnn-mnist", "cnn-fashion_mnist", "cnn-cifar10", "alexnet-cifar100"]
MODELS = {"quick": ["mlp-fashion_mnist"], "small": ["mlp-fashion_mnist"], "medium": MEDIUM, "full": FULL}
RETRAINED = {tier: models for tier, models in MODELS.items() if tier != "quick"}  # quick does not retrain
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

def beats_model(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list:
    """MASC minus model (points) at each degree, per seed, and each step up of the relative gain
    (Table 1) as a difference of the two degrees' means over all their seeds (Welch interval)."""
    seeds = {p: summary[p]["seeds"] for p in degrees}
    conditions = [Condition(f"MASC minus model at {p:.0%}", seeds[p]["gain"], ">=", 0.02, quantum=quantum, unit="points")
                  for p in degrees]
    conditions += [Difference(f"relative gain {b:.0%} minus {a:.0%}", seeds[a]["relative_gain"], seeds[b]["relative_gain"],
                              ">", 0) for a, b in zip(degrees, degrees[1:])]
    return conditions


def require_memorized(run, summary: dict[float, dict], degrees: tuple[float, ...]) -> None:
    """Where the tier trains to memorization (a stop rule), the claims are about memorizing networks:
    a network up to 80% below the target is an error of the setting, never a verdict."""
    target = float(run.attrs.get("memorize_target", float("nan")))
    if np.isnan(target):
        return
    short = [f"{p:.0%} seed {k}: {100 * v:.1f}%" for p in degrees if p <= 0.8
             for k, v in enumerate(summary[p]["seeds"]["train_fit"]) if v < target]
    if short:
        pytest.fail(f"networks below {target:.0%} training accuracy on their corrupted labels: " + ", ".join(short))


def _fit(rows) -> str:
    """The training accuracy on the corrupted labels per degree (min over seeds), shown beside every gain."""
    return "/".join(f"{100 * r['seeds']['train_fit'].min():.1f}%" for r in rows)


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
    require_memorized(run, summary, degrees)
    rows = [summary[p] for p in degrees]
    judge(*beats_model(summary, degrees, 1 / eval_size(run)),
          summary=f"at {_degrees(degrees)}: MASC minus model {_points(r['gain'] for r in rows)} points, relative gain "
                  f"{_percent(r['relative_gain'] for r in rows)} (seed means), model train accuracy on its corrupted "
                  f"labels {_fit(rows)} (lowest seed); input-layer MASC "
                  f"{_percent(r['input'] for r in rows)}, model {_percent(r['model'] for r in rows)}",
          layers={f"{p:.0%}": summary[p]["layers"] for p in degrees})


# --- masc.true_label_subspaces_better --------------------------------------------------------

def true_better(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """True-label minus corrupted-label MASC (best hidden layer each) at each degree, per seed."""
    return [Condition(f"true minus corrupted subspaces at {p:.0%}",
                      summary[p]["seeds"]["masc_true"] - summary[p]["seeds"]["masc"], ">=", 0.01, quantum=quantum,
                      unit="points")
            for p in degrees]


def independent_corruption(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """The control: subspaces of the true labels corrupted again, independently, at the same degree,
    minus the corrupted-label subspaces the model trained on. The same form as the claim; only the
    labels' information differs (none beyond the trained labels'), so the 1-point margin must fail."""
    return [Condition(f"independent corruption minus corrupted subspaces at {p:.0%}",
                      summary[p]["seeds"]["masc_independent"] - summary[p]["seeds"]["masc"], ">=", 0.01, quantum=quantum,
                      unit="points")
            for p in degrees]


@pytest.mark.claim(TRUE_BETTER)
@pytest.mark.parametrize("case", cases(MODELS))
def test_true_label_subspaces_better(case: Case, paper_results, judge):
    run = _run(paper_results, case)
    summary = degree_summary(run)
    quantum = 1 / eval_size(run)
    rows = [summary[p] for p in MEMORIZED]
    if case.control:
        judge(*independent_corruption(summary, MEMORIZED, quantum),
              summary=f"at {_degrees(MEMORIZED)}: independent-corruption minus corrupted subspaces "
                      f"{_points(r['masc_independent'] - r['masc'] for r in rows)} points; independent-corruption MASC "
                      f"{_percent(r['masc_independent'] for r in rows)}")
        return
    judge(*true_better(summary, MEMORIZED, quantum),
          summary=f"at {_degrees(MEMORIZED)}: true minus corrupted subspaces {_points(r['masc_true'] - r['masc'] for r in rows)} "
                  f"points; true-label MASC {_percent(r['masc_true'] for r in rows)}")


# --- masc.relabel_retraining_improves --------------------------------------------------------

def relabel_improves(summary: dict[float, dict], degrees: tuple[float, ...], quantum: float) -> list[Condition]:
    """Test accuracy after retraining on MASC's relabeling minus after retraining on the model's own
    training labels, both under the same early stopping on the select split, at each degree, per seed."""
    if any("retrained_own" not in summary[p]["seeds"] for p in degrees):
        pytest.fail("these results have no relabel-retraining with its own-label baseline (run.retrain was None, "
                    "or they were made before the baseline existed)")
    return [Condition(f"MASC relabels minus own labels, retrained, at {p:.0%}",
                      summary[p]["seeds"]["retrained"] - summary[p]["seeds"]["retrained_own"], ">=", 0.02,
                      quantum=quantum, unit="points")
            for p in degrees]


@pytest.mark.claim(RELABEL)
@pytest.mark.parametrize("case", cases(RETRAINED))
def test_relabel_retraining_improves(case: Case, paper_results, judge):
    run = _run(paper_results, case)
    summary = degree_summary(run)
    degrees = (1.0,) if case.control else MEMORIZED
    rows = [summary[p] for p in degrees]
    judge(*relabel_improves(summary, degrees, 1 / eval_size(run)),
          summary=f"at {_degrees(degrees)}: test accuracy retrained on MASC's labels minus on its own labels "
                  f"{_points(r['retrained'] - r['retrained_own'] for r in rows)} points; before retraining "
                  f"{_percent(r['model'] for r in rows)}, after on MASC's {_percent(r['retrained'] for r in rows)}, "
                  f"after on its own {_percent(r['retrained_own'] for r in rows)}")

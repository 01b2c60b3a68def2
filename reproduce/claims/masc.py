"""Claims of the MASC paper ("Decoding Generalization from Memorization in Deep Neural Networks").

Each statistic is recomputed per seed from the stored per-layer MASC accuracies
(reproduce/figures/masc.py, `degree_summary`): the best hidden layer is chosen per replica on the
fixed 20% split of the test set and scored on the other 80%; seed k of one degree pairs with seed k
of the next (same initialization seed). Accuracies on the eval split move in steps of 1/n_eval, so
their margins carry that quantum. Each corruption degree is an instance: a control is judged
degree by degree. The input layer's MASC is reported beside the statistic as the baseline it is,
never counted.
"""

from __future__ import annotations

import numpy as np

from reproduce.figures.masc import (degree_summary, eval_size, masc_by_layer, masc_per_degree, masc_retraining,
                                   masc_table1, masc_true_vs_corrupted, run_of)
from reproduce.judge import Case, Claim, Evidence, cases
from reproduce.verdict import Condition, Difference, StatisticError

MEDIUM = ["cnn-fashion_mnist", "mlp-fashion_mnist"]
FULL = ["mlp-mnist", "mlp-cifar10", "cnn-mnist", "cnn-fashion_mnist", "cnn-cifar10", "alexnet-cifar100"]
MODELS = {"quick": ["mlp-fashion_mnist"], "small": ["mlp-fashion_mnist"], "medium": MEDIUM, "full": FULL}
# The quick networks do not memorize their corrupted labels (40 epochs: 45% train accuracy at 80%), and
# MASC's claims about the memorized model are judged where the networks memorize: beats_model's
# relative-gain trend read not reproduced at base seeds 0, 1, 3, 4 and inconclusive at 2 on them
# (docs/stability.md); the relabel-retraining needs memorized networks too (quick does not retrain).
MEMORIZING = {tier: models for tier, models in MODELS.items() if tier != "quick"}
MEMORIZED = (0.2, 0.4, 0.6, 0.8)


def _points(values) -> str:
    return "/".join(f"{100 * v:+.1f}" for v in values)


def _percent(values) -> str:
    return "/".join(f"{100 * v:.1f}%" for v in values)


def _degrees(degrees) -> str:
    return "/".join(f"{100 * p:.0f}" for p in degrees) + "%"


def _at(p: float) -> str:
    return f"{p:.0%}"


def require_memorized(run, summary: dict[float, dict], degrees: tuple[float, ...]) -> None:
    """Where the tier trains to memorization (a stop rule), the claims are about memorizing networks:
    a network up to 80% below the target is an error of the setting, never a verdict."""
    target = float(run.attrs.get("memorize_target", float("nan")))
    if np.isnan(target):
        return
    short = [f"{p:.0%} seed {k}: {100 * v:.1f}%" for p in degrees if p <= 0.8
             for k, v in enumerate(summary[p]["seeds"]["train_fit"]) if v < target]
    if short:
        raise StatisticError(f"networks below {target:.0%} training accuracy on their corrupted labels: " + ", ".join(short))


def _fit(rows) -> str:
    """The training accuracy on the corrupted labels per degree (min over seeds), shown beside every gain."""
    return "/".join(f"{100 * r['seeds']['train_fit'].min():.1f}%" for r in rows)


# --- masc.beats_model ------------------------------------------------------------------------

def beats_model(ds, case: Case) -> Evidence:
    """MASC minus model (points) at each degree, per seed, and each step up of the relative gain
    (Table 1) as a difference of the two degrees' means over all their seeds (Welch interval).
    Control "p100": p = 1.0, where the labels carry no information."""
    run = run_of(ds, case.model)
    summary = degree_summary(run)
    degrees = (1.0,) if case.control else MEMORIZED
    require_memorized(run, summary, degrees)
    quantum = 1 / eval_size(run)
    seeds = {p: summary[p]["seeds"] for p in degrees}
    conditions = [Condition(f"MASC minus model at {_at(p)}", seeds[p]["gain"], ">=", 0.02, quantum=quantum, unit="points",
                            instance=_at(p)) for p in degrees]
    conditions += [Difference(f"relative gain {_at(b)} minus {_at(a)}", seeds[a]["relative_gain"], seeds[b]["relative_gain"],
                              ">", 0, unit="points", instance=f"{_at(a)} to {_at(b)}") for a, b in zip(degrees, degrees[1:])]
    rows = [summary[p] for p in degrees]
    return Evidence(conditions,
                    f"at {_degrees(degrees)}: MASC minus model {_points(r['gain'] for r in rows)} points, relative gain "
                    f"{_percent(r['relative_gain'] for r in rows)} (seed means), model train accuracy on its corrupted "
                    f"labels {_fit(rows)} (lowest seed); input-layer MASC {_percent(r['input'] for r in rows)}, model "
                    f"{_percent(r['model'] for r in rows)}", dict(layers={_at(p): summary[p]["layers"] for p in degrees}))


# --- masc.true_label_subspaces_better --------------------------------------------------------

# Where the true-label claim is judged at p = 1.0 too: the paper's strongest statement of it (Sec. 5:
# true-label MASC at 95% test accuracy in MLP-MNIST's last layer while the model, trained on labels with
# no information, is at chance). Only on networks trained to memorization (the quick networks are not).
TRUE_LABEL_AT_100 = ("small",)  # issue 31: measured at small; medium and full not yet


def true_label_degrees(tier: str) -> tuple[float, ...]:
    """The degrees the true-label claim and its placebo are judged at, per tier."""
    return MEMORIZED + (1.0,) if tier in TRUE_LABEL_AT_100 else MEMORIZED


def true_label_subspaces(ds, case: Case) -> Evidence:
    """Main: true-label minus independent-corruption subspaces at each degree, per seed: the information
    in the true labels beyond re-fitting any other labels of the same degree; beside it, reported and
    not judged, the paper's own comparison, true minus the corrupted labels the model trained on. Where
    the tier memorizes, p = 1.0 is a degree of its own: there the trained and the independent labels are
    both uniform (no information), and the paper's statement is that true-label MASC still generalizes
    while the model is at chance (its distance from the model is reported).
    Control "placebo": one independent corruption minus another of the same degree, which differ by
    chance alone, so the same margin must clearly fail at every degree."""
    run = run_of(ds, case.model)
    summary = degree_summary(run)
    degrees = true_label_degrees(case.tier)
    require_memorized(run, summary, degrees)
    quantum = 1 / eval_size(run)
    rows = [summary[p] for p in degrees]
    if case.control:
        conditions = [Condition(f"second minus first independent corruption at {_at(p)}",
                                summary[p]["seeds"]["masc_independent2"] - summary[p]["seeds"]["masc_independent"],
                                ">=", 0.01, quantum=quantum, unit="points", instance=_at(p)) for p in degrees]
        return Evidence(conditions, f"at {_degrees(degrees)}: second minus first independent corruption "
                                    f"{_points(r['masc_independent2'] - r['masc_independent'] for r in rows)} points")
    conditions = []
    for p in degrees:
        s = summary[p]["seeds"]
        conditions += [Condition(f"true minus independent-corruption subspaces at {_at(p)}",
                                 s["masc_true"] - s["masc_independent"], ">=", 0.01, quantum=quantum, unit="points",
                                 instance=_at(p)),
                       Condition(f"true minus corrupted subspaces at {_at(p)} (the paper's comparison)",
                                 s["masc_true"] - s["masc"], ">=", 0.01, quantum=quantum, unit="points", instance=_at(p),
                                 reported=True)]
    if 1.0 in degrees:
        s = summary[1.0]["seeds"]
        conditions.append(Condition("true-label MASC minus the model at 100% (the paper's Sec. 5 statement)",
                                    s["masc_true"] - s["model"], ">=", 0.01, quantum=quantum, unit="points",
                                    instance=_at(1.0), reported=True))
    return Evidence(conditions,
                    f"at {_degrees(degrees)}: true minus independent-corruption subspaces "
                    f"{_points(r['masc_true'] - r['masc_independent'] for r in rows)} points, true minus corrupted "
                    f"{_points(r['masc_true'] - r['masc'] for r in rows)} points; true-label MASC "
                    f"{_percent(r['masc_true'] for r in rows)}, model {_percent(r['model'] for r in rows)}, model train "
                    f"accuracy on its corrupted labels {_fit(rows)} (lowest seed)")


# --- masc.relabel_retraining_improves --------------------------------------------------------

def relabel_improves(ds, case: Case) -> Evidence:
    """Test accuracy after retraining on MASC's relabeling minus after retraining on the model's own
    training labels, both under the same early stopping on the select split, at each degree, per
    seed. Control "p100": p = 1.0, where MASC's relabeling carries no information."""
    run = run_of(ds, case.model)
    summary = degree_summary(run)
    degrees = (1.0,) if case.control else MEMORIZED
    require_memorized(run, summary, degrees)
    if any("retrained_own" not in summary[p]["seeds"] for p in degrees):
        raise StatisticError("these results have no relabel-retraining with its own-label baseline (run.retrain was "
                             "None, or they were made before the baseline existed)")
    quantum = 1 / eval_size(run)
    conditions = [Condition(f"MASC relabels minus own labels, retrained, at {_at(p)}",
                            summary[p]["seeds"]["retrained"] - summary[p]["seeds"]["retrained_own"], ">=", 0.02,
                            quantum=quantum, unit="points", instance=_at(p)) for p in degrees]
    rows = [summary[p] for p in degrees]
    return Evidence(conditions,
                    f"at {_degrees(degrees)}: test accuracy retrained on MASC's labels minus on its own labels "
                    f"{_points(r['retrained'] - r['retrained_own'] for r in rows)} points; before retraining "
                    f"{_percent(r['model'] for r in rows)}, after on MASC's {_percent(r['retrained'] for r in rows)}, "
                    f"after on its own {_percent(r['retrained_own'] for r in rows)}")


# --- the declarations --------------------------------------------------------------------
PAPER_TABLE = ("the paper's Table 1 and Sec. 5-6 report it for the MLP and CNN rows at this scale; no run of this tier "
               "is kept")

CLAIMS = [
    Claim("masc.beats_model", beats_model, cases(MEMORIZING, "p100"), figure=masc_by_layer, table=masc_table1,
          predicted={"medium": ("reproduced", PAPER_TABLE),
                     "full": ("not_reproduced", "the paper's own AlexNet row has the relative gain falling from 60% to "
                                                "80% (Table 1), and the criterion asks every model for a rise")}),
    Claim("masc.true_label_subspaces_better", true_label_subspaces, cases(MODELS, "placebo"), figure=masc_true_vs_corrupted,
          table=masc_per_degree,
          predicted={"medium": ("reproduced", PAPER_TABLE), "full": ("reproduced", PAPER_TABLE)}),
    Claim("masc.relabel_retraining_improves", relabel_improves, cases(MEMORIZING, "p100"), figure=masc_retraining,
          table=masc_per_degree,
          predicted={"medium": ("reproduced", PAPER_TABLE),
                     "full": ("not_reproduced", "the paper finds the gain marginal or negative for MLP-CIFAR-10 and "
                                                "AlexNet (Sec. 6), and the criterion asks every model for 2 points")}),
]

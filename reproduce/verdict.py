"""Verdicts over seeds: a claim's criterion as inequalities on per-seed statistics, each judged
by a 95% interval.

Why: floating-point sums differ between processors, thread counts and GPUs, and training is
chaotic, so another machine acts like another seed. A verdict read off one seed near its
threshold flips from machine to machine; a verdict read off an interval over several seeds
does not, unless the interval itself straddles the threshold, and then it says so.

A criterion is a list of `Condition`s (e.g. "noisy/clean half-way epoch >= 3"), each with one
value per seed. A condition's verdict under a rule:
- `t`: the seed mean with a two-sided 95% t-interval (few seeds make a bootstrap unreliable);
- `binomial`: the share of seeds where the inequality holds, with exact Clopper-Pearson one-sided
  95% bounds (a two-sided 90% interval), judged against one half: "holds in most seeds".
  At n = 5 only 5 of 5 clears it (lower bound 0.55) and only 0 of 5 clears the failing side.
`reproduced` when the interval clears the threshold, `not_reproduced` when it clears it on the
failing side, `inconclusive` when it straddles. A conjunction of conditions is reproduced when
every condition is, not reproduced when any is, inconclusive otherwise.

Quantized statistics (an accuracy on n samples moves in steps of 1/n; Spearman's rho over m
points in steps of 12 / (m (m^2 - 1))) are compared with a tolerance of half a quantum: values
within quantum/2 of the threshold count as equal to it, so `>=` admits threshold - quantum/2
and `>` asks for more than threshold + quantum/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
RULES = {
    "t": "seed mean with a two-sided 95% t-interval",
    "binomial": "share of seeds where it holds, exact Clopper-Pearson one-sided 95% bounds, against 1/2",
}
OPS = (">=", ">", "<=", "<")


class StatisticError(ValueError):
    """The statistic itself is broken (NaN, no seeds): an error of the claim test, never a verdict."""


def spearman_quantum(points: int) -> float:
    """Step of Spearman's rho over `points` distinct ranks: 12 / (m (m^2 - 1)) for m points (0.2 at m = 4)."""
    return 12.0 / (points * (points**2 - 1))


@dataclass(frozen=True)
class Condition:
    """One inequality of a criterion, `value op threshold`, with one value per seed.

    `quantum` is the step of a quantized statistic (1/n for an accuracy on n samples); the
    comparison tolerates half of it. Keep names short and in the paper's words: they are the
    rows of the report.
    """

    name: str
    values: Sequence[float]
    op: str
    threshold: float
    quantum: float = 0.0
    unit: str = ""  # "accuracy" (a fraction, shown in percent) or "points" (a difference of accuracies); else plain

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise StatisticError(f"condition {self.name!r}: unknown comparison {self.op!r}, use one of {OPS}")
        if len(self.values) == 0:
            raise StatisticError(f"condition {self.name!r} has no seeds")
        bad = [i for i, v in enumerate(self.values) if math.isnan(float(v))]
        if bad:
            raise StatisticError(f"condition {self.name!r}: the statistic is NaN for seed(s) {bad}")

    @property
    def tolerance(self) -> float:
        return self.quantum / 2

    def bound(self) -> float:
        """The threshold with the tolerance applied: what a value is compared with."""
        return self.threshold - self.tolerance if self.op in (">=", "<") else self.threshold + self.tolerance

    def holds(self, value: float) -> bool:
        b = self.bound()
        return {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[self.op]

    def judge(self, rule: str = "t") -> dict:
        """n, per-seed values, aggregate, 95% interval and verdict of this condition under `rule`."""
        values = [float(v) for v in self.values]
        if rule == "t":
            aggregate, (lo, hi) = float(np.mean(values)), t_interval(values)
            clears, fails = self.holds(lo) and self.holds(hi), not self.holds(lo) and not self.holds(hi)
        elif rule == "binomial":
            k = sum(self.holds(v) for v in values)
            aggregate, (lo, hi) = k / len(values), clopper_pearson(k, len(values))
            clears, fails = lo > 0.5, hi < 0.5
        else:
            raise StatisticError(f"unknown rule {rule!r}: use one of {', '.join(RULES)}")
        verdict = "reproduced" if clears else "not_reproduced" if fails else "inconclusive"
        return dict(name=self.name, op=self.op, threshold=float(self.threshold), tolerance=self.tolerance,
                    unit=self.unit, rule=rule, n=len(values), values=values, aggregate=aggregate, interval=[lo, hi], verdict=verdict)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean; one seed gives no interval (-inf, inf): nothing is decided on one seed."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return -math.inf, math.inf
    if np.isinf(x).any():  # e.g. "never crossed": the mean is that infinity, the interval unbounded on its side
        m = float(np.mean(x)) if not (np.isposinf(x).any() and np.isneginf(x).any()) else math.nan
        return (m, math.inf) if m == math.inf else (-math.inf, m) if m == -math.inf else (-math.inf, math.inf)
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0:
        return mean, mean
    lo, hi = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(lo), float(hi)


def clopper_pearson(k: int, n: int, one_sided: float = 0.95) -> tuple[float, float]:
    """Exact one-sided `one_sided` lower and upper bounds of a proportion k/n (a two-sided 90% interval)."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=2 * one_sided - 1, method="exact")
    return float(ci.low), float(ci.high)


def combine(verdicts: Sequence[str]) -> str:
    """A conjunction: reproduced when every part is, not reproduced when any part is, else inconclusive."""
    if not verdicts:
        raise StatisticError("a criterion with no conditions")
    if "not_reproduced" in verdicts:
        return "not_reproduced"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def judge(conditions: Sequence[Condition], rule: str = "t") -> tuple[str, list[dict]]:
    """The verdict of a criterion (all conditions) and each condition's judgement."""
    judged = [c.judge(rule) for c in conditions]
    return combine([j["verdict"] for j in judged]), judged


def claim_verdict(main: Sequence[str], controls: Sequence[str], expected: str = "reproduced") -> dict:
    """The headline of one claim at one tier from its cases' verdicts.

    `main` and `controls` hold each case's verdict (reproduced | not_reproduced | inconclusive |
    error | not_run). A control must fail the criterion clearly (`not_reproduced`). A claim whose
    main cases hold but whose control did not clearly fail is `inconclusive`: the criterion
    cannot tell the phenomenon from its absence. `expected` is the tier's expectation
    (`not_reproduced` where the main cases are strict expected failures); `as_expected` false is
    a regression.
    """
    ran = [v for v in main if v != "not_run"]
    if not ran:
        verdict = "not_run"
    elif "error" in ran:
        verdict = "error"
    else:
        verdict = combine(ran)
    ran_controls = [v for v in controls if v != "not_run"]
    if not controls:
        control = "none"
    elif not ran_controls:
        control = "not_run"
    elif "error" in ran_controls:
        control = "error"
    elif all(v == "not_reproduced" for v in ran_controls):
        control = "failed_as_expected"
    elif "reproduced" in ran_controls:
        control = "passed_unexpectedly"
    else:
        control = "inconclusive"
    note = ""
    if verdict == "reproduced" and control in ("passed_unexpectedly", "inconclusive"):
        verdict = "inconclusive"
        note = ("the control passed the criterion too: the criterion cannot tell the phenomenon from its absence"
                if control == "passed_unexpectedly" else
                "the control did not clearly fail the criterion: the criterion cannot tell the phenomenon from its absence")
    if expected == "not_reproduced" and verdict == "reproduced":
        note = "reproduced; the expected-failure mark is stale"
    main_ok = verdict == "reproduced" if expected == "reproduced" else verdict in ("not_reproduced", "inconclusive")
    # where the tier expects no reproduction, the control can show nothing either way: reported, not enforced
    control_ok = expected == "not_reproduced" or control in ("failed_as_expected", "none", "not_run")
    as_expected = verdict != "not_run" and main_ok and control_ok
    if verdict == "not_run":
        as_expected = True  # nothing judged, nothing regressed: the report says which command makes the results
    return dict(verdict=verdict, control=control, note=note, expected=expected, as_expected=bool(as_expected))


# --- a difference of two means (two independent samples of seeds) ---------------------------

def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Welch t-interval of mean(b) - mean(a) for two independent samples of unequal variance
    (Welch-Satterthwaite degrees of freedom); (-inf, inf) when either sample has fewer than two values."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return -math.inf, math.inf
    diff = float(y.mean() - x.mean())
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return diff - half, diff + half


@dataclass(frozen=True)
class Difference:
    """`mean(b) - mean(a) op threshold` for two independent sets of seeds (e.g. two corruption
    degrees with different seed counts), judged by the Welch interval: every seed of both sides
    counts, none is paired or dropped. Only the `t` rule applies (a share of seeds has no meaning
    for a difference of means). `quantum` as in `Condition`."""

    name: str
    a: Sequence[float]
    b: Sequence[float]
    op: str
    threshold: float
    quantum: float = 0.0
    unit: str = ""

    def __post_init__(self) -> None:
        for side, values in (("a", self.a), ("b", self.b)):
            if len(values) == 0:
                raise StatisticError(f"condition {self.name!r}: side {side} has no seeds")
            bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
            if bad:
                raise StatisticError(f"condition {self.name!r}: side {side} is not finite for seed(s) {bad}")
        Condition(self.name, [0.0], self.op, self.threshold, self.quantum, self.unit)  # validates op

    def judge(self, rule: str = "t") -> dict:
        if rule != "t":
            raise StatisticError(f"condition {self.name!r}: a difference of two means is judged by its Welch "
                                 f"interval (rule t), not {rule!r}")
        compare = Condition(self.name, [0.0], self.op, self.threshold, self.quantum, self.unit)
        a, b = [float(v) for v in self.a], [float(v) for v in self.b]
        aggregate, (lo, hi) = float(np.mean(b) - np.mean(a)), welch_interval(a, b)
        clears, fails = compare.holds(lo) and compare.holds(hi), not compare.holds(lo) and not compare.holds(hi)
        verdict = "reproduced" if clears else "not_reproduced" if fails else "inconclusive"
        return dict(name=self.name, op=self.op, threshold=float(self.threshold), tolerance=compare.tolerance,
                    unit=self.unit, rule="welch", n=len(a) + len(b), n_a=len(a), n_b=len(b), values=[*a, *b],
                    values_a=a, values_b=b, aggregate=aggregate, interval=[lo, hi], verdict=verdict)

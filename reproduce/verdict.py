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
failing side, `inconclusive` when it straddles; one seed gives no interval and is `inconclusive`.
A conjunction of conditions is reproduced when every condition is, not reproduced when any is,
inconclusive otherwise. A condition's own `rule` overrides the claim's.

So that one seed cannot decide a verdict:
- A censored statistic ("never happened", stored as +-inf) is refused under `t` (the mean of an
  infinity is that infinity, whatever the other seeds say): judge it under `binomial` (inf is a seed
  on one side like any other) or give it a finite, bounded form (the grid size in place of
  "never", counted on the failing side). `never` names the event in words for the report.
- A ratio (positive, multiplicative, heavy-tailed) takes `scale="log"`: the t-interval of the logs
  against the log threshold, the geometric mean as aggregate, the interval reported back as ratios.
- A bounded statistic (an accuracy in [0, 1], Spearman's rho in [-1, 1]) has its reported interval
  clipped to `bounds`. The verdict is read off the unclipped interval; where the threshold (with
  its tolerance) lies strictly inside the bounds the clipped interval reads the same verdict: a
  bound x that clipping moves lies beyond b on the side away from the threshold, so x and b are on
  the same side of it and every comparison gives the same answer.
- `left_out` says what the statistic left out of a seed's data (the report shows it); where leaving
  out changes the statistic's meaning the statistic raises StatisticError instead.

Quantized statistics (an accuracy on n samples moves in steps of 1/n; Spearman's rho over m
points in steps of 12 / (m (m^2 - 1))) are compared with a tolerance of half a quantum: values
within quantum/2 of the threshold count as equal to it, so `>=` admits threshold - quantum/2
and `>` asks for more than threshold + quantum/2.

No certainty without spread: a decisive verdict needs at least MIN_SEEDS seeds, and the standard
error of a t- or Welch interval has a floor at the statistic's resolution, so that seeds that all
agree give an interval of honest width, never [mean, mean]. The resolution is half a quantum for a
quantized statistic; a continuous one states its own (`resolution`), else RELATIVE_RESOLUTION of
the threshold's magnitude (at least RELATIVE_RESOLUTION itself; on the log scale, that fraction of
a ratio).

A condition belongs to an `instance` (a noise degree, a model): a control is judged instance by
instance (reproduce.judge), and a `reported` condition is judged and shown but not part of the
conjunction (the paper's own comparison beside a sharper criterion).
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
SCALES = ("linear", "log")
MIN_SEEDS = 3  # fewer seeds decide nothing: two agreeing seeds are no evidence of a spread
RELATIVE_RESOLUTION = 1e-3  # the standard error's floor for a continuous statistic that states none


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
    rows of the report. `rule` (None: the claim's), `scale`, `bounds`, `never` and `left_out`:
    see the module docstring.
    """

    name: str
    values: Sequence[float]
    op: str
    threshold: float
    quantum: float = 0.0
    unit: str = ""  # "accuracy" (a fraction, shown in percent) or "points" (a difference of accuracies); else plain
    rule: str | None = None  # overrides the claim's rule for this condition
    scale: str = "linear"  # "log" for a ratio
    bounds: tuple[float, float] = (-math.inf, math.inf)  # the range the statistic can take
    never: str = ""  # words for an infinite value, e.g. "no width fits"
    left_out: Sequence[str] = ()  # what the statistic left out of a seed's data, e.g. "seed 3: class 7 empty"
    instance: str = ""  # what the condition is judged on, e.g. "20%" (a noise degree): controls are judged per instance
    reported: bool = False  # judged and shown, not part of the verdict
    resolution: float | None = None  # the standard error's floor of a continuous statistic (see the module docstring)

    def __post_init__(self) -> None:
        where = f"condition {self.name!r}"
        if self.op not in OPS:
            raise StatisticError(f"{where}: unknown comparison {self.op!r}, use one of {OPS}")
        if self.rule is not None and self.rule not in RULES:
            raise StatisticError(f"{where}: unknown rule {self.rule!r}, use one of {', '.join(RULES)}")
        if self.scale not in SCALES:
            raise StatisticError(f"{where}: unknown scale {self.scale!r}, use one of {SCALES}")
        low, high = (float(b) for b in self.bounds)
        if not low < high:
            raise StatisticError(f"{where}: bounds {self.bounds} are not a range (low < high)")
        if isinstance(self.left_out, str) or not all(isinstance(x, str) for x in self.left_out):
            raise StatisticError(f"{where}: left_out must be a tuple of strings, got {self.left_out!r}")
        if len(self.values) == 0:
            raise StatisticError(f"{where} has no seeds")
        values = [float(v) for v in self.values]
        bad = [i for i, v in enumerate(values) if math.isnan(v)]
        if bad:
            raise StatisticError(f"{where}: the statistic is NaN for seed(s) {bad}")
        slack = 1e-9 * max([1.0] + [abs(b) for b in (low, high) if math.isfinite(b)])  # float sums at a bound
        outside = [i for i, v in enumerate(values) if math.isfinite(v) and not low - slack <= v <= high + slack]
        if outside:
            raise StatisticError(f"{where}: seed(s) {outside} lie outside the statistic's bounds {self.bounds}: "
                                 f"{[values[i] for i in outside]}")
        if self.scale == "log" and (bad := [i for i, v in enumerate(values) if v <= 0]):
            raise StatisticError(f"{where}: a ratio on the log scale must be positive, seed(s) {bad} are "
                                 f"{[values[i] for i in bad]}")

    @property
    def tolerance(self) -> float:
        return self.quantum / 2

    @property
    def se_floor(self) -> float:
        """The smallest standard error an interval of this statistic may have: its resolution."""
        if self.quantum > 0:
            return self.quantum / 2 if self.scale == "linear" else math.log1p(self.quantum / 2 / abs(self.threshold or 1))
        if self.resolution is not None:
            return self.resolution
        if self.scale == "log":
            return RELATIVE_RESOLUTION
        return RELATIVE_RESOLUTION * max(1.0, abs(self.threshold))

    def bound(self) -> float:
        """The threshold with the tolerance applied: what a value is compared with."""
        return self.threshold - self.tolerance if self.op in (">=", "<") else self.threshold + self.tolerance

    def holds(self, value: float) -> bool:
        b = self.bound()
        return {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[self.op]

    def judge(self, rule: str = "t") -> dict:
        """n, per-seed values, aggregate, 95% interval and verdict of this condition under its own
        rule, else `rule`. The interval is None where there is none (one seed under `t`)."""
        rule = self.rule or rule
        values = [float(v) for v in self.values]
        interval: list[float] | None
        if rule == "t":
            infinite = [i for i, v in enumerate(values) if math.isinf(v)]
            if infinite:
                i = infinite[0]
                raise StatisticError(
                    f"condition {self.name!r}: seed {i} is {values[i]} ({self.never or 'never happened'}): the t rule "
                    "cannot average an infinity; judge it with rule='binomial' or give the statistic a finite form")
            logs = self.scale == "log"
            x = np.log(values) if logs else np.asarray(values)
            back = np.exp if logs else (lambda v: v)
            aggregate, span = float(back(np.mean(x))), t_interval(x, se_floor=self.se_floor)
            if len(values) < 2:
                interval, verdict = None, "inconclusive"  # nothing is decided on one seed
            else:
                lo, hi = (float(back(v)) for v in span)
                verdict = self._verdict(self.holds(lo) and self.holds(hi), not self.holds(lo) and not self.holds(hi))
                if len(values) < MIN_SEEDS:
                    verdict = "inconclusive"
                interval = [min(max(v, float(self.bounds[0])), float(self.bounds[1])) for v in (lo, hi)]  # reported clipped
        elif rule == "binomial":
            k = sum(self.holds(v) for v in values)
            aggregate, (lo, hi) = k / len(values), clopper_pearson(k, len(values))
            interval, verdict = [lo, hi], self._verdict(lo > 0.5, hi < 0.5)
        else:
            raise StatisticError(f"unknown rule {rule!r}: use one of {', '.join(RULES)}")
        return dict(name=self.name, instance=self.instance, reported=self.reported, op=self.op,
                    threshold=float(self.threshold), tolerance=self.tolerance, se_floor=self.se_floor,
                    unit=self.unit, rule=rule, scale=self.scale, bounds=[float(b) for b in self.bounds], never=self.never,
                    n_never=sum(math.isinf(v) for v in values), left_out=list(self.left_out), n=len(values),
                    values=values, aggregate=aggregate, interval=interval, verdict=verdict)

    @staticmethod
    def _verdict(clears: bool, fails: bool) -> str:
        return "reproduced" if clears else "not_reproduced" if fails else "inconclusive"


def t_interval(values: Sequence[float], confidence: float = 0.95, se_floor: float = 0.0) -> tuple[float, float]:
    """Two-sided t-interval of the mean, its standard error at least `se_floor` (the statistic's
    resolution: seeds that all agree still give an interval of that width). One seed gives no
    interval, (nan, nan): nothing is decided on one seed. An infinite or NaN value is refused: its
    mean is no mean of the other seeds."""
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all():
        raise StatisticError(f"t-interval of non-finite values (seed(s) {np.flatnonzero(~np.isfinite(x)).tolist()}): "
                             "judge an infinite statistic with rule='binomial' or give it a finite form")
    if x.size < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), max(float(stats.sem(x)), se_floor)
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


def judge(conditions: Sequence[Condition | "Difference"], rule: str = "t") -> tuple[str, list[dict]]:
    """The verdict of a criterion (all its conditions but the reported ones) and each condition's judgement."""
    judged = [c.judge(rule) for c in conditions]
    return combine([j["verdict"] for j in judged if not j["reported"]]), judged


def instance_verdicts(judged: Sequence[dict]) -> dict[str, str]:
    """Each instance's verdict: the conjunction of its conditions (reported ones left out)."""
    parts: dict[str, list[str]] = {}
    for j in judged:
        if not j["reported"]:
            parts.setdefault(j["instance"], []).append(j["verdict"])
    return {instance: combine(verdicts) for instance, verdicts in parts.items()}


def claim_verdict(main: Sequence[dict], controls: Sequence[dict]) -> dict:
    """The headline of one claim at one tier from its cases, before any expectation.

    Each case is a dict with its `verdict` (reproduced | not_reproduced | inconclusive | error |
    not_run; a missing precondition reads not_reproduced) and, for a control, `instances`
    (instance -> verdict, see `instance_verdicts`). Missing evidence is never agreement:
    - a main case that errs makes the claim `error`; one that did not run leaves the claim
      `not_run` when none ran, and never `reproduced` when some did;
    - a control fails as expected only where it fails clearly (not_reproduced) at every instance;
      a control that passes or straddles at one instance (one noise degree), that errs or that did
      not run leaves a reproduced claim `inconclusive`: the criterion cannot tell the phenomenon
      from its absence there. The note names the instances.
    """
    verdicts = [c["verdict"] for c in main]
    ran = [v for v in verdicts if v != "not_run"]
    note = ""
    if not ran:
        verdict = "not_run"
    elif "error" in ran:
        verdict = "error"
    else:
        verdict = combine(ran)
        if verdict == "reproduced" and len(ran) < len(verdicts):
            verdict, note = "inconclusive", "some main cases did not run (results missing): the claim is not shown"
    control, where = control_status(controls)
    if verdict == "reproduced" and control not in ("failed_as_expected", "none"):
        verdict = "inconclusive"
        note = {"passed_unexpectedly": f"the control passes the criterion ({where}): the criterion cannot tell the "
                                       "phenomenon from its absence there",
                "inconclusive": f"the control does not clearly fail the criterion ({where}): the criterion cannot "
                                "tell the phenomenon from its absence there",
                "error": f"the control could not be judged ({where}): nothing shows the criterion can fail",
                "not_run": f"the control did not run ({where}): nothing shows the criterion can fail"}[control]
    return dict(verdict=verdict, control=control, note=note)


def control_status(controls: Sequence[dict]) -> tuple[str, str]:
    """(none | error | not_run | passed_unexpectedly | inconclusive | failed_as_expected, the cases and
    instances that decided it). The worst instance of any control decides."""
    if not controls:
        return "none", ""
    for status, bad in (("error", {"error"}), ("not_run", {"not_run"})):
        hit = [c["case"] for c in controls if c["verdict"] in bad]
        if hit:
            return status, ", ".join(hit)
    for status, bad in (("passed_unexpectedly", "reproduced"), ("inconclusive", "inconclusive")):
        hit = [f"{c['case']} at {i}" if i else c["case"] for c in controls
               for i, v in (c.get("instances") or {"": c["verdict"]}).items() if v == bad]
        if hit:
            return status, ", ".join(hit)
    return "failed_as_expected", ""


# --- a difference of two means (two independent samples of seeds) ---------------------------

def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                   se_floor: float = 0.0) -> tuple[float, float]:
    """Two-sided Welch t-interval of mean(b) - mean(a) for two independent samples of unequal variance
    (Welch-Satterthwaite degrees of freedom), its standard error at least `se_floor`; (-inf, inf)
    when either sample has fewer than two values."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return -math.inf, math.inf
    diff = float(y.mean() - x.mean())
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if se < se_floor or se == 0:  # no spread (or less than the resolution): the floor, with the smaller side's df
        se, df = se_floor, min(x.size, y.size) - 1
    else:
        df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    if se == 0:
        return diff, diff
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
    instance: str = ""
    reported: bool = False
    resolution: float | None = None

    def __post_init__(self) -> None:
        for side, values in (("a", self.a), ("b", self.b)):
            if len(values) == 0:
                raise StatisticError(f"condition {self.name!r}: side {side} has no seeds")
            bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
            if bad:
                raise StatisticError(f"condition {self.name!r}: side {side} is not finite for seed(s) {bad}")
        _ = self._compare  # validates op

    @property
    def _compare(self) -> Condition:
        """The inequality with its tolerance, applied to the interval's ends."""
        return Condition(self.name, [0.0], self.op, self.threshold, self.quantum, self.unit, resolution=self.resolution)

    def judge(self, rule: str = "t") -> dict:
        if rule != "t":
            raise StatisticError(f"condition {self.name!r}: a difference of two means is judged by its Welch "
                                 f"interval (rule t), not {rule!r}")
        compare = self._compare
        a, b = [float(v) for v in self.a], [float(v) for v in self.b]
        aggregate, (lo, hi) = float(np.mean(b) - np.mean(a)), welch_interval(a, b, se_floor=compare.se_floor)
        verdict = Condition._verdict(compare.holds(lo) and compare.holds(hi),
                                     not compare.holds(lo) and not compare.holds(hi))
        if min(len(a), len(b)) < MIN_SEEDS:
            verdict = "inconclusive"
        finite = math.isfinite(lo) and math.isfinite(hi)  # one seed on a side: no interval, nothing decided
        return dict(name=self.name, instance=self.instance, reported=self.reported, op=self.op,
                    threshold=float(self.threshold), tolerance=compare.tolerance, se_floor=compare.se_floor,
                    unit=self.unit, rule="welch", scale="linear", bounds=[-math.inf, math.inf], never="", n_never=0,
                    left_out=[], n=len(a) + len(b), n_a=len(a), n_b=len(b), values=[*a, *b], values_a=a, values_b=b,
                    aggregate=aggregate, interval=[lo, hi] if finite else None, verdict=verdict)

"""One judge for every claim: the declared claims (reproduce/claims/<paper>.py) judged on a tier's
stored results, as the entries of claims.json.

A `Claim` is declared once, in its paper's module: the statistic (`evidence(ds, case)`: the
per-seed conditions of one case, reproduce/verdict.py), its cases per tier (main cases and
controls), its figure and table, and where no run backs the tier's expectation, a prediction with
its reason. The paper's words (statement, section, paper value, what the control is) are in
data/claims/<paper>.json. `judge_tier` is the only path from results to verdicts: the command line
calls it, and so does each claim test (claims/test_claims.py), which only compares its entry with the
tier's expectation.

Expectations carry their evidence: `measured` where data/expected/<tier>.json (the claims.json of
a cited run, written by `python -m reproduce expect`) holds the claim; otherwise the declaration's
`predicted` verdict with its reason. A measurement contradicted is a regression (exit 1, a failed
test); a prediction contradicted is shown as such and fails nothing. An error is always a regression.
"""

from __future__ import annotations

import importlib
import json
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

from reproduce.experiments import PAPERS, TIERS
from reproduce.store import Store, run_config
from reproduce.verdict import RULES, Condition, Difference, claim_verdict, instance_verdicts, judge

_PACKAGE = Path(__file__).resolve().parent
# data/claims and data/expected in a checkout; the packages reproduce.catalogue and reproduce.expected
# once installed (pyproject.toml maps the folders onto them, so a wheel carries the same files).
_DATA = _PACKAGE if (_PACKAGE / "catalogue").is_dir() else _PACKAGE.parent / "data"
CATALOGUE = _DATA / ("catalogue" if _DATA == _PACKAGE else "claims")
EXPECTED = _DATA / "expected"
Table = tuple[list[str], list[list]]  # (column names, rows): a paper-table analogue such as MASC's Table 1


@dataclass(frozen=True)
class Case:
    """One case of a claim at a tier: the runs it judges (`model`: a model, a setting, or "all") and,
    for a control, what the control is (e.g. "twins"), so that every case id is unique."""

    tier: str
    model: str
    control: str = ""

    @property
    def id(self) -> str:
        return f"{self.tier}-{self.model}" + (f"-control-{self.control}" if self.control else "")


@dataclass
class Evidence:
    """What a case's statistic found: the conditions of the criterion (per seed), one line of summary
    for the report, and the numbers behind it (stored in claims.json)."""

    conditions: list[Condition | Difference]
    summary: str
    numbers: dict = field(default_factory=dict)


class Absent(Exception):
    """The claim's precondition is absent (e.g. no outlier to locate): the case reads not_reproduced,
    with this reason, never 'not run'."""


def cases(models: Mapping[str, Sequence[str]], control: str | None = "control",
          controls: Mapping[str, Sequence[str]] | None = None) -> tuple[Case, ...]:
    """Main cases for every tier's models and, unless `control` is None, a control case named
    `control` for each of `controls` (default: the same models)."""
    out = [Case(tier, m) for tier, ms in models.items() for m in ms]
    if control is not None:
        out += [Case(tier, m, control) for tier, ms in (models if controls is None else controls).items() for m in ms]
    return tuple(out)


@dataclass(frozen=True)
class Claim:
    """A paper claim, declared once: its statistic, cases, figure, table and the predictions that
    stand where no run backs a tier's expectation (tier -> (verdict, reason)). `why` says, per tier,
    why the claim fails there (shown with an expected failure)."""

    id: str
    evidence: Callable[[xr.Dataset, Case], Evidence] = field(compare=False)
    cases: tuple[Case, ...]
    predicted: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False)
    why: Mapping[str, str] = field(default_factory=dict, compare=False)
    rule: str = "t"
    figure: Callable[[xr.Dataset], Figure] | None = field(default=None, compare=False)
    table: Callable[[xr.Dataset], Table] | None = field(default=None, compare=False)
    contradicts: str = ""  # id of a claim of another paper that says the opposite

    @property
    def paper(self) -> str:
        return self.id.split(".")[0]

    @property
    def text(self) -> dict:
        """The paper's words for this claim, from data/claims/<paper>.json."""
        return catalogue(self.paper)[self.id]

    def cases_at(self, tier: str) -> list[Case]:
        return [c for c in self.cases if c.tier == tier]

    @property
    def tiers(self) -> list[str]:
        """The tiers that judge this claim, cheapest first."""
        return [t for t in TIERS if self.cases_at(t)]


def catalogue(paper: str) -> dict[str, dict]:
    """The paper's words for its claims, as data/claims/<paper>.json lists them."""
    return json.loads((CATALOGUE / f"{paper}.json").read_text())


def declared(papers: Iterable[str] = PAPERS) -> dict[str, Claim]:
    """Every declared claim of these papers, by id, in declaration order."""
    return {c.id: c for p in papers for c in importlib.import_module(f"reproduce.claims.{p}").CLAIMS}


# --- expectations ------------------------------------------------------------------------

def measured(tier: str) -> dict:
    """data/expected/<tier>.json: the verdicts of a cited run ({} where none is kept)."""
    path = EXPECTED / f"{tier}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def expectation(claim: Claim, tier: str, record: dict | None = None) -> dict:
    """The tier's expected verdict for the claim and its evidence: measured (the run it came from) or
    predicted (the reason). A claim judged at the tier has exactly one of the two."""
    record = measured(tier) if record is None else record
    if claim.id in record.get("verdicts", {}):
        cited = record.get("sources", {}).get(claim.paper, record.get("source", "a cited run"))
        source = f"measured: data/expected/{tier}.json, {cited}"
        return dict(expected=record["verdicts"][claim.id], expectation="measured", expectation_source=source)
    if tier in claim.predicted:
        verdict, reason = claim.predicted[tier]
        return dict(expected=verdict, expectation="predicted", expectation_source=f"predicted: {reason}")
    # tests/test_claims_declared.py keeps every judged tier covered; until `python -m reproduce expect` has
    # recorded a first measurement, nothing is expected and nothing can regress but an error
    return dict(expected=None, expectation="none", expectation_source=f"none: no measurement in data/expected/{tier}.json "
                                                                        "and no prediction")


# --- what the report says of a claim, rendered from the declaration and the tier's configuration ---

def setting_text(tier: str, paper: str) -> str:
    """The tier's runs of this paper as their configurations say (one source: the run dataclasses)."""
    from reproduce.runner import plan

    def one(run) -> str:
        spec = run.train
        batch = "full batch" if spec.batch_size == 0 else f"batch {spec.batch_size}"
        extras = [f"{k} {getattr(run, k)}" for k in ("hidden", "width", "dataset", "n_train", "noise_rate")
                  if getattr(run, k, None) not in (None, ())]
        return (f"{run.name}: {spec.optimizer} lr {spec.lr:g}" + (f" wd {spec.weight_decay:g}" if spec.weight_decay else "")
                + f", {batch}, {spec.epochs:g} epochs" + (", " + ", ".join(extras) if extras else ""))

    return "; ".join(one(run) for _, run in plan(tier, [paper]))


def _tolerance(tolerance: float, unit: str) -> str:
    """A tolerance in its condition's unit: '0.36 points' for a gain, '0.05%' for an accuracy."""
    if unit in ("points", "accuracy"):
        return f"{100 * tolerance:.2g}" + (" points" if unit == "points" else "%")
    return f"{tolerance:.3g}"


def criterion_text(conditions: Sequence[dict]) -> str:
    """The criterion as the judged conditions hold it: each distinct inequality once, with the
    instances it is judged at, its rule and scale; reported conditions marked."""
    parts: dict[str, list[str]] = {}
    for j in conditions:
        name = j["name"].split(" at ")[0] if j["instance"] and j["name"].endswith(j["instance"]) else j["name"]
        threshold = f"{100 * j['threshold']:+g} points" if j["unit"] == "points" else (
            f"{100 * j['threshold']:g}%" if j["unit"] == "accuracy" else f"{j['threshold']:g}")
        text = (f"{name} {j['op']} {threshold} ({j['rule']}" + (", log scale" if j["scale"] == "log" else "")
                + (f", tolerance {_tolerance(j['tolerance'], j['unit'])}" if j["tolerance"] else "") + ")"
                + (" [reported, not judged]" if j["reported"] else ""))
        parts.setdefault(text, [])
        if j["instance"] and j["instance"] not in parts[text]:
            parts[text].append(j["instance"])
    return "; ".join(t + (f" at {', '.join(i)}" if i else "") for t, i in parts.items())


# --- judging -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Unavailable:
    """Why a paper's results cannot be judged: missing (not_run) or a diverged run (error)."""

    verdict: str
    message: str


def load_results(store: Store, tier: str, paper: str, seed: int) -> xr.Dataset | Unavailable:
    """The paper's combined results at this tier and base seed, or why they cannot be judged."""
    from reproduce.runner import plan

    names = []
    for _, run in plan(tier, [paper], seed):
        if store.load(tier, paper, run.name, run_config(run), warn=lambda _: None) is None:
            return Unavailable("not_run", f"no {tier} results for {paper}/{run.name} in {store.root}: make them with "
                                          f"`python -m reproduce --tier {tier} --paper {paper} --results {store.root}"
                                          + (f" --seed {seed}`" if seed else "`"))
        names.append(run.name)
    ds = store.combine(tier, paper, names)
    diverged = [str(r) for r, s in zip(ds.run.values, ds.status.values) if s == "diverged"]
    if diverged:
        return Unavailable("error", f"{paper} run(s) {', '.join(diverged)} diverged (NaN loss): the claim cannot be "
                                    f"judged on them; see their diverged_epoch attribute in {store.root}/{tier}/{paper}/")
    return ds


def judge_case(claim: Claim, case: Case, ds: xr.Dataset | Unavailable) -> dict:
    """One case's verdict and evidence. Missing results: not_run; a statistic that raises: error
    (with the line that says why); an absent precondition: not_reproduced, saying why."""
    out = dict(case=case.id, model=case.model, control=bool(case.control), verdict="not_run", message="",
               summary="", numbers={}, conditions=[], instances={})
    if isinstance(ds, Unavailable):
        return {**out, "verdict": ds.verdict, "message": ds.message}
    try:
        evidence = claim.evidence(ds, case)
        verdict, judged = judge(evidence.conditions, claim.rule)
    except Absent as absent:
        return {**out, "verdict": "not_reproduced", "message": f"precondition absent: {absent}"}
    except Exception as error:  # noqa: BLE001 - any failure of a statistic is an error of the claim, never a verdict
        where = traceback.extract_tb(error.__traceback__)[-1]
        return {**out, "verdict": "error",
                "message": f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"}
    return {**out, "verdict": verdict, "summary": evidence.summary, "numbers": evidence.numbers,
            "conditions": judged, "instances": instance_verdicts(judged)}


def judge_claim(claim: Claim, tier: str, ds: xr.Dataset | Unavailable, record: dict | None = None) -> dict:
    """The claims.json entry of one claim at one tier (not_at_tier where it has no case there)."""
    words = claim.text
    entry = dict(id=claim.id, paper=claim.paper, tier=tier, section=words["section"], statement=words["statement"],
                 paper_value=words["paper_value"], control_text=words["control"], rule=RULES[claim.rule],
                 contradicts=claim.contradicts, judged_at=claim.tiers)
    here = claim.cases_at(tier)
    if not here:
        return {**entry, "verdict": "not_at_tier", "control": "none", "note": "", "expected": None, "expectation": "",
                "expectation_source": "", "as_expected": None, "regression": False, "why": "", "criterion": "",
                "control_criterion": "", "setting": "", "cases": []}
    judged = [judge_case(claim, case, ds) for case in here]
    head = claim_verdict([c for c in judged if not c["control"]], [c for c in judged if c["control"]])
    expect = expectation(claim, tier, record)
    as_expected = None if head["verdict"] == "not_run" or expect["expected"] is None else head["verdict"] == expect["expected"]
    regression = head["verdict"] == "error" or (as_expected is False and expect["expectation"] == "measured")
    conditions = [j for c in judged for j in c["conditions"]]
    return {**entry, **head, **expect, "as_expected": as_expected, "regression": regression,
            "why": claim.why.get(tier, ""), "criterion": criterion_text([j for c in judged if not c["control"]
                                                                          for j in c["conditions"]]),
            "control_criterion": criterion_text([j for c in judged if c["control"] for j in c["conditions"]]),
            "setting": setting_text(tier, claim.paper) if conditions else "", "cases": judged}


def judge_tier(store: Store, tier: str, papers: Sequence[str], seed: int = 0,
               claims: Sequence[str] | None = None) -> tuple[list[dict], dict[str, xr.Dataset | Unavailable]]:
    """Every declared claim of these papers (or only `claims`) judged on the stored results: the
    entries in declaration order, and each paper's results (or why there are none)."""
    results = {paper: load_results(store, tier, paper, seed) for paper in papers}
    record = measured(tier)
    entries = [judge_claim(claim, tier, results[claim.paper], record) for claim in declared(papers).values()
               if not claims or claim.id in claims]
    return entries, results


def record_expected(tier: str, results: Path, papers: Sequence[str] | None = None) -> Path:
    """Write data/expected/<tier>.json from results/<tier>/claims.json: the verdict of every claim
    judged there becomes the tier's measured expectation, with the commits that made and judged it
    (a prediction declared for such a claim then no longer applies: the measurement stands).
    With `papers`, only those papers' claims are recorded (each of them must have been judged); the
    other papers' measurements already in the file are kept with their own sources."""
    from reproduce.errors import UserError
    from reproduce.store import git_commit, utc_now

    source = Path(results) / tier / "claims.json"
    try:
        entries = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {source} ({error}): make the {tier} report first") from None
    judged = {e["id"]: e for e in entries if e.get("verdict") not in ("not_at_tier", None)
              and (papers is None or e.get("paper", e["id"].split(".")[0]) in papers)}
    if papers is not None and not judged:
        raise UserError(f"{source} has no claim of {', '.join(papers)}: make their {tier} report first")
    missing = [i for i, e in judged.items() if e["verdict"] == "not_run"]
    if missing:
        raise UserError(f"{source} has claims not run ({', '.join(missing)}): a measurement needs every claim judged")
    provenance_path = source.parent / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    made = sorted({p.get("git_commit", "unknown") for p in provenance.values()})
    seeds = sorted({e.get("seed", 0) for e in judged.values()})
    cited = (f"the claims.json of `python -m reproduce --tier {tier}"
             + (f" --paper {' '.join(papers)}" if papers is not None else "") + f"` at base seed "
             f"{', '.join(map(str, seeds))}, results made at commit {', '.join(made)}, "
             f"judged at commit {git_commit()[:12]} on {utc_now()}")
    kept = measured(tier) if papers is not None else {}
    kept_verdicts = {i: v for i, v in kept.get("verdicts", {}).items() if i.split(".")[0] not in papers} if kept else {}
    sources = {p: src for p, src in kept.get("sources", {}).items() if p not in (papers or ())}
    if kept_verdicts and not kept.get("sources"):  # a record from before sources per paper: its one source stands for all
        sources.update({i.split(".")[0]: kept["source"] for i in kept_verdicts})
    sources.update({e.get("paper", i.split(".")[0]): cited for i, e in judged.items()})
    distinct = sorted(set(sources.values()))
    record = dict(tier=tier, source=distinct[0] if len(distinct) == 1 and papers is None else
                  "; ".join(f"{p}: {src}" for p, src in sorted(sources.items())),
                  sources=dict(sorted(sources.items())),
                  verdicts={**kept_verdicts, **{i: e["verdict"] for i, e in judged.items()}},
                  cases={**{i: c for i, c in kept.get("cases", {}).items() if i in kept_verdicts},
                         **{i: {c["case"]: c["verdict"] for c in e.get("cases", [])} for i, e in judged.items()}})
    EXPECTED.mkdir(parents=True, exist_ok=True)
    path = EXPECTED / f"{tier}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)  # atomically: a reader never sees half a record
    return path

"""The claim framework: results on demand, case outcomes collected, the report written at the end.

- `--results DIR` (default results/) is the same store the command line uses; `--seed` and
  `--device` pick the runs, as they do there.
- The tier of a case is its marker (`-m quick` selects the quick cases). Quick results are made on
  demand through the same code path as `python -m reproduce`; medium and full results must already
  be stored, otherwise the case is skipped with the command that makes them.
- Every case is marked with its claim; after the session the outcomes become DIR/TIER/report.md,
  report.html and claims.json.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr

from reproduce.report import (CaseOutcome, Claim, _never, claim_entries, figure_png, merge_entries, read_json,
                              run_provenance, write_report)
from reproduce.verdict import Condition, judge as judge_conditions
from reproduce.experiments import TIERS
from reproduce.runner import make_results, plan
from reproduce.store import ENGINE, Store

TIER_ORDER = TIERS  # cheapest first
OUTCOMES = pytest.StashKey[list]()
DATASETS = pytest.StashKey[dict]()
CLAIMS = pytest.StashKey[dict]()
BACKGROUND = pytest.StashKey[subprocess.Popen]()


@dataclass(frozen=True)
class Case:
    """One parametrized case of a claim: a tier, a model (or 'all'), and whether it is the control."""

    tier: str
    model: str
    control: bool = False

    @property
    def id(self) -> str:
        return f"{self.tier}-{self.model}" + ("-control" if self.control else "")


CONTROL_NOT_ENFORCED = ("the claim is an expected failure at this tier, so its control can show nothing either way: "
                        "its verdict is reported, not enforced")


def cases(models: dict[str, list[str]], controls: dict[str, list[str]] | None = None,
          xfail: dict[str, str] | None = None) -> list:
    """pytest params for every tier's models, each marked with its tier; controls as their own cases.

    `controls` names the models that get a control case (default: the same models; {} for none).
    `xfail` maps a tier to why its main cases cannot show the claim (the reason, not numbers: the
    numbers are the evidence the case records from the results). Those cases become strict
    expected failures that catch only the claim's own assertion: an error in the statistic, a
    diverged run or missing results stays an error, and an unexpected pass fails the run. Their
    controls are still judged and reported, but not enforced (a non-strict expected failure): a
    control separates a phenomenon from its absence only where the phenomenon can show.
    """
    controls = models if controls is None else controls
    params = []
    for tier in models.keys() | controls.keys():
        tier_mark = getattr(pytest.mark, tier)
        main_marks, control_marks = [tier_mark], [tier_mark]
        if xfail and tier in xfail:
            main_marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=xfail[tier]))
            control_marks.append(pytest.mark.xfail(strict=False, raises=AssertionError, reason=CONTROL_NOT_ENFORCED))
        for case in [Case(tier, m) for m in models.get(tier, [])]:
            params.append(pytest.param(case, id=case.id, marks=main_marks))
        for case in [Case(tier, m, control=True) for m in controls.get(tier, [])]:
            params.append(pytest.param(case, id=case.id, marks=control_marks))
    return sorted(params, key=lambda p: TIER_ORDER.index(p.values[0].tier))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims")
    group.addoption("--results", default="results", help="results store (default results/)")
    group.addoption("--seed", type=int, default=0, help="base seed of the runs (default 0)")
    group.addoption("--device", default="cpu", help="device for quick results made on demand")
    group.addoption("--stored-only", action="store_true",
                    help="make no results, not even quick ones: judge what the store holds (python -m reproduce report)")
    group.addoption("--claim", action="append", default=[], help="only the cases of this claim id (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[OUTCOMES] = []
    config.stash[DATASETS] = {}
    config.stash[CLAIMS] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start making the missing quick results in the background when other tests run first.

    `pytest` runs tests/ before claims/, and the unit tests keep about one of two cores busy; a
    background `python -m reproduce --tier quick --no-report` (the same code path, seed, device and
    default thread count, so the same numbers) makes the quick results meanwhile. The claim tests'
    make_results then reuses each finished run, waits for the one being made (the store's per-run
    lock) and makes the rest beside it. Its output goes to DIR/quick/background.log.
    """
    config = session.config
    if config.getoption("--stored-only") or config.option.collectonly or hasattr(config, "workerinput"):
        return
    quick = [i for i in session.items if i.get_closest_marker("claim") and i.get_closest_marker("quick")]
    if not quick or len(quick) == len(session.items):
        return  # nothing to make, or nothing else to run meanwhile
    papers = list(dict.fromkeys(i.get_closest_marker("claim").args[0].paper for i in quick))
    root, seed, device = Path(config.getoption("--results")), config.getoption("--seed"), config.getoption("--device")
    store = Store(root)
    if all(store.path("quick", paper, run.name).exists() for paper, run in plan("quick", papers, seed)):
        return
    (root / "quick").mkdir(parents=True, exist_ok=True)
    with open(root / "quick" / "background.log", "w") as log:
        config.stash[BACKGROUND] = subprocess.Popen(
            [sys.executable, "-m", "reproduce", "run", "--tier", "quick", "--paper", *papers, "--results", str(root),
             "--seed", str(seed), "--device", device, "--no-report"], stdout=log, stderr=subprocess.STDOUT)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A session that ends early (-x, Ctrl-C) stops the background maker; its runs resume next time."""
    background = config.stash.get(BACKGROUND, None)
    if background is not None and background.poll() is None:
        background.terminate()
        background.wait()


def tiers_judged(items: list[pytest.Item]) -> dict[str, dict[str, str]]:
    """claim id -> {tier: expected verdict} as the collected main cases say it: `not_reproduced`
    where the cases are strict expected failures, `reproduced` elsewhere."""
    found: dict[str, dict[str, str]] = {}
    for item in items:
        marker = item.get_closest_marker("claim")
        if marker is None or not hasattr(item, "callspec") or item.callspec.params["case"].control:
            continue
        strict = any(m.kwargs.get("strict") for m in item.iter_markers("xfail"))
        found.setdefault(marker.args[0].id, {})[item.callspec.params["case"].tier] = \
            "not_reproduced" if strict else "reproduced"
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every collected case agrees with its claim's `tiers` in data/claims/<paper>.json (before -m
    or --claim deselect anything), then --claim keeps only the cases of those claims."""
    claims = {m.args[0].id: m.args[0] for i in items if (m := i.get_closest_marker("claim")) is not None}
    for claim_id, judged in tiers_judged(items).items():
        for tier, expected in judged.items():
            if claims[claim_id].tiers.get(tier) != expected:
                raise pytest.UsageError(
                    f"{claim_id}: its {tier} cases expect {expected}, but data/claims/{claims[claim_id].paper}.json "
                    f"says tiers.{tier} = {claims[claim_id].tiers.get(tier)!r}: make the two agree")
    wanted = set(config.getoption("--claim"))
    if not wanted:
        return
    keep = [i for i in items if (m := i.get_closest_marker("claim")) is not None and m.args[0].id in wanted]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


@pytest.fixture(scope="session")
def paper_results(request: pytest.FixtureRequest):
    """results(paper, tier) -> the combined Dataset of that paper's runs at that tier."""
    config = request.config
    store = Store(Path(config.getoption("--results")))
    seed = config.getoption("--seed")
    cache = config.stash[DATASETS]

    def results(paper: str, tier: str) -> xr.Dataset:
        key = (paper, tier)
        if key not in cache:
            make = tier == "quick" and not config.getoption("--stored-only")
            cache[key] = _load(store, paper, tier, seed, config.getoption("--device"), make)
        if isinstance(cache[key], str):
            pytest.skip(cache[key])
        diverged = [str(r) for r, s in zip(cache[key].run.values, cache[key].status.values) if s == "diverged"]
        if diverged:
            pytest.fail(f"{paper} run(s) {', '.join(diverged)} diverged (NaN loss): the claim cannot be judged on them; "
                        f"see their diverged_epoch attribute in {store.root}/{tier}/{paper}/")
        return cache[key]

    return results


def _load(store: Store, paper: str, tier: str, seed: int, device: str, make: bool) -> xr.Dataset | str:
    """The paper's combined results, made first when `make`; otherwise why they are missing."""
    if make:
        names = make_results(tier, [paper], store.root, device=device, seed=seed, progress=False)[paper]
        return store.combine(tier, paper, names)
    names = []
    for _, run in plan(tier, [paper], seed):
        if store.load(tier, paper, run.name, dataclasses.asdict(run)) is None:
            return (f"no {tier} results for {paper}/{run.name} in {store.root}: make them with "
                    f"`python -m reproduce --tier {tier} --paper {paper} --results {store.root} --seed {seed}`")
        names.append(run.name)
    return store.combine(tier, paper, names)


@pytest.fixture
def judge(request: pytest.FixtureRequest):
    """judge(*conditions, summary=..., **numbers): the case's verdict over seeds, recorded and asserted.

    The conditions are the criterion (reproduce/verdict.py), judged under the claim's rule from
    data/claims/<paper>.json unless a condition names its own (`Condition(rule=...)`). A main case asserts `reproduced`; a control case asserts
    `not_reproduced` (the criterion must clearly fail where the phenomenon is absent). The
    evidence (n, every seed's value, aggregate, interval) is what the report shows.
    """
    claim: Claim = request.node.get_closest_marker("claim").args[0]
    case: Case = request.node.callspec.params["case"]

    def judge_(*conditions: Condition, summary: str, **numbers) -> str:
        verdict, judged = judge_conditions(conditions, claim.rule)
        request.node.user_properties.append(
            ("claim_evidence", dict(verdict=verdict, summary=summary, numbers=numbers, conditions=judged)))
        wanted = "not_reproduced" if case.control else "reproduced"
        assert verdict == wanted, (f"{'control ' if case.control else ''}verdict {verdict}, expected {wanted}: "
                                   + "; ".join(_condition_text(j) for j in judged))
        return verdict

    return judge_


def _condition_text(j: dict) -> str:
    interval = "no interval" if j["interval"] is None else "[{:.4g}, {:.4g}]".format(*j["interval"])
    never = "".join(", " + text for text in _never(j))
    return (f"{j['name']} {j['op']} {j['threshold']:g}: {j['verdict']} ({j['rule']}, n={j['n']}, "
            f"{j['aggregate']:.4g} {interval}{never})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = (yield).get_result()
    marker = item.get_closest_marker("claim")
    if marker is None or not hasattr(item, "callspec"):
        return
    if report.when == "teardown" or (report.when == "setup" and report.outcome == "passed"):
        return
    claim: Claim = marker.args[0]
    case: Case = item.callspec.params["case"]
    evidence = dict(item.user_properties).get("claim_evidence")
    outcome, message = _outcome(report)
    if evidence is not None:
        verdict = evidence["verdict"]
    elif outcome == "skipped":
        verdict = "not_run"
    else:
        verdict = "error"  # the statistic raised, a run diverged, or results were missing: never a verdict
    xfail = item.get_closest_marker("xfail")
    expected = "not_reproduced" if (xfail is not None and not case.control) else "reproduced"
    item.config.stash[CLAIMS][claim.id] = claim
    item.config.stash[OUTCOMES].append(CaseOutcome(
        claim.id, case.tier, case.id, case.control, outcome, verdict, message=message, expected=expected,
        summary=(evidence or {}).get("summary", ""), numbers=(evidence or {}).get("numbers", {}),
        conditions=(evidence or {}).get("conditions", [])))


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    """(passed | failed | xfailed | xpassed | skipped | error, one line saying why)."""
    longrepr = report.longrepr
    if report.skipped and hasattr(report, "wasxfail"):
        return "xfailed", str(getattr(longrepr, "reprcrash", None) and longrepr.reprcrash.message or report.wasxfail).splitlines()[0][:300]
    if report.skipped:
        return "skipped", str(longrepr[2]) if isinstance(longrepr, tuple) else ""
    if report.failed:
        text = str(longrepr)
        if text.startswith("[XPASS(strict)]"):
            return "xpassed", text
        message = longrepr.reprcrash.message if hasattr(longrepr, "reprcrash") and longrepr.reprcrash else text
        first = message.splitlines()[0][:300] if message else ""
        return ("failed" if report.when == "call" and first.startswith("AssertionError") else "error"), first
    return "passed", ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write each tier's report, merged into the one already there (see report.merge_entries):
    every catalogue claim appears, a claim judged now replaces its earlier entry, the rest stay."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    outcomes, claims, datasets = config.stash[OUTCOMES], config.stash[CLAIMS], config.stash[DATASETS]
    markexpr = config.getoption("markexpr", "")
    tiers = {o.tier for o in outcomes} | ({markexpr} if markexpr in TIER_ORDER else set())
    if not tiers:
        return
    root, seed = Path(config.getoption("--results")), config.getoption("--seed")
    wanted = set(config.getoption("--claim")) or None
    for tier in sorted(tiers):
        out = root / tier
        judged_now = [e for e in claim_entries(claims, outcomes, tier) if e["cases"]]  # merge_entries places the rest
        entries = merge_entries(read_json(out / "claims.json", []), judged_now, tier, _collected_papers(config), wanted,
                                seed)
        judged = {o.claim for o in outcomes if o.tier == tier}
        figures, tables, provenance = {}, read_json(out / "tables.json", {}), read_json(out / "provenance.json", {})
        used = set()  # a paper figure shown once: under the first claim (catalogue order) that names it
        for claim_id in [e["id"] for e in entries if e["id"] in judged]:
            claim = claims[claim_id]
            ds = datasets.get((claim.paper, tier))
            tables.pop(claim_id, None)
            if not isinstance(ds, xr.Dataset) or "diverged" in ds.status.values:
                continue  # no results, or cut short by a NaN loss: the case's message says which runs
            if claim.figure is not None and claim.figure not in used:
                used.add(claim.figure)
                figures[claim_id] = figure_png(claim.figure(ds))
            if claim.table is not None:
                tables[claim_id] = claim.table(ds)
        for paper in {claims[c].paper for c in judged}:  # what made the results judged now, even if a case erred
            if attrs := _run_attrs(root, tier, paper, seed):
                provenance[paper] = run_provenance(attrs)
        _keep_paper_figures(out / "figures", entries, judged, figures)
        write_report(out, tier, entries, figures, tables, provenance)
        (out / "tables.json").write_text(json.dumps(tables, indent=1, default=str))
        (out / "provenance.json").write_text(json.dumps(provenance, indent=1))


def _collected_papers(config: pytest.Config) -> set[str]:
    """Papers whose claim files this session collected (from its file or folder arguments): a
    claim of theirs with no case at a tier is 'not at this tier', not 'not run'."""
    papers = set()
    for arg in config.args:
        path = Path(arg.split("::")[0])
        files = sorted(path.glob("test_*.py")) if path.is_dir() else [path]
        papers |= {f.stem.removeprefix("test_") for f in files if f.stem.startswith("test_")}
    return papers


def _run_attrs(root: Path, tier: str, paper: str, seed: int) -> list[dict]:
    """The attrs of the paper's stored runs at this base seed: the report's provenance."""
    attrs = []
    for _, run in plan(tier, [paper], seed):
        path = Store(root).path(tier, paper, run.name)
        if path.exists():
            with xr.open_dataset(path, engine=ENGINE) as ds:
                attrs.append(dict(ds.attrs))
    return attrs


def _keep_paper_figures(fig_dir: Path, entries: list[dict], judged: set[str], figures: dict[str, bytes]) -> None:
    """Paper figures of claims not judged now stay as the last report drew them; a judged claim's
    old one goes when it has none now."""
    for e in entries:
        old = fig_dir / f"{e['id']}.paper.png"
        if e["id"] in judged:
            if e["id"] not in figures:
                old.unlink(missing_ok=True)
        elif old.exists():
            figures[e["id"]] = old.read_bytes()

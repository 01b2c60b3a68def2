"""The claim report: claims.json, report.md (figures as PNG files beside it) and a self-contained
report.html (figures embedded), written from the entries that reproduce.judge makes.

Each case of a claim records its evidence: every condition of the criterion with n, every seed's
value, the aggregate and the 95% interval (reproduce/verdict.py). A claim's headline verdict at a
tier combines its main cases and its controls: `reproduced`, `not_reproduced` or `inconclusive`;
`error` when a statistic raised or a run diverged; `not_run` when the results are missing;
`not_at_tier` for a claim with no case at this tier (the entry names the tiers that judge it).
The criterion's text is rendered from the judged conditions, never written beside them.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
from pathlib import Path

from matplotlib.figure import Figure

from reproduce.errors import UserError
from reproduce.judge import Table, declared

VERDICT_TEXT = {
    "reproduced": "reproduced",
    "not_reproduced": "NOT reproduced",
    "inconclusive": "inconclusive",
    "error": "error (the statistic could not be computed)",
    "not_run": "not run (results missing)",
    "not_at_tier": "not at this tier",
}


MIN_FIGURE_PX = 800  # every figure of the report at least this wide: legible without zooming


def figure_png(fig: Figure, dpi: float = 110) -> bytes:
    """The figure as PNG, at least MIN_FIGURE_PX wide (a small figure is drawn at a higher dpi)."""
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    width = int.from_bytes(buffer.getvalue()[16:20], "big")  # the PNG header's IHDR width
    if width < MIN_FIGURE_PX:
        return figure_png(fig, dpi * MIN_FIGURE_PX / width * 1.01)
    return buffer.getvalue()


# --- what the report shows, and how ---------------------------------------------------------

PROVENANCE_KEYS = ("host", "device", "device_name", "torch_version", "precision", "torch_threads", "package_version",
                   "git_commit", "seed")
SUMMARY_COLUMNS = ["claim", "verdict", "n, 95% interval", "control", "ours (criterion)", "paper"]
CONSOLE_WIDTH = 40  # characters per line of a long cell in the console table (wrapped, never cut)


def words(verdict: str) -> str:
    return VERDICT_TEXT.get(verdict, verdict)


def percent(accuracy: float) -> str:
    """The one format of an accuracy (a fraction): percent with one decimal, '71.2%'."""
    return f"{100 * accuracy:.1f}%"


def points(gain: float) -> str:
    """The one format of a gain between accuracies (a difference of fractions): '+8.0 points'."""
    return f"{100 * gain:+.1f} points"


def number(value, unit: str = "") -> str:
    """A condition's number: accuracies and gains by the conventions above, anything else 3 digits."""
    if isinstance(value, str):  # "inf" / "-inf" as claims.json stores a non-finite number
        value = float(value)
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if unit == "accuracy":
        return percent(value)
    if unit == "points":
        return points(value)
    return f"{value:.3g}"


def all_claims() -> list[str]:
    """Every declared claim's id, in declaration order: each appears in every report."""
    return list(declared())


def _margin(condition: dict) -> float:
    """How far the interval clears its threshold, in interval widths (negative: straddles or fails)."""
    aggregate, threshold = condition.get("aggregate"), condition.get("threshold")
    if aggregate is None or threshold is None or aggregate != aggregate:
        return float("-inf")
    if not condition.get("interval"):
        return float("-inf")  # no interval (one seed): decides nothing
    low, high = (float(v) for v in condition["interval"])
    width = max(high - low, 1e-12)
    if condition.get("rule") == "binomial":  # the interval is of the share of seeds, which must clear 1/2
        return (low - 0.5) / width
    return (low - threshold) / width if condition.get("op", ">=").startswith(">") else (threshold - high) / width


def headline(entry: dict) -> dict | None:
    """The claim's headline n, interval and number: of the main cases' judged conditions, the one
    closest to failing among those that are informative (seeds that differ: a condition every seed
    meets with the same value, say a drop of exactly 0, shows no spread to read), else among all."""
    found = [c for case in entry.get("cases", []) if not case.get("control") for c in case.get("conditions") or []
             if not c.get("reported")]
    informative = [c for c in found if len({str(v) for v in c.get("values") or []}) > 1]
    return min(informative or found, key=_margin, default=None)


def _interval_text(condition: dict | None) -> str:
    """n and the 95% interval (of the share of seeds under the binomial rule); never an infinite one."""
    if condition is None:
        return "-"
    unit, n, interval = condition.get("unit", ""), condition.get("n", "?"), condition.get("interval")
    if not interval or not all(math.isfinite(float(v)) for v in interval):
        text = f"n={n}, no interval" + (" (1 seed)" if n == 1 else "")
    elif condition.get("rule") == "binomial":
        text = f"n={n}, share [{float(interval[0]):.2f}, {float(interval[1]):.2f}]"
    else:
        text = f"n={n}, [{number(interval[0], unit)}, {number(interval[1], unit)}]"
    return text + "".join(f"; {note}" for note in _never(condition))


def _never(condition: dict) -> list[str]:
    """'no width fits in 2 of 5 seeds' where seeds were infinite (the event never happened)."""
    k = condition.get("n_never") or 0
    return [f"{condition.get('never') or 'infinite'} in {k} of {condition.get('n', '?')} seeds"] if k else []


def _key_number(condition: dict | None) -> str:
    if condition is None:
        return "-"
    unit, name = condition.get("unit", ""), condition["name"]
    threshold = f"{condition.get('op', '')} {number(condition.get('threshold'), unit)}"
    if condition.get("rule") == "binomial" and condition.get("aggregate") is not None and condition.get("n"):
        return f"{name}: {round(float(condition['aggregate']) * condition['n'])} of {condition['n']} seeds {threshold}"
    return f"{name}: {number(condition.get('aggregate'), unit)} ({threshold})"


def _verdict_cell(entry: dict) -> str:
    text = words(entry["verdict"])
    if entry.get("regression"):
        text += " (REGRESSION)"
    elif entry.get("as_expected") is False:
        text += f" (predicted {words(entry['expected'])})"
    elif entry.get("as_expected") and entry.get("expected") != "reproduced":
        text += f" (as {entry.get('expectation')})"
    return text


def summary_rows(entries: list[dict]) -> list[list[str]]:
    """One row per claim: the verdict table of the console, report.md and report.html."""
    rows = []
    for e in entries:
        condition = headline(e)
        rows.append([e["id"], _verdict_cell(e), _interval_text(condition), e.get("control", "none"),
                     _key_number(condition), e.get("paper_value", "")])
    return rows


def text_table(columns: list[str], rows: list[list[str]], wrap: int = CONSOLE_WIDTH) -> str:
    """A plain fixed-width table for the console; a cell longer than `wrap` continues on the next lines."""
    import textwrap

    cells = [[textwrap.wrap(str(v), wrap) or [""] for v in row] for row in rows]
    widths = [max(len(part) for part in [str(name), *(p for row in cells for p in row[i])]) for i, name in enumerate(columns)]
    line = lambda parts: "  ".join(str(v).ljust(w) for v, w in zip(parts, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    for row in cells:
        out += [line([c[k] if k < len(c) else "" for c in row]) for k in range(max(map(len, row)))]
    return "\n".join(out)


TALLY = (("reproduced", "reproduced"), ("not_reproduced", "not reproduced"), ("inconclusive", "inconclusive"),
         ("expected", "expected failures or inconclusive"), ("not_at_tier", "not at tier"), ("not_run", "not run"), ("error", "error"))


def tally(entries: list[dict]) -> str:
    """One line of counts: how many claims came out which way (expected failures counted apart)."""
    def kind(e: dict) -> str:
        return "expected" if e.get("expected") not in (None, "reproduced") and e.get("as_expected") else e["verdict"]

    counts = {key: sum(kind(e) == key for e in entries) for key, _ in TALLY}
    regressed, contradicted = len(regressions(entries)), len(contradicted_predictions(entries))
    return (f"{len(entries)} claims: " + ", ".join(f"{counts[key]} {text}" for key, text in TALLY if counts[key] or key in
                                                    ("reproduced", "not_reproduced", "inconclusive"))
            + f"; {regressed} regression{'s' * (regressed != 1)}"
            + (f"; {contradicted} prediction{'s' * (contradicted != 1)} contradicted" if contradicted else ""))


CONSOLE_COLUMNS = ["claim", "verdict", "n", "95% interval", "control"]
CONSOLE_MAX = 100  # columns of the console summary: one row per claim fits a 100-column terminal
CONTROL_WORDS = {"failed_as_expected": "fails", "passed_unexpectedly": "PASSES", "inconclusive": "unclear",
                 "none": "-", "error": "error", "not_run": "not run"}
CONSOLE_LEGEND = ("(expected): the tier expects this failure (the report says why); (unpredicted): a prediction "
                  "the run contradicts, no failure; interval: of the condition closest to failing. Control: fails = "
                  "the negative control fails, as it must; PASSES or unclear (it straddles): the claim stays "
                  "inconclusive.")


def _console_verdict(entry: dict) -> str:
    """The verdict as the console shows it: the word and, where it is not plainly 'reproduced as
    expected', how it stands against the tier's expectation (the details are in the report)."""
    text = {"error": "error", "not_run": "not run"}.get(entry["verdict"], words(entry["verdict"]))
    if entry.get("regression"):
        return text + " (REGRESSION)"
    if entry.get("as_expected") is False:
        return text + " (unpredicted)"
    if entry.get("as_expected") and entry.get("expected") != "reproduced":
        return text + " (expected)"
    return text


def _console_interval(condition: dict | None) -> str:
    """The headline's 95% interval in its unit, short: '[+0.7, +2.3] points', '[99.5%, 100.0%]'."""
    if condition is None:
        return "-"
    unit, interval = condition.get("unit", ""), condition.get("interval")
    if not interval or not all(math.isfinite(float(v)) for v in interval):
        return "none (1 seed)" if condition.get("n") == 1 else "none"
    low, high = (float(v) for v in interval)
    if condition.get("rule") == "binomial":
        return f"share [{low:.2f}, {high:.2f}]"
    if unit == "points":
        return f"[{100 * low:+.1f}, {100 * high:+.1f}] points"
    return f"[{number(low, unit)}, {number(high, unit)}]"


def console_rows(entries: list[dict]) -> list[list[str]]:
    """One row per claim judged at this tier: claim, verdict, n, interval of the headline, control."""
    rows = []
    for e in entries:
        if e["verdict"] == "not_at_tier":
            continue
        condition = headline(e)
        rows.append([e["id"], _console_verdict(e), str(condition.get("n", "?")) if condition else "-",
                     _console_interval(condition), CONTROL_WORDS.get(e.get("control", "none"), e.get("control", ""))])
    return rows


def fitted_table(columns: list[str], rows: list[list[str]], width: int = CONSOLE_MAX, keep: int = 1) -> str:
    """A fixed-width table no wider than `width`: columns after the first `keep` (claim ids stay whole,
    to be copied) are narrowed a character at a time, each time the one that wraps the fewest rows,
    until the table fits."""
    import textwrap

    natural = [max(len(str(v)) for v in [name, *(row[i] for row in rows)]) for i, name in enumerate(columns)]
    widths = list(natural)
    def wrapped(i: int) -> int:  # rows whose cell in column i would wrap one character narrower
        return sum(len(str(row[i])) > widths[i] - 1 for row in rows)

    while sum(widths) + 2 * (len(widths) - 1) > width:
        narrowable = [i for i in range(keep, len(widths)) if widths[i] > 6]
        if not narrowable:
            break
        widths[min(narrowable, key=lambda i: (wrapped(i), -widths[i]))] -= 1
    cells = [[textwrap.wrap(str(v), w) or [""] for v, w in zip(row, widths)] for row in rows]
    line = lambda parts: "  ".join(str(v).ljust(w) for v, w in zip(parts, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    for row in cells:
        out += [line([c[k] if k < len(c) else "" for c in row]) for k in range(max(map(len, row)))]
    return "\n".join(out)


def recheck_command(tier: str, claim_id: str, results: Path | str | None = None, seed: int = 0) -> str:
    """The command that judges one claim again on the stored results (it trains nothing)."""
    return (f"python -m reproduce report --tier {tier} --claim {claim_id}"
            + (f" --results {results}" if results is not None and str(results) != "results" else "")
            + (f" --seed {seed}" if seed else ""))


STABILITY_RECORD = Path(__file__).resolve().parent.parent / "docs" / "stability.md"


def stability_record(claim_id: str, path: Path = STABILITY_RECORD) -> str:
    """What docs/stability.md records for this claim: its quick verdict in each setting (threads,
    base seed) of `python -m reproduce stability`, grouped by verdict; '' where it has no row."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    header = next((line for line in lines if line.startswith("| claim |")), None)
    row = next((line for line in lines if line.startswith(f"| {claim_id} |")), None)
    if header is None or row is None:
        return ""
    settings = [c.strip() for c in header.strip("|").split("|")][1:]
    found: dict[str, list[str]] = {}
    for setting, cell in zip(settings, [c.strip() for c in row.strip("|").split("|")][1:]):
        if cell and cell != "DIFFERS" and setting:
            found.setdefault(cell.split(" (")[0], []).append(setting)
    name = f"{path.parent.name}/{path.name}"
    if len(found) < 2:
        verdict = next(iter(found), "?")
        return (f"{name} records the same quick verdict, {verdict}, in every setting ({', '.join(settings)}): "
                f"a verdict that differs here is not the base seed's doing")
    return (f"{name} records that its quick verdict depends on the base seed or threads (tT-sS): "
            + "; ".join(f"{verdict} at {', '.join(where)}" for verdict, where in found.items()))


def _what_to_do(entries: list[dict], tier: str, results, seed: int) -> list[str]:
    """After a regression: the command that re-checks each claim, what the stability record says of
    it, and how a verdict that moved on purpose becomes the new expectation."""
    import textwrap

    out = ["what to do:"]
    for claim_id in regressions(entries):
        command = recheck_command(tier, claim_id, results, seed)
        if len(command) + 4 > CONSOLE_MAX and " --results" in command:  # a shell continuation keeps 100 columns
            head, tail = command.split(" --results", 1)
            command = f"{head} \\\n      --results{tail}"
        out += [f"  {claim_id}: re-check it alone (trains nothing):", f"    {command}"]
        record = stability_record(claim_id) if tier == "quick" else ""
        out += textwrap.wrap(record or f"docs/stability.md records no {tier} verdicts of this claim at other seeds",
                             CONSOLE_MAX, initial_indent="    ", subsequent_indent="    ")
    out += textwrap.wrap(f"A verdict that moves with the base seed is not a code change (docs/stability.md: "
                         f"`python -m reproduce stability`); a change that moved it on purpose is recorded with "
                         f"`python -m reproduce expect --tier {tier}` and committed, saying why.", CONSOLE_MAX,
                         initial_indent="  ", subsequent_indent="  ")
    return out


def console_summary(entries: list[dict], tier: str | None = None, results=None, seed: int = 0) -> str:
    """What `run` and `report` end with, within CONSOLE_MAX columns: the tally; one row per claim
    judged at this tier (claim, verdict, n and interval of its headline condition, control; the
    paper's words are in the report); the claims not at this tier one line each with the tiers that
    judge them; the notes; and, after a regression, what to do."""
    import textwrap

    tier = tier or next((e.get("tier") for e in entries if e.get("tier")), "quick")
    out = textwrap.wrap(tally(entries), CONSOLE_MAX, subsequent_indent="  ")
    rows = console_rows(entries)
    if rows:
        out += [fitted_table(CONSOLE_COLUMNS, rows), *textwrap.wrap(CONSOLE_LEGEND, CONSOLE_MAX)]
    away = [e for e in entries if e["verdict"] == "not_at_tier"]
    if away:
        width = max(len(e["id"]) for e in away)
        out += [f"not at the {tier} tier; judged at:"]
        out += [f"  {e['id']:<{width}}  {', '.join(e.get('judged_at') or []) or 'no tier'}" for e in away]
    notes = [e for e in entries if e.get("note")]
    if notes:
        out += ["notes:"] + [line for e in notes for line in textwrap.wrap(
            f"{e['id']}: {e['note']}", CONSOLE_MAX, initial_indent="  ", subsequent_indent="    ")]
    contradicted = [e for e in entries if e["id"] in contradicted_predictions(entries)]
    if contradicted:
        out += ["predictions contradicted (no run backed them; not a failure):"] + [
            line for e in contradicted for line in textwrap.wrap(
                f"{e['id']}: {words(e['verdict'])}, {e['expectation_source']}", CONSOLE_MAX,
                initial_indent="  ", subsequent_indent="    ")]
    if regressions(entries):
        out += textwrap.wrap(f"regressed (a measured expectation contradicted, or an error): "
                             f"{', '.join(regressions(entries))}", CONSOLE_MAX, subsequent_indent="  ")
        out += _what_to_do(entries, tier, results, seed)
    return "\n".join(out)


def summary_json(entries: list[dict], tier: str, seed: int = 0, results=None) -> dict:
    """The console summary for machines (`--json`): the tally's counts, the regressions with the
    command that re-checks each, and per claim its verdict, expectation, headline and control."""
    claims = []
    for e in entries:
        condition = headline(e)
        claims.append(dict(
            id=e["id"], verdict=e["verdict"], expected=e.get("expected"), expectation=e.get("expectation") or None,
            as_expected=e.get("as_expected"), regression=bool(e.get("regression")), control=e.get("control", "none"),
            judged_at=e.get("judged_at") or [],
            headline=None if condition is None else {k: condition.get(k) for k in (
                "name", "n", "aggregate", "interval", "threshold", "op", "unit", "rule", "instance")}))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    return finite_json(dict(tier=tier, seed=seed, tally=tally(entries), counts=counts,
                            regressions=[dict(id=i, recheck=recheck_command(tier, i, results, seed),
                                              stability=stability_record(i) if tier == "quick" else "")
                                         for i in regressions(entries)],
                            contradicted_predictions=contradicted_predictions(entries), claims=claims))


def regressions(entries: list[dict]) -> list[str]:
    """Ids of the claims that regressed (exit code 1): a measured expectation contradicted, or an error."""
    return [e["id"] for e in entries if e.get("regression")]


def contradicted_predictions(entries: list[dict]) -> list[str]:
    """Ids of the claims whose predicted verdict the run contradicts: shown, never a failure."""
    return [e["id"] for e in entries if e.get("as_expected") is False and not e.get("regression")]


# --- merging: a report never holds less than it had ------------------------------------------

def stub_entry(claim_id: str, tier: str) -> dict:
    """The entry of a claim not judged in this session: not_at_tier (no case at this tier) or
    not_run (the command that makes its results in each case's message)."""
    from reproduce.judge import Unavailable, judge_claim

    claim = declared([claim_id.split(".")[0]])[claim_id]
    return judge_claim(claim, tier, Unavailable("not_run", f"not judged: make the {tier} results with `python -m "
                                                           f"reproduce --tier {tier} --paper {claim.paper}`"))


def merge_entries(previous: list[dict], judged: list[dict], tier: str, seed: int = 0) -> list[dict]:
    """Every declared claim once, in declaration order.

    A claim judged now replaces its earlier entry, whatever either says (a stale entry is never
    kept in place of a new judgement); a claim not judged now keeps its earlier entry, or is a stub
    (not_at_tier or not_run). So `report --claim ID` or `--paper KEY` merge into the tier's report
    instead of replacing it. Every entry judged now carries its base `seed`; earlier entries of
    another seed stop it (check_seed).
    """
    check_seed(previous, seed, Path("claims.json"))
    before = {e["id"]: e for e in previous}
    now = {e["id"]: {**e, "seed": seed} for e in judged}
    return [now.get(i) or before.get(i) or stub_entry(i, tier) for i in all_claims()]


def publish(root: Path, tier: str, judged: list[dict], results: dict, seed: int = 0, out: Path | None = None) -> list[dict]:
    """Merge the entries judged now into the tier's report (claims.json, report.md, report.html),
    with the paper figures and tables of the claims judged now and the provenance of their results;
    return the merged entries. Claims not judged now keep their entries and their paper figures.
    The report goes to `out`/TIER where given (a store that cannot be written), else beside the results."""
    import xarray as xr

    from reproduce.store import ENGINE, Store

    out = Path(out or root) / tier
    check_report(out, seed)
    entries = merge_entries(read_json(out / "claims.json", []), judged, tier, seed)
    claims = declared({e["paper"] for e in judged})
    figures, tables, provenance = {}, read_json(out / "tables.json", {}), read_json(out / "provenance.json", {})
    used = set()  # a paper figure shown once: under the first claim (declaration order) that names it
    for e in judged:
        claim, ds = claims[e["id"]], results.get(e["paper"])
        tables.pop(claim.id, None)
        if not isinstance(ds, xr.Dataset) or e["verdict"] == "not_at_tier":
            continue
        if claim.figure is not None and claim.figure not in used:
            used.add(claim.figure)
            figures[claim.id] = figure_png(claim.figure(ds))
        if claim.table is not None:
            tables[claim.id] = claim.table(ds)
    from reproduce.runner import plan

    for paper, ds in results.items():
        attrs = []
        for _, run in plan(tier, [paper], seed):
            path = Store(root).path(tier, paper, run.name)
            if path.exists():
                with xr.open_dataset(path, engine=ENGINE) as one:
                    attrs.append(dict(one.attrs))
        if attrs:
            provenance[paper] = run_provenance(attrs)
    _keep_paper_figures(out / "figures", entries, {e["id"] for e in judged}, figures)
    header = claims_header(tier, seed, root)
    write_report(out, tier, entries, figures, tables, provenance, header)
    (out / "tables.json").write_text(json.dumps(tables, indent=1, default=str))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    (out / HEADER_FILE).write_text(json.dumps(header, indent=1) + "\n")
    return entries


HEADER_FILE = "claims-header.json"  # beside claims.json, which stays a plain list of entries for its readers
CLAIMS_SCHEMA = "reproduce-claims/1"


def claims_header(tier: str, seed: int, results: Path) -> dict:
    """What claims.json was judged from and by: tier, base seed, schema, time, commit, command line,
    host, Python, and where the data sets were read from (written to claims-header.json)."""
    import platform
    import shlex
    import socket
    import sys

    from reproduce.data import data_source
    from reproduce.store import git_commit, utc_now

    return dict(schema=CLAIMS_SCHEMA, tier=tier, seed=seed, written_at=utc_now(), git_commit=git_commit(),
                command=" ".join(["python -m reproduce", *map(shlex.quote, sys.argv[1:])])
                if Path(sys.argv[0]).parent.name == "reproduce" else " ".join(map(shlex.quote, sys.argv)),
                host=socket.gethostname(), python=platform.python_version(), results=str(results),
                data_source=data_source(_datasets(tier, seed)))


def _datasets(tier: str, seed: int) -> list[str]:
    """The data sets the tier's runs read (modular arithmetic reads none)."""
    from reproduce.experiments import PAPERS
    from reproduce.runner import plan

    return sorted({getattr(run, "dataset", None) for _, run in plan(tier, PAPERS, seed)} - {None})


def check_report(out: Path, seed: int) -> None:
    """Before anything is judged (or trained): the tier's report folder takes files, and the report
    already there is intact and of this base seed, so merging into it can lose nothing."""
    from reproduce.errors import check_writable

    check_writable(out)
    check_seed(read_json(out / "claims.json", []), seed, out / "claims.json")
    read_json(out / "tables.json", {})
    read_json(out / "provenance.json", {})


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


def read_json(path: Path, default):
    """A report file written earlier, or `default` where there is none.

    A file that is there but is not what the report writes (not JSON, another shape) stops with one
    line: merging into it would replace the whole report with one that knows nothing.
    """
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as error:
        value = error
    problem = (f"not the {type(default).__name__} the report writes" if not isinstance(value, type(default))
               else entry_problem(value) if isinstance(value, list) else None)
    if problem:
        raise UserError(f"{path} is damaged ({problem}): move it aside to start this tier's report afresh; "
                        f"nothing was changed")
    return value


ENTRY_TYPES = {"id": str, "verdict": str, "paper": str, "tier": str, "cases": list, "seed": int, "judged_at": list,
               "regression": bool, "as_expected": (bool, type(None)), "expected": (str, type(None)),
               "control": str, "note": str}


def entry_problem(entries: list) -> str | None:
    """Why a claims.json list is not one the report wrote (the first wrong entry or field), or None.
    Read before merging: an entry of the wrong shape would turn stored verdicts into stubs."""
    for k, e in enumerate(entries):
        if not isinstance(e, dict):
            return f"entry {k} is a {type(e).__name__}, not an object"
        for key, kind in ENTRY_TYPES.items():
            if key in e and not isinstance(e[key], kind) or key in ("id", "verdict") and key not in e:
                return f"entry {k}: {key} {e.get(key, 'missing')!r} is not a {getattr(kind, '__name__', 'string or null')}"
        if e["verdict"] not in VERDICT_TEXT:
            return f"entry {k} ({e['id']}): unknown verdict {e['verdict']!r}"
        if isinstance(e.get("seed"), bool) or any(not isinstance(c, dict) for c in e.get("cases", [])):
            return f"entry {k} ({e['id']}): a seed or case of the wrong type"
    return None


def check_seed(entries: list[dict], seed: int, path: Path) -> None:
    """A report holds the verdicts of one base seed: an entry is only ever replaced by a newer verdict
    of its own seed, so a report of another seed in the same store stops before anything is judged.
    A stub (every case not run: a paper the report did not judge) holds no verdict of any seed."""
    seeds = sorted({e.get("seed", 0) for e in entries
                    if any(c.get("verdict") != "not_run" for c in e.get("cases", []))} - {seed})
    if seeds:
        raise UserError(f"{path} holds verdicts of base seed {', '.join(map(str, seeds))}, not {seed}: a report "
                        f"of seed {seed} would mix them; pass --results with another folder for seed {seed}")


def run_provenance(attrs: list[dict]) -> dict:
    """What made a paper's results, from its run files' attrs: each key's distinct values, and the
    span from the first start to the last finish."""
    out = {}
    for key in PROVENANCE_KEYS:
        values = sorted({_provenance_value(key, a) for a in attrs if key in a})
        out[key] = ", ".join(values) if values else "unknown"
    starts, ends = [a["started_at"] for a in attrs if "started_at" in a], [a["finished_at"] for a in attrs if "finished_at" in a]
    out["made"] = f"{min(starts)} to {max(ends)}" if starts and ends else "unknown"
    out["runs"] = len(attrs)
    return out


def _provenance_value(key: str, attrs: dict) -> str:
    """A run's value of a provenance key as the report shows it: a short commit; "tf32 (float32 on the CPU)" for a run the CPU
    trained (it has no TF32: the recorded "tf32" setting means float32 there)."""
    if key == "git_commit":
        return _short_commit(str(attrs[key]))
    if key == "precision" and str(attrs.get("device", "")).startswith("cpu") and attrs[key] == "tf32":
        return "tf32 (float32 on the CPU)"  # the file's own word, and what it meant there
    return str(attrs[key])


def _short_commit(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _seeds(entries: list[dict], paper: str) -> str:
    ns = {c.get("n") for e in entries if e.get("paper", e["id"].split(".")[0]) == paper
          for case in e.get("cases", []) for c in case.get("conditions") or [] if c.get("n")}
    return "/".join(str(n) for n in sorted(ns)) or "-"


def provenance_table(provenance: dict[str, dict], entries: list[dict]) -> Table:
    columns = ["paper", "base seed", "n (seeds)", "host", "device", "device name", "torch", "precision", "threads",
               "package", "git commit", "made (UTC)", "runs"]
    rows = [[paper, p["seed"], _seeds(entries, paper), p.get("host", "unknown"), p["device"], p["device_name"],
             p["torch_version"], p["precision"], p["torch_threads"], p["package_version"], p["git_commit"], p["made"],
             p["runs"]] for paper, p in sorted(provenance.items())]
    return columns, rows


# --- the report files ----------------------------------------------------------------------

def _ours(entry: dict) -> str:
    """Each main case's summary with its verdict and the n of its evidence."""
    parts = []
    for c in entry.get("cases", []):
        if not c.get("control"):
            n = max((j.get("n", 0) for j in c.get("conditions") or []), default=0)
            parts.append(f"{c['case']} ({c.get('verdict', c.get('outcome'))}, n={n}): "
                         f"{c.get('summary') or c.get('message') or '-'}")
    return "; ".join(parts) or "-"


CASE_COLUMNS = ["case", "control", "verdict", "headline (n, interval)", "ours", "message"]


def case_rows(entry: dict) -> list[list[str]]:
    rows = []
    for c in entry.get("cases", []):
        closest = min(c.get("conditions") or [], key=_margin, default=None)
        never = [f"{j['name']}: {note}" for j in c.get("conditions") or [] for note in _never(j)]
        left_out = [item for j in c.get("conditions") or [] for item in j.get("left_out") or []]
        summary = c.get("summary", "") + (f" Left out: {'; '.join(left_out)}." if left_out else "")
        rows.append([c["case"], "control" if c.get("control") else "main",
                     c.get("verdict", "") + (f" ({'; '.join(never)})" if never else ""),
                     f"{_key_number(closest)}; {_interval_text(closest)}" if closest else "-", summary.strip(),
                     c.get("message", "")])
    return rows


def finite_json(value):
    """`value` with every non-finite number as the string "inf", "-inf" or "nan": claims.json is
    strict JSON (which has no infinity), and float() reads the strings back."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else str(float(value))
    return value


def _markdown_table(table: Table) -> list[str]:
    columns, rows = table
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _html_table(table: Table, classes: list[str] | None = None, links: bool = False,
                cell_classes: bool = False) -> str:
    """A table; with `links` the first cell of each row (a claim id) links to that claim's section;
    with `cell_classes` each later cell is coloured by the verdict it starts with (the scorecard)."""
    columns, rows = table
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    cell = lambda k, v: (f"<a href='#{anchor(str(v))}'>{html.escape(str(v))}</a>" if links and k == 0  # noqa: E731
                         else html.escape(str(v)))
    body = "".join(f"<tr class='{(classes or [''] * len(rows))[i]}'>" + "".join(
        (f"<td class='{_cell_class(v)}'>" if cell_classes and k else "<td>") + f"{cell(k, v)}</td>" for k, v in enumerate(row))
        + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell_class(text) -> str:
    """A scorecard cell's colour: by the verdict its text starts with; expectations and '-' grey."""
    text = str(text)
    if "REGRESSION" in text:
        return "regression"
    if "(expected)" in text or "(as measured)" in text or "(as predicted)" in text:
        return "xfail"
    for verdict, words_ in VERDICT_TEXT.items():
        if text.startswith(words_.split(" (")[0]) and verdict not in ("not_run", "not_at_tier"):
            return verdict
    return "not_run"


def anchor(claim_id: str) -> str:
    """The id of a claim's section in both files ('ddmlp.noisy_learned_later' -> 'ddmlp-noisy_learned_later')."""
    return claim_id.replace(".", "-")


def contrasts(entries: list[dict]) -> list[list[str]]:
    """Rows (claim, setting, verdict, ours) for every pair of claims where one contradicts the other:
    the two papers' opposite findings side by side, each in its own setting."""
    by_id = {e["id"]: e for e in entries}
    rows = []
    for e in entries:
        if not e.get("contradicts"):
            continue
        rows.append([e["id"], e.get("setting", ""), words(e["verdict"]), _ours(e)])
        other = by_id.get(e["contradicts"])
        if other is None or other["verdict"] == "not_run":
            rows.append([e["contradicts"], "", "not judged in this session (run both papers' claims together)", "-"])
        else:
            rows.append([other["id"], other.get("setting", ""), words(other["verdict"]), _ours(other)])
    return rows


CONTRAST_COLUMNS = ["claim", "setting", "verdict", "ours"]


CONTROL_TEXT = {"failed_as_expected": "fails, as it must", "passed_unexpectedly": "PASSES: the criterion cannot tell "
                "the phenomenon from its absence", "inconclusive": "inconclusive: its interval straddles the threshold",
                "none": "no control case at this tier", "error": "error", "not_run": "not run"}


def _condition_text(j: dict) -> str:
    """'rise from smallest to largest width: +20.3 points (>= +10.0 points); n=6, [+17.2 points, +23.4 points]'."""
    return f"{_key_number(j)}; {_interval_text(j)}" + (f" at {j['instance']}" if j.get("instance") and
                                                         j["instance"] not in j["name"] else "")


def failing_evidence(entry: dict, most: int = 3) -> str:
    """The judged conditions of the main cases that did not come out reproduced: what an expected
    failure rests on (each condition's clearest failure, the clearest first; at most `most`)."""
    found = [j for c in entry.get("cases", []) if not c.get("control") for j in c.get("conditions") or []
             if not j.get("reported") and j.get("verdict") != "reproduced"]
    worst: dict[str, dict] = {}  # per condition, its clearest failure
    for j in sorted(found, key=_margin):
        worst.setdefault(j["name"], j)
    found = list(worst.values())
    text = "; ".join(f"{_condition_text(j)} ({words(j.get('verdict', ''))})" for j in found[:most])
    more = len(found) - most
    return text + (f"; and {more} more condition{'s' * (more != 1)} in the cases below" if more > 0 else "")


def _elsewhere(e: dict) -> list[tuple[str, str]]:
    """A claim not at this tier: the tiers that judge it, the commands, and what each tier expects."""
    from reproduce.judge import expectation

    claim = declared([e["paper"]]).get(e["id"])
    tiers = e.get("judged_at") or []
    lines = [("verdict", "not judged at this tier")]
    for t in tiers:
        expect = expectation(claim, t) if claim else {"expectation": "none"}
        expected = ("" if expect["expectation"] == "none" else
                    f"; expected there: {words(expect['expected'])} ({expect['expectation']})")
        lines.append((f"judged at {t}", f"`python -m reproduce --tier {t} --paper {e['paper']}`, then "
                                       f"`{recheck_command(t, e['id'])}`{expected}"))
    return lines + [("negative control", e.get("control_text", "")), ("paper", e.get("paper_value", ""))]


def _details(e: dict) -> list[tuple[str, str]]:
    """(label, text) lines of a claim's section, the same in both files."""
    if e["verdict"] == "not_at_tier":
        return _elsewhere(e)
    expected = "" if e.get("expected") is None else f"; expected {words(e['expected'])}, {e.get('expectation_source', '')}"
    failure = e["verdict"] in ("not_reproduced", "inconclusive")
    return [("verdict", _verdict_cell(e) + expected), ("note", e.get("note", "")),
            ("why it fails at this tier", e.get("why", "") if failure else ""),
            ("evidence of the failure", failing_evidence(e) if failure else ""),
            ("negative control", e.get("control_text", "")),
            ("control's result", CONTROL_TEXT.get(e.get("control", "none"), e.get("control", ""))),
            ("paper", e.get("paper_value", "")), ("criterion", e.get("criterion", "")),
            ("control's criterion", e.get("control_criterion", "")), ("rule", e.get("rule", "")),
            ("setting", e.get("setting", "")),
            ("headline", f"{_key_number(headline(e))}; {_interval_text(headline(e))}"), ("ours", _ours(e))]


def evidence_pngs(entries: list[dict]) -> dict[str, bytes]:
    """Each claim's evidence figure (reproduce/figures/evidence.py) where its cases have conditions."""
    from reproduce.figures.evidence import evidence_figure

    out = {}
    for e in entries:
        fig = evidence_figure(e, number)
        if fig is not None:
            out[e["id"]] = figure_png(fig)
    return out


def write_report(out_dir: Path, tier: str, entries: list[dict], paper_figures: dict[str, bytes],
                 tables: dict[str, Table] | None = None, provenance: dict[str, dict] | None = None,
                 header: dict | None = None) -> None:
    """Write claims.json, report.md with figures/<id>.png, and a self-contained report.html.

    Every claim gets its evidence figure (figures/<id>.png, drawn from its entry) and, where given,
    the paper-figure analogue (figures/<id>.paper.png). `tables` (claim id -> columns and rows) are
    shown under their claim; `provenance` (paper -> run_provenance) heads both reports.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, provenance = tables or {}, provenance or {}
    (out_dir / "claims.json").write_text(json.dumps(finite_json(entries), indent=2, default=float, allow_nan=False))
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: dict[str, list[tuple[str, bytes]]] = {e["id"]: [] for e in entries}
    evidence = evidence_pngs(entries)
    for e in entries:
        if e["id"] not in evidence:  # no conditions now: an older evidence figure would not be this verdict's
            (fig_dir / f"{e['id']}.png").unlink(missing_ok=True)
    for name, pngs in (("", evidence), (".paper", paper_figures)):
        for claim_id, png in pngs.items():
            (fig_dir / f"{claim_id}{name}.png").write_bytes(png)
            figures[claim_id].append((f"figures/{claim_id}{name}.png", png))
    summary = (SUMMARY_COLUMNS, summary_rows(entries))
    contrast_rows = contrasts(entries)
    extra = dict(header=header or {}, card=scorecard_table(out_dir.parent, {tier: entries}))
    (out_dir / "report.md").write_text(_markdown(tier, entries, summary, provenance, tables, figures, contrast_rows, **extra))
    (out_dir / "report.html").write_text(_html(tier, entries, summary, provenance, tables, figures, contrast_rows, **extra))


HEADER_LABELS = (("command", "command"), ("written_at", "written (UTC)"), ("git_commit", "judged at commit"),
                 ("host", "host"), ("python", "Python"), ("results", "results read from"))


def header_lines(header: dict) -> list[tuple[str, str]]:
    """(label, text) of what judged this report (claims-header.json), the data sources last."""
    lines = [(label, str(header[key])) for key, label in HEADER_LABELS if header.get(key) not in (None, "")]
    return lines + [(f"data: {name}", source) for name, source in (header.get("data_source") or {}).items()]


# --- the scorecard: every claim at every tier ------------------------------------------------

SHORT_WORDS = {"reproduced": "reproduced", "NOT reproduced": "NOT repro.", "inconclusive": "inconcl."}
SCORECARD_KEY = ("=: measured expectation, ~: predicted one (no report of that tier in this store); !: a regression; "
                 "*: contradicts its prediction; the words in full: scorecard.md")


def _short_cell(entry: dict | None, expect: dict | None) -> str:
    """A scorecard cell within 13 columns for the console (SCORECARD_KEY says the marks)."""
    if entry is not None:
        text = SHORT_WORDS.get(words(entry["verdict"]), words(entry["verdict"]))
        mark = "!" if entry.get("regression") else "*" if entry.get("as_expected") is False else ""
        return text + mark + (f" s{entry['seed']}" if entry.get("seed") else "")
    if expect is None or expect["expected"] is None:
        return "?"
    return ("=" if expect["expectation"] == "measured" else "~") + SHORT_WORDS.get(words(expect["expected"]),
                                                                                 words(expect["expected"]))


def scorecard_table(root: Path, known: dict[str, list[dict]] | None = None, short: bool = False) -> Table:
    """Rows: every declared claim; columns: the tiers. A cell is the verdict in ROOT/TIER/claims.json
    where that report exists (or in `known`), else the tier's expectation marked measured or
    predicted, or '-' where the claim has no case at that tier. `short`: the console's cells
    (`_short_cell`), so that the table fits 100 columns without wrapping."""
    from reproduce.experiments import TIERS
    from reproduce.judge import expectation

    reports = {}
    for tier in TIERS:
        if known and tier in known:
            reports[tier] = {e["id"]: e for e in known[tier]}
        elif (Path(root) / tier / "claims.json").is_file():
            reports[tier] = {e["id"]: e for e in read_json(Path(root) / tier / "claims.json", [])}
    rows = []
    for claim_id, claim in declared().items():
        row = [claim_id]
        for tier in TIERS:
            entry = reports.get(tier, {}).get(claim_id)
            if not claim.cases_at(tier):
                row.append("-")
            elif entry is not None and entry["verdict"] not in ("not_run", "not_at_tier"):
                row.append(_short_cell(entry, None) if short else
                           _verdict_cell(entry) + (f", seed {entry['seed']}" if entry.get("seed") else ""))
            else:
                expect = expectation(claim, tier)
                row.append(_short_cell(None, expect) if short else "[nothing expected]" if expect["expected"] is None
                           else f"[{expect['expectation']} {words(expect['expected'])}]")
        rows.append(row)
    return ["claim", *TIERS], rows


def write_scorecard(root: Path, out: Path | None = None) -> Table:
    """DIR/scorecard.md and scorecard.html from the tiers' claims.json in ROOT; returns the table."""
    out = Path(out or root)
    table = scorecard_table(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scorecard.md").write_text("\n".join(["# Scorecard: every claim at every tier", "", SCORECARD_TEXT, ""]
                                                + _markdown_table(table)) + "\n")
    (out / "scorecard.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Scorecard</title><style>{CSS}</style></head><body>"
        f"<h1>Scorecard: every claim at every tier</h1><p>{html.escape(SCORECARD_TEXT)}</p>"
        f"{_html_table(table, cell_classes=True)}</body></html>")
    return table


SCORECARD_TEXT = ("Each cell: the claim's verdict in that tier's report in this store; [in brackets] where the "
                  "store has no results of the tier: what the tier expects, marked measured (data/expected/TIER.json, "
                  "a cited run) or predicted (a declared reason); '-': the claim has no case at that tier.")


PREAMBLE = ("Numbers: accuracies in percent with one decimal (71.2%), gains between accuracies or between relative "
            "gains in points with their sign (+8.0 points), other statistics with three significant digits. Verdicts "
            "judge each condition's seed aggregate with its 95% interval against the threshold.")

LEGEND = (
    ("reproduced", "every condition's 95% interval clears its threshold, and the negative control fails"),
    ("NOT reproduced", "some condition's interval lies on the failing side of its threshold"),
    ("inconclusive", "an interval straddles its threshold, or the control passes or straddles"),
    ("(expected)", "the tier expects this verdict: measured (data/expected/TIER.json, a cited run) or predicted "
                   "(a declared reason); 'why it fails at this tier' says why, with the evidence"),
    ("(REGRESSION)", "a measured expectation contradicted, or an error: the command exits 1"),
    ("(predicted ...)", "a prediction the run contradicts: shown, no failure"),
    ("not at this tier", "the claim has no case at this tier: its section names the tiers and commands that judge it"),
    ("n, 95% interval", "of the headline: the main cases' informative condition closest to failing"),
    ("control", "failed_as_expected: the negative control fails, as it must; passed_unexpectedly or inconclusive "
                "leave the claim inconclusive"),
    ("colours", "green reproduced, red NOT reproduced or a regression, yellow an expected failure or inconclusive, "
                "grey not run or not at this tier"),
)


def _markdown(tier, entries, summary, provenance, tables, figures, contrast_rows, header=None, card=None) -> str:
    md = [f"# Claim report, tier `{tier}`", "", tally(entries), "", "## Legend", ""]
    md += [f"- **{term}**: {text}" for term, text in LEGEND] + ["", PREAMBLE]
    if card:
        md += ["", "## Every claim at every tier", "", SCORECARD_TEXT, ""] + _markdown_table(card)
    columns, rows = summary
    linked = [[f"[{row[0]}](#{anchor(row[0])})", *row[1:]] for row in rows]
    md += ["", f"## Verdicts at `{tier}`", ""] + _markdown_table((columns, linked))
    for e in entries:
        md += ["", f"<a id=\"{anchor(e['id'])}\"></a>", "", f"## `{e['id']}` ({e.get('section', '')})", "",
               e.get("statement", ""), ""]
        md += [f"- {label}: {text}" for label, text in _details(e) if text]
        if e.get("cases"):
            md += [""] + _markdown_table((CASE_COLUMNS, case_rows(e)))
        if e["id"] in tables:
            md += [""] + _markdown_table(tables[e["id"]])
        md += [f"\n![{e['id']}]({path})" for path, _ in figures.get(e["id"], [])]
    if contrast_rows:
        md += ["", "## Contrasts", "", "Claims of different papers that say opposite things, each in its own setting.", ""]
        md += _markdown_table((CONTRAST_COLUMNS, contrast_rows))
    md += ["", "## What made these numbers", ""]
    md += [f"- {label}: {text}" for label, text in header_lines(header or {})] + [""]
    md += _markdown_table(provenance_table(provenance, entries)) if provenance else ["(no result files were read)"]
    return "\n".join(md) + "\n"


CSS = ("body{font-family:sans-serif;max-width:1400px;margin:auto;font-size:14px}"
       "td,th{border:1px solid #ccc;padding:3px 5px;vertical-align:top}table{border-collapse:collapse;margin:.5em 0}"
       ".reproduced{background:#d4f4d4}.not_reproduced,.error,.regression{background:#f8d0d0}"
       ".inconclusive,.xfail{background:#fbeec8}.not_run,.not_at_tier{background:#eee}"
       "img{max-width:100%;display:block;margin:.5em 0}section{border-top:2px solid #888;margin-top:1.5em}"
       "dl.legend{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.legend dd{margin:0}"
       "dl.legend dt{font-weight:bold}")


def _html(tier, entries, summary, provenance, tables, figures, contrast_rows, header=None, card=None) -> str:
    classes = [_css_class(e) for e in entries]
    sections = []
    for e, css in zip(entries, classes):
        details = "".join(f"<p class='{css if label == 'verdict' else ''}'><b>{html.escape(label)}:</b> "
                          f"{html.escape(str(text))}</p>" for label, text in _details(e) if text)
        imgs = "".join(f"<img alt='{html.escape(path)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                       for path, png in figures.get(e["id"], []))
        sections.append(
            f"<section id='{anchor(e['id'])}'><h2><code>{html.escape(e['id'])}</code> ({html.escape(e.get('section', ''))})</h2>"
            f"<p>{html.escape(e.get('statement', ''))}</p>{details}"
            + (_html_table((CASE_COLUMNS, case_rows(e))) if e.get("cases") else "")
            + (_html_table(tables[e["id"]]) if e["id"] in tables else "") + imgs + "</section>")
    prov = _html_table(provenance_table(provenance, entries)) if provenance else "<p>(no result files were read)</p>"
    made = "".join(f"<li><b>{html.escape(label)}:</b> {html.escape(text)}</li>" for label, text in header_lines(header or {}))
    legend = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in LEGEND)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Claim report, tier {tier}</title>"
            f"<style>{CSS}</style></head><body><h1>Claim report, tier {tier}</h1>"
            f"<p><b>{html.escape(tally(entries))}</b></p>"
            f"<details open><summary><b>Legend</b></summary><dl class='legend'>{legend}</dl>"
            f"<p>{html.escape(PREAMBLE)}</p></details>"
            + (f"<h2>Every claim at every tier</h2><p>{html.escape(SCORECARD_TEXT)}</p>"
               f"{_html_table(card, links=True, cell_classes=True)}" if card else "")
            + f"<h2>Verdicts at {html.escape(tier)}</h2>{_html_table(summary, classes, links=True)}"
            f"{''.join(sections)}"
            + (f"<section><h2>Contrasts</h2>{_html_table((CONTRAST_COLUMNS, contrast_rows))}</section>" if contrast_rows else "")
            + f"<section><h2>What made these numbers</h2><ul>{made}</ul>{prov}</section></body></html>")


def _css_class(e: dict) -> str:
    return ("regression" if e.get("regression") else
            "xfail" if e.get("expected") not in (None, "reproduced") and e["verdict"] != "reproduced" else e["verdict"])

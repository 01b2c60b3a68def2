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

PROVENANCE_KEYS = ("device", "device_name", "torch_version", "precision", "torch_threads", "package_version",
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
    """The main cases' condition closest to failing: the claim's headline n, interval and number."""
    found = [c for case in entry.get("cases", []) if not case.get("control") for c in case.get("conditions") or []
             if not c.get("reported")]
    return min(found, key=_margin, default=None)


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


def console_summary(entries: list[dict]) -> str:
    """The tally, the verdict table and the notes that need reading, as `run` and `report` end."""
    notes = [f"  {e['id']}: {e['note']}" for e in entries if e.get("note")]
    predicted = [f"  {e['id']}: {words(e['verdict'])}, {e['expectation_source']}" for e in entries
                 if e["id"] in contradicted_predictions(entries)]
    return (tally(entries) + "\n" + text_table(SUMMARY_COLUMNS, summary_rows(entries))
            + ("\nnotes:\n" + "\n".join(notes) if notes else "")
            + ("\npredictions contradicted (no run backed them; not a failure):\n" + "\n".join(predicted)
               if predicted else ""))


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


def publish(root: Path, tier: str, judged: list[dict], results: dict, seed: int = 0) -> list[dict]:
    """Merge the entries judged now into the tier's report (claims.json, report.md, report.html),
    with the paper figures and tables of the claims judged now and the provenance of their results;
    return the merged entries. Claims not judged now keep their entries and their paper figures."""
    import xarray as xr

    from reproduce.store import ENGINE, Store

    out = Path(root) / tier
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
    write_report(out, tier, entries, figures, tables, provenance)
    (out / "tables.json").write_text(json.dumps(tables, indent=1, default=str))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return entries


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
    shaped = isinstance(value, type(default)) and (
        not isinstance(value, list) or all(isinstance(e, dict) and "id" in e for e in value))
    if not shaped:
        raise UserError(f"{path} is damaged (not the {type(default).__name__} the report writes): move it aside "
                        f"to start this tier's report afresh; nothing was changed")
    return value


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
    """A run's value of a provenance key as the report shows it: a short commit; "fp32" for a run the CPU
    trained (it has no TF32: the recorded "tf32" setting means float32 there)."""
    if key == "git_commit":
        return _short_commit(str(attrs[key]))
    if key == "precision" and str(attrs.get("device", "")).startswith("cpu") and attrs[key] == "tf32":
        return "fp32"
    return str(attrs[key])


def _short_commit(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _seeds(entries: list[dict], paper: str) -> str:
    ns = {c.get("n") for e in entries if e.get("paper", e["id"].split(".")[0]) == paper
          for case in e.get("cases", []) for c in case.get("conditions") or [] if c.get("n")}
    return "/".join(str(n) for n in sorted(ns)) or "-"


def provenance_table(provenance: dict[str, dict], entries: list[dict]) -> Table:
    columns = ["paper", "base seed", "n (seeds)", "device", "device name", "torch", "precision", "threads",
               "package", "git commit", "made (UTC)", "runs"]
    rows = [[paper, p["seed"], _seeds(entries, paper), p["device"], p["device_name"], p["torch_version"],
             p["precision"], p["torch_threads"], p["package_version"], p["git_commit"], p["made"], p["runs"]]
            for paper, p in sorted(provenance.items())]
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


CASE_COLUMNS = ["case", "control", "outcome", "verdict", "headline (n, interval)", "ours", "message"]


def case_rows(entry: dict) -> list[list[str]]:
    rows = []
    for c in entry.get("cases", []):
        closest = min(c.get("conditions") or [], key=_margin, default=None)
        never = [f"{j['name']}: {note}" for j in c.get("conditions") or [] for note in _never(j)]
        left_out = [item for j in c.get("conditions") or [] for item in j.get("left_out") or []]
        summary = c.get("summary", "") + (f" Left out: {'; '.join(left_out)}." if left_out else "")
        rows.append([c["case"], "control" if c.get("control") else "main", c.get("outcome", ""),
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


def _html_table(table: Table, classes: list[str] | None = None, links: bool = False) -> str:
    """A table; with `links` the first cell of each row (a claim id) links to that claim's section."""
    columns, rows = table
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    cell = lambda k, v: (f"<a href='#{anchor(str(v))}'>{html.escape(str(v))}</a>" if links and k == 0  # noqa: E731
                         else html.escape(str(v)))
    body = "".join(f"<tr class='{(classes or [''] * len(rows))[i]}'>" + "".join(
        f"<td>{cell(k, v)}</td>" for k, v in enumerate(row)) + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


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


def _details(e: dict) -> list[tuple[str, str]]:
    """(label, text) lines of a claim's section, the same in both files."""
    if e["verdict"] == "not_at_tier":
        tiers = e.get("judged_at") or []
        return [("verdict", "not at this tier: judged at " + ", ".join(
            f"{t} (`python -m reproduce --tier {t} --paper {e['paper']}`)" for t in tiers)),
            ("negative control", e.get("control_text", "")), ("paper", e.get("paper_value", ""))]
    expected = "" if e.get("expected") is None else f" (expected: {words(e['expected'])}, {e.get('expectation_source', '')})"
    return [("verdict", _verdict_cell(e) + expected), ("note", e.get("note", "")), ("why", e.get("why", "")),
            ("negative control", f"{e.get('control', 'none')}: {e.get('control_text', '')}"),
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
                 tables: dict[str, Table] | None = None, provenance: dict[str, dict] | None = None) -> None:
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
    (out_dir / "report.md").write_text(_markdown(tier, entries, summary, provenance, tables, figures, contrast_rows))
    (out_dir / "report.html").write_text(_html(tier, entries, summary, provenance, tables, figures, contrast_rows))


PREAMBLE = ("Numbers: accuracies in percent with one decimal (71.2%), gains between accuracies in points with "
            "their sign (+8.0 points), other statistics with three significant digits. Verdicts judge each "
            "condition's seed aggregate with its 95% interval against the threshold.")


def _markdown(tier, entries, summary, provenance, tables, figures, contrast_rows) -> str:
    md = [f"# Claim report, tier `{tier}`", "", "## What made these numbers", ""]
    md += _markdown_table(provenance_table(provenance, entries)) if provenance else ["(no result files were read)"]
    columns, rows = summary
    linked = [[f"[{row[0]}](#{anchor(row[0])})", *row[1:]] for row in rows]
    md += ["", PREAMBLE, "", "## Verdicts", "", tally(entries), ""] + _markdown_table((columns, linked))
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
    return "\n".join(md) + "\n"


CSS = ("body{font-family:sans-serif;max-width:1400px;margin:auto;font-size:14px}"
       "td,th{border:1px solid #ccc;padding:3px 5px;vertical-align:top}table{border-collapse:collapse;margin:.5em 0}"
       ".reproduced{background:#d4f4d4}.not_reproduced,.error,.regression{background:#f8d0d0}"
       ".inconclusive,.xfail{background:#fbeec8}.not_run,.not_at_tier{background:#eee}"
       "img{max-width:100%;display:block;margin:.5em 0}section{border-top:2px solid #888;margin-top:1.5em}")


def _html(tier, entries, summary, provenance, tables, figures, contrast_rows) -> str:
    classes = ["regression" if e.get("regression") else
               "xfail" if e.get("expected") not in (None, "reproduced") else e["verdict"] for e in entries]
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
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Claim report, tier {tier}</title>"
            f"<style>{CSS}</style></head><body><h1>Claim report, tier {tier}</h1>"
            f"<h2>What made these numbers</h2>{prov}<p>{html.escape(PREAMBLE)}</p>"
            f"<h2>Verdicts</h2><p><b>{html.escape(tally(entries))}</b></p>{_html_table(summary, classes, links=True)}"
            f"{''.join(sections)}"
            + (f"<section><h2>Contrasts</h2>{_html_table((CONTRAST_COLUMNS, contrast_rows))}</section>" if contrast_rows else "")
            + "</body></html>")

"""The claim report: claims.json, report.md (figures as PNG files beside it) and a self-contained
report.html (figures embedded), written from the outcomes of the claim tests.

Each case of a claim records its evidence: every condition of the criterion with n, every seed's
value, the aggregate and the 95% interval, judged under the claim's rule (reproduce/verdict.py).
A claim's headline verdict at a tier combines its main cases and its controls
(`reproduce.verdict.claim_verdict`): `reproduced`, `not_reproduced` or `inconclusive`; `error`
when a statistic raised or a run diverged; `not_run` when the results are missing;
`not_at_tier` for a claim of a judged paper with no case at this tier.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from reproduce.verdict import RULES, claim_verdict

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "claims"  # one <paper>.json per paper
Table = tuple[list[str], list[list]]  # (column names, rows): a paper-table analogue such as MASC's Table 1


@dataclass(frozen=True)
class Claim:
    """A paper claim: its id and the paper's words and numbers, from data/claims/<paper>.json.

    `rule` is how its per-seed statistics are judged (a key of reproduce.verdict.RULES).
    `figure(ds)` and `table(ds)` redraw the paper's figure or table from the combined results.
    """

    id: str
    section: str
    statement: str
    paper_value: str
    criterion: str
    control: str
    rule: str = "t"
    seeds: str = ""  # how many seeds each tier judges, and why where fewer than the standard
    setting: str = ""  # the setting the claim is judged in (shown in the Contrasts section)
    contradicts: str = ""  # id of a claim of another paper that says the opposite
    figure: Callable[..., Figure] | None = field(default=None, compare=False)
    table: Callable[..., Table] | None = field(default=None, compare=False)

    @classmethod
    def load(cls, claim_id: str, figure: Callable[..., Figure] | None = None,
             table: Callable[..., Table] | None = None) -> "Claim":
        entry = catalogue(claim_id.split(".")[0])[claim_id]
        return cls(id=claim_id, figure=figure, table=table, **entry)

    @property
    def paper(self) -> str:
        return self.id.split(".")[0]


def catalogue(paper: str) -> dict[str, dict]:
    """The paper's claims as data/claims/<paper>.json lists them."""
    return json.loads((REFERENCE / f"{paper}.json").read_text())


@dataclass
class CaseOutcome:
    """One claim-test case as pytest ended it, with the evidence it recorded."""

    claim: str
    tier: str
    case: str
    control: bool
    outcome: str  # passed | failed | xfailed | xpassed | skipped | error
    verdict: str  # reproduced | not_reproduced | inconclusive | error | not_run
    message: str = ""
    expected: str = "reproduced"  # not_reproduced for a strict expected failure
    summary: str = ""
    numbers: dict = field(default_factory=dict)
    conditions: list = field(default_factory=list)


VERDICT_TEXT = {
    "reproduced": "reproduced",
    "not_reproduced": "NOT reproduced",
    "inconclusive": "inconclusive",
    "error": "error (the statistic could not be computed)",
    "not_run": "not run (results missing)",
    "not_at_tier": "not at this tier",
}


def claim_entries(claims: dict[str, Claim], outcomes: list[CaseOutcome], tier: str) -> list[dict]:
    """The claims.json entries of a tier: every claim of every paper judged in this session, a claim
    without a case at this tier as `not_at_tier`."""
    judged = [o for o in outcomes if o.tier == tier]
    entries = []
    for paper in sorted({claims[o.claim].paper for o in judged}):
        for claim_id, text in catalogue(paper).items():
            cases = [o for o in judged if o.claim == claim_id]
            entries.append(_entry(claims.get(claim_id) or Claim(id=claim_id, **text), tier, cases))
    return entries


def _entry(claim: Claim, tier: str, cases: list[CaseOutcome]) -> dict:
    if cases:
        expected = "not_reproduced" if any(o.expected == "not_reproduced" for o in cases if not o.control) else "reproduced"
        head = claim_verdict([o.verdict for o in cases if not o.control], [o.verdict for o in cases if o.control], expected)
    else:
        head = dict(verdict="not_at_tier", control="none", note="", expected="reproduced", as_expected=True)
    return {
        "id": claim.id, "paper": claim.paper, "tier": tier, **head,
        "section": claim.section, "statement": claim.statement, "paper_value": claim.paper_value,
        "criterion": claim.criterion, "control_text": claim.control, "rule": RULES.get(claim.rule, claim.rule),
        "seeds": claim.seeds, "setting": claim.setting, "contradicts": claim.contradicts,
        "cases": [{"case": o.case, "control": o.control, "outcome": o.outcome, "verdict": o.verdict,
                   "message": o.message, "summary": o.summary, "numbers": o.numbers, "conditions": o.conditions}
                  for o in cases],
    }


def figure_png(fig: Figure) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _ours(entry: dict) -> str:
    """Each main case's summary with its verdict and the n of its evidence."""
    parts = []
    for c in entry["cases"]:
        if c["control"]:
            continue
        n = max((j["n"] for j in c["conditions"]), default=0)
        parts.append(f"{c['case']} ({c['verdict']}, n={n}): {c['summary'] or c['message'] or '-'}")
    return "; ".join(parts) or "-"


def _case_notes(entry: dict) -> list[tuple[str, str, str]]:
    """(case, outcome, message) of every case that did not simply pass: why it failed, was
    skipped, or is an expected failure at this tier (the evidence of the strict xfail)."""
    return [(c["case"], c["outcome"], c["message"]) for c in entry["cases"] if c["outcome"] != "passed" and c["message"]] + (
        [("claim", entry["verdict"], entry["note"])] if entry.get("note") else [])


def _markdown_table(table: Table) -> list[str]:
    columns, rows = table
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _html_table(table: Table) -> str:
    columns, rows = table
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def contrasts(entries: list[dict]) -> list[list[str]]:
    """Rows (claim, setting, verdict, ours) for every pair of claims where one contradicts the other:
    the two papers' opposite findings side by side, each in its own setting."""
    by_id = {e["id"]: e for e in entries}
    rows = []
    for e in entries:
        if not e.get("contradicts"):
            continue
        rows.append([e["id"], e.get("setting", ""), VERDICT_TEXT[e["verdict"]], _ours(e)])
        other = by_id.get(e["contradicts"])
        if other is None:
            rows.append([e["contradicts"], "", "not judged in this session (run both papers' claims together)", "-"])
        else:
            rows.append([other["id"], other.get("setting", ""), VERDICT_TEXT[other["verdict"]], _ours(other)])
    return rows


CONTRAST_COLUMNS = ["claim", "setting", "verdict", "ours"]


def write_report(out_dir: Path, tier: str, entries: list[dict], figures: dict[str, bytes],
                 tables: dict[str, Table] | None = None) -> None:
    """Write claims.json, report.md with figures/<id>.png, and a self-contained report.html.

    `tables` (claim id -> columns and rows) are shown under their claim, in both files.
    """
    tables = tables or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "claims.json").write_text(json.dumps(entries, indent=2, default=float))
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for claim_id, png in figures.items():
        (fig_dir / f"{claim_id}.png").write_bytes(png)

    md = [f"# Claim report, tier `{tier}`", "",
          "| claim | verdict | control | paper | ours |", "|---|---|---|---|---|"]
    for e in entries:
        md.append(f"| `{e['id']}` | {VERDICT_TEXT[e['verdict']]} | {e['control']} | {e['paper_value']} | {_ours(e)} |")
    for e in entries:
        md += ["", f"## `{e['id']}` ({e['section']})", "", e["statement"], "",
               f"- verdict: **{VERDICT_TEXT[e['verdict']]}**; negative control: **{e['control']}**",
               f"- paper: {e['paper_value']}", f"- criterion: {e['criterion']}", f"- ours: {_ours(e)}"]
        md += [f"- `{case}` {outcome}: {message}" for case, outcome, message in _case_notes(e)]
        if e["id"] in tables:
            md += [""] + _markdown_table(tables[e["id"]])
        if e["id"] in figures:
            md += ["", f"![{e['id']}](figures/{e['id']}.png)"]
    contrast_rows = contrasts(entries)
    if contrast_rows:
        md += ["", "## Contrasts", "", "Claims of different papers that say opposite things, each in its own setting.", ""]
        md += _markdown_table((CONTRAST_COLUMNS, contrast_rows))
    (out_dir / "report.md").write_text("\n".join(md) + "\n")

    rows = "".join(
        f"<tr><td><code>{html.escape(e['id'])}</code></td><td class='{e['verdict']}'>{VERDICT_TEXT[e['verdict']]}</td>"
        f"<td>{e['control']}</td><td>{html.escape(e['paper_value'])}</td><td>{html.escape(_ours(e))}</td></tr>"
        for e in entries
    )
    sections = []
    for e in entries:
        img = ""
        if e["id"] in figures:
            data = base64.b64encode(figures[e["id"]]).decode()
            img = f"<img alt='{html.escape(e['id'])}' src='data:image/png;base64,{data}'>"
        sections.append(
            f"<section><h2><code>{html.escape(e['id'])}</code> ({html.escape(e['section'])})</h2>"
            f"<p>{html.escape(e['statement'])}</p><div class='side'><div><p><b>Verdict:</b> "
            f"{VERDICT_TEXT[e['verdict']]}; <b>control:</b> {e['control']}</p>"
            f"<p><b>Paper:</b> {html.escape(e['paper_value'])}</p><p><b>Ours:</b> {html.escape(_ours(e))}</p>"
            f"<p><b>Criterion:</b> {html.escape(e['criterion'])}</p>"
            + "".join(f"<p><code>{html.escape(c)}</code> {html.escape(o)}: {html.escape(m)}</p>" for c, o, m in _case_notes(e))
            + (_html_table(tables[e["id"]]) if e["id"] in tables else "")
            + f"</div><div>{img}</div></div></section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Claim report, tier "
        f"{tier}</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}table{border-collapse:collapse}"
        ".reproduced{background:#d4f4d4}.not_reproduced{background:#f8d0d0}.xfail{background:#fbeec8}"
        ".side{display:flex;gap:1em}.side>div{flex:1}img{max-width:100%}</style></head><body>"
        f"<h1>Claim report, tier {tier}</h1><table><tr><th>claim</th><th>verdict</th><th>control</th>"
        f"<th>paper</th><th>ours</th></tr>{rows}</table>{''.join(sections)}"
        + (f"<section><h2>Contrasts</h2>{_html_table((CONTRAST_COLUMNS, contrast_rows))}</section>" if contrast_rows else "")
        + "</body></html>"
    )
    (out_dir / "report.html").write_text(page)

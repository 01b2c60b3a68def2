"""The evidence figure of a claim: what its verdict rests on, drawn from its claims.json entry alone.

One small panel per condition of the criterion. In each panel every case is a column: its
per-seed values as dots, the aggregate with its 95% interval as an error bar, main cases in blue
and control cases (where the criterion must fail) in orange; the threshold is a dashed line with
its tolerance shaded. The verdict of the claim can be read off the figure: reproduced where every
main interval clears its threshold on the passing side. An infinite seed (the event never
happened) is a triangle at the panel's edge; a condition judged under the binomial rule shows
"k/n" seeds holding above its column instead of an error bar (its interval is of the share, not
of the statistic); a ratio on the log scale is drawn on a log axis.

It is built from the entry, not from the results, so it is the same for every paper and needs no
per-paper code; the papers' own figure analogues (Claim.figure) are shown beside it.
"""

from __future__ import annotations

from collections.abc import Callable

import textwrap

import numpy as np
from matplotlib.figure import Figure

MAIN, CONTROL = "#1f5fa8", "#d9730d"
# The report's units (reproduce.report.number): accuracies in percent, gains in points; the axes the same.
SCALE = {"accuracy": (100.0, "accuracy (%)"), "points": (100.0, "gain (points)")}
PANEL_IN = (3.2, 2.6)  # width, height of one panel in inches: legible at 110 dpi in report.html
COLUMNS = 3
TITLE_CHARS = 44  # characters per line of a panel title at 8 pt in a PANEL_IN-wide panel


def conditions(entry: dict) -> dict[str, list[tuple[dict, dict]]]:
    """Condition name -> [(case, condition)] over the entry's cases, main cases first."""
    panels: dict[str, list[tuple[dict, dict]]] = {}
    for case in sorted(entry.get("cases", []), key=lambda c: bool(c.get("control"))):
        for condition in case.get("conditions") or []:
            panels.setdefault(condition["name"], []).append((case, condition))
    return panels


def evidence_figure(entry: dict, number: Callable[[float, str], str] = lambda v, unit: f"{v:g}") -> Figure | None:
    """The claim's conditions, per seed and aggregated, against their thresholds; None without any.
    `number(value, unit)` writes a threshold as the report's text does (reproduce.report.number)."""
    panels = conditions(entry)
    if not panels:
        return None
    columns = min(COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(PANEL_IN[0] * columns, PANEL_IN[1] * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, cases) in zip(axes, panels.items()):
        _panel(ax, name, cases, number)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{entry['id']} ({entry.get('tier', '')}): blue main cases, orange controls; "
                 "dots = seeds, bar = mean with 95% interval", fontsize=9)
    return fig


def _panel(ax, name: str, cases: list[tuple[dict, dict]], number: Callable[[float, str], str]) -> None:
    first = cases[0][1]
    unit = first.get("unit", "")
    scale, label = SCALE.get(unit, (1.0, unit))
    cases = [(case, _scaled(condition, scale)) for case, condition in cases]
    threshold, tolerance = cases[0][1].get("threshold"), cases[0][1].get("tolerance") or 0.0
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1)
        if tolerance:
            ax.axhspan(threshold - tolerance, threshold + tolerance, color="0.85", zorder=0)
    rng = np.random.default_rng(0)  # fixed jitter: the same results give the same figure
    edge = []  # (x, +1 | -1, color) of infinite seeds, drawn at the axis edge once the limits are known
    for x, (case, condition) in enumerate(cases):
        color = CONTROL if case.get("control") else MAIN
        values = np.asarray([float(v) for v in condition.get("values") or [] if v is not None], dtype=float)  # "inf" too
        jitter = x + rng.uniform(-0.12, 0.12, values.size)
        finite = np.isfinite(values)
        if finite.any():
            ax.plot(jitter[finite], values[finite], "o", ms=4, color=color, alpha=0.55)
        edge += [(j, np.sign(v), color) for j, v in zip(jitter[~finite], values[~finite]) if not np.isnan(v)]
        aggregate, interval = condition.get("aggregate"), condition.get("interval")
        if condition.get("rule") == "binomial" and aggregate is not None:
            n = len(values)
            ax.text(x, 1.0, f"{round(float(aggregate) * n)}/{n}", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color=color)
        elif aggregate is not None and np.isfinite(float(aggregate)):
            aggregate = float(aggregate)
            low, high = (float(v) for v in interval) if interval and None not in interval else (aggregate, aggregate)
            if not (np.isfinite(low) and np.isfinite(high)):
                low = high = aggregate  # no interval (one seed, or an old report's infinite one): the mark alone
            ax.errorbar([x + 0.25], [aggregate], yerr=[[max(aggregate - low, 0)], [max(high - aggregate, 0)]], fmt="s", ms=5,
                        color=color, capsize=4, lw=1.5)
    if first.get("scale") == "log":
        ax.set_yscale("log")
    if edge:
        bottom, top = ax.get_ylim()
        for x, sign, color in edge:
            ax.plot([x], [top if sign > 0 else bottom], "^" if sign > 0 else "v", ms=6, color=color, clip_on=False)
        ax.set_ylim(bottom, top)
        ax.text(0.01, 0.01, f"triangles at the edge: {first.get('never') or 'infinite'} ({len(edge)} seeds)",
                transform=ax.transAxes, fontsize=6, va="bottom")
    ax.set_xticks(range(len(cases)), [_short(case["case"]) for case, _ in cases], rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.tick_params(axis="y", labelsize=7)
    if label:
        ax.set_ylabel(label, fontsize=7)
    op = first.get("op", "")
    shown = lambda v: number(v / scale, unit).lstrip("+")  # noqa: E731  the threshold as the text writes it
    tolerance_text = f"{tolerance:.2g}" + (" points" if unit == "points" else "%" if unit == "accuracy" else "")
    title = "\n".join(textwrap.wrap(name, TITLE_CHARS))  # a long name on several lines, never over its neighbour
    ax.set_title(f"{title}\npass: {op} {shown(threshold)}" + (f" ± {tolerance_text}" if tolerance else "")
                 if threshold is not None else title, fontsize=8)


def _scaled(condition: dict, scale: float) -> dict:
    """The condition's numbers times `scale` (fractions to percent or points), for the axis."""
    if scale == 1.0:
        return condition
    times = lambda v: None if v is None else float(v) * scale  # noqa: E731  float(): claims.json's "inf"
    out = {**condition, "values": [times(v) for v in condition.get("values") or []]}
    for key in ("threshold", "tolerance"):
        out[key] = times(condition.get(key))
    if condition.get("rule") != "binomial":  # under binomial they are a share of seeds, not the statistic
        out["aggregate"] = times(condition.get("aggregate"))
        if condition.get("interval"):
            out["interval"] = [times(v) for v in condition["interval"]]
    return out


def _short(case: str) -> str:
    """Case ids without the tier prefix (the figure is per tier)."""
    return case.split("-", 1)[1] if "-" in case else case

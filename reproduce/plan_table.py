"""The README's tier table, generated from the run configurations (`experiments.<paper>.runs`), so
the seeds, sizes and epochs it states are the code's: tests/test_readme.py checks that README.md
holds exactly this table. Regenerate with `python -m reproduce.plan_table`."""

from __future__ import annotations

from collections import Counter

from reproduce.experiments import PAPERS, TIERS

BEGIN, END = "<!-- tier table: python -m reproduce.plan_table -->", "<!-- end of tier table -->"


def _seeds(run) -> str:
    """Seeds per setting of a run: its replicas are seeds, or (setting..., seed) tuples."""
    per = Counter(r[:-1] if isinstance(r, tuple) else () for r in run.replicas)
    low, high = min(per.values()), max(per.values())
    return f"{low}" if low == high else f"{low}-{high}"


def _size(run) -> str:
    for key in ("hidden", "width"):
        value = getattr(run, key, None)
        if value not in (None, ()):
            return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return "-"


def _join(values) -> str:
    """Distinct values in order; a run of 4 or more consecutive whole numbers as 'a to b'."""
    values = list(dict.fromkeys(values))
    if len(values) >= 4 and all(v.isdigit() for v in values):
        numbers = [int(v) for v in values]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"{numbers[0]} to {numbers[-1]}"
    return ", ".join(values)


def _data(runs) -> str:
    """The data set and training samples; for modular arithmetic the operations, the modulus P and
    the activation ("add, sub, mul mod 59, quadratic"), which set the task and the network."""
    if getattr(runs[0], "p", None):
        return (f"{_join(r.op for r in runs)} mod {_join(str(r.p) for r in runs)}, "
                f"{_join(r.activation for r in runs)}")
    return _join(f"{r.dataset}" + (f" ({r.n_train} samples)" if getattr(r, "n_train", None) else "") for r in runs)


def rows() -> list[list[str]]:
    """(tier, paper, runs, seeds per setting, sizes, epochs, data) for every tier and paper."""
    from reproduce.runner import plan

    out = []
    for tier in TIERS:
        for paper in PAPERS:
            runs = [run for _, run in plan(tier, [paper])]
            data = _data(runs)
            out.append([tier, paper, str(len(runs)), _join(_seeds(r) for r in runs), _join(_size(r) for r in runs),
                        _join(f"{r.train.epochs:.0f}" if r.train.epochs >= 1 else f"{r.train.epochs:g}"
                                                      for r in runs), data])
    return out


def tier_table() -> str:
    columns = ["tier", "paper", "runs", "seeds per setting", "sizes (hidden widths or width)", "epochs", "data"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"`{v}`" if k == 0 else v for k, v in enumerate(row)) + " |" for row in rows()]
    return "\n".join([BEGIN, *lines, END])


if __name__ == "__main__":
    print(tier_table())

"""The one summary of ci/gpu-check.sh: each part's exit code and time, the bench's ratios, every
verdict of the tiers it made (with n and the 95% interval of the claim's headline condition), and
the quick verdicts against a CPU run's claims.json.

    python ci/gpu_summary.py OUT [--cpu-claims FILE]

OUT is the check's folder (parts.txt, results/<tier>/claims.json, bench/bench.json). Prints the
summary (markdown) and exits 1 where a part failed or a quick verdict differs from the CPU's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from reproduce.report import _interval_text, _key_number, headline  # noqa: E402


def parts(out: Path) -> list[tuple[str, int, int]]:
    """(part, exit code, seconds) as gpu-check.sh recorded them, one line `NAME RC SECONDS` each."""
    path = out / "parts.txt"
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [(name, int(rc), int(seconds)) for name, rc, seconds in rows]


def verdicts(claims_json: Path) -> dict[str, dict]:
    return {e["id"]: e for e in json.loads(claims_json.read_text())} if claims_json.exists() else {}


def compare(gpu: dict[str, dict], cpu: dict[str, dict]) -> list[str]:
    """Claims whose quick verdict on the GPU differs from the CPU's, as `id: cpu -> gpu` lines."""
    return [f"{cid}: cpu {cpu[cid]['verdict']} -> gpu {gpu.get(cid, {}).get('verdict', 'missing')}"
            for cid in sorted(cpu) if gpu.get(cid, {}).get("verdict") != cpu[cid]["verdict"]]


def bench_lines(out: Path) -> list[str]:
    path = out / "bench" / "bench.json"
    if not path.exists():
        return ["no bench output"]
    return [line for line in json.loads(path.read_text())["lines"]
            if line.startswith(("engine vs", "engine one-time", "step time", "projected", "bench on"))]


def summary(out: Path, cpu_claims: Path | None) -> tuple[list[str], bool]:
    lines, ok = [f"# GPU check: {out.name}", "", "## Parts", "", "| part | exit code | seconds |", "|---|---|---|"], True
    for name, rc, seconds in parts(out):
        lines.append(f"| {name} | {rc}{' (timed out)' if rc == 124 else ''} | {seconds} |")
        ok &= rc == 0
    lines += ["", "## Bench", ""] + [f"- {line}" for line in bench_lines(out)]
    for tier in ("quick", "medium"):
        found = verdicts(out / "results" / tier / "claims.json")
        lines += ["", f"## {tier} verdicts", ""]
        if not found:
            lines.append(f"no {tier} claims.json (see {tier}.log)")
            continue
        lines += ["| claim | verdict | expected | n, 95% interval | headline |", "|---|---|---|---|---|"]
        for cid, e in sorted(found.items()):
            h = headline(e)
            lines.append(f"| {cid} | {e['verdict']} | {e.get('expected')} | {_interval_text(h)} | {_key_number(h)} |")
    lines += ["", "## quick verdicts against the CPU", ""]
    cpu = verdicts(cpu_claims) if cpu_claims else {}
    if not cpu:
        lines.append(f"no CPU claims.json to compare with ({cpu_claims}): pass --cpu-claims FILE")
        ok = False
    else:
        differ = compare(verdicts(out / "results" / "quick" / "claims.json"), cpu)
        lines.append(f"{len(cpu) - len(differ)} of {len(cpu)} verdicts equal the CPU's ({cpu_claims})")
        lines += [f"- {d}" for d in differ]
        ok &= not differ
    return lines, ok


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python ci/gpu_summary.py")
    p.add_argument("out", type=Path)
    p.add_argument("--cpu-claims", type=Path, default=None)
    args = p.parse_args(argv)
    lines, ok = summary(args.out, args.cpu_claims)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

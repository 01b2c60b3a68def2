"""Command line: `python -m reproduce --tier T` makes a tier's results and its claim report.

    python -m reproduce --tier {quick,medium,full} [--paper KEY ...] [--results DIR] [--seed N]
                        [--device cpu|cuda] [--dry-run] [--fresh]
    python -m reproduce report --tier T [--results DIR]
    python -m reproduce bench [--quick] [--device D] [--results DIR]   (speed ratios; see reproduce/bench.py)

The claim verdicts come from the claim tests (pytest claims -m TIER), so the report a user reads
is exactly what CI checks. Any UserError is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reproduce.errors import UserError
from reproduce.experiments import PAPERS, TIERS, check_tier, experiment

CLAIMS_DIR = Path(__file__).resolve().parent.parent / "claims"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; keep it to one line
        raise UserError(f"{message} (see python -m reproduce --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m reproduce", description="Reproduce the noisy-label papers' claims.")
    p.add_argument("command", nargs="?", default="run", choices=["run", "report"],
                   help="run (default): make the results, then the report; report: rebuild the report only")
    p.add_argument("--tier", required=True, help=f"one of {', '.join(TIERS)}")
    p.add_argument("--paper", nargs="+", default=list(PAPERS), help=f"papers to run (default all: {', '.join(PAPERS)})")
    p.add_argument("--results", type=Path, default=Path("results"), help="results store (default results/)")
    p.add_argument("--seed", type=int, default=0, help="base seed of every run (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dry-run", action="store_true", help="print the plan with FLOPs and estimated time, run nothing")
    p.add_argument("--fresh", action="store_true", help="recompute runs even when stored results exist")
    p.add_argument("--no-report", action="store_true", help="make the results only")
    p.add_argument("--precision", default="tf32", help="tf32 (default; float32 on the CPU) or bf16 autocast; "
                   "recorded in every result's attrs")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (CUDA graphs on GPU)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from reproduce.bench import main as bench

        return bench(argv[1:])
    args = _parser().parse_args(argv)
    check_tier(args.tier)
    for paper in args.paper:
        experiment(paper)
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {args.device!r}: use cpu or cuda")
    if args.dry_run:
        from reproduce.runner import describe

        print(describe(args.tier, args.paper, args.device, args.seed, args.precision))
        return 0
    _check_writable(args.results)
    if args.command == "run":
        from reproduce.runner import make_results

        make_results(args.tier, args.paper, args.results, args.device, args.seed, fresh=args.fresh,
                     precision=args.precision, compile=args.compile)
        if args.no_report:
            return 0
    return report(args.tier, args.results, args.paper, args.seed, args.device)


def report(tier: str, results: Path, papers: list[str], seed: int = 0, device: str = "cpu") -> int:
    """Run the claim tests of the tier on the stored results; their plugin writes the report."""
    import pytest

    if not CLAIMS_DIR.is_dir():
        raise UserError(f"claim tests not found in {CLAIMS_DIR}: run from a checkout of the project")
    files = [str(CLAIMS_DIR / f"test_{p}.py") for p in papers]
    code = pytest.main([*files, "-m", tier, "--results", str(results), "--seed", str(seed), "--stored-only",
                        "--device", device, "-q", "-p", "no:cacheprovider", "-c", str(CLAIMS_DIR.parent / "pyproject.toml"),
                        "--rootdir", str(CLAIMS_DIR.parent)])
    print(f"report: {results / tier / 'report.md'} and report.html, claims.json beside it")
    return 0 if code in (0, 1) else int(code)  # failed claims are verdicts, not errors of the command


def _check_writable(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"results directory {results} is not writable ({error.strerror}): pass --results DIR") from None

"""Command line: `python -m reproduce --tier T` makes a tier's results and its claim report.

    python -m reproduce --tier {quick,medium,full} [--paper KEY ...] [--run NAME ...] [--claim ID ...]
                        [--results DIR] [--seed N] [--device cpu|cuda] [--threads N] [--dry-run] [--fresh]
                        [--executor local|slurm] [--slurm-config FILE] [--partition P] [--time-min M]
                        [--gpus G] [--cpus C] [--mem-gb M]
                        [--precision tf32|bf16] [--compile]
    python -m reproduce report --tier T [--results DIR] [--claim ID ...]
    python -m reproduce bench [--quick] [--device D] [--results DIR]   (speed ratios; see reproduce/bench.py)

The claim verdicts come from the claim tests (pytest claims -m TIER), so the report a user reads
is exactly what CI checks. Any UserError is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reproduce.errors import UserError, _Parser
from reproduce.experiments import PAPERS, TIERS, check_tier, experiment

CLAIMS_DIR = Path(__file__).resolve().parent.parent / "claims"
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "claims"


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
    p.add_argument("--run", nargs="+", metavar="NAME", help="only these runs of the plan (e.g. mlp3-s0)")
    p.add_argument("--claim", nargs="+", metavar="ID", help="report only these claims (ids in data/claims/*.json)")
    p.add_argument("--threads", type=int, help="torch CPU threads (the numbers on the CPU depend on it)")
    p.add_argument("--executor", default="local", help="local (default): this process; slurm: one job array via submitit")
    s = p.add_argument_group("slurm executor (override the [slurm] table of --slurm-config)")
    s.add_argument("--slurm-config", type=Path, metavar="FILE", help="TOML file with a [slurm] table")
    s.add_argument("--partition")
    s.add_argument("--time-min", type=int, help="time limit per task in minutes")
    s.add_argument("--gpus", type=int, help="GPUs per task")
    s.add_argument("--cpus", type=int, help="CPUs per task (and torch threads in it)")
    s.add_argument("--mem-gb", type=float, help="memory per task")
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

    from reproduce.executors import SlurmConfig, check_executor

    args = _parser().parse_args(argv)
    check_tier(args.tier)
    for paper in args.paper:
        experiment(paper)
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {args.device!r}: use cpu or cuda")
    check_executor(args.executor)
    if args.claim:
        args.paper = _papers_of_claims(args.claim, args.paper)
    slurm = SlurmConfig.load(args.slurm_config, partition=args.partition, time_min=args.time_min, gpus=args.gpus,
                             cpus=args.cpus, mem_gb=args.mem_gb)
    if args.dry_run:
        from reproduce.runner import describe, plan

        print(describe(args.tier, args.paper, args.device, args.seed, args.run, args.precision))
        if args.executor == "slurm":
            from reproduce.executors import describe_array
            from reproduce.store import Store

            print(describe_array(Store(args.results), args.tier, plan(args.tier, args.paper, args.seed, args.run), slurm))
        return 0
    _check_writable(args.results)
    if args.command == "run":
        from reproduce.executors import make_results

        make_results(args.tier, args.paper, args.results, args.device, args.seed, fresh=args.fresh,
                     executor=args.executor, only=args.run, threads=args.threads, slurm=slurm,
                     precision=args.precision, compile=args.compile)
    code = 0 if args.no_report else report(args.tier, args.results, args.paper, args.seed, args.device, args.claim)
    _check_diverged(args.tier, args.paper, args.results, args.seed, args.run)
    return code


def _check_diverged(tier: str, papers: list[str], results: Path, seed: int, only: list[str] | None) -> None:
    from reproduce.runner import diverged_runs

    diverged = diverged_runs(tier, papers, results, seed, only)
    if diverged:
        raise UserError(f"run(s) diverged (NaN loss): {', '.join(diverged)}; they are stored with status "
                        f"'diverged' and their claims fail saying so; try a smaller learning rate")


def _papers_of_claims(claims: list[str], papers: list[str]) -> list[str]:
    """The papers of the claims asked for, checked against data/claims/*.json."""
    known = {}
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        known.update({claim: path.stem for claim in json.loads(path.read_text())})
    for claim in claims:
        if claim not in known:
            raise UserError(f"unknown claim {claim!r}: choose from {', '.join(sorted(known))}")
    return [p for p in papers if p in {known[c] for c in claims}]


def report(tier: str, results: Path, papers: list[str], seed: int = 0, device: str = "cpu",
           claims: list[str] | None = None) -> int:
    """Run the claim tests of the tier on the stored results; their plugin writes the report."""
    import pytest

    from reproduce.runner import check_stored

    if not CLAIMS_DIR.is_dir():
        raise UserError(f"claim tests not found in {CLAIMS_DIR}: run from a checkout of the project")
    check_stored(tier, papers, results, seed)
    files = [str(CLAIMS_DIR / f"test_{p}.py") for p in papers]
    code = pytest.main([*files, "-m", tier, "--results", str(results), "--seed", str(seed), "--stored-only",
                        "--device", device, "-q", "-p", "no:cacheprovider", "-c", str(CLAIMS_DIR.parent / "pyproject.toml"),
                        "--rootdir", str(CLAIMS_DIR.parent), *[f"--claim={c}" for c in claims or []]])
    print(f"report: {results / tier / 'report.md'} and report.html, claims.json beside it")
    return 0 if code in (0, 1) else int(code)  # failed claims are verdicts, not errors of the command


def _check_writable(results: Path) -> None:
    """Probe by writing (root ignores permission bits, so os.access alone would say yes)."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"results directory {results} is not writable ({error.strerror}): pass --results DIR") from None

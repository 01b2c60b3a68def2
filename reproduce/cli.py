"""Command line: `python -m reproduce [run] --tier T` makes a tier's results and its claim report.

    python -m reproduce [run] --tier {quick,small,medium,full} [--paper KEY ...] [--run NAME ...] [--claim ID ...]
                        [--results DIR] [--seed N] [--device cpu|cuda] [--threads N] [--jobs N] [--dry-run] [--fresh]
                        [--executor local|slurm] [--slurm-config FILE] [--partition P] [--time-min M]
                        [--gpus G] [--cpus C] [--mem-gb M] [--precision tf32|bf16] [--compile]
    python -m reproduce report --tier T [--results DIR] [--paper KEY ...] [--claim ID ...] [--seed N]
    python -m reproduce bench [--quick] [--device D] [--results DIR]   (speed ratios; see reproduce/bench.py)
    python -m reproduce stability --tier quick [--results DIR] [--threads T ...] [--seeds S ...]
    python -m reproduce expect --tier T [--results DIR]   (record DIR/T/claims.json as the measured expectations)
    python -m reproduce --version

The claim verdicts come from reproduce.judge.judge_tier, the same function each claim test
(pytest claims -m TIER) calls, so the report a user reads is exactly what CI checks; the console
ends with the verdict table. Exit codes: 0 no claim regressed (a contradicted prediction is shown,
not counted), 1 a claim regressed (a measured expectation contradicted, or an error), 2 bad input
(any UserError, printed as one line), 3 a run diverged (NaN loss; stored as diverged, its claims
read error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from reproduce import __version__
from reproduce.errors import UserError, _Parser, check_creatable, check_writable
from reproduce.experiments import PAPERS, TIERS, check_paper, check_tier

EXIT_REGRESSED, EXIT_BAD_INPUT, EXIT_DIVERGED = 1, 2, 3  # the exit codes besides 0 (README: Command line)

VERBS = {"run": "make the results, then the report (the default verb)",
         "report": "rebuild the report from stored results (trains nothing)",
         "bench": "speed ratios of the engine (its options: python -m reproduce bench --help)",
         "stability": "the quick tier at several thread counts and base seeds: do the verdicts change?",
         "expect": "record a tier's claims.json as its measured expectations (data/expected/TIER.json)"}


def _whole_number(least: int):
    """An argparse type: a whole number of at least `least` (one line of bad input otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}" if least else
                                             f"must be 0 or more, not {value}")
        return value

    return parse


_at_least_one, _not_negative = _whole_number(1), _whole_number(0)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m reproduce", description="Reproduce the noisy-label papers' claims. Without a verb: run.",
                epilog="exit codes: 0 no claim regressed, 1 a claim regressed, 2 bad input, 3 a run diverged "
                       "(NaN loss)")
    p.add_argument("--version", action="version", version=f"reproduce {__version__}")
    verbs = p.add_subparsers(dest="command", metavar="VERB", parser_class=_Parser, title="verbs")
    run = verbs.add_parser("run", help=VERBS["run"], description="Make the tier's results, then its claim report.")
    _common(run)
    run.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    run.add_argument("--dry-run", action="store_true", help="print the plan with FLOPs and estimated time, run nothing")
    run.add_argument("--fresh", action="store_true", help="recompute runs even when stored results exist")
    run.add_argument("--no-report", action="store_true", help="make the results only")
    run.add_argument("--run", nargs="+", metavar="NAME", help="only these runs of the plan (e.g. mlp3-s0)")
    run.add_argument("--threads", type=_at_least_one, help="torch CPU threads, at least 1 (the numbers on the CPU depend on it); "
                                                         "with --jobs, per job")
    run.add_argument("--jobs", type=_at_least_one, default=1,
                     help="runs made by this many CPU processes side by side (default 1; 2 on two cores: small "
                          "stacked models use two cores better as two runs on one thread each)")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --jobs N, spawned by another
    run.add_argument("--executor", default="local", help="local (default): this process; slurm: one job array via submitit")
    run.add_argument("--precision", default="tf32", help="tf32 (default; float32 on the CPU) or bf16 autocast; "
                     "recorded in every result's attrs")
    run.add_argument("--compile", action="store_true", help="torch.compile the training forward (CUDA graphs on GPU)")
    s = run.add_argument_group("slurm executor (override the [slurm] table of --slurm-config)")
    s.add_argument("--slurm-config", type=Path, metavar="FILE", help="TOML file with a [slurm] table")
    s.add_argument("--partition")
    s.add_argument("--time-min", type=int, help="time limit per task in minutes")
    s.add_argument("--gpus", type=int, help="GPUs per task")
    s.add_argument("--cpus", type=int, help="CPUs per task (and torch threads in it)")
    s.add_argument("--mem-gb", type=float, help="memory per task")
    report = verbs.add_parser("report", help=VERBS["report"], description=(
        "Judge the claims on stored results and merge their verdicts into DIR/TIER/report.md, report.html "
        "and claims.json. Trains nothing; without stored results for the tier it stops (exit 2)."))
    _common(report, tier_required=False)
    report.add_argument("--out", type=Path, metavar="DIR", help="write the report to DIR/TIER (and the scorecard to DIR) "
                        "instead of the store's own folder: for a store that cannot be written")
    report.add_argument("--all-tiers", action="store_true", help="the scorecard only: every claim's verdict at every "
                        "tier with a report in the store, else its expectation (scorecard.md, .html); no --tier")
    verbs.add_parser("bench", help=VERBS["bench"], add_help=False)
    stability = verbs.add_parser("stability", help=VERBS["stability"], description=(
        "Make the tier once per setting (the largest thread count with every seed, the others with the first "
        "seed), each in DIR/stability/tT-sS, and print the verdicts side by side; exit 1 where a claim's "
        "verdict differs between settings."))
    stability.add_argument("--tier", default="quick", help="default quick")
    stability.add_argument("--results", type=Path, default=Path("results"), help="results store (default results/)")
    stability.add_argument("--threads", type=_at_least_one, nargs="+", default=[1, 2], help="default 1 2")
    stability.add_argument("--seeds", type=_not_negative, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    stability.add_argument("--paper", nargs="+", default=list(PAPERS), help=f"papers (default all: {', '.join(PAPERS)})")
    expect = verbs.add_parser("expect", help=VERBS["expect"], description=(
        "Write data/expected/TIER.json from DIR/TIER/claims.json: each claim's verdict there becomes the tier's "
        "measured expectation, citing the commit that judged it and the one that made the results. Every claim "
        "of the tier must have been judged (none not run)."))
    expect.add_argument("--tier", required=True, help=f"one of {', '.join(TIERS)}")
    expect.add_argument("--results", type=Path, default=Path("results"), help="results store (default results/)")
    expect.add_argument("--paper", nargs="+", help="record only these papers' claims (each judged), keeping the other "
                        "papers' measurements already recorded")
    return p


def _common(p: argparse.ArgumentParser, tier_required: bool = True) -> None:
    """The options of every verb that reads or writes a tier of the store."""
    p.add_argument("--tier", required=tier_required, help=f"one of {', '.join(TIERS)}")
    p.add_argument("--paper", nargs="+", default=list(PAPERS), help=f"papers (default all: {', '.join(PAPERS)})")
    p.add_argument("--results", type=Path, default=Path("results"), help="results store (default results/)")
    p.add_argument("--seed", type=_not_negative, default=0, help="base seed of every run, 0 or more (default 0)")
    p.add_argument("--claim", nargs="+", metavar="ID", help="only these claims (ids in data/claims/*.json), "
                   "merged into the tier's report")
    p.add_argument("--json", action="store_true", help="end with the verdict summary as one JSON object on stdout "
                   "(everything else on stderr)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from reproduce.bench import main as bench

        return bench(argv[1:])
    if not argv[:1] or (argv[0] not in VERBS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # no verb: run
    args = _parser().parse_args(argv)
    if args.command == "stability":
        for paper in args.paper:
            check_paper(paper)
        return stability(args.tier, args.results, args.threads, args.seeds, args.paper)
    if args.command == "expect":
        from reproduce.judge import record_expected

        for paper in args.paper or ():
            check_paper(paper)
        print(f"wrote {record_expected(check_tier(args.tier), args.results, args.paper)}")
        return 0
    if args.command == "report" and args.all_tiers:
        return scorecard(args.results, args.out)
    if args.tier is None:
        raise UserError("the following arguments are required: --tier (or --all-tiers) (see python -m reproduce --help)")
    check_tier(args.tier)
    for paper in args.paper:
        check_paper(paper)
    if args.claim:
        args.paper = _papers_of_claims(args.claim, args.paper)
    summary = sys.stdout  # --json: the summary alone on stdout, everything else on stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        if args.command == "report":
            papers = _papers_with_results(args.tier, args.paper, args.results, args.seed)
            return report(args.tier, args.results, papers, args.seed, claims=args.claim,
                          json_to=summary if args.json else None, out=args.out)
        return _run(args, summary if args.json else None)


def _run(args: argparse.Namespace, json_to: TextIO | None = None) -> int:
    if args.device not in ("cpu", "cuda"):  # before torch is imported: bad input answers at once
        raise UserError(f"unknown device {args.device!r}: use cpu or cuda")
    from reproduce.executors import SlurmConfig, check_executor, check_jobs

    check_executor(args.executor)
    check_jobs(args.jobs, args.device, args.executor, args.fresh)
    slurm = SlurmConfig.load(args.slurm_config, partition=args.partition, time_min=args.time_min, gpus=args.gpus,
                             cpus=args.cpus, mem_gb=args.mem_gb)
    if args.dry_run:
        from reproduce.data import check_named_folder
        from reproduce.runner import describe, plan

        check_named_folder()
        check_creatable(args.results)

        import torch

        threads = args.threads or (max(1, torch.get_num_threads() // args.jobs) if args.jobs > 1 else None)
        if threads:  # calibrate at the thread count the run would use
            torch.set_num_threads(threads)

        print(describe(args.tier, args.paper, args.device, args.seed, args.run, args.precision, jobs=args.jobs,
                       remember=True))
        print(_dry_run_checks(args.tier, args.paper, args.results, args.seed, args.run))
        if args.executor == "slurm":
            from reproduce.executors import describe_array
            from reproduce.store import Store

            print(describe_array(Store(args.results), args.tier, plan(args.tier, args.paper, args.seed, args.run), slurm))
        return 0
    check_writable(args.results)
    if not args.no_report:
        from reproduce.report import check_report

        check_report(args.results / args.tier, args.seed)
    from reproduce.executors import make_results

    make_results(args.tier, args.paper, args.results, args.device, args.seed, fresh=args.fresh,
                 executor=args.executor, only=args.run, threads=args.threads, slurm=slurm, jobs=args.jobs, worker=args.worker,
                 precision=args.precision, compile=args.compile)
    code = 0 if args.no_report else report(args.tier, args.results, args.paper, args.seed, args.device, args.claim,
                                            json_to=json_to)
    return EXIT_DIVERGED if _diverged(args.tier, args.paper, args.results, args.seed, args.run) else code


def _diverged(tier: str, papers: list[str], results: Path, seed: int, only: list[str] | None) -> bool:
    """Say which runs diverged (one line on stderr); the command then exits with EXIT_DIVERGED."""
    from reproduce.runner import diverged_runs

    diverged = diverged_runs(tier, papers, results, seed, only)
    if diverged:
        print(f"error: run(s) diverged (NaN loss): {', '.join(diverged)}; they are stored with status 'diverged' "
              f"and their claims read error; try a smaller learning rate (exit code {EXIT_DIVERGED})", file=sys.stderr)
    return bool(diverged)


def _dry_run_checks(tier: str, papers: list[str], results: Path, seed: int, only: list[str] | None) -> str:
    """What a dry run checks besides the plan: where each data set would be read from (or that it is
    missing, and how to get it), and the results folder: writable, and how many runs it holds already."""
    from reproduce.data import data_source
    from reproduce.runner import plan
    from reproduce.store import Store

    pairs = plan(tier, papers, seed, only)
    needed = sorted({getattr(run, "dataset", None) for _, run in pairs} - {None})
    stored = sum(Store(results).path(tier, paper, run.name).exists() for paper, run in pairs)
    lines = [f"data: {name} from {source}" if not source.startswith("missing") else
             f"data: {name} {source}; a run would stop before training (exit 2)"
             for name, source in data_source(needed).items()]
    return "\n".join(lines + [f"results: {results} (writable; {stored} of the {len(pairs)} runs stored already, "
                               f"reused unless --fresh)"])


def _papers_of_claims(claims: list[str], papers: list[str]) -> list[str]:
    """The papers of the claims asked for, checked against data/claims/*.json."""
    from reproduce.judge import declared

    known = {claim: c.paper for claim, c in declared().items()}
    for claim in claims:
        if claim not in known:
            raise UserError(f"unknown claim {claim!r}: choose from {', '.join(sorted(known))}")
        if known[claim] not in papers:
            raise UserError(f"claim {claim!r} is a claim of {known[claim]}, not of --paper {' '.join(papers)}")
    return [p for p in papers if p in {known[c] for c in claims}]


def _papers_with_results(tier: str, papers: list[str], results: Path, seed: int) -> list[str]:
    """The papers with any stored run at this tier and seed; none is bad input for `report`, which
    would otherwise replace a report with one that says nothing (and it creates no folder)."""
    from reproduce.runner import plan
    from reproduce.store import Store

    store = Store(results)
    found = [p for p in papers if any(store.path(tier, p, run.name).exists() for _, run in plan(tier, [p], seed))]
    if not found:
        raise UserError(f"no {tier} results for {', '.join(papers)} (seed {seed}) in {results}: make them with "
                        f"`python -m reproduce --tier {tier} --paper {' '.join(papers)} --results {results}"
                        + (f" --seed {seed}" if seed else "") + "` (report trains nothing)")
    if missing := [p for p in papers if p not in found]:
        print(f"no {tier} results for {', '.join(missing)}: their claims keep their earlier entries in the report")
    return found


def report(tier: str, results: Path, papers: list[str], seed: int = 0, device: str = "cpu",
           claims: list[str] | None = None, json_to: TextIO | None = None, out: Path | None = None) -> int:
    """Judge the tier's claims of these papers on the stored results (reproduce.judge.judge_tier),
    merge them into the tier's report (in `out`/TIER, default the store's own TIER folder) and print
    the console summary (or, with `json_to`, write it there as JSON).

    Returns 0 when no claim judged now regressed, 1 when one did.
    """
    from reproduce.judge import judge_tier
    from reproduce.report import check_report, console_summary, publish, regressions, summary_json
    from reproduce.runner import check_stored
    from reproduce.store import Store

    folder = Path(out or results) / tier
    check_report(folder, seed)
    check_stored(tier, papers, results, seed)
    judged, datasets = judge_tier(Store(results), tier, papers, seed, claims)
    publish(results, tier, judged, datasets, seed, out=out)
    if json_to is not None:
        json_to.write(json.dumps(summary_json(judged, tier, seed, results), indent=1) + "\n")
    else:
        print(console_summary(judged, tier, results, seed))
        print(f"report: {folder / 'report.html'}, report.md and claims.json beside it")
    return EXIT_REGRESSED if regressions(judged) else 0


def scorecard(results: Path, out: Path | None = None) -> int:
    """Write DIR/scorecard.md and scorecard.html (every claim at every tier: the verdict where the
    store has that tier's report, else the expectation, measured or predicted) and print it."""
    import textwrap

    from reproduce.report import CONSOLE_MAX, SCORECARD_KEY, fitted_table, scorecard_table, write_scorecard

    write_scorecard(Path(results), Path(out or results))
    print(fitted_table(*scorecard_table(Path(results), short=True), width=CONSOLE_MAX))
    print(textwrap.fill(SCORECARD_KEY, CONSOLE_MAX))
    print(f"scorecard: {Path(out or results) / 'scorecard.html'} and scorecard.md beside it")
    return 0


def stability_settings(threads: list[int], seeds: list[int]) -> list[tuple[int, int]]:
    """(threads, seed) per column: the most threads with every seed, each other count with the first seed."""
    most = max(threads)
    return [(most, s) for s in seeds] + [(t, seeds[0]) for t in sorted(set(threads), reverse=True) if t != most]


def stability(tier: str, results: Path, threads: list[int], seeds: list[int], papers: list[str] | None = None) -> int:
    """Make the tier once per setting, each in its own store, and compare the verdicts: a verdict
    must not depend on the thread count or the base seed. Exit 1 where one does."""
    check_tier(tier)
    columns = {}
    for t, s in stability_settings(threads, seeds):
        store = results / "stability" / f"t{t}-s{s}"
        command = [sys.executable, "-m", "reproduce", "--tier", tier, "--threads", str(t), "--seed", str(s),
                   "--results", str(store), "--paper", *(papers or PAPERS)]
        print("stability:", " ".join(command[1:]), flush=True)
        done = subprocess.run(command)
        entries = json.loads((store / tier / "claims.json").read_text()) if (store / tier / "claims.json").exists() else None
        if done.returncode not in (0, 1) or entries is None:
            raise UserError(f"the setting threads {t}, seed {s} failed (exit code {done.returncode}): "
                            f"rerun `{' '.join(command[1:])}` to see why")
        wanted = set(papers or PAPERS)
        columns[f"t{t}-s{s}"] = {e["id"]: e["verdict"] for e in entries if e["id"].split(".")[0] in wanted}
    from reproduce.report import text_table

    ids = list(dict.fromkeys(i for verdicts in columns.values() for i in verdicts))
    rows = [[i, *[v.get(i, "-") for v in columns.values()],
             "DIFFERS" if len({v.get(i, "-") for v in columns.values()}) > 1 else ""] for i in ids]
    print(text_table(["claim", *columns, ""], rows))
    differ = [r[0] for r in rows if r[-1]]
    if differ:
        print(f"verdicts differ between settings: {', '.join(differ)}")
    return 1 if differ else 0

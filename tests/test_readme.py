"""README.md agrees with the code: its tier table is the one reproduce.plan_table generates from the
run configurations, its exit codes are the command line's, and its quick start is the two commands."""

from pathlib import Path

from reproduce.plan_table import BEGIN, END, tier_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_tier_table_is_generated_from_the_run_configurations():
    """Seeds, sizes and epochs per tier and paper as `runs(tier, seed)` makes them (regenerate with
    `python -m reproduce.plan_table` after changing a tier)."""
    shown = README[README.index(BEGIN):README.index(END) + len(END)]
    assert shown == tier_table(), "README's tier table is stale: paste `python -m reproduce.plan_table` over it"


def test_the_table_rows_read_the_runs():
    from reproduce.plan_table import rows
    from reproduce.runner import plan

    quick = {row[1]: row for row in rows() if row[0] == "quick"}
    smooth = [run for _, run in plan("quick", ["smooth"])]
    assert quick["smooth"][2] == str(len(smooth))
    assert quick["smooth"][4] == ", ".join(str(run.width) for run in smooth)
    assert quick["smooth"][3] == str(len(smooth[0].replicas))


def test_exit_codes_and_the_quick_start_are_the_code_s():
    from reproduce.cli import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_REGRESSED

    assert f"**{EXIT_REGRESSED}** a claim regressed" in README and f"**{EXIT_BAD_INPUT}** bad input" in README
    assert f"**{EXIT_DIVERGED}** a run diverged" in README
    top = README[:README.index("## How to read the report")]
    assert ".venv/bin/python -m reproduce --tier quick" in top and ".venv/bin/python -m pytest" in top
    assert "REPRODUCE_SLURM_TESTS=1" in README


def test_the_slurm_tests_run_only_where_asked(monkeypatch):
    """`python -m pytest` on a user's machine starts no cluster: tests/test_slurm.py skips unless
    REPRODUCE_SLURM_TESTS=1, which .ci/run sets after `bash ci/slurm.sh` (the gate is read here, the
    Slurm tests are not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("slurm_tests", Path(__file__).with_name("test_slurm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("REPRODUCE_SLURM_TESTS", raising=False)
    assert "REPRODUCE_SLURM_TESTS=1" in module.why_not_asked()
    assert module.pytestmark.kwargs["reason"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "export REPRODUCE_SLURM_TESTS=1" in ci and "bash ci/slurm.sh" in ci


def _readme_console_sample() -> list[str]:
    """The console summary README shows under "How to read the report" (command one's last lines)."""
    section = README[README.index("## How to read the report"):]
    block = section[section.index("```") + 3:]
    return block[block.index("\n") + 1:block.index("```")].splitlines()


def test_the_console_sample_shows_the_quick_tier_s_claims_and_expected_verdicts():
    """Its rows are the claims judged at quick, each with the verdict data/expected/quick.json holds;
    the claims 'not at the quick tier' are the others, each with the tiers that judge it (the sample's
    intervals are one run's, stated as such; the verdicts and lists are the code's)."""
    from reproduce.judge import declared, measured
    from reproduce.report import words

    lines = _readme_console_sample()
    dashes = next(i for i, line in enumerate(lines) if line.startswith("---"))
    starts = [0] + [k + 2 for k, c in enumerate(lines[dashes]) if c == " " and lines[dashes][k + 1:k + 2] == " "]
    verdict_col = slice(starts[1], starts[2])
    shown = {}
    for line in lines[dashes + 1:]:
        if line.startswith("(expected)"):
            break
        if line[:1].strip():
            shown[line.split()[0]] = line[verdict_col].strip()
    expected = measured("quick")["verdicts"]
    claims = declared()
    at_quick = {i for i, c in claims.items() if c.cases_at("quick")}
    assert set(shown) == at_quick, "README's console sample lists other claims than those judged at quick"
    for claim_id, verdict in shown.items():
        assert verdict.split(" (")[0] == words(expected[claim_id]), (
            f"README shows {claim_id} as {verdict!r}; data/expected/quick.json expects {expected[claim_id]}")
    away = lines[lines.index("not at the quick tier; judged at:") + 1:]
    listed = {line.split()[0]: line.split(None, 1)[1] for line in away if line.startswith("  ")}
    assert set(listed) == set(claims) - at_quick
    for claim_id, tiers in listed.items():
        assert tiers == ", ".join(claims[claim_id].tiers), f"README: {claim_id} judged at {tiers!r}"


def test_the_modnoise_setting_the_readme_states_is_the_code_s():
    """README: "the small tier follows the paper's own setting (addition, ReLU, P = 113, weight
    decay 0.1)", and so do medium and full: the constants it names hold those values, and every
    run of those tiers uses that P and activation."""
    from reproduce.experiments import modnoise
    from reproduce.runner import plan

    section = README[README.index("### modnoise"):README.index("### smooth")]
    assert f"P = {modnoise.PAPER_P}" in section and f"weight decay {modnoise.PAPER_WEIGHT_DECAY:g}" in section
    assert f"{modnoise.PAPER_ACTIVATION}".lower() in section.lower()
    for tier in ("small", "medium", "full"):
        for _, run in plan(tier, ["modnoise"]):
            assert (run.p, run.activation) == (modnoise.PAPER_P, modnoise.PAPER_ACTIVATION), f"{tier}: {run.name}"

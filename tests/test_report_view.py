"""How the report shows verdicts: every catalogue claim, merged reports, the verdict table, provenance,
and one evidence figure per claim (entries in the claims.json schema, written by hand)."""

import io
import json

from PIL import Image

from reproduce.report import (all_claims, console_summary, headline, merge_entries, points, percent, regressions,
                              run_provenance, stability_record, stub_entry, write_report)


def _condition(name, values, interval, threshold=3.0, op=">=", n=5, verdict="reproduced"):
    return {"name": name, "op": op, "threshold": threshold, "tolerance": 0.1, "rule": "t", "n": n, "values": values,
            "aggregate": sum(values) / len(values), "interval": interval, "verdict": verdict, "instance": "",
            "reported": False}


def entry(claim_id, verdict="reproduced", as_expected=True, shift=0.0, tier="quick"):
    """A claims.json entry as the verdict logic writes it: two main cases and a control."""
    main = [{"case": f"quick-m{i}", "control": False, "outcome": "passed", "verdict": verdict, "message": "",
             "summary": f"case {i}", "numbers": {},
             "conditions": [_condition("half-way epoch ratio", [v + shift for v in (4.0 + i, 5.0, 3.5, 6.0, 4.2)], [3.4 + shift, 5.7 + shift]),
                            _condition(f"margin {claim_id}", [0.2, 0.3, 0.25], [0.1, 0.4], threshold=0.05, n=3)]}
            for i in range(2)]
    control = {"case": "quick-m0-control", "control": True, "outcome": "passed", "verdict": "not_reproduced",
               "message": "", "summary": "control", "numbers": {},
               "conditions": [_condition("half-way epoch ratio", [1.0, 1.1, 0.9, 1.2, 1.0], [0.9, 1.2])]}
    return {**stub_entry(claim_id, tier), "verdict": verdict, "expected": "reproduced", "as_expected": as_expected,
            "regression": not as_expected, "expectation": "measured", "note": "", "control": "failed_as_expected",
            "rule": "seed mean with a 95% t-interval", "cases": [*main, control]}


def test_number_conventions():
    assert percent(0.712) == "71.2%" and points(0.08) == "+8.0 points" and points(-0.031) == "-3.1 points"


def test_headline_is_the_condition_closest_to_failing():
    e = entry("ddmlp.noisy_learned_later")
    e["cases"][1]["conditions"][0]["interval"] = [3.05, 5.0]  # 0.03 widths above its threshold
    assert headline(e)["interval"] == [3.05, 5.0]


def test_every_declared_claim_is_in_the_report_and_merges_keep_the_rest():
    everything = all_claims()
    first = merge_entries([], [entry("ddmlp.noisy_learned_later")], "quick")
    assert [e["id"] for e in first] == everything
    verdicts = {e["id"]: e["verdict"] for e in first}
    assert verdicts["ddmlp.noisy_learned_later"] == "reproduced"
    assert verdicts["ddmlp.epochwise_double_descent"] == "not_at_tier"  # no case at quick
    assert verdicts["masc.true_label_subspaces_better"] == "not_run"  # a case at quick, no results
    # --claim of another paper: merged in, nothing dropped
    second = merge_entries(first, [entry("masc.beats_model")], "quick")
    verdicts = {e["id"]: e["verdict"] for e in second}
    assert verdicts["ddmlp.noisy_learned_later"] == "reproduced" and verdicts["masc.beats_model"] == "reproduced"
    # judged again with its results gone: the new judgement replaces the old one, never the stale verdict
    gone = stub_entry("ddmlp.noisy_learned_later", "quick")
    third = merge_entries(second, [gone], "quick")
    assert {e["id"]: e["verdict"] for e in third}["ddmlp.noisy_learned_later"] == "not_run"


def test_console_table_and_regressions():
    entries = [entry("ddmlp.noisy_learned_later"), entry("masc.beats_model", "not_reproduced", as_expected=False),
               stub_entry("smooth.asymmetric_untouched_only", "quick")]
    text = console_summary(entries, "quick")
    lines = text.splitlines()
    assert lines[0] == "3 claims: 1 reproduced, 1 not reproduced, 0 inconclusive, 1 not at tier; 1 regression"
    assert lines[1].split() == ["claim", "verdict", "n", "95%", "interval", "control"]
    row = next(line for line in lines if line.startswith("masc.beats_model"))
    assert row.split()[1:] == ["NOT", "reproduced", "(REGRESSION)", "3", "[0.1,", "0.4]", "fails"]
    # not at this tier: one line each, with the tiers that judge it, after the table
    away = next(k for k, line in enumerate(lines) if line.startswith("not at the quick tier"))
    assert lines[away + 1].split() == ["smooth.asymmetric_untouched_only", "full"]
    assert not any(line.startswith("smooth.asymmetric_untouched_only") for line in lines)
    # what to do after a regression: the command that re-checks it, and the stability record
    assert "    python -m reproduce report --tier quick --claim masc.beats_model" in lines
    flat = " ".join(text.split())
    assert "docs/stability.md records" in flat and "python -m reproduce expect --tier quick" in flat
    assert regressions(entries) == ["masc.beats_model"]
    assert max(len(line) for line in lines) <= 100


def test_the_regression_advice_quotes_the_stability_record(tmp_path):
    """The quick verdicts docs/stability.md records per setting, grouped by verdict."""
    record = tmp_path / "stability.md"
    record.write_text("| claim | t2-s0 | t2-s1 | t1-s0 |\n|---|---|---|---|\n"
                      "| masc.x | reproduced (control failed as expected) | inconclusive (control inconclusive) | "
                      "reproduced (control failed as expected) | DIFFERS\n"
                      "| masc.y | reproduced (a) | reproduced (a) | reproduced (a) |\n")
    assert stability_record("masc.x", record) == (f"{tmp_path.name}/stability.md records that its quick verdict depends on the base "
                                                  "seed or threads (tT-sS): reproduced at t2-s0, t1-s0; inconclusive "
                                                  "at t2-s1")
    assert "the same quick verdict, reproduced, in every setting" in stability_record("masc.y", record)
    assert stability_record("masc.z", record) == ""


def test_the_console_fits_100_columns_with_the_longest_texts():
    """Paper texts stay in the report; the longest ids, verdicts and intervals wrap within 100 columns."""
    from reproduce.report import CONSOLE_MAX

    e = entry("modnoise.partition_weaker_than_fourier", "inconclusive", as_expected=False)
    e.update(paper_value="word " * 30 + "END", control="passed_unexpectedly", note="n " * 80)
    for c in e["cases"]:
        for j in c["conditions"]:
            j.update(unit="points", interval=[-0.1234, 0.5678])
    text = console_summary([e, stub_entry("modnoise.larger_width_generalizes_better", "quick")], "quick")
    assert "END" not in text and max(len(line) for line in text.splitlines()) <= CONSOLE_MAX
    assert "modnoise.partition_weaker_than_fourier" in text and "PASSES" in text


def test_json_summary_is_for_machines():
    import json as json_

    from reproduce.report import summary_json

    entries = [entry("ddmlp.noisy_learned_later"), entry("masc.beats_model", "not_reproduced", as_expected=False)]
    out = json_.loads(json_.dumps(summary_json(entries, "quick", 1, "store")))
    assert out["tier"] == "quick" and out["seed"] == 1 and out["counts"] == {"reproduced": 1, "not_reproduced": 1}
    assert out["regressions"][0]["recheck"] == ("python -m reproduce report --tier quick --claim masc.beats_model "
                                                "--results store --seed 1")
    claim = out["claims"][0]
    assert claim["id"] == "ddmlp.noisy_learned_later" and claim["headline"]["n"] == 3


def test_a_contradicted_prediction_is_counted_apart_and_is_no_regression():
    e = {**entry("ddmlp.epochwise_double_descent", "reproduced", as_expected=False, tier="small"),
         "regression": False, "expectation": "predicted", "expected": "not_reproduced",
         "expectation_source": "predicted: no recovery at small"}
    text = console_summary([e])
    assert "1 prediction contradicted" in text.splitlines()[0] and "reproduced (unpredicted)" in text
    assert "predictions contradicted" in text and regressions([e]) == []


def test_an_expected_failure_is_marked_and_counted_apart():
    e = entry("ddmlp.noisy_learned_later")
    e.update(expected="not_reproduced", verdict="not_reproduced")
    text = console_summary([e])
    assert "NOT reproduced (expected)" in text
    assert "1 expected failures or inconclusive" in text.splitlines()[0]


def test_provenance_is_read_from_the_result_attrs():
    attrs = [{"device": "cuda", "device_name": "NVIDIA H200", "torch_version": "2.14.1", "precision": "tf32",
              "torch_threads": 8, "package_version": "0.1.0", "git_commit": "abc", "seed": 0,
              "started_at": f"2026-01-0{i}T00:00:00+00:00", "finished_at": f"2026-01-0{i}T01:00:00+00:00"}
             for i in (1, 2)]
    p = run_provenance(attrs)
    assert p["device_name"] == "NVIDIA H200" and p["runs"] == 2
    assert p["made"] == "2026-01-01T00:00:00+00:00 to 2026-01-02T01:00:00+00:00"


def test_one_legible_evidence_figure_per_claim_all_different(tmp_path):
    ids = ["ddmlp.noisy_learned_later", "ddmlp.separation_deepens_with_layers", "masc.beats_model"]
    entries = merge_entries([], [entry(i, shift=k) for k, i in enumerate(ids)], "quick")
    prov = {"ddmlp": run_provenance([{"device": "cpu", "device_name": "Xeon", "seed": 0, "precision": "tf32"}])}
    write_report(tmp_path, "quick", entries, {}, {}, prov)
    pngs = {i: (tmp_path / "figures" / f"{i}.png").read_bytes() for i in ids}
    assert len(set(pngs.values())) == len(ids)
    for png in pngs.values():
        width, height = Image.open(io.BytesIO(png)).size
        assert 800 <= width <= 1400 and 250 <= height <= 1200, (width, height)
    assert not (tmp_path / "figures" / "smooth.hessian_peaks_too.png").exists()  # no conditions, no figure
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for text in (md, page):
        assert "What made these numbers" in text and "Xeon" in text and "71.2%" in text
        assert all(claim_id in text for claim_id in all_claims())
    assert page.count("data:image/png;base64,") == len(ids)
    assert "<a href='#ddmlp-noisy_learned_later'>" in page and "<section id='ddmlp-noisy_learned_later'>" in page
    assert "[ddmlp.noisy_learned_later](#ddmlp-noisy_learned_later)" in md and '<a id="ddmlp-noisy_learned_later">' in md
    assert f"{len(all_claims())} claims: 3 reproduced" in md and "tf32 (float32 on the CPU)" in md  # as the files say
    assert [e["id"] for e in json.loads((tmp_path / "claims.json").read_text())] == all_claims()


def test_headline_is_the_informative_condition():
    """smooth.volume_accuracy_grows: every seed's largest drop is exactly 0 (a binomial share that is
    closest to failing but shows no spread); the headline is its rise, +20.3 points [17.2, 23.4]."""
    drop = {**_condition("largest drop", [0.0] * 6, [0.61, 1.0], threshold=0.0, op="<=", n=6), "rule": "binomial",
            "aggregate": 1.0, "unit": "points"}
    rise = {**_condition("rise", [0.19, 0.19, 0.18, 0.22, 0.25, 0.17], [0.172, 0.234], threshold=0.1, n=6),
            "unit": "points"}
    e = {"cases": [{"control": False, "conditions": [drop, rise]}]}
    assert headline(e)["name"] == "rise"
    assert headline({"cases": [{"control": False, "conditions": [drop]}]})["name"] == "largest drop"


def test_report_sections_say_why_where_and_what_made_them(tmp_path):
    """An expected failure's section has its why and the evidence; a claim not at this tier names the
    tiers and commands that judge it; the legend and the header (command, host, Python, data) are there."""
    failing = {**entry("masc.beats_model", "not_reproduced"), "expected": "not_reproduced",
               "why": "the 40-epoch networks do not memorize"}
    failing["cases"][0]["conditions"][0].update(verdict="not_reproduced", interval=[1.0, 2.0])
    away = stub_entry("smooth.asymmetric_untouched_only", "quick")
    header = {"command": "python -m reproduce --tier quick", "host": "box", "python": "3.11.7",
              "data_source": {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}}
    write_report(tmp_path, "quick", [failing, away], {}, header=header)
    md = (tmp_path / "report.md").read_text()
    assert "- why it fails at this tier: the 40-epoch networks do not memorize" in md
    assert "- evidence of the failure: half-way epoch ratio: " in md and "(NOT reproduced)" in md
    assert ("- judged at full: `python -m reproduce --tier full --paper smooth`, then `python -m reproduce report "
            "--tier full --claim smooth.asymmetric_untouched_only`") in md
    assert "## Legend" in md and "**(expected)**" in md and "## Every claim at every tier" in md
    assert "- command: python -m reproduce --tier quick" in md and "- data: fashion_mnist: /usr/share" in md
    html = (tmp_path / "report.html").read_text()
    assert "<dt>(expected)</dt>" in html and "Python:</b> 3.11.7" in html
    assert "± 0.0 points" not in md

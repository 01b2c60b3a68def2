"""How the report shows verdicts: every catalogue claim, merged reports, the verdict table, provenance,
and one evidence figure per claim (entries in the claims.json schema, written by hand)."""

import io
import json

from PIL import Image

from reproduce.report import (all_claims, console_summary, headline, merge_entries, points, percent, regressions,
                              run_provenance, stub_entry, write_report)


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
    text = console_summary(entries)
    lines = text.splitlines()
    assert lines[0] == "3 claims: 1 reproduced, 1 not reproduced, 0 inconclusive, 1 not at tier; 1 regression"
    assert lines[1].split()[:2] == ["claim", "verdict"] and len(lines) >= 6
    assert "n=3, [0.1, 0.4]" in text and "REGRESSION" in text
    assert any(line.startswith("smooth.asymmetric_untouched_only") and "not at this tier" in line for line in lines)
    assert regressions(entries) == ["masc.beats_model"]


def test_a_contradicted_prediction_is_counted_apart_and_is_no_regression():
    e = {**entry("ddmlp.epochwise_double_descent", "reproduced", as_expected=False, tier="small"),
         "regression": False, "expectation": "predicted", "expected": "not_reproduced",
         "expectation_source": "predicted: no recovery at small"}
    text = console_summary([e])
    assert "1 prediction contradicted" in text.splitlines()[0] and "predicted NOT reproduced" in text
    assert "predictions contradicted" in text and regressions([e]) == []


def test_console_table_wraps_long_texts():
    """The paper's value is wrapped over lines, never cut."""
    e = entry("ddmlp.noisy_learned_later")
    e.update(expected="not_reproduced", verdict="not_reproduced", paper_value="word " * 30 + "END")
    text = console_summary([e])
    assert "END" in text and "..." not in text and max(len(line) for line in text.splitlines()) < 250
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
    assert f"{len(all_claims())} claims: 3 reproduced" in md and "fp32" in md  # the CPU trained: no TF32 there
    assert [e["id"] for e in json.loads((tmp_path / "claims.json").read_text())] == all_claims()

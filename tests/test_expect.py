"""`python -m reproduce expect`: a tier's measured expectations, for every paper or only some."""

import json

import pytest

from reproduce import judge
from reproduce.errors import UserError


def _claims(tmp_path, entries):
    (tmp_path / "small").mkdir(parents=True, exist_ok=True)
    (tmp_path / "small" / "claims.json").write_text(json.dumps(entries))
    return tmp_path


def _entry(claim_id, verdict):
    return {"id": claim_id, "paper": claim_id.split(".")[0], "verdict": verdict, "seed": 0,
            "cases": [{"case": f"small-x-{claim_id}", "verdict": verdict}]}


def test_one_paper_is_recorded_beside_the_others_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(judge, "EXPECTED", tmp_path / "expected")
    results = _claims(tmp_path, [_entry("ddmlp.a", "reproduced"), _entry("masc.b", "not_run")])
    with pytest.raises(UserError, match="not run"):
        judge.record_expected("small", results)  # every paper: masc.b was not run
    path = judge.record_expected("small", results, ["ddmlp"])
    first = json.loads(path.read_text())
    assert first["verdicts"] == {"ddmlp.a": "reproduced"} and "--paper ddmlp" in first["sources"]["ddmlp"]
    _claims(tmp_path, [_entry("ddmlp.a", "not_run"), _entry("masc.b", "inconclusive")])
    second = json.loads(judge.record_expected("small", results, ["masc"]).read_text())
    assert second["verdicts"] == {"ddmlp.a": "reproduced", "masc.b": "inconclusive"}  # ddmlp's measurement kept
    assert second["sources"]["ddmlp"] == first["sources"]["ddmlp"] and "--paper masc" in second["sources"]["masc"]
    assert set(second["cases"]) == {"ddmlp.a", "masc.b"} and "commit" in second["source"]
    with pytest.raises(UserError, match="no claim of modnoise"):
        judge.record_expected("small", results, ["modnoise"])


def test_every_paper_at_once_cites_one_source(tmp_path, monkeypatch):
    monkeypatch.setattr(judge, "EXPECTED", tmp_path / "expected")
    results = _claims(tmp_path, [_entry("ddmlp.a", "reproduced"), _entry("masc.b", "inconclusive")])
    record = json.loads(judge.record_expected("small", results).read_text())
    assert set(record["sources"]) == {"ddmlp", "masc"} and record["source"] == record["sources"]["masc"]
    assert "--paper" not in record["source"]

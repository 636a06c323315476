import json

import pytest

import perturb
from perturb.harness.claims import ClaimFailed, Claims, _rounded


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("PERTURB_ROOT", str(tmp_path))  # records go to a scratch checkout, not the real one
    return perturb.setup("crown-bound-propagation", "quick", "cpu", 0, sizes={"quick": {}, "full": {}})


@pytest.mark.parametrize("measured, comparison, threshold, holds", [
    (0.9, ">=", 0.5, True), (0.5, ">=", 0.5, True), (0.4, ">=", 0.5, False),
    (0.1, "<", 0.1, False), (0.0, "==", 0, True), (float("nan"), "<=", 1.0, False), (2, ">", 1, True),
])
def test_verdicts_follow_the_comparison(cfg, measured, comparison, threshold, holds):
    claims = Claims(cfg)
    assert claims.add("c", measured, comparison, threshold).holds is holds


def test_bad_comparison_and_duplicate_statement_are_refused(cfg):
    claims = Claims(cfg)
    with pytest.raises(ValueError, match="accepted"):
        claims.add("c", 1.0, "=>", 0.0)
    claims.add("c", 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="twice"):
        claims.add("c", 1.0, ">=", 0.0)


def test_check_prints_verdicts_without_numbers_and_writes_record(cfg, tmp_path, capsys):
    claims = Claims(cfg)
    claims.add("A beats B", 0.123456789, ">=", 0.1, paper=0.2)
    claims.check()
    out = capsys.readouterr().out
    assert "✔ holds  A beats B" in out and "1 of 1 claims hold" in out and "0.12" not in out
    record = json.loads((tmp_path / "results/quick/crown-bound-propagation.json").read_text())
    assert record["claims"] == [{"statement": "A beats B", "measured": 0.123457, "comparison": ">=",
                                 "threshold": 0.1, "paper": 0.2, "holds": True}]
    assert record["seeds"] == {"0": {"holds": True, "measured": [0.123457]}}
    assert "time" not in json.dumps(record)


def test_check_raises_on_a_failing_claim_and_still_records_it(cfg, tmp_path, capsys):
    claims = Claims(cfg)
    claims.add("good", 1.0, ">", 0.0)
    claims.add("bad", 0.0, ">", 1.0)
    with pytest.raises(ClaimFailed, match="bad: measured 0"):
        claims.check()
    assert "✘ FAILS  bad" in capsys.readouterr().out
    record = json.loads((tmp_path / "results/quick/crown-bound-propagation.json").read_text())
    assert [c["holds"] for c in record["claims"]] == [True, False]


def test_no_claims_is_an_error(cfg):
    with pytest.raises(ValueError, match="at least one"):
        Claims(cfg).check()


def test_other_seeds_add_their_verdict_without_replacing_the_default_seed(cfg):
    first = Claims(cfg)
    first.add("c", 1.0, ">", 0.0)
    record = first.record(None)
    other_cfg = perturb.setup("crown-bound-propagation", "quick", "cpu", 2, sizes={"quick": {}, "full": {}})
    other = Claims(other_cfg)
    other.add("c", 3.0, ">", 0.0)
    merged = other.record(record | {"code_hash": "h"}) if record["code_hash"] is None else other.record(record)
    # Without a chapter file the code hash is unknown, so nothing is merged: a record never mixes code versions.
    assert merged["seeds"] == {"2": {"holds": True, "measured": [3.0]}}


def test_rounding_keeps_six_significant_digits():
    assert _rounded(1.23456789e-7) == 1.23457e-7 and _rounded(0.0) == 0.0 and _rounded(None) is None

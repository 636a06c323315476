import json

import pytest

import perturb
from perturb.harness.claims import (ACCEPTED, CONTRADICTED, NOT_SHOWN, PARTLY, REPRODUCED, ClaimFailed, Claims,
                                    _rounded, aggregate_verdict, mirrored_threshold, seed_verdict)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("PERTURB_ROOT", str(tmp_path))  # records go to a scratch checkout, not the real one
    return perturb.setup("crown-bound-propagation", "quick", "cpu", 0, sizes={"quick": {}, "full": {}})


def headline(claims, measured, comparison="<=", threshold=0.7, null=1.0, expect=REPRODUCED, statement="A beats B"):
    return claims.headline(statement, measured, comparison, threshold, null=null, baseline="B", expect=expect)


@pytest.mark.parametrize("measured, comparison, threshold, holds", [
    (0.9, ">=", 0.5, True), (0.5, ">=", 0.5, True), (0.4, ">=", 0.5, False),
    (0.1, "<", 0.1, False), (0.0, "==", 0, True), (float("nan"), "<=", 1.0, False), (2, ">", 1, True),
])
def test_mechanism_verdicts_follow_the_comparison(cfg, measured, comparison, threshold, holds):
    assert Claims(cfg).mechanism("c", measured, comparison, threshold).holds is holds


@pytest.mark.parametrize("measured, comparison, threshold, null, verdict", [
    # a ratio (null 1) that must fall to 0.7: the mirror is 1/0.7 = 1.43
    (0.5, "<=", 0.7, 1.0, REPRODUCED), (0.7, "<=", 0.7, 1.0, REPRODUCED), (0.9, "<=", 0.7, 1.0, PARTLY),
    (1.0, "<=", 0.7, 1.0, NOT_SHOWN), (1.3, "<=", 0.7, 1.0, NOT_SHOWN), (1.5, "<=", 0.7, 1.0, CONTRADICTED),
    # a difference (null 0) that must reach 0.05: the mirror is -0.05
    (0.2, ">=", 0.05, 0.0, REPRODUCED), (0.01, ">=", 0.05, 0.0, PARTLY), (0.0, ">=", 0.05, 0.0, NOT_SHOWN),
    (-0.04, ">=", 0.05, 0.0, NOT_SHOWN), (-0.05, ">=", 0.05, 0.0, CONTRADICTED),
    (float("nan"), ">=", 0.05, 0.0, NOT_SHOWN),
])
def test_seed_verdict_rule(measured, comparison, threshold, null, verdict):
    assert seed_verdict(measured, comparison, threshold, null) == verdict


def test_mirror_is_logarithmic_for_ratios_and_linear_otherwise():
    assert mirrored_threshold(0.5, 1.0) == 2.0 and mirrored_threshold(0.05, 0.0) == -0.05
    assert mirrored_threshold(3.0, 2.0) == 1.0


@pytest.mark.parametrize("seeds, verdict", [
    ([REPRODUCED] * 5, REPRODUCED), ([REPRODUCED] * 4 + [PARTLY], PARTLY), ([PARTLY] * 5, PARTLY),
    ([REPRODUCED] * 4 + [NOT_SHOWN], NOT_SHOWN), ([CONTRADICTED] * 5, CONTRADICTED),
    ([CONTRADICTED] * 4 + [NOT_SHOWN], NOT_SHOWN), ([REPRODUCED, CONTRADICTED], NOT_SHOWN),
])
def test_aggregate_over_seeds(seeds, verdict):
    assert aggregate_verdict(seeds) == verdict


def test_every_aggregate_is_accepted_by_its_own_expectation():
    # A chapter that expects what its seeds aggregate to never fails a single seed of that set.
    import itertools
    for seeds in itertools.product((REPRODUCED, PARTLY, NOT_SHOWN, CONTRADICTED), repeat=3):
        assert set(seeds) <= ACCEPTED[aggregate_verdict(list(seeds))], seeds


def test_bad_input_is_refused_with_what_is_accepted(cfg):
    claims = Claims(cfg)
    with pytest.raises(ValueError, match="accepted"):
        claims.mechanism("c", 1.0, "=>", 0.0)
    with pytest.raises(ValueError, match="better side"):
        claims.headline("h", 0.5, "==", 0.7, null=1.0, baseline="B", expect=REPRODUCED)
    with pytest.raises(ValueError, match="names its baseline"):
        claims.headline("h", 0.5, "<=", 0.7, null=1.0, baseline="", expect=REPRODUCED)
    with pytest.raises(ValueError, match="unknown expected verdict"):
        claims.headline("h", 0.5, "<=", 0.7, null=1.0, baseline="B", expect="sort of")
    with pytest.raises(ValueError, match="better side"):
        claims.headline("h", 0.5, "<=", 1.2, null=1.0, baseline="B", expect=REPRODUCED)
    claims.mechanism("c", 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="twice"):
        claims.observe("c", 1.0)


def test_check_prints_verdicts_without_numbers_and_writes_record(cfg, tmp_path, capsys):
    claims = Claims(cfg)
    claims.headline("A beats B", 0.123456789, "<=", 0.5, null=1.0, baseline="B alone", paper=0.2, expect=REPRODUCED)
    claims.mechanism("C holds", 3.0, ">", 1.0)
    claims.observe("clean accuracy", 0.9876543)
    claims.check()
    out = capsys.readouterr().out
    assert "✔ headline, expected reproduced, this seed reproduced:  A beats B" in out and "✔ holds  C holds" in out
    assert "1 of 1 headlines as expected, 1 of 1 mechanism claims hold" in out and "0.12" not in out
    record = json.loads((tmp_path / "results/quick/crown-bound-propagation.json").read_text())
    assert record["headlines"] == [{"statement": "A beats B", "label": None, "baseline": "B alone",
                                    "measured": 0.123457, "comparison": "<=", "threshold": 0.5, "null": 1.0,
                                    "paper": 0.2, "expect": REPRODUCED, "verdict": REPRODUCED}]
    assert record["observations"] == [{"name": "clean accuracy", "value": 0.987654}]
    assert record["seeds"] == {"0": {"headlines": [0.123457], "verdicts": [REPRODUCED], "mechanisms": [3.0],
                                     "holds": True, "observations": [0.987654]}}
    assert record["verdicts"] == [REPRODUCED] and "time" not in json.dumps(record)


def test_a_headline_off_its_expectation_raises_either_way(cfg, tmp_path, capsys):
    better = Claims(cfg)
    headline(better, 0.5, expect=PARTLY)
    better.check()  # a seed past the margin is compatible with "partly"; the aggregate over seeds decides
    headline(worse_than_expected := Claims(cfg), 1.6, expect=NOT_SHOWN)
    worse_than_expected.check()
    assert "expected not shown at this scale, this seed contradicted" in capsys.readouterr().out
    contradicted = Claims(cfg)
    headline(contradicted, 0.5, expect=CONTRADICTED)
    with pytest.raises(ClaimFailed, match="gives 'reproduced' on seed 0, expected 'contradicted'"):
        contradicted.check()
    worse = Claims(cfg)
    headline(worse, 0.9, expect=REPRODUCED)
    with pytest.raises(ClaimFailed, match="gives 'partly'"):
        worse.check()
    assert "✘ headline, expected reproduced, this seed partly:  A beats B" in capsys.readouterr().out
    assert json.loads((tmp_path / "results/quick/crown-bound-propagation.json").read_text())["verdicts"] == [PARTLY]


def test_check_raises_on_a_failing_mechanism_and_still_records_it(cfg, tmp_path, capsys):
    claims = Claims(cfg)
    headline(claims, 0.5)
    claims.mechanism("good", 1.0, ">", 0.0)
    claims.mechanism("bad", 0.0, ">", 1.0)
    with pytest.raises(ClaimFailed, match="bad: measured 0"):
        claims.check()
    assert "✘ FAILS  bad" in capsys.readouterr().out
    record = json.loads((tmp_path / "results/quick/crown-bound-propagation.json").read_text())
    assert [c["holds"] for c in record["mechanisms"]] == [True, False]


def test_no_headline_is_an_error(cfg):
    claims = Claims(cfg)
    claims.mechanism("c", 1.0, ">", 0.0)
    with pytest.raises(ValueError, match="no headline"):
        claims.check()


def test_card_text_names_each_headline_when_there_are_several(cfg):
    claims = Claims(cfg)
    headline(claims, 0.5)
    assert claims.verdicts_text() == REPRODUCED
    claims.headline("D trade-off", 0.1, ">=", 0.05, null=0.0, baseline="D=1", expect=PARTLY, label="trade-off")
    assert claims.verdicts_text() == "reproduced (A beats B); partly (trade-off)"


def test_seeds_do_not_merge_without_a_known_code_version(cfg):
    first = Claims(cfg)
    headline(first, 0.5)
    record = first.record(None)
    other = Claims(perturb.setup("crown-bound-propagation", "quick", "cpu", 2, sizes={"quick": {}, "full": {}}))
    headline(other, 0.9)
    # Without a chapter file the code hash is unknown, so nothing is merged: a record never mixes code versions.
    assert set(other.record(record)["seeds"]) == {"2"}


def test_rounding_keeps_six_significant_digits():
    assert _rounded(1.23456789e-7) == 1.23457e-7 and _rounded(0.0) == 0.0 and _rounded(None) is None

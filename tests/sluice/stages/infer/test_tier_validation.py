"""Validation of a tier against its named reference: the verdict per row, the paired interval, the decision, what
lands in `validations`, and how a refused tier's rows are handed on. No engine: stub backends answer."""

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.backends import BatchResult, Completion
from models.catalogue import Catalogue
from sluice.stages.infer.tier_validation import (
    DECISION_ROW,
    Decision,
    hand_on,
    land_decision,
    load_decision,
    sample_rows,
    save_decision,
    validate_tier,
    verdict,
)
from sluice.stats import paired_difference_interval, wilson_interval
from sluice.warehouse.db import connect


def ok(text):
    return Completion("r", text)


def test_rows_with_a_reference_are_graded_on_both_answers():
    v = verdict({"row_id": "r", "reference": "42", "grader": "number"}, ok("so #### 42"), ok("#### 41"))
    assert (v["how"], v["tier_ok"], v["reference_ok"]) == ("graded", True, False)


def test_without_a_reference_answers_with_a_shape_are_compared_with_the_reference_tier():
    row = {"row_id": "r", "reference": None, "grader": "number"}
    assert (verdict(row, ok("it is 7"), ok("7"))["tier_ok"], verdict(row, ok("8"), ok("7"))["tier_ok"]) == (True, False)
    assert verdict(row, ok("8"), ok("7"))["reference_ok"] is True  # the reference tier counts as right
    free = verdict({"row_id": "r"}, ok("Paris is lovely"), ok("Paris is nice"))
    assert free["how"] is None and free["tier_ok"] is None  # free text without a judge: unjudged
    failed = verdict(row, ok("7"), Completion("r", None, error="boom"))
    assert failed["tier_ok"] is None and "gave no answer" in failed["reason"]


def test_the_paired_interval_is_tight_when_the_answers_agree_and_wide_when_they_do_not():
    # all right on both: the Wilson bound of 150/150 either side (no correlation can be estimated)
    diff, low, high = paired_difference_interval(0, 0, 150, 0)
    assert diff == 0 and low == pytest.approx(wilson_interval(150, 150)[0] - 1) and high == pytest.approx(-low)
    # 40 right and 20 wrong on both: perfectly correlated pairs, far tighter than two independent 40/60s
    assert paired_difference_interval(0, 0, 40, 20)[1] == pytest.approx(-0.02006, abs=1e-4)
    # right on the reference only, 40 times in 200: a clear loss
    diff, low, high = paired_difference_interval(0, 40, 100, 60)
    assert diff == pytest.approx(-0.2) and (round(low, 4), round(high, 4)) == (-0.2538, -0.1437)
    # by shape the reference is always right: the bound is the Wilson bound of the agreement, minus 1
    assert paired_difference_interval(0, 3, 97, 0)[1] == pytest.approx(wilson_interval(97, 100)[0] - 1)


def rows_of(pairs):
    return [{"row_id": f"r{i}", "how": "graded", "tier_ok": a, "reference_ok": b, "answer": "x",
             "reference_answer": "y", "reason": None} for i, (a, b) in enumerate(pairs)]


def test_the_decision_passes_only_when_the_lower_bound_is_within_the_margin():
    faithful = Decision("small", "premium", 0.05, rows_of([(True, True)] * 150 + [(False, False)] * 50))
    m = faithful.numbers()
    assert faithful.passed and (m["n"], m["tier_accuracy"], m["reference_accuracy"], m["difference"]) == (200, 0.75, 0.75, 0)
    assert m["low"] > -0.05 and "accepted" in faithful.message()
    broken = Decision("small", "premium", 0.05, rows_of([(False, True)] * 60 + [(True, True)] * 90 + [(False, False)] * 50))
    b = broken.numbers()
    assert not broken.passed and b["difference"] == pytest.approx(-0.3) and b["high"] < 0
    assert "REFUSED" in broken.message()
    # too few rows to show it is close enough: refused, though nothing was wrong
    assert not Decision("small", "premium", 0.05, rows_of([(True, True)] * 20)).passed
    nothing = Decision("small", "premium", 0.05, [{**rows_of([(None, None)])[0], "how": None}])
    assert not nothing.passed and "none of 1 sampled rows could be judged" in nothing.message()


def test_the_sample_is_the_same_rows_every_time_and_spread_over_the_partition():
    table = pa.table({"row_id": [f"r{i}" for i in range(1000)], "prompt": ["p"] * 1000})
    a, b = sample_rows(table, 100), sample_rows(table, 100)
    assert a.column("row_id").to_pylist() == b.column("row_id").to_pylist() and a.num_rows == 100
    ids = [int(r[1:]) for r in a.column("row_id").to_pylist()]
    assert min(ids) < 100 and max(ids) > 900  # not just the first rows
    assert sample_rows(table, 5000).num_rows == 1000


class Answers:
    """A backend stub: answers each request with a fixed text per row, billed 1 s."""

    def __init__(self, texts):
        self.texts = texts

    def complete(self, requests):
        return BatchResult([Completion(r.row_id, self.texts[r.row_id], input_tokens=10, output_tokens=2)
                            for r in requests], billed_seconds=1.0)

    def close(self):
        pass


CATALOGUE = {
    "baseline": "premium", "workers": {"cpu": {"usd_per_hour": 3.6}},
    "tiers": [
        {"name": "small", "backend": "vllm", "model": "m-w8a8", "dtype": "bfloat16", "worker": "cpu",
         "reference_tier": "premium", "validation_rows": 50, "validation_margin": 0.1},
        {"name": "premium", "backend": "openai", "model": "big", "base_url": "http://127.0.0.1:1/v1",
         "input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
    ],
}


def test_validate_tier_answers_the_sample_on_both_tiers_and_lands_the_decision(tmp_path):
    cat = Catalogue.model_validate(CATALOGUE)
    sample = pa.table({"row_id": [f"r{i}" for i in range(40)], "prompt": [f"q{i}" for i in range(40)],
                       "system": [None] * 40, "max_tokens": [8] * 40, "reference": [str(i) for i in range(40)]})
    right = {f"r{i}": f"#### {i}" for i in range(40)}
    wrong = {**right, **{f"r{i}": "#### -1" for i in range(10)}}  # the tier misses 10 the reference gets
    backends = {"small": Answers(wrong), "premium": Answers(right)}
    d = validate_tier(cat.tier("small"), cat, sample, 8, backend_for=lambda t: backends[t.name])
    m = d.numbers()
    assert (m["n"], m["tier_right"], m["reference_right"], m["by"]["graded"]) == (40, 30, 40, 40)
    assert not d.passed and m["difference"] == -0.25
    # what validating cost: 1 s of the $3.60/h worker, and 40 x (10 in, 2 out) premium tokens
    assert m["cost_usd"] == pytest.approx(0.001 + 40 * (10 * 1.0 + 2 * 2.0) / 1e6)
    wh = tmp_path / "wh.duckdb"
    with connect(wh):
        pass
    land_decision(wh, "run1", d)
    land_decision(wh, "run1", d)  # a retry replaces, never duplicates
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = con.execute("SELECT row_id, passed, score, detail FROM validations WHERE validator = "
                           "'reference:small:premium' ORDER BY row_id").fetchall()
    decision = [r for r in rows if r[0] == DECISION_ROW]
    assert len(rows) == 41 and len(decision) == 1
    assert decision[0][1] is False and decision[0][2] == -0.25
    assert json.loads(decision[0][3])["reference_accuracy"] == 1.0
    assert sum(r[1] for r in rows if r[0] != DECISION_ROW) == 30


def test_a_decision_is_kept_in_the_run_folder_for_a_resumed_run(tmp_path):
    d = Decision("small", "premium", 0.05, rows_of([(True, True)] * 3), cost_usd=0.5)
    save_decision(tmp_path, d)
    again = load_decision(tmp_path, "small")
    assert again.numbers() == d.numbers() and load_decision(tmp_path, "mid") is None


def test_a_refused_tier_hands_its_rows_and_escalations_to_the_next_tier(tmp_path):
    def part(tier, ids):
        path = tmp_path / "routed" / f"tier={tier}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"row_id": ids, "tier": [tier] * len(ids)}), path)
        return path

    partitions = {"small": part("small", ["a", "b"]), "mid": part("mid", ["c"]), "premium": part("premium", ["d"])}
    (tmp_path / "escalated").mkdir()
    pq.write_table(pa.table({"row_id": ["e"]}), tmp_path / "escalated" / "tier=mid.parquet")
    hand_on(tmp_path, partitions, "mid", "premium")
    assert "mid" not in partitions and set(partitions) == {"small", "premium"}
    assert pq.read_table(partitions["premium"]).column("row_id").to_pylist() == ["d", "c"]
    assert not (tmp_path / "escalated" / "tier=mid.parquet").exists()
    assert pq.read_table(tmp_path / "escalated" / "tier=premium.parquet").column("row_id").to_pylist() == ["e"]

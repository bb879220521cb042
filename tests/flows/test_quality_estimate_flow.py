"""Quality without references, through the real flow on replay tiers (Mixtral cheap, GPT-4 premium, recorded
answers to GSM8K, no model): half of the cheap tier's rows are shadowed on premium, judged by their final number
(the run's grader), and the run lands a quality estimate with its interval and n; the references say whether the
interval covers the cheap tier's measured accuracy on the same rows."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.batch_run import sluice_run
from sluice.contracts.grading import grade
from sluice.reports.summary import summary_lines
from sluice.stats import wilson_interval
from tests.support.replay import gsm8k_replay_catalogue

SAMPLES = Path("data/samples").resolve()


@pytest.fixture
def replay_tiers(tmp_path):
    return gsm8k_replay_catalogue(tmp_path)


def test_a_run_lands_its_quality_estimate_and_checks_it_against_the_references(tmp_path, replay_tiers):
    wh = tmp_path / "wh.duckdb"
    summary = sluice_run(f"{SAMPLES}/gsm8k.parquet", warehouse=str(wh), catalogue=str(replay_tiers.resolve()),
                         data_dir=str(tmp_path / "data"), grader="number", use_cache=False, premium_share=0.3,
                         cascade_share=0.0, shadow_share=0.5, min_quality=0.9)
    with duckdb.connect(str(wh), read_only=True) as con:
        stored = con.execute("SELECT quality_estimate, quality_low, quality_high, quality_n, quality_unjudged, "
                             "quality_per_tier, min_quality, quality_alert FROM runs").fetchone()
        shadowed = pl.from_arrow(con.execute(
            "SELECT r.row_id, r.correct, r.response, a.response AS premium FROM results r JOIN attempts a "
            "ON a.run_id = r.run_id AND a.row_id = r.row_id AND a.kind = 'shadow' WHERE r.tier = 'cheap'").arrow())
    estimate, low, high, n, unjudged, per_tier, floor, alert = stored
    cheap = json.loads(per_tier)["cheap"]
    # every shadow pair of GSM8K answers has a final number: all judged, none left to a judge
    assert n == cheap["n"] == shadowed.height == summary["shadow"] > 10 and unjudged == 0
    agreed = sum(bool(grade(c, p, "number")[0]) for c, p in zip(shadowed["response"], shadowed["premium"]))
    assert cheap["acceptable"] == agreed
    assert (cheap["low"], cheap["high"]) == pytest.approx(wilson_interval(agreed, n))
    assert 0.0 < low < estimate < high <= 1.0 and json.loads(per_tier)["premium"]["assumed"]
    rows = summary["rows_per_tier"]
    assert estimate == pytest.approx((rows["cheap"] * agreed / n + rows["premium"]) / (rows["cheap"] + rows["premium"]))
    # the references: the cheap tier's shadowed rows measured against them, inside the interval or not
    measured = shadowed["correct"].mean()
    assert cheap["shadow_accuracy"] == pytest.approx(measured) and cheap["shadow_graded"] == n
    assert cheap["covers_shadow_accuracy"] is (cheap["low"] <= measured <= cheap["high"])
    lines = dict(summary_lines(summary))
    assert lines["quality estimate"].startswith(f"{estimate:.2f} [{low:.2f}, {high:.2f}] (n={n} judged shadow pairs")
    inside = "inside" if cheap["covers_shadow_accuracy"] else "outside"
    assert f"cheap's judged shadow rows measured {measured:.3f}, {inside} the interval (n={n})" in \
        lines["quality estimate vs references"]
    # the floor: the run says whether its lower bound fell under it, and records it
    assert floor == 0.9 and (alert is not None) is (low < 0.9) and summary["quality_alert"] == alert

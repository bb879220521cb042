"""A tier with a `reference_tier` through the real flow (replay tiers, no model): a faithful copy of the reference
passes and answers its rows; a planted broken one is refused, its rows go to the next tier, and both decisions
land in `validations` with their numbers."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.batch_run import sluice_run

SAMPLES = Path("data/samples").resolve()


def catalogue(folder: Path, cheap_answers: Path) -> Path:
    """cheap: recorded answers standing in for a quantised GPT-4, validated against the recorded GPT-4."""
    path = folder / "tiers.toml"
    path.write_text(
        'baseline = "premium"\n'
        f'[[tiers]]\nname = "cheap"\nbackend = "replay"\nmodel = "gpt-4-int8"\nanswers = "{cheap_answers}"\n'
        'input_usd_per_1m = 0.5\noutput_usd_per_1m = 0.5\nreference_tier = "premium"\nvalidation_margin = 0.05\n'
        f'[[tiers]]\nname = "premium"\nbackend = "replay"\nmodel = "gpt-4"\nanswers = "{SAMPLES}/gsm8k_gpt4.parquet"\n'
        "input_usd_per_1m = 10\noutput_usd_per_1m = 30\n")
    return path


def run(tmp_path, cat, name):
    wh = tmp_path / f"{name}.duckdb"
    summary = sluice_run(f"{SAMPLES}/gsm8k.parquet", warehouse=str(wh), catalogue=str(cat), data_dir=str(tmp_path / name),
                         grader="number", use_cache=False, premium_share=0.0, shadow_share=0.0, cascade_share=0.0)
    with duckdb.connect(str(wh), read_only=True) as con:
        tiers = pl.from_arrow(con.execute("SELECT tier, count(*) AS n FROM results WHERE status = 'ok' "
                                          "GROUP BY tier").arrow())
        decision = con.execute("SELECT validator, passed, score, detail FROM validations WHERE row_id = '(decision)'"
                               ).fetchall()
        per_row = con.execute("SELECT count(*), sum(CASE WHEN passed THEN 1 ELSE 0 END) FROM validations "
                              "WHERE row_id <> '(decision)'").fetchone()
        run_cost, baseline, billing = con.execute("SELECT cost_usd, baseline_cost_usd, billing FROM runs").fetchone()
        rows_cost = con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0]
    # validating is the run's spend, not any row's: its line in the billing, and in the run's total and saving
    [(_, _, _, detail)] = decision
    line = json.loads(billing)["validation"]["cheap"]
    assert line["cost_usd"] == pytest.approx(json.loads(detail)["cost_usd"]) and line["cost_usd"] > 0
    assert line["sampled"] == 60 and line["reference"] == "premium"
    assert run_cost == pytest.approx(rows_cost + line["cost_usd"])
    assert summary["cost_usd"] == pytest.approx(run_cost) and summary["validation_cost_usd"] == line["cost_usd"]
    assert summary["saving_usd"] == pytest.approx(baseline - run_cost)
    return summary, dict(zip(tiers["tier"], tiers["n"])), decision, per_row


def test_a_faithful_tier_is_used_and_a_broken_one_hands_its_rows_on(tmp_path):
    good, tiers, decision, per_row = run(tmp_path, catalogue(tmp_path, SAMPLES / "gsm8k_gpt4.parquet"), "faithful")
    assert tiers == {"cheap": 60}  # 60 distinct questions (+ 6 duplicates answered from them)
    [(validator, passed, score, detail)] = decision
    numbers = json.loads(detail)
    assert (validator, passed, score) == ("reference:cheap:premium", True, 0.0)
    assert (numbers["n"], numbers["by"]["graded"], numbers["tier_right"], numbers["reference_right"]) == (60, 60, 54, 54)
    assert numbers["low"] >= -0.05 and numbers["margin"] == 0.05
    assert per_row == (60, 54)

    broken = pl.read_parquet(SAMPLES / "gsm8k_gpt4.parquet").with_columns(
        pl.lit("I think the answer is #### 0").alias("response"))
    broken.write_parquet(tmp_path / "broken.parquet")
    (tmp_path / "b").mkdir()
    bad, tiers, decision, per_row = run(tmp_path, catalogue(tmp_path / "b", tmp_path / "broken.parquet"), "broken")
    assert tiers == {"premium": 60}  # refused: every row it was routed went to the next tier
    [(validator, passed, score, detail)] = decision
    numbers = json.loads(detail)
    assert (passed, numbers["tier_right"], numbers["reference_right"], numbers["n"]) == (False, 0, 54, 60)
    assert score == pytest.approx(-54 / 60, abs=1e-4) and numbers["high"] < -0.05
    assert per_row == (60, 0)
    # the same questions, the same landed accuracy: premium answered them all
    assert bad["accuracy"] == pytest.approx(good["accuracy"])


def test_what_validating_cost_is_booked_in_the_budget_ledger(tmp_path):
    wh = tmp_path / "wh.duckdb"
    sluice_run(f"{SAMPLES}/gsm8k.parquet", warehouse=str(wh), catalogue=str(catalogue(tmp_path, SAMPLES / "gsm8k_gpt4.parquet")),
               data_dir=str(tmp_path / "d"), grader="number", use_cache=False, shadow_share=0.0, cascade_share=0.0,
               budget_usd=0.5)
    with duckdb.connect(str(wh), read_only=True) as con:
        run_cost, billing, budget = con.execute("SELECT cost_usd, billing, budget FROM runs").fetchone()
    line, budget = json.loads(billing)["validation"]["cheap"], json.loads(budget)
    assert budget["passes"]["cheap/validation"]["spent_usd"] == pytest.approx(line["cost_usd"], abs=1e-6)  # rounded line
    assert line["cost_usd"] > 0
    assert budget["spent_usd"] == pytest.approx(run_cost, abs=1e-6)  # the ledger holds every dollar, validation too

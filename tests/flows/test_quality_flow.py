"""The quality demo's data through the real flow on replay tiers (Mixtral and GPT-4 recorded answers, no model):
landed accuracy, and what the all-premium baseline scores on the same rows from its own recorded answers."""

from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.batch_run import sluice_run
from tests.support.replay import gsm8k_replay_catalogue

SAMPLES = Path("data/samples").resolve()


@pytest.fixture
def replay_tiers(tmp_path):
    """data/samples/gsm8k_tiers.toml without the live tier: Mixtral (cheap) and GPT-4 (premium), both replayed."""
    return gsm8k_replay_catalogue(tmp_path)


def run(tmp_path, catalogue, name, **kw):
    wh = tmp_path / f"{name}.duckdb"
    summary = sluice_run(f"{SAMPLES}/gsm8k.parquet", warehouse=str(wh), catalogue=str(catalogue.resolve()),
                         data_dir=str(tmp_path / name), grader="number", use_cache=False, shadow_share=0.0, **kw)
    return summary, wh


def test_all_premium_accuracy_is_what_an_all_premium_run_lands(tmp_path, replay_tiers, monkeypatch):
    premium, wh_premium = run(tmp_path, replay_tiers, "premium", premium_share=1.0)
    mixed, wh_mixed = run(tmp_path, replay_tiers, "mixed", premium_share=0.3, cascade_share=0.0)
    with duckdb.connect(str(wh_premium), read_only=True) as con:
        landed = con.execute("SELECT avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END), count(correct) FROM results "
                             "WHERE correct IS NOT NULL").fetchone()
    # the all-premium run lands every graded row on premium: its accuracy is the baseline's, computed both ways
    assert premium["graded"] == mixed["graded"] == 66
    assert premium["accuracy"] == pytest.approx(landed[0])
    assert premium["baseline_accuracy"] == pytest.approx(premium["accuracy"])
    assert mixed["baseline_accuracy"] == pytest.approx(premium["accuracy"])
    assert mixed["baseline_graded"] == 66 and mixed["baseline_missing"] == 0
    # routing 30% to premium keeps less accuracy than all-premium, and costs less
    assert mixed["accuracy"] < premium["accuracy"] and mixed["cost_usd"] < premium["cost_usd"]
    with duckdb.connect(str(wh_mixed), read_only=True) as con:
        stored = con.execute("SELECT baseline_accuracy, baseline_graded_rows FROM runs").fetchone()
        tiers = pl.from_arrow(con.execute("SELECT tier, correct FROM results").arrow())
    assert stored == (pytest.approx(premium["accuracy"]), 66)
    assert set(tiers["tier"].drop_nulls()) == {"cheap", "premium"}

"""The hard budget through the whole flow, on the recorded GSM8K answers (replay tiers: no engine, no network).

A run given 30% of its all-premium forecast lands at or under it, with every row landed, and its ledger adds up
to the landed cost; a run given less than its cheapest answers need defers rows with the reason, and the next
run of the dataset answers them first, landed under the new run with a pointer back. The budget's Prefect events
(budget reached, deferred) and the flow's failure event are emitted.
"""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from models.catalogue import load_catalogue
from sluice.config import RouterSettings
from sluice.reports.forecast import forecast_dataset
from sluice.stages.budget import Ledger, rate_of, tier_rates
from sluice.stages.budget.costs import row_costs
from sluice.warehouse.deferred import outstanding_deferred
from tests.support.replay import GSM8K, gsm8k_replay_catalogue

LANDED = {"ok", "duplicate", "deferred", "failed", "quarantined"}


@pytest.fixture
def events(monkeypatch):
    """Every `sluice.run.*` event the run emits: (event, payload)."""
    import tasks.budget

    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(tasks.budget, "emit_event",
                        lambda event, resource, payload=None, **_: seen.append((event, payload or {})))
    return seen


def _all_premium_forecast(catalogue, data_dir) -> float:
    return forecast_dataset(GSM8K, load_catalogue(catalogue), data_dir, 256, RouterSettings())["baseline_cost_usd"]


def test_a_run_given_30_percent_of_its_all_premium_forecast_lands_within_it(tmp_path, events):
    catalogue, wh, data = gsm8k_replay_catalogue(tmp_path), tmp_path / "wh.duckdb", tmp_path / "data"
    forecast = _all_premium_forecast(catalogue, data)
    budget = 0.3 * forecast
    summary = sluice_run(str(GSM8K), warehouse=str(wh), catalogue=str(catalogue), data_dir=str(data),
                         budget_usd=budget, shadow_share=0.5, cascade_share=0.5)
    with duckdb.connect(str(wh), read_only=True) as con:
        statuses = dict(con.execute("SELECT status, count(*) FROM results GROUP BY 1").fetchall())
        landed, recorded = con.execute("SELECT cost_usd, budget FROM runs").fetchone()
        rows_cost = con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0]
    assert sum(statuses.values()) == 66 and set(statuses) <= LANDED  # every row landed
    assert statuses["ok"] >= 50 and statuses["duplicate"] == 6
    assert 0 < landed <= budget and rows_cost == pytest.approx(landed)
    ledger = json.loads(recorded)
    assert ledger == summary["budget"]
    assert ledger["budget_usd"] == pytest.approx(budget)
    assert ledger["spent_usd"] == pytest.approx(landed, rel=1e-9)  # every pass settled at its measured cost
    assert ledger["held_usd"] == 0.0 and ledger["overrun_usd"] == 0.0  # API reservations are upper bounds
    # reserved = spent + released: what was held and not spent went back to later passes
    assert ledger["reserved_usd"] == pytest.approx(ledger["spent_usd"] + ledger["released_usd"])
    assert {"cheap", "premium/shadow"} <= set(ledger["passes"])
    # no pass spent more than it held; a reservation released is reserved again by later passes
    assert all(p["spent_usd"] <= p["reserved_usd"] for p in ledger["passes"].values())
    assert ledger["reserved_usd"] > budget
    lines = dict(__import__("sluice.reports.summary", fromlist=["x"]).summary_lines(summary))
    assert lines["budget"].startswith(f"${budget:.6f}: spent ${landed:.6f}")


def _night(tmp_path, name: str, rows: slice) -> str:
    """One night's file of the `gsm8k` dataset: a slice of the sample's rows."""
    path = tmp_path / name / "gsm8k.parquet"
    path.parent.mkdir()
    pq.write_table(pq.read_table(GSM8K).slice(rows.start, rows.stop - rows.start), path)
    return str(path)


def _reservations(catalogue, path: str) -> dict[str, float]:
    """Each row's first-answer reservation on the cheap tier (what the ledger holds for it), by id."""
    rows = pl.read_parquet(path).rename({"id": "row_id"})
    rate = rate_of(tier_rates(load_catalogue(catalogue), {}), "cheap")
    return dict(zip(rows["row_id"].to_list(), row_costs(rows, rate, 256).tolist(), strict=True))


def test_rows_a_budget_cannot_cover_are_deferred_and_the_next_run_answers_them_first(tmp_path, events):
    catalogue, wh, data = gsm8k_replay_catalogue(tmp_path), tmp_path / "wh.duckdb", tmp_path / "data"
    night1, night2 = _night(tmp_path, "1", slice(0, 30)), _night(tmp_path, "2", slice(30, 66))
    cost1 = _reservations(catalogue, night1)
    budget1 = sum(sorted(cost1.values())[:10])  # room for about a third of the night's rows on the cheap tier
    first = sluice_run(night1, warehouse=str(wh), catalogue=str(catalogue), data_dir=str(data),
                       budget_usd=budget1, shadow_share=0.0)
    run1 = first["run_id"]
    with duckdb.connect(str(wh), read_only=True) as con:
        st = dict(con.execute("SELECT status, count(*) FROM results GROUP BY 1").fetchall())
        deferred = con.execute("SELECT row_id, error, cost_usd, tier, response FROM results "
                               "WHERE status = 'deferred' ORDER BY row_index").fetchall()
        cost = con.execute("SELECT cost_usd FROM runs").fetchone()[0]
        errors = con.execute("SELECT count(*) FROM errors WHERE stage = 'budget'").fetchone()[0]
    assert sum(st.values()) == 30 and set(st) <= LANDED and st["ok"] >= 5 and len(deferred) >= 10
    assert 0 < cost <= budget1
    # why: the routing plan or the ledger could not cover the row on any tier, or its canonical row was deferred
    assert all(f"${budget1:.6g}" in e and "deferred" in e or e.startswith("deferred with its canonical row")
               for _, e, *_ in deferred)
    assert all((c, t, r) == (0.0, None, None) for _, _, c, t, r in deferred)  # nothing sent, nothing charged
    assert errors == len(deferred)
    assert first["budget"]["deferred_rows"] == len(deferred)
    names = [e for e, _ in events]
    assert names.count("sluice.run.budget-reached") == 1 and names.count("sluice.run.deferred") == 1
    payload = dict(events)["sluice.run.deferred"]
    assert payload["run_id"] == run1 and payload["rows"] == len(deferred) and payload["dataset"] == "gsm8k"

    # the next night: room for the deferred rows and a few more; the deferred rows go first
    cost2 = _reservations(catalogue, night2)
    budget2 = sum(cost1[rid] for rid, *_ in deferred) + 5 * max(cost2.values())
    second = sluice_run(night2, warehouse=str(wh), catalogue=str(catalogue), data_dir=str(data),
                        budget_usd=budget2, shadow_share=0.0)
    run2 = second["run_id"]
    with duckdb.connect(str(wh), read_only=True) as con:
        carried = con.execute("SELECT row_id, deferred_from, status, row_index FROM results "
                              "WHERE run_id = ? AND deferred_from IS NOT NULL ORDER BY row_index", [run2]).fetchall()
        own = dict(con.execute("SELECT status, count(*) FROM results WHERE run_id = ? AND deferred_from IS NULL "
                               "GROUP BY 1", [run2]).fetchall())
        cost = con.execute("SELECT cost_usd FROM runs WHERE run_id = ?", [run2]).fetchone()[0]
    # landed under the new run, with a pointer to the run and row that deferred them, before tonight's rows
    assert [(r, d) for r, d, *_ in carried] == [(f"{run1}/{rid}", f"{run1}/{rid}") for rid, *_ in deferred]
    assert [i for *_, i in carried] == list(range(-len(deferred), 0))
    assert {s for _, _, s, _ in carried} <= {"ok", "duplicate"}  # every one answered
    assert own.get("deferred", 0) >= 1 and own.get("ok", 0) >= 1  # tonight's rows took what was left
    assert sum(own.values()) == 36 and 0 < cost <= budget2
    left = outstanding_deferred(wh, "gsm8k")  # what is outstanding now is tonight's, not last night's
    assert left is not None and set(left["run_id"].to_list()) == {run2}


def test_a_failed_run_emits_its_event(tmp_path, events):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(Exception):
        sluice_run(str(bad), warehouse=str(tmp_path / "wh.duckdb"), data_dir=str(tmp_path / "data"))
    failed = [p for e, p in events if e == "sluice.run.failed"]
    assert len(failed) == 1 and failed[0]["dataset_path"] == str(bad) and failed[0]["error"]


def test_the_hooks_hold_a_follow_up_pass_and_the_judge_to_what_is_left_and_resume_without_reserving_twice(
        tmp_path, events):
    from tasks.budget import gate, judge_admission, settle

    model = {"premium": {"name": "premium", "usd_per_input_token": 1e-5, "usd_per_output_token": 1e-5}}
    ledger = Ledger.open(tmp_path, 0.005, model)
    ledger.reserve("premium", 0.001, 1)
    part = tmp_path / "shadow" / "tier=premium.parquet"
    part.parent.mkdir()
    pl.DataFrame({"row_id": ["a", "b", "c"], "prompt": ["x" * 291] * 3, "max_tokens": [91, 991, 91]}).write_parquet(part)
    # $0.004 left: rows a and c ($0.002 each) fit, b ($0.011) does not: the partition is rewritten to a and c
    assert gate.fn(tmp_path, "premium/shadow", part, 256) == part
    assert pl.read_parquet(part)["row_id"].to_list() == ["a", "c"]
    assert gate.fn(tmp_path, "premium/shadow", part, 256) == part  # resumed: held already, nothing more
    held = Ledger.open(tmp_path)
    assert held.entries["premium/shadow"].reserved_usd == pytest.approx(0.004) and held.available_usd < 1e-12
    assert held.summary()["skipped_rows"] == {"premium/shadow": 1}
    assert settle(tmp_path, "premium/shadow", {"cost_usd": 0.0015}) == {"cost_usd": 0.0015}
    assert settle(tmp_path, "premium", {"cost_usd": 0.0005})["cost_usd"] == 0.0005
    # $0.003 left: the judge's two orders of one short pair fit, a long one does not (all or nothing)
    admit = judge_admission(tmp_path, "premium", "Judge.", 16)
    assert not admit(["y" * 300_000])
    assert admit(["y" * 300])
    assert Ledger.open(tmp_path).entries["premium/judge"].rows == 2
    assert [e for e, _ in events] == ["sluice.run.budget-reached"]  # once, the first time
    assert judge_admission(tmp_path / "no-budget", "premium", "Judge.", 16) is None

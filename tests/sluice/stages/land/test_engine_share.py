"""A pass's engine starts apportioned across its runs by tokens (sluice/stages/land/engine_share.py), on a real
DuckDB warehouse and run folders laid out as the infer stage writes them; no engine starts."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.catalogue import load_catalogue
from sluice.stages.land.engine_share import apportion_engine_starts, engine_groups
from sluice.warehouse.db import connect

P = 0.36 / 3600  # the worker's $/s


def _catalogue(tmp_path):
    path = tmp_path / "catalogue.toml"
    path.write_text("""
baseline = "premium"
[workers.cpu]
usd_per_hour = 0.36
[[tiers]]
name = "small"
backend = "vllm"
model = "/models/one"
worker = "cpu"
[[tiers]]
name = "mid"
backend = "vllm"
model = "/models/one"
worker = "cpu"
[[tiers]]
name = "big"
backend = "vllm"
model = "/models/two"
worker = "cpu"
[[tiers]]
name = "premium"
backend = "openai"
model = "p"
base_url = "http://127.0.0.1:1/v1"
input_usd_per_1m = 2.5
output_usd_per_1m = 10
""")
    return load_catalogue(path)


def _shard(run_dir, tier, rows, start_s, gen_s, kind="first"):
    """One answered shard: rows (row_id, tokens) billed (start + generation) x $/s, apportioned by tokens."""
    folder = run_dir / "answers" / ("" if kind == "first" else kind) / f"tier={tier}"
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(t for _, t in rows)
    costs = [(start_s + gen_s) * P * t / total for _, t in rows]
    pq.write_table(pa.table({"row_id": [r for r, _ in rows], "cost_usd": costs}), folder / "shard-00000.parquet")
    (folder / "shard-00000.billing.json").write_text(json.dumps(
        {"engine_start_s": start_s, "generate_s": gen_s, "billed_seconds": start_s + gen_s,
         "cost_usd": sum(costs)}))
    return [(r, kind, tier, t, c) for (r, t), c in zip(rows, costs)]


def _land(warehouse, run_id, attempts, run_dir):
    billing = {}  # as the flow records it: each pass's billing file ("small", "mid/shadow", ...)
    for path in run_dir.rglob("shard-*.billing.json"):
        kind = path.parts[-3] if path.parts[-3] != "answers" else "first"
        tier = path.parent.name.removeprefix("tier=")
        billing[tier if kind == "first" else f"{tier}/{kind}"] = json.loads(path.read_text())
    with connect(warehouse) as con:
        for i, (row, kind, tier, tokens, cost) in enumerate(attempts):
            con.execute("INSERT INTO attempts (run_id, row_id, attempt, kind, tier, input_tokens, output_tokens, "
                        "cost_usd) VALUES (?, ?, ?, ?, ?, ?, 0, ?)", [run_id, row, i + 1, kind, tier, tokens, cost])
        for row in sorted({a[0] for a in attempts}):
            cost = sum(a[4] for a in attempts if a[0] == row)
            shadow = sum(a[4] for a in attempts if a[0] == row and a[1] == "shadow") or None
            con.execute("INSERT INTO results (run_id, dataset, row_id, status, cost_usd, shadow_cost_usd) "
                        "VALUES (?, 'd', ?, 'ok', ?, ?)", [run_id, row, cost, shadow])
        con.execute("INSERT INTO runs (run_id, dataset, cost_usd, billing) VALUES (?, 'd', ?, ?)",
                    [run_id, sum(a[4] for a in attempts), json.dumps(billing)])


def _costs(warehouse, sql):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute(sql).fetchall())


def test_tiers_on_one_engine_share_its_start(tmp_path):
    groups = engine_groups(_catalogue(tmp_path))
    assert groups["small"] == groups["mid"] != groups["big"] and "premium" not in groups


def test_one_start_is_shared_by_tokens_and_adds_up(tmp_path):
    catalogue, warehouse = _catalogue(tmp_path), tmp_path / "wh.duckdb"
    a, b, c = tmp_path / "runs" / "A", tmp_path / "runs" / "B", tmp_path / "runs" / "C"
    # run A started the engine (10 s) on small; B reused it on small and mid (with a shadow answer on mid)
    run_a = _shard(a, "small", [("a1", 30), ("a2", 10)], start_s=10.0, gen_s=2.0)
    run_b = (_shard(b, "small", [("b1", 60)], start_s=0.0, gen_s=4.0)
             + _shard(b, "mid", [("b2", 10)], start_s=0.0, gen_s=1.0)
             + _shard(b, "mid", [("b1", 10)], start_s=0.0, gen_s=0.5, kind="shadow"))
    _land(warehouse, "A", run_a, a)
    _land(warehouse, "B", run_b, b)
    # C failed after starting an engine (5 s) that nobody billed: its start is pooled too
    _shard(c, "small", [("c1", 5)], start_s=5.0, gen_s=1.0)
    before = _costs(warehouse, "select run_id, cost_usd from runs")

    shares = apportion_engine_starts(warehouse, catalogue, {"A": a, "B": b}, {"C": c})

    pooled = 15.0 * P
    share = {r: s["mid+small"]["share_usd"] for r, s in shares.items()}
    assert share["A"] == pytest.approx(pooled * 40 / 120) and share["B"] == pytest.approx(pooled * 80 / 120)
    after = _costs(warehouse, "select run_id, cost_usd from runs")
    # each run: its own generation time plus its share; the shares add up to every start of the pass
    assert after["A"] == pytest.approx(2.0 * P + share["A"])
    assert after["B"] == pytest.approx(5.5 * P + share["B"])
    assert sum(after.values()) == pytest.approx(sum(before.values()) + 5.0 * P)
    rows = _costs(warehouse, "select row_id, cost_usd from results")
    assert rows["a1"] == pytest.approx(2.0 * P * 30 / 40 + share["A"] * 30 / 40)
    assert rows["b1"] == pytest.approx(4.0 * P + 0.5 * P + share["B"] * 70 / 80)  # first + shadow attempts
    assert sum(rows.values()) == pytest.approx(sum(after.values()))
    attempts = _costs(warehouse, "select run_id, sum(cost_usd) from attempts group by 1")
    assert attempts == pytest.approx(after)
    shadow = _costs(warehouse, "select row_id, shadow_cost_usd from results where shadow_cost_usd is not null")
    assert shadow["b1"] == pytest.approx(0.5 * P + share["B"] * 10 / 80)
    billing = json.loads(_costs(warehouse, "select run_id, billing from runs")["A"])
    assert billing["small"]["engine_start_s"] == pytest.approx(share["A"] / P)
    assert billing["small"]["cost_usd"] == pytest.approx(after["A"])
    starts = [json.loads(b)[k].get("engine_start_s", 0) for b in _costs(warehouse, "select run_id, billing from runs")
              .values() for k in ("small", "mid", "mid/shadow") if k in json.loads(b)]
    assert sum(starts) == pytest.approx(15.0)  # the utilisation view's engine start adds up to the pass's
    assert billing["engine_pass"]["mid+small"]["pass_start_s"] == 15.0

    # never twice: a second call changes nothing
    assert apportion_engine_starts(warehouse, catalogue, {"A": a, "B": b}, {"C": c}) == {}
    assert _costs(warehouse, "select run_id, cost_usd from runs") == pytest.approx(after)


def test_a_pass_without_a_start_changes_nothing(tmp_path):
    catalogue, warehouse = _catalogue(tmp_path), tmp_path / "wh.duckdb"
    a = tmp_path / "runs" / "A"
    _land(warehouse, "A", _shard(a, "small", [("a1", 30)], start_s=0.0, gen_s=2.0), a)
    assert apportion_engine_starts(warehouse, catalogue, {"A": a}) == {}
    assert _costs(warehouse, "select run_id, cost_usd from runs")["A"] == pytest.approx(2.0 * P)

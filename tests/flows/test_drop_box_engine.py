"""One warm engine per drop-box pass: two datasets in one pass of the local drop box are answered on one vLLM
engine (the tiny Llama), started once, and its start is apportioned across the two runs by their tokens on the
self-hosted tier (sluice/stages/land/engine_share.py). API tiers on a loopback server."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.drop_box import process_drop_box
from models.backends.vllm_offline import shutdown_engine
from sluice.dropbox import open_drop_box

pytestmark = pytest.mark.engine

P = 0.36 / 3600  # the test catalogue's worker, $/s

EASY = ["What is the capital of France?", "Label this support ticket as billing, technical or other: 'charged twice'",
        "Name a primary colour.", "What is 2 + 2?", "Translate 'cat' into French.", "Is water wet? Answer yes or no.",
        "Spell the word 'banana' backwards.", "How many legs does a spider have?"]


def test_two_datasets_in_one_pass_share_one_engine_start(tmp_path, openai_server, test_catalogue, tiny_model_dir,
                                                          write_parquet, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-test-drop")
    shutdown_engine(force=True)  # the pass starts cold: an engine another test left warm would be its start
    catalogue = test_catalogue(tiny_model_dir, openai_server.base_url)
    box = open_drop_box(tmp_path / "drop")
    src = tmp_path / "src"
    src.mkdir()
    for name, prompts in (("first.parquet", EASY[:4]), ("second.parquet", EASY[4:])):
        box.submit(write_parquet(src / name, {"prompt": prompts, "max_tokens": pa.array([8] * len(prompts),
                                                                                         pa.int32())}))
    warehouse, data = tmp_path / "wh.duckdb", tmp_path / "data"

    out = process_drop_box(drop=str(box.url), warehouse=str(warehouse), catalogue=str(catalogue),
                           data_dir=str(data))

    assert len(out["done"]) == 2 and out["failed"] == []
    runs = [o["run_id"] for o in out["done"]]
    bills = {r: [json.loads(p.read_text()) for p in (data / "runs" / r / "answers").rglob("tier=small/*.billing.json")]
             for r in runs}
    assert all(bills[r] for r in runs)  # both datasets had rows on the self-hosted tier
    starts = [b["engine_start_s"] for r in runs for b in bills[r] if b.get("engine_start_s", 0) > 0]
    assert len(starts) == 1  # one engine start for the whole pass: the second dataset reused the warm engine
    start_usd = starts[0] * P

    shares = {r: out["engine_shares"][r]["small"] for r in runs}
    assert sum(s["share_usd"] for s in shares.values()) == pytest.approx(start_usd)  # the shares add up
    assert all(s["pass_start_s"] == pytest.approx(starts[0]) for s in shares.values())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tokens = dict(con.execute("select run_id, sum(input_tokens + output_tokens) from attempts where tier = "
                                  "'small' group by 1").fetchall())
        small = dict(con.execute("select run_id, sum(cost_usd) from attempts where tier = 'small' group by 1")
                     .fetchall())
        run_cost = dict(con.execute("select run_id, cost_usd from runs").fetchall())
        row_cost = dict(con.execute("select run_id, sum(cost_usd) from results group by 1").fetchall())
    for r in runs:
        # each run's share is by its tokens on the tier, and its self-hosted rows cost its generation + its share
        assert shares[r]["share_usd"] == pytest.approx(start_usd * tokens[r] / sum(tokens.values()))
        generation = sum(b["generate_s"] for b in bills[r]) * P
        assert small[r] == pytest.approx(generation + shares[r]["share_usd"])
        assert row_cost[r] == pytest.approx(run_cost[r])  # the run's rows still add up to the run
        handed_back = pq.read_table(box.root / next(o["results_key"] for o in out["done"] if o["run_id"] == r))
        assert sum(handed_back["cost_usd"].to_pylist()) == pytest.approx(run_cost[r])  # the file handed back too
    assert sum(small.values()) == pytest.approx(start_usd + sum(b["generate_s"] for r in runs for b in bills[r]) * P)

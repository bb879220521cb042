"""`sluice plan`: learned assumptions, the forecast's arithmetic, and forecast against actual."""

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.catalogue import Catalogue
from sluice.config import RouterSettings
from sluice.reports.assumptions import (
    DEFAULT_ENGINE_START_S,
    DEFAULT_FILL_RATIO,
    DEFAULT_OUTPUT_TOKENS_PER_S,
    TierAssumptions,
    _approx_counter,
    learn_assumptions,
)
from sluice.reports.forecast import (
    compare_forecast,
    forecast_dataset,
    forecast_routed,
    store_forecast,
)
from sluice.warehouse.db import connect
from tests.support.sample_warehouse import build_sample_warehouse

CATALOGUE = Catalogue.model_validate({
    "baseline": "premium",
    "workers": {"w": {"usd_per_hour": 3.6}},  # $0.001 per second
    "tiers": [
        {"name": "small", "backend": "vllm", "model": "m", "worker": "w"},
        {"name": "mid", "backend": "vllm", "model": "m", "worker": "w"},
        {"name": "premium", "backend": "openai", "model": "p", "base_url": "http://x/v1",
         "input_usd_per_1m": 2.5, "output_usd_per_1m": 10.0},
    ],
})


@pytest.fixture()
def warehouse(tmp_path):
    return build_sample_warehouse(tmp_path / "wh.duckdb")


def test_assumptions_are_learned_from_earlier_runs(warehouse):
    with connect(warehouse, read_only=True) as con:
        a = learn_assumptions(con, CATALOGUE, default_max_tokens=256)
    # small ok rows: output 40+60+80+20 over max_tokens 256 (default) + 100 + 256 + 256
    assert a["small"].fill_ratio == pytest.approx(200 / 868) and a["small"].fill_ratio_source == "learned"
    assert a["premium"].fill_ratio == pytest.approx(150 / 512)
    # 200 output tokens over 110 s of generation; engine start: the mean of the starts that happened (40 s)
    assert a["small"].output_tokens_per_s == pytest.approx(200 / 110)
    assert a["small"].engine_start_s == 40.0 and a["small"].throughput_source == "learned"
    # no history for mid: the fill ratio of every tier, default throughput, the engine start of the other tiers
    assert (a["mid"].fill_ratio, a["mid"].fill_ratio_source) == (pytest.approx(350 / 1380), "learned (all tiers)")
    assert (a["mid"].output_tokens_per_s, a["mid"].engine_start_s) == (DEFAULT_OUTPUT_TOKENS_PER_S, 40.0)


def test_fill_ratio_per_max_tokens_value_when_there_are_enough_rows(warehouse, monkeypatch):
    monkeypatch.setattr("sluice.reports.assumptions.MIN_BUCKET_ROWS", 2)
    with connect(warehouse, read_only=True) as con:
        a = learn_assumptions(con, CATALOGUE, default_max_tokens=256)
    # small at 256 (default): r1, s1, s2 wrote 40 + 80 + 20 of 3 x 256; at 100 only one row: the tier's ratio
    assert a["small"].fill_for(256) == pytest.approx(140 / 768)
    assert a["small"].fill_for(100) == pytest.approx(200 / 868)
    # mid has no rows: every tier's rows at 256 (small's three and premium's two)
    assert a["mid"].fill_for(256) == pytest.approx(290 / 1280)
    assert a["mid"].fill_for(100) == pytest.approx(350 / 1380)


def test_without_a_warehouse_the_defaults_apply():
    a = learn_assumptions(None, CATALOGUE, 256)
    assert a["small"].fill_for(48) == DEFAULT_FILL_RATIO and a["small"].fill_ratio_source == "default"
    assert a["small"].engine_start_s == DEFAULT_ENGINE_START_S
    assert a["premium"].output_tokens_per_s is None and a["premium"].fill_ratio == DEFAULT_FILL_RATIO


def routed_frame():
    # prompts of 40 and 80 characters: 10 and 20 tokens by chars/4, +4 per message
    return pl.DataFrame({
        "row_id": ["a", "b", "c", "d", "e", "f"],
        "prompt": ["x" * 40, "y" * 80, "x" * 40, "z" * 40, None, "w" * 80],
        "system": [None] * 6,
        "max_tokens": [100, None, 100, 100, None, 50],
        "status": ["pending", "pending", "duplicate", "pending", "quarantined", "pending"],
        "dup_of": [None, None, "a", None, None, None],
        "tier": ["small", "small", None, "mid", None, "premium"],
    }, schema_overrides={"max_tokens": pl.Int32})


def test_forecast_arithmetic():
    a = {t: TierAssumptions(fill_ratio=0.5, fill_ratio_source="t", output_tokens_per_s=10.0, engine_start_s=30.0)
         for t in ("small", "mid")}
    a["premium"] = TierAssumptions(fill_ratio=0.4, fill_ratio_source="t")
    counters = {t: _approx_counter for t in CATALOGUE.names}
    f = forecast_routed(routed_frame(), CATALOGUE, a, counters, default_max_tokens=200)
    small, mid, prem = f["tiers"]["small"], f["tiers"]["mid"], f["tiers"]["premium"]
    # small: a (14 in, 50 out) + b (24 in, 100 out): 150 tokens at 10/s + a 30 s start = 45 s at $0.001/s
    assert (small["rows"], small["input_tokens"], small["output_tokens"]) == (2, 38, 150)
    assert small["cost_usd"] == pytest.approx(0.045)
    # mid runs the same engine settings right after small: no second start; 50 tokens = 5 s
    assert (mid["engine_start_s"], mid["cost_usd"]) == (0.0, pytest.approx(0.005))
    # premium: 24 in, 20 out at list price
    assert prem["cost_usd"] == pytest.approx((24 * 2.5 + 20 * 10.0) / 1e6)
    base = {"a": 14 * 2.5 + 50 * 10, "b": 24 * 2.5 + 100 * 10, "d": 14 * 2.5 + 50 * 10, "f": 24 * 2.5 + 20 * 10}
    assert f["dedup_saving_usd"] == pytest.approx(base["a"] / 1e6)  # c duplicates a
    assert f["baseline_cost_usd"] == pytest.approx((sum(base.values()) + base["a"]) / 1e6)
    assert f["cost_usd"] == pytest.approx(0.045 + 0.005 + prem["cost_usd"])
    assert f["routing_saving_usd"] == pytest.approx(sum(base.values()) / 1e6 - f["cost_usd"])
    assert (f["rows"], f["duplicates"], f["quarantined"], f["cache_hits"]) == (6, 1, 1, 0)


def test_near_duplicates_and_cache_hits_marked_by_dedup():
    df = routed_frame().with_columns(
        dup_kind=pl.Series([None, None, "near", None, None, None]),
    )
    # row d becomes a cache hit of an earlier run whose row cost 0.002 on the baseline tier
    df = df.with_columns(
        status=pl.when(pl.col("row_id") == "d").then(pl.lit("duplicate")).otherwise(pl.col("status")),
        dup_kind=pl.when(pl.col("row_id") == "d").then(pl.lit("cache")).otherwise(pl.col("dup_kind")),
        dup_of=pl.when(pl.col("row_id") == "d").then(pl.lit("old/7")).otherwise(pl.col("dup_of")),
        tier=pl.when(pl.col("row_id") == "d").then(None).otherwise(pl.col("tier")),
        cache_baseline_cost_usd=pl.when(pl.col("row_id") == "d").then(0.002).otherwise(None),
    )
    a = {t: TierAssumptions(fill_ratio=0.5, fill_ratio_source="t", output_tokens_per_s=10.0, engine_start_s=30.0)
         for t in CATALOGUE.names}
    f = forecast_routed(df, CATALOGUE, a, {t: _approx_counter for t in CATALOGUE.names}, 200)
    assert (f["duplicates"], f["cache_hits"]) == (1, 1) and "mid" not in f["tiers"]
    assert f["cache_saving_usd"] == pytest.approx(0.002)
    assert f["dedup_saving_usd"] == pytest.approx((14 * 2.5 + 50 * 10) / 1e6)  # c, near duplicate of a
    assert f["baseline_cost_usd"] == pytest.approx(f["dedup_saving_usd"] + 0.002 + f["routing_saving_usd"]
                                                   + f["cost_usd"])


def test_rows_in_the_cache_are_forecast_as_free(tmp_path):
    from sluice.contracts.columns import with_shape_columns
    from sluice.stages.dedup.deduplicate import request_key

    df = routed_frame()
    key = with_shape_columns(df).select(request_key(200).cast(pl.String)).to_series()[3]  # row d
    a = {t: TierAssumptions(fill_ratio=0.5, fill_ratio_source="t", output_tokens_per_s=10.0, engine_start_s=30.0)
         for t in CATALOGUE.names}
    f = forecast_routed(df, CATALOGUE, a, {t: _approx_counter for t in CATALOGUE.names}, 200, {key})
    assert f["cache_hits"] == 1 and "mid" not in f["tiers"]
    assert f["cache_saving_usd"] == pytest.approx((14 * 2.5 + 50 * 10) / 1e6)


def test_forecast_dataset_end_to_end_and_stored(tmp_path, warehouse):
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": ["What is 2+2?", "what is 2+2?", "Prove that the square root of 2 is "
                                        "irrational, step by step, in detail.", ""]}), path)
    with connect(warehouse) as con:
        f = forecast_dataset(path, CATALOGUE, tmp_path, 256, RouterSettings(), con)
        fid = store_forecast(con, f, "batch", str(path), run_id="planned-1")
        stored = con.execute("SELECT forecast_id, run_id, rows, duplicates, quarantined, cost_usd FROM forecasts "
                             "WHERE run_id = 'planned-1'").fetchone()
    assert (f["rows"], f["duplicates"], f["quarantined"]) == (4, 1, 1)
    assert f["assumptions"]["small"]["tokenizer"] == "chars/4"
    assert stored == (fid, "planned-1", 4, 1, 1, pytest.approx(f["cost_usd"]))
    assert f["cost_usd"] > 0 and f["baseline_cost_usd"] > 0


def test_forecast_against_actual(warehouse):
    # r1 actually cost 0.0115 (small 0.0025, premium 0.009); the forecast said 0.0125 -> +8.7 %
    forecast = {"rows": 8, "duplicates": 1, "quarantined": 1, "cache_hits": 1, "input_tokens": 700,
                "output_tokens": 300, "cost_usd": 0.0125, "baseline_cost_usd": 0.024, "dedup_saving_usd": 0.004,
                "cache_saving_usd": 0.003, "routing_saving_usd": 0.0045,
                "tiers": {"small": {"rows": 3, "cost_usd": 0.003}, "premium": {"rows": 2, "cost_usd": 0.0095}},
                "assumptions": {}}
    with connect(warehouse) as con:
        con.execute("UPDATE runs SET started_at = now() + INTERVAL 1 HOUR WHERE run_id = 'r1'")
        store_forecast(con, forecast, "ds", "ds.parquet")  # no run id: matched by dataset, made before the run
        cmp = compare_forecast(con, "r1")
        by = {r["metric"]: r for r in cmp["rows"]}
        assert cmp["cost_error_pct"] == pytest.approx(100 * (0.0125 - 0.0115) / 0.0115)
        assert cmp["cost_within_15pct"] is True
        assert by["rows on small"]["forecast"] == 3 and by["rows on small"]["actual"] == 3
        assert by["cost on premium (USD)"]["error_pct"] == pytest.approx(100 * (0.0095 - 0.009) / 0.009)
        assert by["input tokens"]["actual"] == 750 and by["duplicates"]["actual"] == 1
        assert by["routing saving (USD)"]["actual"] == pytest.approx(0.008)
        # a forecast made for the run id wins over one matched by dataset
        store_forecast(con, {**forecast, "cost_usd": 0.02}, "ds", "ds.parquet", run_id="r1")
        cmp = compare_forecast(con, "r1")
        assert cmp["cost_error_pct"] == pytest.approx(100 * (0.02 - 0.0115) / 0.0115)
        assert cmp["cost_within_15pct"] is False
        assert compare_forecast(con, "r2") is None  # r2 started before any forecast of its dataset was made


def test_sluice_plan_command_stores_the_forecast(tmp_path, warehouse):
    from typer.testing import CliRunner

    from sluice.cli import app

    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": ["What is 2+2?", "what is 2+2?", "Summarise the plot of Hamlet."]}), path)
    res = CliRunner().invoke(app, ["plan", str(path), "--warehouse", str(warehouse), "--data-dir", str(tmp_path),
                                   "--run-id", "next-run"])
    assert res.exit_code == 0, res.output
    assert "expected saving" in res.output
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT dataset, rows, duplicates FROM forecasts WHERE run_id = 'next-run'").fetchall() == [
        ("batch", 3, 1)]
    con.close()
    bad = CliRunner().invoke(app, ["plan", str(tmp_path / "missing.parquet"), "--warehouse", str(warehouse)])
    assert bad.exit_code == 2


def test_replay_tiers_are_planned_with_their_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sluice.reports.assumptions import token_counter

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["what is two plus two"] * 20, trainers.BpeTrainer(vocab_size=100, special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    pq.write_table(pa.table({"prompt": ["what is two plus two"], "response": ["four"]}), tmp_path / "answers.parquet")
    cat = Catalogue.model_validate({"baseline": "r", "tiers": [
        {"name": "r", "backend": "replay", "model": "gpt-4", "answers": str(tmp_path / "answers.parquet"),
         "tokenizer": str(tmp_path / "tok"), "input_usd_per_1m": 1, "output_usd_per_1m": 2},
        {"name": "bare", "backend": "replay", "model": "gpt-4", "answers": str(tmp_path / "answers.parquet"),
         "input_usd_per_1m": 1, "output_usd_per_1m": 2}]})
    count, how = token_counter(cat.tier("r"), tmp_path)
    assert how == f"{tmp_path / 'tok'} tokenizer"
    hf = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    assert count([None], ["what is two plus two"]) == [len(hf.encode("what is two plus two")) + 4]
    assert token_counter(cat.tier("bare"), tmp_path)[1] == "chars/4"  # nothing to count with: the estimate


def test_sluice_plan_routes_with_the_promoted_router_as_the_next_run_will(tmp_path):
    """A promoted version that sends the everyday prompts to premium (trained when the cheap tier got only the
    demanding ones right): the plan's premium rows are the everyday ones, as the run's would be, and it says so."""
    from datetime import datetime, timezone

    from typer.testing import CliRunner

    from sluice.cli import app
    from sluice.stages.route.learned import train_router
    from sluice.warehouse.routers import register
    from tests.support.routing_prompts import EASY, HARD

    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": EASY + HARD[:4]}), path)  # 12 everyday prompts, 4 demanding ones
    catalogue = tmp_path / "tiers.toml"
    catalogue.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f"input_usd_per_1m = {p}\noutput_usd_per_1m = {p}\n" for n, p in (("cheap", 0.5), ("premium", 10))))
    wh = tmp_path / "wh.duckdb"
    args = ["plan", str(path), "--warehouse", str(wh), "--catalogue", str(catalogue), "--data-dir", str(tmp_path)]

    def premium_rows() -> tuple[int, str]:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        with duckdb.connect(str(wh), read_only=True) as con:
            tiers = con.execute("SELECT tiers FROM forecasts ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        import json

        return json.loads(tiers)["premium"]["rows"], res.output

    with connect(wh):  # an empty warehouse: no version yet, the heuristic gatekeeper routes
        pass
    before, out = premium_rows()
    assert "routes with: heuristic gatekeeper" in out
    labels = pl.DataFrame({"prompt": EASY + HARD, "cheap_ok": [False] * len(EASY) + [True] * len(HARD)})
    router = train_router(labels, use_embeddings=False, l2_text=1.0)
    register(wh, router.save(tmp_path / "v1"), labels=labels.height, target=router.target, cv_auroc=1.0,
             previous_auroc=None, promote=True, reason="test", labels_through=datetime.now(timezone.utc))
    after, out = premium_rows()
    assert "routes with: version 1 (promoted)" in " ".join(out.split())
    assert (before, after) == (4, len(EASY))

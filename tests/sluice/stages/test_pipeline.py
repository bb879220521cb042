"""The table stages share one shape, `run(table, settings, ctx) -> table`: the flow's generic task and the forecast
run the same functions, so a stage is decided in one place."""

import pyarrow as pa
import pyarrow.parquet as pq

from models.catalogue import load_catalogue
from sluice.config import Settings
from sluice.contracts.columns import DUP_COLUMNS, ROW_SCHEMA
from sluice.reports.forecast import dedup_and_route
from sluice.stages.context import StageContext
from sluice.stages.dedup import DedupConfig, deduplicate, default_stages
from sluice.stages.ingest import read_prompts
from sluice.stages.pipeline import HANDOFFS, TABLE_STAGES
from sluice.stages.route import route_batch

SAMPLE = "data/samples/prompts.parquet"


def test_the_table_stages_in_a_rows_order_with_their_hand_offs():
    assert list(TABLE_STAGES) == ["ingest", "dedup", "route"]
    assert HANDOFFS == {"ingest": "ingested.parquet", "dedup": "deduped.parquet", "route": "routed.parquet"}
    for stage in TABLE_STAGES.values():
        assert callable(stage.run) and callable(stage.describe)


def test_run_equals_the_stage_functions_it_wraps(tmp_path):
    cat = load_catalogue()
    settings = Settings(data_dir=tmp_path, default_max_tokens=64)
    ctx = StageContext(catalogue=cat, source=SAMPLE)
    ingested = TABLE_STAGES["ingest"].run(None, settings, ctx)
    assert ingested.schema == ROW_SCHEMA
    assert ingested.equals(read_prompts(SAMPLE, default_max_tokens=64))
    deduped = TABLE_STAGES["dedup"].run(ingested, settings, ctx)
    assert set(DUP_COLUMNS) <= set(deduped.column_names)
    direct = deduplicate(ingested, DedupConfig(stages=default_stages(cache=False), default_max_tokens=64))
    assert deduped["dup_of"].to_pylist() == direct["dup_of"].to_pylist()
    routed = TABLE_STAGES["route"].run(deduped, settings, ctx)
    assert routed["tier"].to_pylist() == route_batch(deduped, cat.names, settings.router, cat, 64)["tier"].to_pylist()
    lines = TABLE_STAGES["dedup"].describe(deduped)
    n_dups = sum(1 for s in deduped["status"].to_pylist() if s == "duplicate")
    assert lines[0].startswith(f"dedup: {n_dups} duplicates")


def test_the_forecast_runs_the_same_dedup_and_route():
    cat = load_catalogue()
    rows = read_prompts(SAMPLE)
    settings = Settings()
    ctx = StageContext(catalogue=cat)
    expected = TABLE_STAGES["route"].run(TABLE_STAGES["dedup"].run(rows, settings, ctx), settings, ctx)
    got = dedup_and_route(rows, cat, settings.router, settings.default_max_tokens)
    assert got["tier"].to_list() == expected["tier"].to_pylist()
    assert got["dup_of"].to_list() == expected["dup_of"].to_pylist()


def test_the_cache_stage_joins_only_with_a_warehouse():
    assert "cache" in default_stages(cache=True) and "cache" not in default_stages(cache=False)
    assert default_stages(cache=False)[:2] == ("exact", "near")


def test_the_route_stage_describes_rows_per_tier_and_deferred(tmp_path):
    cat = load_catalogue()
    rows = read_prompts(SAMPLE)
    pq.write_table(rows, tmp_path / "in.parquet")
    settings = Settings(router={"budget_usd": 0.0})
    routed = TABLE_STAGES["route"].run(rows, settings, StageContext(catalogue=cat))
    lines = TABLE_STAGES["route"].describe(routed)
    over = sum(1 for s in routed["status"].to_pylist() if s == "deferred")
    assert over > 0 and lines[-1].startswith(f"route: {over} rows over budget")
    assert isinstance(routed, pa.Table)

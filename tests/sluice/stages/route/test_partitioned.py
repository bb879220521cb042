"""Routing a file as partitioned map/reduce (`route_partitioned`, what `sluice route --cluster dask` runs) writes
exactly what the single-process `route_file` writes, on every policy; here the maps run in this process
(`local_map`; tests/flows/test_cluster.py runs them on a two-worker Dask cluster)."""

import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from models.catalogue import load_catalogue
from sluice.config import RouterSettings
from sluice.stages.route.learned import train_router
from sluice.stages.route.partitioned import route_partitioned, row_partitions
from sluice.stages.route.stream import route_file

PROMPTS = ["What is the capital of France?", "Prove that the square root of 2 is irrational.",
           "Write a Python function that merges two sorted lists.", "Summarise this email: 'lunch at 12?'",
           "A shop sells 3 apples for $2. How much do 12 apples cost? Explain step by step.",
           "hi there", "Design a cache for 10 servers and discuss the trade-offs.",
           "Label this review as positive or negative: 'great phone'", "Tell me a short joke."]
ROWS, BATCH, GROUP = 700, 64, 100  # seven row groups, batches that do not line up with them


def prompts_file(path, rows=ROWS, with_status=True):
    rng = random.Random(11)
    cols = {"id": [f"r{i}" for i in range(rows)],
            "prompt": [rng.choice(PROMPTS) + ("" if i % 5 else f" ({i})") for i in range(rows)],
            "max_tokens": pa.array([rng.choice([None, 64, 512]) for _ in range(rows)], pa.int64())}
    if with_status:  # a whole row group with nothing pending, scattered non-pending rows, rows deferred before
        cols["status"] = ["duplicate" if GROUP <= i < 2 * GROUP or i % 7 == 0 else "pending" for i in range(rows)]
        cols["error"] = pa.array([None] * rows, pa.string())
        cols["deferred_from"] = [f"old/r{i}" if i % 50 == 3 else None for i in range(rows)]
    pq.write_table(pa.table(cols), path, row_group_size=GROUP)
    return path


@pytest.fixture(scope="module")
def router():
    labels = pl.DataFrame({"prompt": PROMPTS, "cheap_ok": [True, False, False, True, False, True, False, True, True]})
    return train_router(labels, use_embeddings=False)


CASES = {
    "heuristic thresholds": dict(),
    "share": dict(premium_share=0.2),
    "share and mid share": dict(premium_share=0.1, mid_share=0.3),
    "budget covering every row": dict(budget_usd=0.5),
    "budget below the cheapest tier": dict(budget_usd=0.00002),
    "budget cutting into the rows": dict(budget_usd=0.003),
}


@pytest.mark.parametrize("with_status", [False, True])
@pytest.mark.parametrize("use_router", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_partitioned_output_equals_the_single_process_output(tmp_path, router, case, use_router, with_status):
    src = prompts_file(tmp_path / "in.parquet", with_status=with_status)
    cat, settings = load_catalogue(), RouterSettings(**CASES[case])
    r = router if use_router else None
    single = route_file(src, tmp_path / "single.parquet", cat.names, settings, cat, 256, r, batch_rows=BATCH)
    parted = route_partitioned(src, tmp_path / "parted.parquet", cat.names, settings, cat, 256, r,
                               batch_rows=BATCH, partition_rows=250)  # three: 4, 4 and 3 batches
    assert parted == single
    assert_frame_equal(pl.read_parquet(tmp_path / "parted.parquet"), pl.read_parquet(tmp_path / "single.parquet"))
    assert not (tmp_path / "parted.parquet.parts").exists()  # parts and spills removed
    if case == "budget cutting into the rows":  # one plan over all rows: every partition has rows it defers
        got = pl.read_parquet(tmp_path / "parted.parquet").with_row_index()
        deferred = got.filter(pl.col("tier").is_null() & pl.col("route_reason").is_not_null())["index"]
        assert all(((deferred >= lo) & (deferred < hi)).any() for lo, hi in [(0, 256), (256, 512), (512, ROWS)])
        assert got["tier"].is_not_null().sum() > 0


def test_partitions_are_whole_batches_of_the_single_process_grid(tmp_path):
    src = prompts_file(tmp_path / "in.parquet")
    assert row_partitions(src, BATCH, 250) == [(0, 256), (256, 512), (512, 700)]
    assert row_partitions(src, BATCH, 1) == [(lo, min(lo + BATCH, ROWS)) for lo in range(0, ROWS, BATCH)]
    assert row_partitions(src, BATCH, 10_000) == [(0, ROWS)]


def test_a_failing_partition_leaves_no_output(tmp_path):
    src = prompts_file(tmp_path / "in.parquet")
    cat = load_catalogue()

    def mapper(fn, items):
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        route_partitioned(src, tmp_path / "out.parquet", cat.names, RouterSettings(), cat, mapper=mapper)
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.parquet.parts").exists()

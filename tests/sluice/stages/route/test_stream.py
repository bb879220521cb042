"""Routing a file in record batches (`route_file`, what `sluice route` runs) writes exactly what routing the whole
table in memory (`route_batch`) gives: same rows, tiers, scores and reasons, on every policy."""

import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from models.catalogue import load_catalogue
from sluice.cli import app
from sluice.config import RouterSettings
from sluice.stages.route.assign import route_batch
from sluice.stages.route.learned import train_router
from sluice.stages.route.stream import route_file

PROMPTS = ["What is the capital of France?", "Prove that the square root of 2 is irrational.",
           "Write a Python function that merges two sorted lists.", "Summarise this email: 'lunch at 12?'",
           "A shop sells 3 apples for $2. How much do 12 apples cost? Explain step by step.",
           "hi there", "Design a cache for 10 servers and discuss the trade-offs.",
           "Label this review as positive or negative: 'great phone'", "Tell me a short joke."]
ROWS, BATCH = 500, 64  # eight batches, the last one short


def _fixture(tmp_path, with_status: bool):
    rng = random.Random(7)
    prompts = [rng.choice(PROMPTS) + ("" if i < len(PROMPTS) else f" ({i})") for i in range(ROWS)]
    cols = {"id": [f"r{i}" for i in range(ROWS)], "prompt": prompts,
            "max_tokens": pa.array([rng.choice([None, 64, 512]) for _ in range(ROWS)], pa.int64())}
    if with_status:  # a whole batch with nothing pending, and scattered non-pending rows
        cols["status"] = ["duplicate" if BATCH <= i < 2 * BATCH or i % 7 == 0 else "pending" for i in range(ROWS)]
        cols["error"] = pa.array([None] * ROWS, pa.string())
        cols["deferred_from"] = [f"old/r{i}" if i % 50 == 3 else None for i in range(ROWS)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=100)  # row groups that do not line up with batches
    return path


@pytest.fixture(scope="module")
def router():
    labels = pl.DataFrame({"prompt": PROMPTS, "cheap_ok": [True, False, False, True, False, True, False, True, True]})
    return train_router(labels, use_embeddings=False)


def _both(tmp_path, src, settings, router=None):
    cat = load_catalogue()
    expected = pl.from_arrow(route_batch(pq.read_table(src), cat.names, settings, cat, 256, router))
    counts, unrouted = route_file(src, tmp_path / "out.parquet", cat.names, settings, cat, 256, router,
                                  batch_rows=BATCH)
    got = pl.read_parquet(tmp_path / "out.parquet")
    assert sum(counts.values()) == ROWS and counts == dict(expected.group_by("tier").len().iter_rows())
    return expected, got, unrouted


CASES = {
    "heuristic thresholds": dict(),
    "share": dict(premium_share=0.2),
    "share and mid share": dict(premium_share=0.1, mid_share=0.3),
    "budget covering every row": dict(budget_usd=0.5),
    "budget below the cheapest tier": dict(budget_usd=0.00002),
}


@pytest.mark.parametrize("with_status", [False, True])
@pytest.mark.parametrize("use_router", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_output_equals_the_in_memory_output(tmp_path, router, case, use_router, with_status):
    src = _fixture(tmp_path, with_status)
    expected, got, unrouted = _both(tmp_path, src, RouterSettings(**CASES[case]), router if use_router else None)
    assert_frame_equal(got, expected)
    not_pending = (pl.read_parquet(src)["status"] != "pending").sum() if with_status else 0
    assert got["route_reason"].null_count() == not_pending  # only rows still pending are routed
    if case == "budget below the cheapest tier":
        assert unrouted is not None and "cannot cover the cheapest tier" in unrouted
        assert got["tier"].is_null().sum() > ROWS // 4  # the plan really deferred rows, across batches


def test_share_is_calibrated_on_the_whole_file_not_per_batch(tmp_path, router):
    src = _fixture(tmp_path, with_status=False)
    _, got, _ = _both(tmp_path, src, RouterSettings(premium_share=0.2), router)
    assert (got["tier"] == "premium").sum() == round(0.2 * ROWS)
    assert got["route_reason"].str.extract(r"threshold ([0-9.]+)").n_unique() == 1


def test_cli_route_streams_and_reports_per_tier(tmp_path):
    src = _fixture(tmp_path, with_status=False)
    out = tmp_path / "routed.parquet"
    result = CliRunner().invoke(app, ["route", str(src), "-o", str(out), "--premium-share", "0.1"])
    assert result.exit_code == 0, result.output
    routed = pl.read_parquet(out)
    assert routed.height == ROWS and (routed["tier"] == "premium").sum() == 50
    assert "premium=50" in result.output
    assert not list(tmp_path.glob("*.partial"))  # the spill and the temporary output are gone

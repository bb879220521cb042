"""The cluster path (issue 19): `sluice route` as partitioned map/reduce, and the dedup stage's near partitions,
each partition a Prefect task on a Dask cluster of two worker processes (one thread each) on loopback; the output
is the single-process path's, bit for bit. Prefect reports to the test session's temporary server; the cluster is
closed with the module."""

from __future__ import annotations

import polars as pl
import pytest
from distributed import Client, LocalCluster, get_task_stream
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from flows.cluster import dedup_on_cluster, route_on_cluster
from models.catalogue import load_catalogue
from sluice.cli import app
from sluice.config import ClusterSettings, RouterSettings, load_settings
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.dedup.minhash import NearConfig
from sluice.stages.route.learned import train_router
from sluice.stages.route.stream import route_file
from tests.sluice.stages.dedup.test_dedup_memory import fixture_rows
from tests.sluice.stages.route.test_partitioned import PROMPTS, prompts_file

ROWS, BATCH = 700, 64


@pytest.fixture(scope="module")
def dask_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield cluster, client


@pytest.fixture(scope="module")
def router():
    labels = pl.DataFrame({"prompt": PROMPTS, "cheap_ok": [True, False, False, True, False, True, False, True, True]})
    return train_router(labels, use_embeddings=False)


def test_cluster_route_equals_single_process_route_and_uses_both_workers(tmp_path, dask_cluster, router):
    """A premium share under a learned router: map 1 scores on the workers, the quantile is taken over every row
    on the driver, map 2 attaches the tiers on the workers."""
    cluster, client = dask_cluster
    src = prompts_file(tmp_path / "in.parquet", ROWS)
    cat, settings = load_catalogue(), RouterSettings(premium_share=0.2)
    single = route_file(src, tmp_path / "single.parquet", cat.names, settings, cat, 256, router, batch_rows=BATCH)
    where = ClusterSettings(engine="dask", address=cluster.scheduler_address, partition_rows=4 * BATCH)
    with get_task_stream(client) as stream:
        parted = route_on_cluster(where, src, tmp_path / "parted.parquet", cat.names, settings, cat, 256, router,
                                  batch_rows=BATCH)
    assert parted == single
    assert_frame_equal(pl.read_parquet(tmp_path / "parted.parquet"), pl.read_parquet(tmp_path / "single.parquet"))
    partitions = [t for t in stream.data if t["key"].startswith("run_partition")]  # the task's function
    assert len(partitions) == 2 * 3  # two maps over three partitions of 4, 4 and 3 batches
    assert len({t["worker"] for t in partitions}) == 2


def test_sluice_route_on_a_cluster_address_writes_what_the_local_command_writes(tmp_path, dask_cluster, router):
    """A dollar budget with a router saved to a folder, which each worker loads itself."""
    cluster, _ = dask_cluster
    src = prompts_file(tmp_path / "in.parquet", ROWS, with_status=False)
    router.save(tmp_path / "router")
    args = ["route", str(src), "--router", str(tmp_path / "router"), "--budget-usd", "0.003"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local.parquet")])
    remote = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "cluster.parquet"),
                                      "--cluster-address", cluster.scheduler_address])
    assert local.exit_code == 0 and remote.exit_code == 0, local.output + remote.output
    assert "rows not routed" in local.output  # the budget really cuts: the plan over every row matters
    # the same words (the console wraps the longer file name at another place)
    assert remote.output.replace("cluster.parquet", "local.parquet").split() == local.output.split()
    assert_frame_equal(pl.read_parquet(tmp_path / "cluster.parquet"), pl.read_parquet(tmp_path / "local.parquet"))


def test_dask_without_an_address_starts_a_temporary_local_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_CLUSTER", "dask")
    monkeypatch.setenv("SLUICE_CLUSTER_PARTITION_ROWS", "200")
    where = load_settings().cluster
    assert (where.engine, where.address, where.workers, where.partition_rows) == ("dask", None, 2, 200)
    src = prompts_file(tmp_path / "in.parquet", ROWS)
    cat = load_catalogue()
    single = route_file(src, tmp_path / "single.parquet", cat.names, RouterSettings(), cat, batch_rows=BATCH)
    parted = route_on_cluster(where, src, tmp_path / "parted.parquet", cat.names, RouterSettings(), cat,
                              batch_rows=BATCH)
    assert parted == single
    assert_frame_equal(pl.read_parquet(tmp_path / "parted.parquet"), pl.read_parquet(tmp_path / "single.parquet"))


def test_an_address_with_the_local_engine_is_refused():
    with pytest.raises(ValueError, match="set engine to 'dask'"):
        ClusterSettings(engine="local", address="tcp://127.0.0.1:8786")


def test_cluster_dedup_equals_single_process_dedup(tmp_path, dask_cluster):
    """Planted exact copies (case, spacing), near copies (filler words) and vetoed edits (changed numbers,
    reorderings, other system prompts): the near stage's partitions signed on the workers mark the same rows."""
    cluster, client = dask_cluster
    rows = fixture_rows()
    cfg = DedupConfig(stages=("exact", "near"), near=NearConfig(partition_rows=256, spill_dir=str(tmp_path)))
    local = deduplicate(rows, cfg)
    where = ClusterSettings(engine="dask", address=cluster.scheduler_address)
    with get_task_stream(client) as stream:
        remote = dedup_on_cluster(where, rows, cfg)
    assert remote.equals(local)
    kinds = pl.from_arrow(remote.select(["dup_kind"]))["dup_kind"].value_counts()
    found = dict(kinds.iter_rows())
    assert found.get("exact", 0) > 50 and found.get("near", 0) > 20  # both kinds really planted and found
    partitions = [t for t in stream.data if t["key"].startswith("run_partition")]
    assert len(partitions) == -(-rows.num_rows // 256) and len({t["worker"] for t in partitions}) == 2


def test_sluice_dedup_with_a_cluster_address_writes_what_the_local_command_writes(tmp_path, dask_cluster, monkeypatch):
    import pyarrow.parquet as pq

    cluster, _ = dask_cluster
    rows = fixture_rows()
    pq.write_table(rows.select(["prompt", "system", "max_tokens"]), tmp_path / "in.parquet")
    args = ["dedup", str(tmp_path / "in.parquet"), "--only", "exact,near"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local.parquet")])
    monkeypatch.setenv("SLUICE_CLUSTER_ADDRESS", cluster.scheduler_address)
    monkeypatch.setenv("SLUICE_CLUSTER", "dask")
    remote = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "cluster.parquet")])
    assert local.exit_code == 0 and remote.exit_code == 0, local.output + remote.output
    # the same words (the console wraps the longer file name at another place)
    assert remote.output.replace("cluster.parquet", "local.parquet").split() == local.output.split()
    assert_frame_equal(pl.read_parquet(tmp_path / "cluster.parquet"), pl.read_parquet(tmp_path / "local.parquet"))


def test_a_partition_task_carries_neither_the_job_nor_the_prompts(tmp_path):
    """Prefect sends the flow run with every task it submits (the flow's function pickled by value): at 1M rows
    the job's rows went along with each of 16 partitions, and the Dask scheduler was killed at 18 GB. The job is
    looked up by key, and a near partition travels as the path of its prompts."""
    import pickle

    import cloudpickle
    import numpy as np

    import flows.cluster as on_cluster
    from sluice.stages.dedup.near import NearPartition

    payload = b"x" * (8 << 20)
    on_cluster._JOBS["held"] = lambda mapper: len(payload)
    try:
        assert len(cloudpickle.dumps(on_cluster.map_reduce.fn)) < 100_000
    finally:
        del on_cluster._JOBS["held"]
    texts = pl.Series("prompt", [f"question {i} " + "word " * 200 for i in range(2000)])  # 2 MB of prompts
    part = NearPartition(1000, texts.slice(1000, 1000), np.arange(1000), tmp_path, NearConfig())
    sent = cloudpickle.dumps(part)
    assert len(sent) < 20_000
    back = pickle.loads(sent)
    assert back.texts.equals(part.texts) and back.lo == 1000 and (back.block == part.block).all()

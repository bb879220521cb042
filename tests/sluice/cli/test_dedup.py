"""`sluice dedup --cluster dask` / `--cluster-address`: the near stage's partitions on a Dask cluster (a temporary
local one, or a running one on loopback), the file written the one the local command writes; `--cluster local`
keeps it in process whatever SLUICE_CLUSTER says."""

from __future__ import annotations

import re

import polars as pl
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, get_task_stream
from polars.testing import assert_frame_equal
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from typer.testing import CliRunner

from sluice.cli import app
from tests.sluice.stages.dedup.test_dedup_memory import fixture_rows


def _partitioned_dedup_runs() -> int:
    """The `map-reduce` flow runs the near stage has started on a cluster so far (flows/cluster.py names them)."""
    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["dedup-partitioned"]))))


def _counts(output: str) -> str | None:
    """The counts the command prints (Prefect's logs of the cluster's flow run go to the same output)."""
    found = re.search(r"\.parquet: (\d+ rows, exact \d+, near \d+, semantic \d+, cache \d+)", " ".join(output.split()))
    return found and found.group(1)


def test_sluice_dedup_cluster_flags_write_what_the_local_command_writes(tmp_path, monkeypatch):
    pq.write_table(fixture_rows().select(["prompt", "system", "max_tokens"]), tmp_path / "in.parquet")
    args = ["dedup", str(tmp_path / "in.parquet"), "--only", "exact,near"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    expected = pl.read_parquet(tmp_path / "local.parquet")
    assert expected.filter(pl.col("dup_kind") == "near").height > 20  # near copies planted and found

    before = _partitioned_dedup_runs()
    temporary = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "temporary.parquet"), "--cluster", "dask"])
    assert temporary.exit_code == 0, temporary.output
    assert _counts(temporary.output) == _counts(local.output) == "1106 rows, exact 142, near 126, semantic 0, cache 0"
    assert_frame_equal(pl.read_parquet(tmp_path / "temporary.parquet"), expected)
    assert _partitioned_dedup_runs() == before + 1  # on a temporary local cluster, in one flow run

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            remote = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "remote.parquet"),
                                              "--cluster-address", cluster.scheduler_address])
        assert remote.exit_code == 0, remote.output
        assert _counts(remote.output) == _counts(local.output)
        assert [t for t in stream.data if t["key"].startswith("run_partition")]  # the near partition, on a worker
        assert_frame_equal(pl.read_parquet(tmp_path / "remote.parquet"), expected)

        # the flag beats the environment: local stays in this process
        monkeypatch.setenv("SLUICE_CLUSTER", "dask")
        monkeypatch.setenv("SLUICE_CLUSTER_ADDRESS", cluster.scheduler_address)
        with get_task_stream(client) as stream:
            kept = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "kept.parquet"), "--cluster", "local"])
        assert kept.exit_code == 0, kept.output
        assert not [t for t in stream.data if t["key"].startswith("run_partition")]
        assert_frame_equal(pl.read_parquet(tmp_path / "kept.parquet"), expected)

    bad = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "bad.parquet"), "--cluster", "ray"])
    assert bad.exit_code == 2 and "error" in bad.output and not (tmp_path / "bad.parquet").exists()

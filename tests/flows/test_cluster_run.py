"""`sluice run` on the cluster path (issue 19): with `cluster.engine = "dask"` the run's dedup stage signs its near
partitions on a Dask cluster of two worker processes on loopback and its route stage routes partitioned there;
its deduped and routed hand-offs, and what it lands, are the in-process run's. Replay tiers answer (no model, no
network); planted exact and near duplicates from the dedup tests' fixture."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, get_task_stream
from polars.testing import assert_frame_equal

from flows.batch_run import sluice_run
from tests.sluice.stages.dedup.test_dedup_memory import fixture_rows


def _replay_catalogue(tmp_path, rows: pa.Table):
    """Two replay tiers that recorded an answer for every request of `rows`."""
    asked = pl.from_arrow(rows.select(["prompt", "system"])).filter(pl.col("prompt").is_not_null()).unique(
        maintain_order=True)
    body = 'baseline = "premium"\n'
    for name, price in (("cheap", 0.5), ("premium", 10.0)):
        answers = asked.with_columns(response=pl.lit(f"{name}: ") + pl.col("prompt"), input_tokens=pl.lit(9),
                                     output_tokens=pl.lit(4))
        answers.write_parquet(tmp_path / f"{name}.parquet")
        body += (f'[[tiers]]\nname = "{name}"\nbackend = "replay"\nmodel = "{name}-recorded"\n'
                 f'answers = "{tmp_path / name}.parquet"\ninput_usd_per_1m = {price}\noutput_usd_per_1m = {price}\n')
    path = tmp_path / "tiers.toml"
    path.write_text(body)
    return path


def _run(tmp_path, name: str, data, catalogue, cluster: dict | None = None) -> tuple[dict, dict]:
    """One run in its own data folder and warehouse; its summary and its `runs.billing`."""
    wh = tmp_path / f"{name}.duckdb"
    summary = sluice_run(str(data), warehouse=str(wh), catalogue=str(catalogue), data_dir=str(tmp_path / name),
                         run_id=name, premium_share=0.3, cluster=cluster)
    with duckdb.connect(str(wh), read_only=True) as con:
        billing = json.loads(con.execute("SELECT billing FROM runs").fetchone()[0])
        landed = pl.from_arrow(con.execute("SELECT row_id, status, tier, dup_of, response, cost_usd FROM results "
                                           "ORDER BY row_id").arrow())
    return {**summary, "landed": landed}, billing


def test_a_run_with_the_dask_setting_hands_off_and_lands_what_the_local_run_does(tmp_path):
    rows = fixture_rows().slice(0, 600)  # shuffled: planted copies among them
    data = tmp_path / "batch.parquet"
    pq.write_table(rows.select(["prompt", "system", "max_tokens", "temperature"]), data)
    catalogue = _replay_catalogue(tmp_path, rows)

    local, local_billing = _run(tmp_path, "local", data, catalogue)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # the flow's `cluster` parameter (what `sluice run --cluster-address` passes; SLUICE_CLUSTER* is the
        # settings' path, tests/flows/test_cluster.py)
        with get_task_stream(client) as stream:
            remote, remote_billing = _run(tmp_path, "dask", data, catalogue,
                                          cluster={"engine": "dask", "address": cluster.scheduler_address})

    for handoff in ("deduped.parquet", "routed.parquet"):
        assert_frame_equal(pl.read_parquet(tmp_path / "dask" / "runs" / "dask" / handoff),
                           pl.read_parquet(tmp_path / "local" / "runs" / "local" / handoff))
    deduped = pl.read_parquet(tmp_path / "local" / "runs" / "local" / "deduped.parquet")
    found = dict(deduped.filter(pl.col("status") == "duplicate")["dup_kind"].value_counts().iter_rows())
    assert found.get("exact", 0) > 20 and found.get("near", 0) > 20  # both kinds planted and found
    assert_frame_equal(remote.pop("landed"), local.pop("landed"))
    for key in ("rows", "duplicates", "quarantined", "failed", "rows_per_tier", "cost_usd"):
        assert remote[key] == local[key], key
    assert local["rows_per_tier"].keys() == {"cheap", "premium"}
    # the partitions really ran on the cluster: the near stage's one, and route's two maps (a premium share)
    partitions = [t for t in stream.data if t["key"].startswith("run_partition")]
    assert len(partitions) == 3
    assert (local_billing["dedup"]["engine"], remote_billing["dedup"]["engine"]) == ("local", "dask")
    assert {k: v for k, v in remote_billing["dedup"].items() if k != "engine"} == {
        k: v for k, v in local_billing["dedup"].items() if k != "engine"}


def test_sluice_run_cluster_flags_reach_the_flow_and_a_bad_engine_fails_before_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.batch_run
    from sluice.cli import app

    data = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": ["hello"]}), data)
    seen = {}
    monkeypatch.setattr(flows.batch_run, "sluice_run", lambda *a, **kw: seen.update(kw) or {"status": "waiting",
                        "run_id": "r", "message": "stub"})
    args = ["run", str(data), "--data-dir", str(tmp_path)]
    res = CliRunner().invoke(app, args + ["--cluster-address", "tcp://127.0.0.1:8786"])
    assert res.exit_code == 0, res.output
    assert seen["cluster"]["engine"] == "dask" and seen["cluster"]["address"] == "tcp://127.0.0.1:8786"
    seen.clear()
    res = CliRunner().invoke(app, args + ["--cluster", "spark"])
    assert res.exit_code == 2 and "--cluster" in res.output and not seen  # refused before the flow starts
    CliRunner().invoke(app, args)
    assert seen["cluster"] is None  # no flag: the settings decide (SLUICE_CLUSTER*)

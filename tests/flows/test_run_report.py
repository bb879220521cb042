"""The run's HTML report inside Prefect: when the flow lands a run it writes `sluice report` into the run folder
(data/runs/<run_id>/report.html) and links it from a Prefect artifact beside the summary's; a report that cannot
be drawn is logged and the run still lands (replay tiers: no engine, no network)."""

import polars as pl
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

import tasks.land
from flows.batch_run import sluice_run
from tests.support.replay import GSM8K, gsm8k_replay_catalogue


def _run(tmp_path):
    data = tmp_path / "batch.parquet"
    pl.read_parquet(GSM8K).head(8).write_parquet(data)  # recorded answers are keyed by prompt: any rows replay
    summary = sluice_run(str(data), warehouse=str(tmp_path / "wh.duckdb"),
                         catalogue=str(gsm8k_replay_catalogue(tmp_path)), data_dir=str(tmp_path / "data"),
                         shadow_share=0.0, grader="number")
    return summary, tmp_path / "data" / "runs" / summary["run_id"]


def _artifacts(key: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_the_flow_writes_the_run_report_and_links_it(tmp_path):
    summary, run_dir = _run(tmp_path)
    report = run_dir / "report.html"
    text = report.read_text()
    assert f"Sluice run {summary['run_id']}" in text and 'id="key-table"' in text and "<svg" in text
    uri = report.resolve().as_uri()
    (link,) = [a for a in _artifacts("sluice-run-report") if uri in (a.data or "")]
    assert link.data == f"[report of run {summary['run_id']}]({uri})" and link.flow_run_id is not None
    # beside the summary's artifacts of the same flow run
    summaries = [a for a in _artifacts("sluice-run-summary") if a.flow_run_id == link.flow_run_id]
    assert len(summaries) == 1 and summary["run_id"] in summaries[0].data


def test_a_report_that_cannot_be_drawn_never_fails_the_run(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no plots today")

    monkeypatch.setattr(tasks.land, "write_report", broken)
    summary, run_dir = _run(tmp_path)
    assert summary["rows"] == 8 and (run_dir / "results.parquet").is_file()
    assert not (run_dir / "report.html").exists()
    assert f"run report not written: RuntimeError: no plots today (sluice report {summary['run_id']}" in caplog.text
    assert not [a for a in _artifacts("sluice-run-report") if str(run_dir) in (a.data or "")]

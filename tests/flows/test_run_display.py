"""`sluice run` without --verbose: the progress view and the summary on the terminal, no Prefect log lines; the
logs in data/runs/<run_id>/logs/ (replay tiers: no engine)."""

import importlib
from pathlib import Path

from typer.testing import CliRunner

from tests.support.replay import gsm8k_replay_catalogue

SAMPLES = Path("data/samples").resolve()


def _catalogue(tmp_path: Path) -> Path:
    return gsm8k_replay_catalogue(tmp_path)


def test_quiet_run_shows_progress_and_summary_and_logs_to_the_run_folder(tmp_path):
    cli = importlib.import_module("sluice.cli.app")
    data = tmp_path / "data"
    res = CliRunner().invoke(cli.app, [
        "run", f"{SAMPLES}/gsm8k.parquet", "--catalogue", str(_catalogue(tmp_path)), "--grader", "number",
        "--warehouse", str(tmp_path / "wh.duckdb"), "--data-dir", str(data), "--no-cache", "--shadow-share", "0",
        "--premium-share", "0.3",
    ])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "Sluice run" in out and "wall time" in out  # the summary
    assert "infer cheap" in out and "infer premium" in out and "spent $" in out  # the progress view
    assert "Loading weights" not in out  # library progress bars go to the log too
    assert " | INFO " not in out and "Finished in state" not in out and "Created task run" not in out
    (run_dir,) = (data / "runs").iterdir()  # the log started outside the run folder and left nothing behind
    logs = list((run_dir / "logs").glob("*.log"))
    assert len(logs) == 1 and f"logs: {logs[0]}" in out.replace("\n", "")
    text = logs[0].read_text()
    assert "Finished in state Completed" in text and "tier cheap" in text
    # inside Prefect, the same progress as progress artifacts (one per stage, updated to 100% when it is done)
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="sluice-progress-")))
    infer = [a for a in arts if a.key == "sluice-progress-infer-cheap"]
    assert infer and infer[-1].type == "progress" and float(infer[-1].data) == 100.0
    assert "infer cheap:" in infer[-1].description and "$" in infer[-1].description

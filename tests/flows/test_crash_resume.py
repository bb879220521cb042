"""SIGKILL `sluice run` mid-flight, run it again: every row lands once and the landed cost equals an
uninterrupted run's (the CI-sized version of bench/crash_resume.py)."""

import pyarrow.parquet as pq

from sluice.testing.crash import all_api_catalogue, crash_and_resume, reference_run
from sluice.testing.openai_server import Faults, OpenAICompatServer

SAMPLE = "data/samples/prompts.parquet"


def test_killed_runs_resume_without_losing_or_double_charging_rows(tmp_path):
    from pathlib import Path

    rows = pq.read_metadata(SAMPLE).num_rows
    with OpenAICompatServer(faults=Faults(delay_s=0.05)) as server:
        cat = all_api_catalogue(tmp_path / "cat.toml", server.base_url)
        wall, ref = reference_run(Path(SAMPLE), tmp_path / "ref", cat, server)
        assert ref.rows_landed == ref.distinct_rows == rows and ref.provider_resent == 0
        # killed 0.1 s after the second shard's answers were written: inside the infer stage, mid-tier
        o = crash_and_resume(Path(SAMPLE), tmp_path / "k", cat, server, milestone="shard 2", delay_s=0.1)
        assert o.killed and o.stage_at_kill.startswith("infer"), o
        assert (o.rows_landed, o.distinct_rows) == (rows, rows) and o.runs_landed == 1, o
        assert abs(o.cost_usd - ref.cost_usd) < 1e-9, o
        assert o.provider_resent <= 16  # at most the shard that was in flight

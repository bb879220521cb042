"""Kill `sluice run` with SIGKILL at a chosen moment, run the same command again, check the invariants.

Used by bench/crash_resume.py (many random kill points) and by the tests (a few). The pipeline's API tiers point
at a loopback OpenAI-compatible server that records every request it answers, so both sides are checked:
    - the warehouse: every input row landed exactly once, and the landed cost equals an uninterrupted run's;
    - the provider: how many requests it answered more than once (paid twice at a real provider). Work that was
      in flight when the process died is lost and re-sent; the shard checkpoints bound it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb

from sluice.testing.openai_server import OpenAICompatServer


def sluice_cmd(dataset: Path, workdir: Path, catalogue: Path) -> list[str]:
    return [sys.executable, "-m", "sluice.cli", "run", str(dataset), "--warehouse", str(workdir / "wh.duckdb"),
            "--catalogue", str(catalogue), "--data-dir", str(workdir / "data")]


def child_env(workdir: Path, shard_rows: int) -> dict[str, str]:
    env = dict(os.environ)
    # one Prefect home for every run of a bench or test: its database is created once (SQLite survives SIGKILL)
    env.update(PREFECT_HOME=str(workdir.parent / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90", SLUICE_SHARD_ROWS=str(shard_rows),
               PYTHONUNBUFFERED="1")
    return env


@dataclass
class Outcome:
    kill_at_s: float
    killed: bool  # False when the run finished before the kill time
    stage_at_kill: str
    attempts: int  # runs needed after the kill until one completed
    rows_landed: int
    distinct_rows: int
    cost_usd: float
    runs_landed: int
    provider_requests: int
    provider_resent: int  # requests the provider answered more than once


def stage_reached(data_dir: Path) -> str:
    runs = sorted((data_dir / "runs").glob("*/")) if (data_dir / "runs").is_dir() else []
    if not runs:
        return "start"
    run = runs[-1]
    if (run / "results.parquet").exists():
        return "land"
    shards = list(run.glob("answers/tier=*/shard-*.parquet"))
    if shards:
        return f"infer ({len(shards)} shards done)"
    for name, stage in (("routed.parquet", "route"), ("deduped.parquet", "dedup"), ("ingested.parquet", "ingest")):
        if (run / name).exists():
            return f"after {stage}"
    return "manifest"


# Milestones a run passes, read from its folder: killing just after one exercises the resume of the next step.
MILESTONES = ["manifest", "ingested", "deduped", "routed", "shard 1", "shard 2", "shard 4", "shard 6", "results"]


def reached(data_dir: Path, milestone: str) -> bool:
    runs = list((data_dir / "runs").glob("*/")) if (data_dir / "runs").is_dir() else []
    if not runs:
        return False
    run = max(runs, key=lambda p: p.stat().st_mtime)
    if milestone == "manifest":
        return (run / "manifest.json").exists()
    if milestone.startswith("shard "):
        return len(list(run.glob("answers/tier=*/shard-*.parquet"))) >= int(milestone.split()[1])
    return (run / f"{milestone}.parquet").exists()


def run_once(cmd: list[str], env: dict[str, str], log: Path, kill_at_s: float | None = None,
             timeout_s: float = 600, kill_after: tuple[Path, str, float] | None = None) -> tuple[int | None, bool]:
    """Run the command; SIGKILL its whole process group at `kill_at_s`, or `delay` seconds after the run in
    `data_dir` reaches `milestone` (kill_after = (data_dir, milestone, delay)). Returns (exit code, killed)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + (kill_at_s if kill_at_s is not None else timeout_s)
        fire_at = None
        while proc.poll() is None:
            now = time.monotonic()
            if kill_after and fire_at is None and reached(kill_after[0], kill_after[1]):
                fire_at = now + kill_after[2]
            if (fire_at is not None and now >= fire_at) or now >= deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # the run and everything it started, mid-step
                proc.wait()
                if kill_at_s is None and fire_at is None:
                    raise subprocess.TimeoutExpired(cmd, timeout_s)
                return None, True
            time.sleep(0.02)
        return proc.returncode, False


def landed(workdir: Path) -> tuple[int, int, float, int]:
    """Rows and distinct rows of the run that landed the fewest (every landed run must hold every row once),
    total landed cost over all runs, and the number of runs landed. A process killed after its run landed but
    before it exited is run again, as a user would: that second run is answered from the cache, at cost 0."""
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        per_run = con.execute("select count(*), count(distinct row_id) from results group by run_id").fetchall()
        cost = con.execute("select sum(cost_usd) from results").fetchone()[0]
    n, distinct = min(per_run) if per_run else (0, 0)
    return n, distinct, float(cost or 0.0), len(per_run)


def provider_counts(server: OpenAICompatServer, since: int) -> tuple[int, int]:
    answered = [r for r in server.received[since:] if r.status == 200]
    # the same request twice: same model, conversation and sampling (a shadow answer goes to another model, a
    # schema retry changes max_tokens or temperature: deliberate second requests, not re-sends)
    per_prompt = Counter((r.model, r.body.get("max_tokens"), r.body.get("temperature"),
                          tuple((m.get("role"), str(m.get("content"))) for m in r.body.get("messages", [])))
                         for r in answered)
    return len(answered), sum(n - 1 for n in per_prompt.values() if n > 1)


def crash_and_resume(dataset: Path, workdir: Path, catalogue: Path, server: OpenAICompatServer,
                     kill_at_s: float | None = None, shard_rows: int = 16, max_attempts: int = 3,
                     milestone: str | None = None, delay_s: float = 0.0) -> Outcome:
    """Kill at `kill_at_s`, or `delay_s` after the run reaches `milestone` (see MILESTONES); then resume."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = child_env(workdir, shard_rows)
    cmd = sluice_cmd(dataset, workdir, catalogue)
    since = len(server.received)
    log = workdir / "runs.log"
    t0 = time.monotonic()
    code, killed = run_once(cmd, env, log, kill_at_s=kill_at_s if milestone is None else None,
                            kill_after=(workdir / "data", milestone, delay_s) if milestone else None)
    kill_at_s = time.monotonic() - t0
    stage = stage_reached(workdir / "data") if killed else "finished"
    attempts = 0
    while killed or code != 0:
        if attempts >= max_attempts:
            raise RuntimeError(f"no successful resume after {attempts} attempts; see {log}")
        attempts += 1
        code, killed = run_once(cmd, env, log)
    n, distinct, cost, runs = landed(workdir)
    requests, resent = provider_counts(server, since)
    return Outcome(kill_at_s, stage != "finished", stage, attempts, n, distinct, cost, runs, requests, resent)


def reference_run(dataset: Path, workdir: Path, catalogue: Path, server: OpenAICompatServer,
                  shard_rows: int = 16) -> tuple[float, Outcome]:
    """An uninterrupted run: its wall time and its outcome."""
    workdir.mkdir(parents=True, exist_ok=True)
    since = len(server.received)
    t0 = time.perf_counter()
    code, _ = run_once(sluice_cmd(dataset, workdir, catalogue), child_env(workdir, shard_rows), workdir / "runs.log")
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"reference run failed; see {workdir / 'runs.log'}")
    n, distinct, cost, runs = landed(workdir)
    requests, resent = provider_counts(server, since)
    return wall, Outcome(0.0, False, "finished", 0, n, distinct, cost, runs, requests, resent)


def all_api_catalogue(path: Path, base_url: str) -> Path:
    tiers = [("small", 0.10, 0.40), ("mid", 0.20, 0.60), ("premium", 2.50, 10.00)]
    path.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f"input_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nmax_concurrency = 4\n"
        for n, i, o in tiers))
    return path

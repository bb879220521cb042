"""Kill `sluice run` with SIGKILL at a chosen moment, run the same command again, check the invariants.

Used by bench/crash_resume.py (many random kill points) and by the tests (a few). The pipeline's API tiers point
at a loopback OpenAI-compatible server that records every request it answers, so both sides are checked:
    - the warehouse: every input row landed exactly once, and the landed cost equals an uninterrupted run's;
    - the provider: how many requests it answered more than once (paid twice at a real provider). Work that was
      in flight when the process died is lost and re-sent; the shard checkpoints bound it. The re-sent requests'
      first copies are on the bill: each lands as an `interrupted` attempt with its usage (estimated when its
      answer never came back) and its cost is in the run's (sluice/stages/infer/interrupted.py), so a resumed run
      lands the reference's cost plus exactly its interrupted attempts' cost.

The review stage (schema retries, cascade escalations, the shadow sample) is exercised by the review scenario:
every answer must satisfy `ANSWER_SCHEMA`, and `review_faults` makes the provider answer chosen rows invalidly,
so that some rows are retried once on their tier, some escalated once or twice, some fail everywhere, and a
shadow sample of the cheapest tier is answered by premium. `ReplayingServer` answers a request it has answered
before the same way (as a greedy model would): the review's decisions then depend on the requests only, so a
request re-sent after a kill cannot change them, and a resumed run must make exactly the reference's decisions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tests.support.openai_server import (
    Faults,
    InvalidAnswers,
    OpenAICompatServer,
    ProviderLimits,
    ServerState,
    StructuredAnswer,
    _OpenAIHandler,
)

# The review scenario. Rules are tried in order; the first that matches a request decides (InvalidAnswers).
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "kind": {"enum": ["fact", "task", "reasoning", "other"]}},
    "required": ["answer", "kind"],
    "additionalProperties": False,
}
REVIEW_RULES = (
    InvalidAnswers(marker="haiku", kind="schema"),  # invalid on every tier: retried, escalated, landed failed
    InvalidAnswers(marker="Label this", models=("small-test", "mid-test")),  # small -> mid -> premium
    InvalidAnswers(marker="Extract", models=("small-test",)),  # retried on small, still invalid: on to mid
    InvalidAnswers(marker="Write", models=("mid-test",)),  # mid -> premium
    InvalidAnswers(rate=0.15, times=1),  # the first answer on any tier is invalid, the retry succeeds
)


def review_faults(delay_s: float) -> Faults:
    return Faults(delay_s=delay_s, invalid_answers=REVIEW_RULES)


def review_args(workdir: Path, shadow_share: float = 0.1) -> list[str]:
    """`sluice run` options of the review scenario: every answer under ANSWER_SCHEMA, a shadow sample."""
    workdir.mkdir(parents=True, exist_ok=True)
    schema = workdir / "answer_schema.json"
    schema.write_text(json.dumps(ANSWER_SCHEMA))
    return ["--schema", str(schema), "--shadow-share", str(shadow_share)]


class _ReplayingState(ServerState):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.request = threading.local()  # the request body this handler thread is answering
        self.answered: dict[tuple, StructuredAnswer] = {}

    def structured_answer(self, schema: dict, messages: list[dict], system: object, model: str) -> StructuredAnswer:
        body = getattr(self.request, "body", None) or {}
        key = (model, json.dumps(messages, sort_keys=True), json.dumps(schema, sort_keys=True),
               body.get("max_tokens"), body.get("temperature"))
        with self.lock:
            seen = self.answered.get(key)
        if seen is not None:  # the same answer again; it does not use up a rule's `times` again
            return dataclasses.replace(seen, charge=None)
        answer = super().structured_answer(schema, messages, system, model)
        with self.lock:
            self.answered.setdefault(key, answer)
        return answer


class _ReplayingHandler(_OpenAIHandler):
    def _chat(self, body: dict) -> None:
        self.server.request.body = body  # type: ignore[attr-defined]
        super()._chat(body)


class ReplayingServer(OpenAICompatServer):
    """The loopback OpenAI server, answering a structured request it has answered before (same model,
    conversation, schema, max_tokens and temperature) with the same answer. `InvalidAnswers.times` then counts
    distinct requests: with `times=1` a row's first request fails and its retry (sampled, or with more tokens)
    succeeds, on every run and after every re-send. The plain server counts answers, so a first request re-sent
    after a kill would be answered validly and the resumed run would skip a retry the reference made."""

    handler = _ReplayingHandler

    def __init__(self, faults: Faults | None = None, model: str = "test-model", port: int = 0,
                 limits: ProviderLimits | None = None) -> None:
        self._srv = _ReplayingState(("127.0.0.1", port), self.handler, faults or Faults(), model, limits)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)


def sluice_cmd(dataset: Path, workdir: Path, catalogue: Path, args: list[str] | tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "sluice.cli", "run", str(dataset), "--warehouse", str(workdir / "wh.duckdb"),
            "--catalogue", str(catalogue), "--data-dir", str(workdir / "data"), *args]


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
    provider_resent: int  # requests the provider answered more than once (less those of runs after the first)
    milestone: str = ""  # the milestone the kill was timed from ("" for a kill at a set time)
    attempts_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)  # landed attempts: first, retry, ...
    decisions: str = ""  # digest of every landed attempt's (row, kind, tier, status): the review's decisions
    rerun_cost_usd: float = 0.0  # runs after the first (a kill after landing): the failed rows asked again
    interrupted: int = 0  # the first run's attempts with status 'interrupted' (sent before a kill, sent again)
    interrupted_estimated: int = 0  # of which no answer ever came back: usage estimated
    interrupted_cost_usd: float = 0.0  # what they cost, in cost_usd (the provider billed them)
    provider_resent_usd: float = 0.0  # what the provider billed for the re-sent requests' extra copies


# Milestones a run passes, read from its folder: killing just after one exercises the resume of the next step.
# The review milestones follow the flow's order on the review scenario: the cheapest tier's retry decision and
# answers, its escalation decision (with the shadow sample), the next tier answering its escalated rows, the
# premium tier's escalated rows and its shadow answers.
REVIEW_MILESTONES = {
    "retry small": "retry/tier=small.parquet",
    "retry answered": "answers/retry/tier=*/shard-*.parquet",
    "escalated to mid": "escalated/tier=mid.parquet",
    "shadow sampled": "shadow/tier=premium.parquet",
    "escalation answered": "answers/escalation/tier=*/shard-*.parquet",
    "escalated to premium": "escalated/tier=premium.parquet",
    "shadow answered": "answers/shadow/tier=*/shard-*.parquet",
}
# a provider batch accepted and journaled (an API tier with `batch_api`): killing now exercises polling it again
BATCH_MILESTONES = {"batch journaled": "answers/**/shard-*.batches.jsonl"}
# an API shard has sent a request (its sent log has a line): killing now leaves at least one interrupted request
INFLIGHT_MILESTONES = {"requests in flight": "answers/**/shard-*.sent-*.jsonl"}
MILESTONES = ["manifest", "ingested", "deduped", "routed", "shard 1", "shard 2", "shard 4", "shard 6",
              *REVIEW_MILESTONES, "results"]


def _latest_run(data_dir: Path) -> Path | None:
    """The run folder written last. Hidden folders (`runs/.logs`, which the run may move away while we look) are
    not runs, and a folder that vanishes between the listing and its stat is skipped."""
    found: list[tuple[float, Path]] = []
    for run in (data_dir / "runs").glob("*/") if (data_dir / "runs").is_dir() else []:
        if run.name.startswith("."):
            continue
        try:
            found.append((run.stat().st_mtime, run))
        except FileNotFoundError:
            continue
    return max(found)[1] if found else None


def stage_reached(data_dir: Path) -> str:
    """What the run had written last when it was killed: "land", "review: <file>", "infer (<n> shards done)",
    "after <stage>" or "manifest"."""
    run = _latest_run(data_dir)
    if run is None:
        return "start"
    if (run / "results.parquet").exists():
        return "land"
    written = [p for p in run.rglob("*.parquet") if p.is_file()]
    if not written:
        return "manifest"
    last = max(written, key=lambda p: p.stat().st_mtime_ns).relative_to(run)
    top = last.parts[0]
    if top in ("retry", "escalated", "shadow") or (top == "answers" and not last.parts[1].startswith("tier=")):
        return f"review: {last.parent}/{last.name}" if top == "answers" else f"review: {last}"
    shards = list(run.glob("answers/tier=*/shard-*.parquet"))
    if shards:
        return f"infer ({len(shards)} shards done)"
    for name, stage in (("routed.parquet", "route"), ("deduped.parquet", "dedup"), ("ingested.parquet", "ingest")):
        if (run / name).exists():
            return f"after {stage}"
    return "manifest"


def reached(data_dir: Path, milestone: str) -> bool:
    run = _latest_run(data_dir)
    if run is None:
        return False
    if milestone == "manifest":
        return (run / "manifest.json").exists()
    if milestone.startswith("shard "):
        return len(list(run.glob("answers/tier=*/shard-*.parquet"))) >= int(milestone.split()[1])
    if milestone in REVIEW_MILESTONES:
        return any(run.glob(REVIEW_MILESTONES[milestone]))
    if milestone in BATCH_MILESTONES:
        return any(run.glob(BATCH_MILESTONES[milestone]))
    if milestone in INFLIGHT_MILESTONES:
        return any(p.stat().st_size > 0 for p in run.glob(INFLIGHT_MILESTONES[milestone]))
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


def landed(workdir: Path) -> tuple[int, int, float, int, float]:
    """Rows and distinct rows of the run that landed the fewest (every landed run must hold every row once), the
    landed cost of the first run (the one killed and resumed), the number of runs landed, and the landed cost of
    the later runs. A process killed after its run landed but before it exited is run again, as a user would:
    that second run is a new run, answered from the cache at $0 except for the rows that failed (failures are
    not cached: a new run asks again, and pays for it)."""
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        per_run = con.execute("select count(*), count(distinct row_id) from results group by run_id").fetchall()
        costs = con.execute("select run_id, sum(cost_usd) from results group by 1 order by 1").fetchall()
    n, distinct = min(per_run) if per_run else (0, 0)
    first = float(costs[0][1] or 0.0) if costs else 0.0  # run ids start with their UTC start time
    return n, distinct, first, len(per_run), float(sum(c or 0.0 for _, c in costs[1:]))


def landed_attempts(workdir: Path) -> tuple[dict[str, int], str, int, tuple[int, int, float]]:
    """The first run's landed attempts per kind, and a digest of each one's (row, kind, tier, status): equal
    digests mean the same retries, escalations and shadow rows, with the same outcomes. Interrupted attempts (the
    first copies of re-sent requests) are counted apart: (requests, of which estimated, cost). Also the number of
    attempts landed by later runs (the requests a new run made again, deliberately: not re-sends)."""
    with duckdb.connect(str(workdir / "wh.duckdb"), read_only=True) as con:
        first = "(select min(run_id) from results)"
        later = con.execute(f"select count(*) from attempts where run_id <> {first}").fetchone()[0]
        mine = f"from attempts where run_id = {first} and status <> 'interrupted'"
        kinds = dict(con.execute(f"select kind, count(*) {mine} group by 1 order by 1").fetchall())
        every = con.execute(f"select row_id, kind, tier, status {mine} order by all").fetchall()
        cut = con.execute(f"select count(*), count(*) filter (usage_estimated), coalesce(sum(cost_usd), 0) "
                          f"from attempts where run_id = {first} and status = 'interrupted'").fetchone()
    return kinds, hashlib.sha256(repr(every).encode()).hexdigest()[:12], int(later), (int(cut[0]), int(cut[1]),
                                                                                       float(cut[2]))


# all_api_catalogue's list prices ($ per 1M input, output tokens), by the model name the provider sees
API_PRICES = {"small-test": (0.10, 0.40), "mid-test": (0.20, 0.60), "premium-test": (2.50, 10.00)}


def provider_counts(server: OpenAICompatServer, since: int) -> tuple[int, int, float]:
    """Requests the provider answered since `since`, how many of them were re-sends, and what the re-sends' extra
    copies cost at all_api_catalogue's prices (the provider's own token counts: what it billed)."""
    answered = [r for r in server.received[since:] if r.status == 200]
    # the same request twice: same model, conversation and sampling (a shadow answer goes to another model, a
    # schema retry changes max_tokens or temperature: deliberate second requests, not re-sends)
    per_prompt: dict[tuple, list] = {}
    for r in answered:
        key = (r.model, r.body.get("max_tokens"), r.body.get("temperature"),
               tuple((m.get("role"), str(m.get("content"))) for m in r.body.get("messages", [])))
        per_prompt.setdefault(key, []).append(r)
    extra = [r for copies in per_prompt.values() for r in copies[1:]]
    usd = sum((r.prompt_tokens * API_PRICES.get(r.model, (0, 0))[0]
               + r.completion_tokens * API_PRICES.get(r.model, (0, 0))[1]) / 1e6 for r in extra)
    return len(answered), len(extra), usd


def crash_and_resume(dataset: Path, workdir: Path, catalogue: Path, server: OpenAICompatServer,
                     kill_at_s: float | None = None, shard_rows: int = 16, max_attempts: int = 3,
                     milestone: str | None = None, delay_s: float = 0.0,
                     args: list[str] | tuple[str, ...] = ()) -> Outcome:
    """Kill at `kill_at_s`, or `delay_s` after the run reaches `milestone` (see MILESTONES); then resume.
    `args`: more `sluice run` options (say, `review_args`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = child_env(workdir, shard_rows)
    cmd = sluice_cmd(dataset, workdir, catalogue, args)
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
    n, distinct, cost, runs, rerun_cost = landed(workdir)
    requests, resent, resent_usd = provider_counts(server, since)
    kinds, decisions, asked_again, cut = landed_attempts(workdir)
    resent -= asked_again  # a later run's requests repeat the first run's on purpose
    return Outcome(kill_at_s, stage != "finished", stage, attempts, n, distinct, cost, runs, requests, resent,
                   milestone or "", kinds, decisions, rerun_cost, *cut, resent_usd if not asked_again else 0.0)


def reference_run(dataset: Path, workdir: Path, catalogue: Path, server: OpenAICompatServer,
                  shard_rows: int = 16, args: list[str] | tuple[str, ...] = ()) -> tuple[float, Outcome]:
    """An uninterrupted run: its wall time and its outcome."""
    workdir.mkdir(parents=True, exist_ok=True)
    since = len(server.received)
    t0 = time.perf_counter()
    code, _ = run_once(sluice_cmd(dataset, workdir, catalogue, args), child_env(workdir, shard_rows),
                       workdir / "runs.log")
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"reference run failed; see {workdir / 'runs.log'}")
    n, distinct, cost, runs, _ = landed(workdir)
    requests, resent, _ = provider_counts(server, since)
    kinds, decisions, _, cut = landed_attempts(workdir)
    return wall, Outcome(0.0, False, "finished", 0, n, distinct, cost, runs, requests, resent, "", kinds, decisions,
                         0.0, *cut)


def all_api_catalogue(path: Path, base_url: str) -> Path:
    tiers = [("small", 0.10, 0.40), ("mid", 0.20, 0.60), ("premium", 2.50, 10.00)]
    path.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f"input_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nmax_concurrency = 4\n"
        for n, i, o in tiers))
    return path

"""The infer stage survives a vLLM engine killed in the middle of a shard (issue #9): the Prefect `infer-tier` task
fails on the dead engine (it raises, not hangs), releases it, retries on a fresh engine, and every row lands once,
each shard charged once: the tier's cost is exactly its shards' billed time. One engine at a time."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow

from models.backends import vllm_offline
from models.backends.vllm_offline import EngineDiedError, shutdown_engine
from models.catalogue import Catalogue

pytestmark = pytest.mark.engine

ROWS, SHARD_ROWS, USD_PER_HOUR = 96, 32, 3.6


def catalogue(model_dir) -> Catalogue:
    return Catalogue.model_validate({
        "baseline": "premium",
        "workers": {"cpu": {"usd_per_hour": USD_PER_HOUR}},
        "tiers": [
            {"name": "small", "backend": "vllm", "model": str(model_dir), "dtype": "float32", "worker": "cpu",
             "max_model_len": 1024},
            {"name": "premium", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9",
             "input_usd_per_1m": 2.5, "output_usd_per_1m": 10},
        ],
    })


def kill_engine_during_second_shard(answers_dir, limit_s: float) -> dict:
    """Once shard 0 is committed and shard 1 is generating, SIGKILL the EngineCore (once)."""
    seen: dict = {}

    def kill() -> None:
        deadline = time.monotonic() + limit_s
        while not (answers_dir / "tier=small" / "shard-00000.parquet").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        while time.monotonic() < deadline:
            llm = vllm_offline._engine
            if llm is not None and llm.llm_engine.get_num_unfinished_requests() > 0:
                time.sleep(0.3)
                (proc,) = vllm_offline._engine_processes(llm)
                seen["pid"] = proc.pid
                os.kill(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    threading.Thread(target=kill, daemon=True).start()
    return seen


def test_an_engine_killed_mid_shard_is_retried_and_every_row_is_charged_once(tmp_path, tiny_model_dir, monkeypatch):
    from tasks.infer import infer_tier

    cat = catalogue(tiny_model_dir)
    run_dir = tmp_path / "run"
    partition = run_dir / "routed" / "tier=small.parquet"
    partition.parent.mkdir(parents=True)
    ids = [f"r{i:03d}" for i in range(ROWS)]
    # ~32 x 300 tokens per shard: several seconds of generation, time enough to be killed in the middle
    pq.write_table(pa.table({"row_id": ids, "prompt": [f"Tell story number {i}." for i in range(ROWS)],
                             "system": [None] * ROWS, "max_tokens": [300] * ROWS}), partition)

    # what each generate call did, seen through the backend's own watchdog
    outcomes: list = []
    real = vllm_offline._generate_or_raise

    def recording(llm, prompts, params):
        try:
            out = real(llm, prompts, params)
        except BaseException as exc:
            outcomes.append(exc)
            raise
        outcomes.append(len(out))
        return out

    monkeypatch.setattr(vllm_offline, "_generate_or_raise", recording)

    @flow(name="engine-death-infer")
    def infer_small() -> dict:
        return infer_tier(tier_name="small", partition=partition, run_dir=run_dir, catalogue=cat,
                          data_dir=str(tmp_path), default_max_tokens=64, shard_rows=SHARD_ROWS)

    # A regression to the old hang must fail this test, not block CI: SIGALRM interrupts the blocked main thread.
    hung: list = []

    def on_alarm(signum, frame):
        hung.append(True)
        raise TimeoutError("infer stage still blocked on a dead engine")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(480)
    shutdown_engine()
    seen = kill_engine_during_second_shard(run_dir / "answers", limit_s=400)
    try:
        billing = infer_small()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        shutdown_engine()

    assert not hung
    assert "pid" in seen, "the engine was never killed (the shard ended first?)"
    # shard 0 answered; shard 1 died (raised, promptly); the retry skipped shard 0 and answered shards 1 and 2
    assert [type(o) if isinstance(o, BaseException) else o for o in outcomes] == \
        [SHARD_ROWS, EngineDiedError, SHARD_ROWS, SHARD_ROWS]

    tier_dir = run_dir / "answers" / "tier=small"
    answers = pa.concat_tables([pq.read_table(p) for p in sorted(tier_dir.glob("shard-*.parquet"))])
    landed = answers["row_id"].to_pylist()
    assert sorted(landed) == ids and len(set(landed)) == ROWS  # every row once
    assert set(answers["status"].to_pylist()) == {"ok"}

    bills = [json.loads(p.read_text()) for p in sorted(tier_dir.glob("shard-*.billing.json"))]
    assert len(bills) == 3 and billing["shards"] == 3
    # the retry started a fresh engine (billed to shard 1), shard 2 reused it
    assert bills[0]["engine_start_s"] > 0 and bills[1]["engine_start_s"] > 0 and bills[2]["engine_start_s"] == 0
    billed_usd = sum(b["billed_seconds"] for b in bills) * USD_PER_HOUR / 3600
    assert sum(answers["cost_usd"].to_pylist()) == pytest.approx(billed_usd, rel=1e-9)
    assert billing["cost_usd"] == pytest.approx(billed_usd, rel=1e-9)

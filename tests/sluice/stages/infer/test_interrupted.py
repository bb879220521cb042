"""Requests a kill cut off: written down as they are sent and answered (the sent log), then, when the shard is
answered again, landed as `interrupted` attempts with their usage (estimated when no answer came back) and their
cost in the shard's billing, before anything is sent again. Against the loopback OpenAI-compatible server."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.backends.openai_http import OpenAIBackend
from models.backends.sent_log import SentLog, read_sent_log
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import answer_shard, requests_from
from tests.support.openai_server import OpenAICompatServer

IN, OUT = 2.5, 10.0  # $ per 1M tokens


def tier(base_url):
    return Tier(name="premium", backend="openai", model="premium-test", base_url=base_url, input_usd_per_1m=IN,
                output_usd_per_1m=OUT, backoff_initial_s=0.01, backoff_max_s=0.05)


def catalogue(base_url):
    return Catalogue(baseline="premium", tiers=[tier(base_url)])


def partition(tmp_path, n=4, trimmed=None):
    cols = {"row_id": [f"r{i}" for i in range(n)], "prompt": [f"question {i} about owls" for i in range(n)],
            "system": [None] * n, "max_tokens": [16 + i for i in range(n)]}
    if trimmed is not None:
        cols["trim_tokens_saved"] = trimmed
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def usd(inp, out):
    return (inp * IN + out * OUT) / 1e6


def test_every_real_time_request_is_written_down_when_sent_and_when_answered(tmp_path):
    with OpenAICompatServer(model="premium-test") as srv:
        backend = OpenAIBackend(tier(srv.base_url))
        backend.log_sends_to(tmp_path / "shard-00000.sent-1.jsonl")
        done = backend.complete(requests_from(pq.read_table(partition(tmp_path)), 256)).completions
    log = read_sent_log(tmp_path / "shard-00000.sent-1.jsonl")
    assert sorted(log) == [c.row_id for c in done] and all(r.state == "answered" for r in log.values())
    assert [(log[c.row_id].input_tokens, log[c.row_id].output_tokens, log[c.row_id].max_tokens) for c in done] == [
        (c.input_tokens, c.output_tokens, 16 + i) for i, c in enumerate(done)]
    events = [json.loads(x) for x in (tmp_path / "shard-00000.sent-1.jsonl").read_text().splitlines()]
    assert all(set(e) <= {"event", "row", "input_tokens", "max_tokens", "output_tokens", "cached_input_tokens",
                          "usage_estimated", "status"} for e in events)  # counts only, never a prompt or answer


def test_a_killed_try_lands_its_requests_as_interrupted_attempts_before_the_shard_is_sent_again(tmp_path):
    tier_dir = tmp_path / "answers" / "tier=premium"
    log = SentLog(tier_dir / "shard-00000.sent-1.jsonl")  # what a killed try had written down
    for i in range(4):
        log.record_sent(f"r{i}", 40 + i, 16 + i)
    log.record_answered("r0", 12, 7, 0, False)  # answered, the shard's answers never saved
    log.record_failed("r2", 429)  # refused: nothing billed
    log.record_failed("r3", None)  # no response (a timeout): it may have been answered in full
    log.close()
    with tier_dir.joinpath("shard-00000.sent-1.jsonl").open("a") as f:
        f.write('{"event": "answered", "row": "r1", "input_tok')  # torn by the kill
    with OpenAICompatServer(model="premium-test") as srv:
        backend = OpenAIBackend(tier(srv.base_url))
        billing = answer_shard(partition(tmp_path, trimmed=[3, 0, 0, 5]), 0, tmp_path / "answers", backend.tier,
                               catalogue(srv.base_url), backend, shard_rows=16)
        sent = len(srv.received)
    cut = {r["row_id"]: r for r in pq.read_table(tier_dir / "interrupted" / "shard-00000-1.parquet").to_pylist()}
    assert {k: (v["input_tokens"], v["output_tokens"], v["usage_estimated"]) for k, v in cut.items()} == {
        "r0": (12, 7, False),  # the provider's own usage
        "r1": (41, 17, True),  # in flight: the estimate made when it was sent, output at max_tokens
        "r2": (0, 0, False),  # refused with a status: not billed
        "r3": (43, 19, True),
    }
    assert all(v["status"] == "interrupted" and v["error"].startswith("interrupted: ") for v in cut.values())
    assert {k: v["cost_usd"] for k, v in cut.items()} == pytest.approx(
        {"r0": usd(12, 7), "r1": usd(41, 17), "r2": 0.0, "r3": usd(43, 19)})
    # the trimmed prompt was sent then too: its saving counts where the request was billed
    assert {k: v["trim_saving_usd"] for k, v in cut.items()} == pytest.approx(
        {"r0": usd(3, 0), "r1": 0.0, "r2": 0.0, "r3": usd(5, 0)})
    # the shard was answered again in full, and its billing includes what the interrupted requests cost
    answered = pq.read_table(tier_dir / "shard-00000.parquet")
    assert sent == 4 and answered.num_rows == 4
    assert billing["interrupted_requests"] == 4 and billing["interrupted_estimated"] == 2
    assert billing["interrupted_cost_usd"] == pytest.approx(usd(12 + 41 + 43, 7 + 17 + 19))
    assert billing["cost_usd"] == pytest.approx(sum(answered["cost_usd"].to_pylist()) + billing["interrupted_cost_usd"])
    assert not list(tier_dir.glob("shard-00000.sent-*.jsonl"))  # saved: the logs are gone
    # answering the shard again (a later resume) lands nothing twice and sends nothing
    with OpenAICompatServer(model="premium-test") as srv:
        again = answer_shard(partition(tmp_path), 0, tmp_path / "answers", backend.tier, catalogue(srv.base_url),
                             OpenAIBackend(tier(srv.base_url)), shard_rows=16)
        assert not srv.received
    assert again == billing and len(list((tier_dir / "interrupted").iterdir())) == 1


def test_a_log_already_landed_is_only_removed(tmp_path):
    """Killed between writing the interrupted attempts and removing the log: the next try lands nothing twice."""
    tier_dir = tmp_path / "answers" / "tier=premium"
    log = SentLog(tier_dir / "shard-00000.sent-1.jsonl")
    log.record_sent("r0", 40, 16)
    log.close()
    from sluice.stages.infer.interrupted import land_interrupted_tries

    t = tier("http://127.0.0.1:9")
    land_interrupted_tries(tier_dir, 0, t)
    log = SentLog(tier_dir / "shard-00000.sent-1.jsonl")  # the same log, still there after the kill
    log.record_sent("r0", 40, 16)
    log.close()
    land_interrupted_tries(tier_dir, 0, t)
    assert len(list((tier_dir / "interrupted").glob("*.parquet"))) == 1
    assert not list(tier_dir.glob("*.jsonl"))

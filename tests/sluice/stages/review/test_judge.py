"""The judge of free-text shadow pairs, against a loopback OpenAI-compatible judge with scripted verdicts: every
pair is asked in both orders (the server sees the cheap answer once as Answer A and once as Answer B), verdicts
are parsed strictly, a split counts as not acceptable, unparseable verdicts and judge failures (5xx, timeouts, a
backend that breaks) leave the pair unjudged and are counted apart, and every request is priced."""

import json

import polars as pl
import pytest

from models.backends import make_backend
from models.backends.base import Completion
from models.catalogue import Catalogue
from sluice.contracts.judging import OUTCOMES, judge_attempts_path, judge_billing_path, judge_verdicts_path
from sluice.runs import write_parquet
from sluice.stages.review.judge import (
    JUDGE_MAX_TOKENS,
    Pair,
    ask_judge,
    combine_verdicts,
    judge_shadow_pairs,
    parse_verdict,
)
from tests.support.judge import judge_question, scripted_judge
from tests.support.openai_server import Faults, OpenAICompatServer, count_tokens

PRICES = {"cheap": (0.5, 1.5), "premium": (2.5, 10.0)}


def catalogue(base_url: str, judge: str | None = "premium", **premium) -> Catalogue:
    tiers = [{"name": n, "backend": "openai", "model": f"{n}-test", "base_url": base_url, "input_usd_per_1m": i,
              "output_usd_per_1m": o, "max_retries": 0, "backoff_initial_s": 0.01, "backoff_max_s": 0.01,
              **(premium if n == "premium" else {})} for n, (i, o) in PRICES.items()]
    return Catalogue.model_validate({"baseline": "premium", "judge": judge, "tiers": tiers})


def pair(i: int, marker: str) -> Pair:
    return Pair(f"r{i}", "cheap", f"Summarise note {i}.", f"Note {i} is about tides. {marker}",
                f"A summary of note {i}: tides and moons.")


@pytest.mark.parametrize("text, verdict", [
    ("ACCEPTABLE", True), ("UNACCEPTABLE", False), ("  \nACCEPTABLE  \nbecause it says the same", True),
    ("UNACCEPTABLE\n", False), ("Acceptable", None), ("ACCEPTABLE.", None), ("ACCEPTABLE - mostly", None),
    ("The answer is ACCEPTABLE", None), ("ACCEPTABLE UNACCEPTABLE", None), ("", None), (None, None),
])
def test_a_verdict_is_exactly_one_word_on_the_first_line(text, verdict):
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize("first, second, outcome", [
    ("ACCEPTABLE", "ACCEPTABLE", "acceptable"), ("UNACCEPTABLE", "UNACCEPTABLE", "unacceptable"),
    ("ACCEPTABLE", "UNACCEPTABLE", "split"), ("UNACCEPTABLE", "ACCEPTABLE", "split"),
    ("ACCEPTABLE", "yes", "unparseable"), (None, "ACCEPTABLE", "failed"), (None, "yes", "failed"),
])
def test_the_two_orders_combine(first, second, outcome):
    def answer(text):
        return Completion("x", text) if text is not None else Completion("x", None, error="HTTP 500")
    got, reason = combine_verdicts(answer(first), answer(second))
    assert got == outcome and reason


def test_each_pair_is_asked_in_both_orders_and_the_verdicts_combine():
    markers = ["[good]", "[bad]", "[biased]", "[garbled]", "[down]", "[good]"]
    pairs = [pair(i, m) for i, m in enumerate(markers)]
    with OpenAICompatServer(responder=scripted_judge()) as srv:
        cat = catalogue(srv.base_url)
        attempts, verdicts, billing = ask_judge(pairs, cat.tier("premium"), cat, make_backend)
        received = srv.received
    # the server saw every pair twice: the cheap answer once as Answer A, once as Answer B; the premium answer as
    # the reference in the other place; the judge's model, a one-word answer's budget
    assert len(received) == 2 * len(pairs)
    seen = {}
    for r in received:
        candidate, reference, where = judge_question(r.body["messages"])
        p = next(p for p in pairs if p.cheap == candidate)
        assert reference == p.premium and p.request in r.body["messages"][-1]["content"]
        assert r.model == "premium-test" and r.body["max_tokens"] == JUDGE_MAX_TOKENS
        seen.setdefault(p.row_id, []).append(where)
    assert {k: sorted(v) for k, v in seen.items()} == {p.row_id: ["A", "B"] for p in pairs}

    v = pl.from_arrow(verdicts)
    assert v["outcome"].to_list() == ["acceptable", "unacceptable", "split", "unparseable", "failed", "acceptable"]
    assert v["acceptable"].to_list() == [True, False, False, None, None, True]  # a split is not acceptable
    assert (v["tier"] == "cheap").all() and (v["judge_tier"] == "premium").all()
    a = pl.from_arrow(attempts)
    assert a.height == 12 and a["order"].to_list() == ["cheap_first", "cheap_second"] * 6
    assert a.filter(pl.col("row_id") == "r2")["verdict"].to_list() == ["ACCEPTABLE", "UNACCEPTABLE"]
    # unparseable verdicts are answers that cost money but say nothing: status invalid, with what was said
    garbled = a.filter(pl.col("row_id") == "r3")
    assert garbled["status"].to_list() == ["invalid"] * 2 and "Acceptable, mostly." in garbled["error"][0]
    down = a.filter(pl.col("row_id") == "r4")
    assert down["status"].to_list() == ["failed"] * 2 and down["cost_usd"].to_list() == [0.0, 0.0]
    # each answered request is priced at the judge tier's prices from the usage the server billed
    answered = [r for r in received if r.status == 200]
    i, o = PRICES["premium"]
    expected = sum(r.prompt_tokens * i / 1e6 + r.completion_tokens * o / 1e6 for r in answered)
    assert a["cost_usd"].sum() == pytest.approx(expected) and billing["cost_usd"] == pytest.approx(expected)
    assert a["output_tokens"].sum() == sum(r.completion_tokens for r in answered) == sum(
        count_tokens(t) for t in a.filter(pl.col("status") != "failed")["response"].to_list())
    assert billing["rows"] == 12 and billing["pairs"] == 6
    assert {k: billing[f"pairs_{k}"] for k in OUTCOMES} == {"acceptable": 2, "unacceptable": 1, "split": 1,
                                                          "unparseable": 1, "failed": 1}


def test_a_judge_that_times_out_leaves_every_pair_unjudged():
    pairs = [pair(i, "[good]") for i in range(3)]
    with OpenAICompatServer(faults=Faults(rate_timeout=1.0, timeout_hold_s=3.0),
                            responder=scripted_judge()) as srv:
        cat = catalogue(srv.base_url, request_timeout_s=0.3)
        attempts, verdicts, billing = ask_judge(pairs, cat.tier("premium"), cat, make_backend)
    assert pl.from_arrow(verdicts)["outcome"].to_list() == ["failed"] * 3
    assert pl.from_arrow(verdicts)["acceptable"].null_count() == 3
    assert pl.from_arrow(attempts)["status"].to_list() == ["failed"] * 6
    assert billing["cost_usd"] == 0.0 and billing["pairs_failed"] == 3


def test_a_backend_that_breaks_never_raises():
    def broken(tier):
        raise RuntimeError("no route to the judge")

    cat = catalogue("http://127.0.0.1:9/v1")
    attempts, verdicts, billing = ask_judge([pair(0, "[good]")], cat.tier("premium"), cat, broken)
    assert pl.from_arrow(verdicts)["outcome"].to_list() == ["failed"]
    assert "no route to the judge" in pl.from_arrow(attempts)["error"][0]


def _run_folder(run_dir):
    """Five shadow pairs of the cheap tier: three free text, one number, one under a schema."""
    ids = [f"r{i}" for i in range(5)]
    schema = json.dumps({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]})
    write_parquet(pl.DataFrame({
        "row_id": ids, "prompt": [f"Write about topic {i}." for i in range(4)] + ["Give x."],
        "system": [None, "Be brief.", None, None, None], "max_tokens": [64] * 5,
        "response_schema": [None, None, None, None, schema], "grader": [None, None, None, "number", None],
        "tier": ["premium"] * 5}), run_dir / "shadow" / "tier=premium.parquet")
    cheap = ["Topic zero is good. [good]", "Topic one. [bad]", "Topic two. [biased]", "It is 42", '{"x": 1}']
    write_parquet(pl.DataFrame({"row_id": ids, "tier": ["cheap"] * 5, "status": ["ok"] * 5, "response": cheap,
                                "parsed": [None] * 4 + ['{"x": 1}']}),
                  run_dir / "answers" / "tier=cheap" / "shard-00000.parquet")
    premium = ["Topic zero, in full.", "Topic one, in full.", "Topic two, in full.", "42", '{"x": 2}']
    write_parquet(pl.DataFrame({"row_id": ids, "tier": ["premium"] * 5, "status": ["ok"] * 5, "response": premium}),
                  run_dir / "answers" / "shadow" / "tier=premium" / "shard-00000.parquet")


def test_only_free_text_pairs_go_to_the_judge_and_a_resumed_run_reads_its_verdicts_back(tmp_path):
    _run_folder(tmp_path)
    with OpenAICompatServer(responder=scripted_judge()) as srv:
        cat = catalogue(srv.base_url)
        key, billing = judge_shadow_pairs(tmp_path, cat)
        asked = len(srv.received)
        again = judge_shadow_pairs(tmp_path, cat)  # resumed: nothing asked twice
        assert len(srv.received) == asked == 6
        system_seen = any("(system) Be brief." in r.body["messages"][-1]["content"] for r in srv.received)
    assert system_seen  # the judge reads the row's whole request
    assert key == "premium/judge" and again == (key, billing)
    verdicts = pl.read_parquet(judge_verdicts_path(tmp_path))
    assert verdicts["row_id"].to_list() == ["r0", "r1", "r2"]  # the number and the JSON pair are compared by shape
    assert verdicts["outcome"].to_list() == ["acceptable", "unacceptable", "split"]
    assert pl.read_parquet(judge_attempts_path(tmp_path)).height == 6
    assert json.loads(judge_billing_path(tmp_path).read_text()) == billing


def test_no_judge_in_the_catalogue_asks_nothing(tmp_path):
    _run_folder(tmp_path)
    with OpenAICompatServer(responder=scripted_judge()) as srv:
        assert judge_shadow_pairs(tmp_path, catalogue(srv.base_url, judge=None)) == (None, None)
        assert srv.received == []
    assert not judge_verdicts_path(tmp_path).exists()

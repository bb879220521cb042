"""Prompt trimming through a whole run (`sluice run --trim`, the catalogue's `trim`), against the loopback
OpenAI-compatible server for every tier: the provider gets the trimmed prompt, `results.prompt` keeps the original,
each row lands the tokens trimming saved and what they would have cost on every attempt that was billed, the
baseline prices the untrimmed request, and `savings_per_row` keeps its identity row by row. With trimming off,
nothing changes.

The loopback server bills whitespace-separated words, which trimming (whitespace only) does not change: the trimmed
and untrimmed runs therefore cost the same, and the trimmed run's baseline is the untrimmed one's plus exactly the
saved tokens at the baseline's input price."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from models.tokens import count_word_pieces
from sluice.reports.economics import run_savings
from sluice.reports.runs import run_summary
from sluice.reports.summary import summary_lines
from sluice.stages.route.brevity import trim_prompt
from tests.support.crash import all_api_catalogue
from tests.support.openai_server import OpenAICompatServer

PROMPTS = [
    "Summarise   this report:\n\n\n\nSales rose by 4% in March.\n\n\n\nCosts fell.",
    "What is the capital of France?",
    "Translate to German:   good morning.   \n\n\n\nThank you.",
    "Explain step by step why the sky is blue,\n\n\n\nin three sentences.",
    "Classify the sentiment:\n\n\n\nI loved it.",
    "What is the capital of France?",  # an exact duplicate: answered free, nothing trimmed or sent
    "Write a haiku about autumn leaves.\n\n\n\n\n\nKeep it gentle.",
    "List three prime numbers.",
]
INPUT_USD = {"small": 0.10, "mid": 0.20, "premium": 2.50}  # all_api_catalogue's input prices per 1M tokens


def _run(tmp_path, server, name, **kw):
    data = tmp_path / "batch.parquet"
    if not data.exists():
        pq.write_table(pa.table({"id": [f"q{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS}), data)
    cat = all_api_catalogue(tmp_path / "cat.toml", server.base_url)
    if kw.pop("catalogue_trim", False):
        cat.write_text("trim = true\n" + cat.read_text())
    since = len(server.received)
    summary = sluice_run(str(data), warehouse=str(tmp_path / f"{name}.duckdb"), catalogue=str(cat),
                         data_dir=str(tmp_path / name), shadow_share=0.25, **kw)
    sent = [r.body["messages"][-1]["content"] for r in server.received[since:]]
    return summary, sent, str(tmp_path / f"{name}.duckdb")


def _rows(wh):
    with duckdb.connect(wh, read_only=True) as con:
        cols = ["row_id", "prompt", "status", "tier", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
                "trim_tokens_saved", "trim_saving_usd", "attempts"]
        return {r[0]: dict(zip(cols, r)) for r in con.execute(f"SELECT {', '.join(cols)} FROM results").fetchall()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trim")
    with OpenAICompatServer() as server:
        return {name: _run(tmp, server, name, **kw) for name, kw in
                (("default", {}), ("off", {"trim": False}), ("on", {"trim": True}),
                 ("catalogue", {"catalogue_trim": True}))}


def test_trimmed_prompts_are_sent_the_originals_land_and_each_row_records_what_it_saved(runs):
    summary, sent, wh = runs["on"]
    rows = _rows(wh)
    assert [rows[f"q{i}"]["prompt"] for i in range(len(PROMPTS))] == PROMPTS  # the request as it came
    assert set(sent) <= {trim_prompt(p) for p in PROMPTS} and trim_prompt(PROMPTS[0]) in sent
    assert not set(sent) & {p for p in PROMPTS if trim_prompt(p) != p}  # no untrimmed prompt left the run
    for i, p in enumerate(PROMPTS):
        r = rows[f"q{i}"]
        want = 0 if r["status"] == "duplicate" else count_word_pieces(p) - count_word_pieces(trim_prompt(p))
        assert r["trim_tokens_saved"] == want, (i, r)
    assert sum(r["trim_tokens_saved"] for r in rows.values()) > 0
    with duckdb.connect(wh, read_only=True) as con:
        billed = con.execute("SELECT row_id, tier FROM attempts WHERE cost_usd > 0").fetchall()
    for row_id, r in rows.items():  # each billed attempt sent the trimmed prompt: its input price x tokens saved
        want = sum(INPUT_USD[t] for rid, t in billed if rid == row_id) * r["trim_tokens_saved"] / 1e6
        assert r["trim_saving_usd"] == pytest.approx(want, abs=1e-15), (row_id, r)
    assert summary["trimmed_rows"] == sum(r["trim_tokens_saved"] > 0 for r in rows.values())
    assert summary["trim_tokens_saved"] == sum(r["trim_tokens_saved"] for r in rows.values())
    assert summary["trim_saving_usd"] == pytest.approx(sum(r["trim_saving_usd"] for r in rows.values()))
    # its own line in the summary, as printed and as `sluice runs show` prints it again
    line = dict(summary_lines(summary))["prompt trimming"]
    assert line == dict(summary_lines(run_summary(wh, summary["run_id"])))["prompt trimming"]
    assert line.startswith(f"{summary['trimmed_rows']} rows, {summary['trim_tokens_saved']} input tokens saved")


def test_the_baseline_prices_the_untrimmed_request_and_the_savings_identity_holds_row_by_row(runs):
    on, off = _rows(runs["on"][2]), _rows(runs["off"][2])
    for row_id, r in on.items():
        o = off[row_id]
        # the server bills words, unchanged by trimming: the same cost, and a baseline higher by the saved tokens
        assert (r["cost_usd"], r["input_tokens"], r["tier"]) == pytest.approx((o["cost_usd"], o["input_tokens"],
                                                                                o["tier"]))
        if r["status"] != "duplicate":
            want = o["baseline_cost_usd"] + r["trim_tokens_saved"] * INPUT_USD["premium"] / 1e6
            assert r["baseline_cost_usd"] == pytest.approx(want, abs=1e-15), row_id
    with duckdb.connect(runs["on"][2], read_only=True) as con:
        view = con.execute("""SELECT s.row_id, s.saving_usd, s.dedup_saving_usd + s.cache_saving_usd
                                     + s.trim_saving_usd + s.batch_saving_usd + s.routing_saving_usd - s.waste_usd,
                                     s.trim_saving_usd, s.baseline_cost_usd - s.cost_usd
                              FROM savings_per_row s""").fetchall()
    for row_id, saving, parts, trim, b_minus_c in view:
        assert saving == pytest.approx(parts, abs=1e-15) == pytest.approx(b_minus_c, abs=1e-15)
        answered_unique = on[row_id]["status"] not in ("failed", "quarantined", "duplicate")
        assert trim == (on[row_id]["trim_saving_usd"] if answered_unique else 0)
    s = run_savings(runs["on"][2], runs["on"][0]["run_id"])  # `sluice economics`: trimming its own line
    assert s["trim_saving_usd"] == pytest.approx(runs["on"][0]["trim_saving_usd"]) and s["trim_saving_usd"] > 0


def test_trimming_off_changes_nothing_and_the_catalogue_default_turns_it_on(runs):
    default, off, cat = _rows(runs["default"][2]), _rows(runs["off"][2]), _rows(runs["catalogue"][2])
    strip = ("trim_tokens_saved", "trim_saving_usd")
    assert {k: {c: v for c, v in r.items() if c not in strip} for k, r in off.items()} == {
        k: {c: v for c, v in r.items() if c not in strip} for k, r in default.items()}
    assert all(r["trim_tokens_saved"] == 0 and r["trim_saving_usd"] == 0 for r in [*off.values(), *default.values()])
    assert sorted(runs["off"][1]) == sorted(runs["default"][1])  # the same requests, untrimmed
    assert "trimmed_rows" not in runs["off"][0]
    assert cat == _rows(runs["on"][2])  # `trim = true` in the catalogue is --trim

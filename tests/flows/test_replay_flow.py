"""A whole flow run on replay tiers: three tiers answered from recorded answers, no model and no network. Every row
lands with its tier's recorded answer, a prompt nobody recorded fails alone, and every row's landed cost is the
recorded tokens of its attempts x their tiers' list prices, worked out here by hand. The run says which tiers
were replayed, and `sluice answers export` turns the warehouse it wrote back into a replay source."""

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.batch_run import sluice_run

# name, input $/1M, output $/1M (list prices)
TIERS = [("small", 0.10, 0.40), ("mid", 0.50, 1.50), ("premium", 2.50, 10.00)]
PROMPTS = [
    "Classify the sentiment of this review: the blender works well.",
    "Classify the sentiment of this review: the kettle broke on day two.",
    "Classify the sentiment of this review: delivery was quick.",
    "Classify the sentiment of this review: too loud for a flat.",
    "Extract the date from: invoice issued on 3 March 2025.",
    "Explain why the sky is blue to a ten year old.",
    "Explain how a bicycle gear works.",
    "What are the main causes of inflation?",
    "Write a Python function that parses ISO dates, step by step, with edge cases.",
    "Design a migration plan for a billing database and compare the trade-offs in detail.",
    "Prove that the square root of 2 is irrational, step by step.",
]
MISSING = "Explain why nobody ever recorded an answer to this prompt."


def recorded(tier_index: int, prompt_index: int) -> tuple[str, int, int]:
    """The answer tier `tier_index` recorded for prompt `prompt_index`: text, input tokens, output tokens."""
    name = TIERS[tier_index][0]
    return f"{name} answer {prompt_index}", 20 + 3 * prompt_index + tier_index, 5 + 7 * prompt_index + 11 * tier_index


@pytest.fixture
def replay_catalogue(tmp_path):
    folder = tmp_path / "answers"
    folder.mkdir()
    body = 'baseline = "premium"\n'
    for i, (name, price_in, price_out) in enumerate(TIERS):
        texts, ins, outs = zip(*(recorded(i, k) for k in range(len(PROMPTS))), strict=True)
        # recorded with other whitespace than the dataset uses: matching normalises it
        pq.write_table(pa.table({"prompt": [f"  {p}  " for p in PROMPTS], "response": list(texts),
                                 "input_tokens": list(ins), "output_tokens": list(outs)}),
                       folder / f"{name}.parquet")
        body += (f'[[tiers]]\nname = "{name}"\nbackend = "replay"\nmodel = "{name}-recorded"\n'
                 f'answers = "answers/{name}.parquet"\ninput_usd_per_1m = {price_in}\n'
                 f"output_usd_per_1m = {price_out}\n")
    path = tmp_path / "replay.toml"
    path.write_text(body)
    return path


def test_a_flow_on_replay_tiers_lands_recorded_answers_at_recorded_cost(tmp_path, replay_catalogue, monkeypatch):
    data = tmp_path / "batch.parquet"
    prompts = [*PROMPTS, MISSING, PROMPTS[0]]  # the last row is an exact duplicate of the first
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(len(prompts))], "prompt": prompts}), data)
    wh = tmp_path / "wh.duckdb"
    summary = sluice_run(str(data), warehouse=str(wh), catalogue=str(replay_catalogue),
                         data_dir=str(tmp_path / "data"), shadow_share=0.5)

    assert summary["replayed_tiers"] == ["small", "mid", "premium"]
    # `sluice run` prints it under the run's summary
    import importlib

    from rich.console import Console

    cli = importlib.import_module("sluice.cli.app")  # the module (the package exports its `app`)
    monkeypatch.setattr(cli, "console", Console(width=200, record=True))
    cli._print_summary(summary, 1.0)
    assert "small, mid, premium (recorded answers, no network)" in cli.console.export_text()
    assert summary["rows"] == len(prompts)
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT row_id, status, tier, model, response, input_tokens, output_tokens, cost_usd, error, "
            "usage_estimated, shadow FROM results").fetchall()}
        attempts = con.execute("SELECT row_id, tier, kind, status, input_tokens, output_tokens, cost_usd, response "
                               "FROM attempts ORDER BY row_id, attempt").fetchall()
        billing = con.execute("SELECT billing FROM runs").fetchone()[0]
    assert len(rows) == len(prompts)

    # the prompt nobody recorded fails alone, with the reason; nothing is charged for it
    status, tier, _, response, *_, cost, error, _, _ = rows["q11"]
    assert (status, response, cost) == ("failed", None, 0.0)
    assert error == (f"no recorded answer for this prompt in {tmp_path / 'answers' / tier}.parquet (tier {tier})")
    # every other row lands, with its final tier's recorded answer and recorded token counts
    assert rows["q12"][0] == "duplicate"
    answered = {rid: r for rid, r in rows.items() if rid not in ("q11", "q12")}
    assert all(r[0] == "ok" for r in answered.values())
    assert len({r[1] for r in answered.values()}) >= 2, "routing should spread the batch over several tiers"
    index = {name: i for i, (name, _, _) in enumerate(TIERS)}
    for rid, (status, tier, model, response, *_rest) in answered.items():
        k = int(rid[1:])
        assert (response, model) == (recorded(index[tier], k)[0], f"{tier}-recorded")
        assert _rest[-2] is False  # usage_estimated: the counts were recorded

    # cost by hand: each attempt's recorded tokens x its tier's list prices; a row costs the sum of its attempts
    expected: dict[str, float] = {}
    for rid, tier, kind, status, n_in, n_out, cost, response in attempts:
        i = index[tier]
        _, price_in, price_out = TIERS[i]
        if status == "failed":
            assert cost == 0.0
            continue
        text, rec_in, rec_out = recorded(i, int(rid[1:]))
        assert (response, n_in, n_out) == (text, rec_in, rec_out)
        by_hand = (rec_in * price_in + rec_out * price_out) / 1e6
        assert cost == pytest.approx(by_hand, rel=1e-12)
        expected[rid] = expected.get(rid, 0.0) + by_hand
    assert any(kind == "shadow" for _, _, kind, *_ in attempts), "the shadow sample is replayed too"
    for rid, r in answered.items():
        assert r[6] == pytest.approx(expected[rid], rel=1e-12)
    assert summary["cost_usd"] == pytest.approx(sum(expected.values()), rel=1e-12)
    # the run's billing says what was replayed
    assert '"replay_hits"' in billing and '"replay_misses"' in billing

    # the warehouse the run wrote is a replay source again: premium's answers, shadow answers included
    from sluice.cli.app import app

    out = tmp_path / "premium.parquet"
    res = CliRunner().invoke(app, ["answers", "export", "--tier", "premium", "-o", str(out), "--warehouse", str(wh)])
    assert res.exit_code == 0, res.output
    exported = pl.read_parquet(out)
    by_premium = {rid for rid, tier, _, status, *_ in attempts if tier == "premium" and status == "ok"}
    assert sorted(exported["row_id"].to_list()) == sorted(by_premium)
    for r in exported.iter_rows(named=True):
        assert (r["response"], r["input_tokens"], r["output_tokens"]) == recorded(2, int(r["row_id"][1:]))
        assert r["messages"] == [{"role": "user", "content": r["prompt"]}]

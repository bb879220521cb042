"""Replay tiers: rows answered from recorded answers (a Parquet file), priced at the tier's list prices with the
recorded token counts, or counted (tokenizer) or estimated when absent; a request with no recorded answer fails
with the reason while the others are answered; the catalogue refuses a replay tier it cannot use."""

import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.backends import Request, make_backend
from models.backends.replay import ReplayBackend
from models.catalogue import Catalogue, CatalogueError, Tier, load_catalogue
from models.tokens import estimate_message_tokens, estimate_tokens
from sluice.stages.infer.answer import answer_partition

TRAVEL = "You are a travel agent."


def chat(first, last="What should I do next?"):
    return [{"role": "system", "content": TRAVEL}, {"role": "user", "content": first},
            {"role": "assistant", "content": "Noted."}, {"role": "user", "content": last}]


@pytest.fixture
def answers(tmp_path):
    """Prompt rows, a chat row (messages), a duplicate (first wins), a row with no counts, a null response."""
    table = pa.table({
        "prompt": ["What is the capital of France?", "Summarise the memo.", "Summarise the memo.",
                   None, "What  is the capital of\nFrance?", "Name a colour.", "A question nobody answered."],
        "system": [None, "Be brief.", None, None, None, None, None],
        "messages": [None, None, None, chat("I am flying to Paris."), None, None, None],
        "response": ["Paris.", "A short memo.", "A memo without a system prompt.", "Pack an umbrella.",
                     "Lyon (a later, second recording: never used).", "Blue.", None],
        "input_tokens": [12, 30, 25, 60, 99, None, 5],
        "output_tokens": [3, 5, 7, 4, 99, None, 5],
        "finish_reason": ["stop", "length", None, "stop", "stop", None, None],
    })
    path = tmp_path / "answers.parquet"
    pq.write_table(table, path)
    return path


def replay_tier(path, name="premium", **kw):
    return Tier(name=name, backend="replay", model="gpt-4o", answers=path, input_usd_per_1m=2.5,
                output_usd_per_1m=10.0, **kw)


def req(row_id, prompt, system=None, history=(), **kw):
    return Request(row_id=row_id, prompt=prompt, system=system, max_tokens=64, history=tuple(history), **kw)


def test_hits_match_prompt_system_and_conversation_after_whitespace_normalisation(answers):
    backend = make_backend(replay_tier(answers))
    assert isinstance(backend, ReplayBackend)
    turns = [("user", "I am flying to Paris."), ("assistant", "Noted.")]
    result = backend.complete([
        req("a", "  what is the capital of France?"),      # case differs: a different prompt
        req("b", "What is the capital of  France?\n"),      # whitespace only: the same prompt
        req("c", "Summarise the memo.", system="Be   brief. "),
        req("d", "Summarise the memo."),                      # no system prompt: the other recording
        req("e", "What should I do next?", system=TRAVEL, history=turns),
        req("f", "What should I do next?", system=TRAVEL, history=[("user", "I am flying to Tokyo."),
                                                                   ("assistant", "Noted.")]),
        req("g", "What should I do next?", system=TRAVEL),   # the last turn alone is not the conversation
    ])
    got = {c.row_id: c for c in result.completions}
    assert [c.row_id for c in result.completions] == list("abcdefg")
    assert not got["a"].ok
    assert (got["b"].text, got["b"].input_tokens, got["b"].output_tokens, got["b"].finish_reason) == (
        "Paris.", 12, 3, "stop")
    assert (got["c"].text, got["c"].finish_reason) == ("A short memo.", "length")
    assert (got["d"].text, got["d"].finish_reason) == ("A memo without a system prompt.", "stop")
    assert got["e"].text == "Pack an umbrella." and got["e"].input_tokens == 60
    assert not got["f"].ok and not got["g"].ok
    assert all(c.latency_ms == 0.0 and not c.usage_estimated for c in (got["b"], got["c"], got["e"]))
    assert result.billed_seconds is None
    assert result.details["replay_hits"] == 4 and result.details["replay_misses"] == 3


def test_a_miss_fails_its_row_with_the_reason_and_the_others_are_answered(answers):
    t = replay_tier(answers)
    result = make_backend(t).complete([req("r1", "Name a colour."), req("r2", "What is the meaning of life?"),
                                       req("r3", "A question nobody answered.")])
    ok, miss, null = result.completions
    assert ok.ok and ok.text == "Blue."
    reason = f"no recorded answer for this prompt in {answers} (tier premium)"
    # a recorded row with a null response is no answer either
    assert (miss.text, miss.error) == (None, reason) and (null.text, null.error) == (None, reason)


def test_duplicates_in_the_answers_file_first_wins(answers):
    (c,) = make_backend(replay_tier(answers)).complete([req("x", "What is the capital of France?")]).completions
    assert (c.text, c.input_tokens, c.output_tokens) == ("Paris.", 12, 3)


def test_missing_token_counts_are_estimated_and_flagged(answers):
    r = req("x", "Name a colour.")
    result = make_backend(replay_tier(answers)).complete([r, req("y", "What is the capital of France?")])
    est, rec = result.completions
    assert est.usage_estimated and not rec.usage_estimated
    assert est.input_tokens == estimate_message_tokens(r.messages()) and est.output_tokens == estimate_tokens("Blue.")
    assert result.details["rows_tokens_estimated"] == 1 and result.details["rows_tokens_recorded"] == 1


def test_missing_token_counts_are_counted_with_the_tiers_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["name a colour blue green red"] * 20,
                            trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]"]))
    folder = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": ["Name a colour."], "response": ["Blue green red."]}), path)
    # relative to the catalogue's folder, like `answers`
    cat = tmp_path / "cat.toml"
    cat.write_text('baseline = "premium"\n[[tiers]]\nname = "premium"\nbackend = "replay"\nmodel = "m"\n'
                   'answers = "answers.parquet"\ntokenizer = "tok"\ninput_usd_per_1m = 1\noutput_usd_per_1m = 2\n')
    t = load_catalogue(cat).tier("premium")
    assert t.tokenizer == str(folder)
    result = make_backend(t).complete([req("x", "Name  a colour.")])
    (c,) = result.completions
    hf = PreTrainedTokenizerFast.from_pretrained(folder)
    assert not c.usage_estimated and result.details["rows_tokens_counted"] == 1
    # no chat template: each message's tokens plus its framing, as providers bill it
    assert c.input_tokens == len(hf.encode("Name  a colour.", add_special_tokens=False)) + 4
    assert c.output_tokens == len(hf.encode("Blue green red.", add_special_tokens=False)) > 0


def test_replayed_rows_are_priced_at_list_prices_with_the_recorded_tokens(answers):
    t = replay_tier(answers)
    cat = Catalogue(baseline="premium", tiers=[t])
    partition = pa.table({"row_id": ["a", "b", "c"], "prompt": ["What is the capital of France?", "Name a colour.",
                                                                 "Unknown?"],
                          "system": [None, None, None], "max_tokens": [16, 16, 16]})
    table, billing = answer_partition(partition, t, cat, make_backend(t))
    rows = {r["row_id"]: r for r in table.to_pylist()}
    assert rows["a"]["cost_usd"] == pytest.approx((12 * 2.5 + 3 * 10.0) / 1e6)
    assert rows["a"]["price_basis"] == "list" and rows["a"]["model"] == "gpt-4o" and not rows["a"]["usage_estimated"]
    b = rows["b"]
    assert b["usage_estimated"] and b["cost_usd"] == pytest.approx((b["input_tokens"] * 2.5 + b["output_tokens"] * 10) / 1e6)
    assert rows["c"]["status"] == "failed" and rows["c"]["cost_usd"] == 0.0 and "no recorded answer" in rows["c"]["error"]
    assert billing["cost_usd"] == pytest.approx(rows["a"]["cost_usd"] + b["cost_usd"])
    assert billing["replay_hits"] == 2 and billing["replay_misses"] == 1 and billing["rows_usage_estimated"] == 1


def test_structured_requests_get_the_recorded_text_which_the_infer_stage_validates(tmp_path):
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": ["Classify: great product", "Classify: awful product"],
                             "response": ['{"sentiment": "positive"}', "negative, I think"]}), path)
    t = replay_tier(path)
    schema = json.dumps({"type": "object", "required": ["sentiment"], "properties": {"sentiment": {"type": "string"}}})
    partition = pa.table({"row_id": ["p", "n"], "prompt": ["Classify: great product", "Classify: awful product"],
                          "system": [None, None], "max_tokens": [16, 16], "response_schema": [schema, schema]})
    table, _ = answer_partition(partition, t, Catalogue(baseline="premium", tiers=[t]), make_backend(t))
    rows = {r["row_id"]: r for r in table.to_pylist()}
    assert rows["p"]["status"] == "ok" and json.loads(rows["p"]["parsed"]) == {"sentiment": "positive"}
    assert rows["n"]["status"] == "invalid"


def test_messages_as_json_text_a_history_column_and_unusable_rows(tmp_path, caplog):
    path = tmp_path / "answers.parquet"
    hist = json.dumps([["user", "Hi"], ["assistant", "Hello!"]])
    pq.write_table(pa.table({
        "prompt": [None, "And now?", None],
        "history": [None, hist, None],
        "messages": [json.dumps(chat("I am flying to Oslo.")), None,
                     json.dumps([{"role": "assistant", "content": "no user turn"}])],
        "response": ["Bring a coat.", "Now we talk.", "never"],
    }), path)
    backend = make_backend(replay_tier(path))
    assert backend.answers.unusable == 1 and "row 2: skipped" in caplog.text
    a, b = backend.complete([
        req("a", "What should I do next?", system=TRAVEL, history=[("user", "I am flying to Oslo."),
                                                                   ("assistant", "Noted.")]),
        req("b", "And now?", history=[("user", "Hi"), ("assistant", "Hello!")])]).completions
    assert (a.text, b.text) == ("Bring a coat.", "Now we talk.")


def test_the_answers_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": ["q"], "response": ["old"]}), path)
    t = replay_tier(path)
    assert make_backend(t).complete([req("x", "q")]).completions[0].text == "old"
    pq.write_table(pa.table({"prompt": ["q"], "response": ["new answer"]}), path)
    later = time.time() + 5
    os.utime(path, (later, later))
    assert make_backend(t).complete([req("x", "q")]).completions[0].text == "new answer"


def test_a_replay_tier_is_priced_like_an_api_tier(answers):
    t = replay_tier(answers)
    assert t.replayed and not t.self_hosted
    assert t.token_cost_usd(1_000_000, 1_000_000) == pytest.approx(12.5)
    # it may be the baseline (per-token prices)
    assert Catalogue(baseline="premium", tiers=[t]).baseline_tier is t


@pytest.mark.parametrize("fields, message", [
    ('', "a replay tier needs answers, input_usd_per_1m"),
    ('answers = "missing.parquet"', "answers file {dir}/missing.parquet does not exist"),
    ('answers = "no_response.parquet"', "has no response column"),
    ('answers = "no_prompt.parquet"', "has no prompt or messages column"),
    ('answers = "text_tokens.parquet"', "column `input_tokens` is string, expected integers"),
    ('answers = "not_parquet.parquet"', "is not a readable Parquet file"),
    ('answers = "ok.parquet"\nbatch_api = "auto"\nbatch_input_usd_per_1m = 1\nbatch_output_usd_per_1m = 1',
     "a replay tier answers at once at list prices: no `batch_api`"),
])
def test_catalogue_refuses_a_replay_tier_it_cannot_use_naming_tier_and_problem(tmp_path, fields, message):
    pq.write_table(pa.table({"prompt": ["q"]}), tmp_path / "no_response.parquet")
    pq.write_table(pa.table({"system": ["s"], "response": ["a"]}), tmp_path / "no_prompt.parquet")
    pq.write_table(pa.table({"prompt": ["q"], "response": ["a"], "input_tokens": ["12"]}),
                   tmp_path / "text_tokens.parquet")
    pq.write_table(pa.table({"prompt": ["q"], "response": ["a"]}), tmp_path / "ok.parquet")
    (tmp_path / "not_parquet.parquet").write_text("prompt,response\nq,a\n")
    prices = "" if not fields else "input_usd_per_1m = 1\noutput_usd_per_1m = 2\n"
    cat = tmp_path / "cat.toml"
    cat.write_text(f'baseline = "mid"\n[[tiers]]\nname = "mid"\nbackend = "replay"\nmodel = "m"\n{fields}\n{prices}')
    with pytest.raises(CatalogueError) as err:
        load_catalogue(cat)
    assert str(cat) in str(err.value) and "tier 'mid'" in str(err.value)
    assert message.format(dir=tmp_path) in str(err.value)


def test_answers_and_tokenizer_belong_to_replay_tiers(tmp_path):
    with pytest.raises(ValueError, match="`answers` and `tokenizer` are for replay tiers"):
        Tier(name="premium", backend="openai", model="m", base_url="http://x", input_usd_per_1m=1,
             output_usd_per_1m=1, answers=tmp_path / "a.parquet")

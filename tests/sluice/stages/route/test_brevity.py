import polars as pl

from models.tokens import count_word_pieces as estimate_tokens
from sluice.stages.route.brevity import MAX_TOKENS_BY_INTENT, apply_brevity, trim_prompt

DISCLAIMER = "This message is confidential and intended only for its recipient."


def test_whitespace_runs_and_blank_lines_collapse_but_indentation_and_code_stay():
    text = "Summarise   this:\t\tthe  report.   \n\n\n\nThanks\n    indented   line\n```\nx  =  1\n\n\n\ny = 2\n```"
    assert trim_prompt(text) == ("Summarise this: the report.\n\nThanks\n    indented line\n"
                                 "```\nx  =  1\n\n\n\ny = 2\n```")
    assert trim_prompt("already tidy.\nTwo lines.") == "already tidy.\nTwo lines."
    assert trim_prompt(None) is None


def test_repeated_lines_are_content_by_default():
    chorus = "Fall down his eyes and swim through his dreams\nFall down his eyes and swim through his dreams"
    assert trim_prompt(chorus) == chorus
    code = "print(format_row(a,  b))  # again\nprint(format_row(a,  b))  # again"
    assert trim_prompt(code) == code  # code-like lines keep their spacing too


def test_boilerplate_repeated_anywhere_is_dropped_only_when_asked():
    text = f"Reply to A.\n{DISCLAIMER}\nyes\nReply to B.\n{DISCLAIMER}\nyes"
    assert trim_prompt(text) == text
    assert trim_prompt(text, drop_repeated_lines=True) == f"Reply to A.\n{DISCLAIMER}\nyes\nReply to B.\nyes"
    data = "0.62745098, 0.62745098, 0.62745098, 0.62745098, 0.62745098,\n" * 2
    assert trim_prompt(data, drop_repeated_lines=True) == data.strip("\n")  # data rows are never dropped


def test_apply_brevity_reports_tokens_saved_and_caps_max_tokens_by_intent():
    rows = pl.DataFrame({
        "prompt": [f"Classify   this ticket:   refund please\n{DISCLAIMER}\n\n\n\n{DISCLAIMER}", "hello", "hi   there"],
        "max_tokens": [None, None, 999],
    })
    out, report = apply_brevity(rows)
    assert report.rows == 3 and report.rows_trimmed == 2
    assert report.tokens_saved == 2  # two of the three extra blank lines; whitespace inside a line is not a token
    out2, report2 = apply_brevity(rows, drop_repeated_lines=True)
    assert out2["prompt"][0].count(DISCLAIMER) == 1
    assert report2.tokens_saved >= report.tokens_saved + estimate_tokens(DISCLAIMER)
    assert report.tokens_before - report.tokens_after == report.tokens_saved
    assert out["max_tokens"].to_list() == [MAX_TOKENS_BY_INTENT["classification"], MAX_TOKENS_BY_INTENT["chit-chat"],
                                           999]
    assert report.rows_capped == 2
    assert report.max_output_tokens_saved == (256 - MAX_TOKENS_BY_INTENT["classification"]) + (
        256 - MAX_TOKENS_BY_INTENT["chit-chat"])
    code, _ = apply_brevity(pl.DataFrame({"prompt": ["Write a Python function to merge two lists."]}))
    assert code["max_tokens"].to_list() == [256]  # a cap never raises a row above the run's default


def _rows():
    return pl.DataFrame({
        "row_id": ["a", "b", "c", "d"],
        "prompt": ["Summarise  this:\n\n\n\nthe report.", "already tidy.", "Dup\n\n\n\nof a", "Bad\n\n\n\nrow"],
        "system": [None] * 4, "max_tokens": [None] * 4,
        "status": ["pending", "pending", "duplicate", "quarantined"], "error": [None] * 4,
    })


def test_trim_pending_trims_only_rows_that_will_be_sent_and_counts_what_it_saved():
    from sluice.stages.route.brevity import trim_pending

    rows = _rows()
    out = trim_pending(rows)
    assert out["prompt"].to_list() == ["Summarise this:\n\nthe report.", "already tidy.", *rows["prompt"][2:]]
    assert out["untrimmed_prompt"].to_list() == [rows["prompt"][0], None, None, None]
    # two line breaks fewer, counted as the module counts them (word pieces)
    saved = estimate_tokens(rows["prompt"][0]) - estimate_tokens(out["prompt"][0])
    assert saved == 2 and out["trim_tokens_saved"].to_list() == [2, 0, None, None]


def test_the_route_stage_trims_when_the_catalogue_says_so_and_changes_nothing_when_it_does_not():
    from models.catalogue import Catalogue
    from sluice.config import load_settings
    from sluice.stages.context import StageContext
    from sluice.stages.route import run

    tiers = [{"name": n, "backend": "openai", "model": n, "base_url": "http://x", "input_usd_per_1m": 1.0,
              "output_usd_per_1m": 2.0} for n in ("small", "premium")]
    settings = load_settings()
    table = _rows().to_arrow()
    plain = run(table, settings, StageContext(catalogue=Catalogue(baseline="premium", tiers=tiers)))
    off = run(table, settings, StageContext(catalogue=Catalogue(baseline="premium", tiers=tiers, trim=False)))
    on = run(table, settings, StageContext(catalogue=Catalogue(baseline="premium", tiers=tiers, trim=True)))
    assert off.equals(plain) and "trim_tokens_saved" not in off.column_names  # off: nothing changes
    assert on["trim_tokens_saved"].to_pylist() == [2, 0, None, None]
    assert on["prompt"].to_pylist()[0] == "Summarise this:\n\nthe report."
    assert on.drop_columns(["prompt", "untrimmed_prompt", "trim_tokens_saved", "route_reason", "route_score"]).equals(
        off.drop_columns(["prompt", "route_reason", "route_score"]))

import polars as pl

from sluice.brevity import MAX_TOKENS_BY_INTENT, apply_brevity, estimate_tokens, trim_prompt

DISCLAIMER = "This message is confidential and intended only for its recipient."


def test_whitespace_runs_and_blank_lines_collapse_but_indentation_and_code_stay():
    text = "Summarise   this:\t\tthe  report.   \n\n\n\nThanks\n    indented   line\n```\nx  =  1\n\n\n\ny = 2\n```"
    assert trim_prompt(text) == ("Summarise this: the report.\n\nThanks\n    indented line\n"
                                 "```\nx  =  1\n\n\n\ny = 2\n```")
    assert trim_prompt("already tidy.\nTwo lines.") == "already tidy.\nTwo lines."
    assert trim_prompt(None) is None


def test_repeated_boilerplate_lines_are_kept_once_short_repeats_are_kept():
    text = f"Reply to A.\n{DISCLAIMER}\nyes\nReply to B.\n{DISCLAIMER}\nyes"
    assert trim_prompt(text) == f"Reply to A.\n{DISCLAIMER}\nyes\nReply to B.\nyes"


def test_apply_brevity_reports_tokens_saved_and_caps_max_tokens_by_intent():
    rows = pl.DataFrame({
        "prompt": [f"Classify   this ticket:   refund please\n{DISCLAIMER}\n{DISCLAIMER}", "hello", "hi   there"],
        "max_tokens": [None, None, 999],
    })
    out, report = apply_brevity(rows)
    assert report.rows == 3 and report.rows_trimmed == 2
    assert report.tokens_saved == estimate_tokens(DISCLAIMER) + 1  # the repeat and its line break
    assert report.tokens_before - report.tokens_after == report.tokens_saved
    assert out["max_tokens"].to_list() == [MAX_TOKENS_BY_INTENT["classification"], MAX_TOKENS_BY_INTENT["chit-chat"],
                                           999]
    assert report.rows_capped == 2

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

"""A scripted judge for the loopback OpenAI server (`OpenAICompatServer(responder=...)`): it reads the judge's
question (sluice/stages/review/judge.py), finds the candidate answer and where it stands (Answer "A" or "B"), and
answers what a test's rule says for it. Requests that are not a judge's question get the server's default answer.

Markers in the cheap answer pick the verdict with `marker_verdicts`:

    [good]     ACCEPTABLE in both orders
    [bad]      UNACCEPTABLE in both orders
    [biased]   ACCEPTABLE wherever the candidate stands first, else UNACCEPTABLE (a position-biased judge: a split)
    [garbled]  "Acceptable, mostly." (not a verdict: unparseable)
    [down]     HTTP 500 (the judge fails)
"""

from __future__ import annotations

import re
from collections.abc import Callable

_QUESTION = re.compile(r"\[Answer A\]\n(?P<a>.*?)\n\n\[Answer B\]\n(?P<b>.*?)\n\nAnswer A is the (?P<a_is>candidate|reference)",
                       re.DOTALL)


def judge_question(messages: list[dict]) -> tuple[str, str, str] | None:
    """(candidate, reference, where the candidate stands: "A" or "B") of a judge's question, else None."""
    user = [m for m in messages if m.get("role") == "user"]
    m = _QUESTION.search(str(user[-1].get("content", ""))) if user else None
    if m is None:
        return None
    if m["a_is"] == "candidate":
        return m["a"], m["b"], "A"
    return m["b"], m["a"], "B"


def marker_verdicts(candidate: str, position: str) -> str | int:
    if "[down]" in candidate:
        return 500
    if "[garbled]" in candidate:
        return "Acceptable, mostly."
    if "[biased]" in candidate:
        return "ACCEPTABLE" if position == "A" else "UNACCEPTABLE"
    if "[bad]" in candidate:
        return "UNACCEPTABLE\nThe candidate misses the point."
    return "ACCEPTABLE"


def scripted_judge(decide: Callable[[str, str], str | int] = marker_verdicts):
    """A server `responder`: `decide(candidate, position)` for a judge's question, the default answer otherwise."""
    def respond(messages: list[dict], model: str) -> str | int | None:
        asked = judge_question(messages)
        return None if asked is None else decide(asked[0], asked[2])
    return respond

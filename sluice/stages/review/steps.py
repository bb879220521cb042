"""Re-computing a worked answer step by step: every `expression = value` it writes, in symbols or in words.

`cascade.answer_signals` checks the calculations written in the compact forms (`<<48/2=24>>`, `48 / 2 = 24`). A
worked answer also writes steps with dollars and units between the numbers (`8 x $5 = $40`, `2 miles / 4 miles per
hour = 0.5 hours`), percentages (`25% of 2000 = 500`), words (`16 minus 3 is 13`, `9 times 2 is 18`), escaped
operators (`1,150 \\* 50`) and chains (`2 * 2 + 8 = 12 + 1 = 13`). Each line is normalised (currency signs and
thousands separators dropped, `x`/`×`/`÷`/words read as operators, `N%` as N/100, the unit words between a number
and an operator dropped, algebra such as `7x` left unread) and every pair of neighbouring `=` sides is evaluated.

    steps_checked              distinct steps re-computed (annotations and written steps together)
    steps_wrong                steps whose stated value is not their value (beyond rounding to its own decimals)
    steps_rounded              steps off only by rounding to the stated decimals (0.33 for 1/3)
    steps_unit_conversion      steps off by a unit factor (7, 12, 24, 60, 100, 1000, 3600: 2 x 1 hour = 120 min)
    any_step_wrong             at least one wrong step
    final_not_last_step        the final answer differs from the value of the last step
    final_off_by_rounding      ... and by less than 1 (rounded or truncated at the end)
    final_unseen               the final answer appears nowhere before it: not in the question, not in the body
    steps_per_given_number     steps / (1 + numbers stated in the question): work done for the question's size
    answer_to_question_length  log(1 + answer chars) - log(1 + question chars)
    truncated                  no final answer and the text stops mid-sentence (cut off by a token limit)
    given_numbers              numbers stated in the question (its size)

On GSM8K (Mixtral-8x7B's recorded answers, 5-fold out of fold) they raise the verifier's AUROC for a wrong answer
from 0.785 to about 0.80 (`bench/results/cascade_signals.md`).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from sluice.stages.review.cascade import _arithmetic
from sluice.stages.review.checks import numbers_in

STEP_SIGNALS = ["steps_checked", "steps_wrong", "steps_rounded", "steps_unit_conversion", "any_step_wrong",
                "final_not_last_step", "final_off_by_rounding", "final_unseen", "steps_per_given_number",
                "answer_to_question_length", "truncated", "given_numbers"]

_ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
_FINAL = re.compile(r"(?:####|answer is:?|answer:)\s*\$?\s*(-?\d[\d,]*\.?\d*)", re.IGNORECASE)
_AHEAD = r"(?=\s*\$?\s*\(?\s*\d)"  # a word is an operator only when a number follows it
_WORD_OPS = [(re.compile(r"(?<=[\d)])\s*(?:multiplied by|times)\b" + _AHEAD, re.I), " * "),
             (re.compile(r"(?<=[\d)])\s*(?:divided by|over)\b" + _AHEAD, re.I), " / "),
             (re.compile(r"(?<=[\d)])\s*plus\b" + _AHEAD, re.I), " + "),
             (re.compile(r"(?<=[\d)])\s*minus\b" + _AHEAD, re.I), " - "),
             (re.compile(r"\b(?:is|equals|makes|gives)\b" + _AHEAD, re.I), " = ")]
_TIMES = re.compile(r"(?<=[\d)])\s*[xX×·]\s*(?=[\d(])")
_UNITS = re.compile(r"(?<=[\d%)])\s*(?:[a-zA-Z]+\.?\s*){1,3}(?=\s*[-+*/=)])")  # 2 miles / 4 miles per hour =
_TAIL = re.compile(r"[-+*/()\d.\s]*$")  # the expression that ends a side
_HEAD = re.compile(r"^[-+*/()\d.\s]*")  # ... and the one that starts the next
_LEAD = re.compile(r"^\s*\d+(?:\.\d+)?(?=\s*[-+*/])")
_CONVERSIONS = (7, 12, 24, 60, 100, 1000, 3600)


def _normalise(line: str) -> str:
    s = _ANNOTATION.sub("", line)  # annotations are checked on their own
    s = s.replace("\\*", "*").replace("÷", "/").replace("−", "-").replace("$", "")
    s = re.sub(r"\b\d+(?:\.\d+)?[a-zA-Z]\b", " ? ", s)  # 7x, 6s: algebra, not arithmetic
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = _TIMES.sub(" * ", s)
    for pattern, op in _WORD_OPS:
        s = pattern.sub(op, s)
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of\b", r"(\1/100) *", s)
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", s)
    s = _UNITS.sub(" ", s)
    return _TIMES.sub(" * ", s)


def _trim(expr: str) -> str:
    e = expr.strip()
    while e.count("(") > e.count(")") and e.startswith("("):
        e = e[1:]
    while e.count(")") > e.count("(") and e.endswith(")"):
        e = e[:-1]
    return e.rstrip("+-*/. ").lstrip(")*/+ ")


def worked_steps(text: str) -> list[tuple[float | None, float | None, str]]:
    """(value of the left side, value stated on the right, the right side's text) for each step of an answer:
    annotations first (either side None when it does not parse), then the steps written in the text."""
    out: list[tuple[float | None, float | None, str]] = [
        (_arithmetic(m.group(1)), _arithmetic(m.group(2)), m.group(2)) for m in _ANNOTATION.finditer(text)]
    for line in text.splitlines():
        sides = _normalise(line).split("=")
        for left, right in zip(sides, sides[1:]):
            lhs, rhs = _trim(_TAIL.search(left).group()), _trim(_HEAD.match(right).group())
            if not lhs or not rhs or not re.search(r"\d\s*[-+*/]\s*\(?\s*\d", lhs):
                continue  # not a calculation: a restated number, or nothing we can read
            a, b = _arithmetic(lhs), _arithmetic(rhs)
            if a is None or b is None:
                continue
            lead = _LEAD.match(rhs)
            if lead and _close(a, float(lead.group())):
                b = float(lead.group())  # `... = 96 / 3 = 32`: the chain restates the result, then goes on
            out.append((a, b, rhs))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a)) + 1e-9


def _decimals(stated: str) -> int:
    m = re.fullmatch(r"\s*-?\d*\.?(\d*)\s*\.?\s*", stated)
    return len(m.group(1)) if m else 6


def step_signals(prompts: Sequence[str | None], responses: Sequence[str | None]) -> np.ndarray:
    """(n, len(STEP_SIGNALS)) re-computed steps of each answer, against its question (module docstring)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} answers")
    rows = []
    for prompt, text in zip(prompts, responses):
        prompt, text = prompt or "", text or ""
        steps = worked_steps(text)
        seen: set[tuple[float, float]] = set()
        n = wrong = rounded = converted = 0
        last = None
        for a, b, stated in steps:
            if a is None or b is None:
                n, wrong = n + 1, wrong + 1
                continue
            last = b
            if (round(a, 6), round(b, 6)) in seen:  # the annotation and its written step are one step
                continue
            seen.add((round(a, 6), round(b, 6)))
            n += 1
            if _close(a, b):
                continue
            if b != 0 and any(_close(a, b * r) or _close(b, a * r) for r in _CONVERSIONS):
                converted += 1
            elif abs(a - b) <= 0.5 * 10 ** -_decimals(stated) + 1e-9 or abs(a - b) <= 0.005 * abs(a):
                rounded += 1
            else:
                wrong += 1
        marks = _FINAL.findall(text)
        final = numbers_in(marks[-1])[0] if marks and numbers_in(marks[-1]) else None
        given = set(numbers_in(prompt))
        body = set(numbers_in(text[:text.rfind("####")] if "####" in text else text))
        off = final is not None and last is not None and not _close(final, last)
        unseen = final is not None and final not in body | given and not any(
            b is not None and _close(b, final) for _, b, _ in steps)
        rows.append([n, wrong, rounded, converted, wrong > 0, off, off and abs(final - last) < 1, unseen,
                     n / (1 + len(given)), math.log1p(len(text)) - math.log1p(len(prompt)),
                     final is None and not text.rstrip().endswith((".", "!")), len(given)])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(STEP_SIGNALS))

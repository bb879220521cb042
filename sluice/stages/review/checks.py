"""Answer checks that read the question too: does the answer use the numbers it was given?

`cascade.answer_signals` reads an answer alone (its arithmetic, its final line, its hedges). A worked answer can
be arithmetically clean and still wrong because it skipped a quantity the question states, invented an operand, or
stopped at a number it was given. These checks compare the answer with its question:

    question_numbers_unused   numbers stated in the question that never appear in the answer
    question_number_coverage  the share of the question's numbers the answer uses (1 when it states none)
    final_in_question         the final answer is one of the question's own numbers (a copied quantity)
    final_magnitude           log10(1 + |final answer|) (0 without one)
    unsupported_operands      the share of operands in the answer's calculations that come neither from the
                              question (digits or number words) nor from an earlier result nor a small set of
                              unit constants (12, 24, 60, 100, ...)
    final_marks               how many final-answer markers (`####`, "the answer is") the answer carries

On GSM8K (Mixtral-8x7B's recorded answers, graded against the references, 5-fold out of fold) adding them to the
answer-only checks raises the verifier's AUROC for a wrong answer from 0.758 to 0.784, and the accuracy of a
cascade escalating 45% of rows from 0.831 to 0.839 (`bench/results/cascade_signals.md`). Each alone is weak (AUROC
0.55-0.60); together they add what the answer alone cannot show.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

QUESTION_SIGNALS = ["question_numbers_unused", "question_number_coverage", "final_in_question", "final_magnitude",
                    "unsupported_operands", "final_marks"]

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*\.?\d*")
_FINAL = re.compile(r"(?:####|answer is:?|answer:)\s*\$?\s*(-?\d[\d,]*\.?\d*)", re.IGNORECASE)
_STEP = re.compile(r"(\d[\d.,]*(?:\s*[-+*/x×]\s*\d[\d.,]*)+)\s*=\s*\$?(-?\d[\d,]*\.?\d*)")
_WORDS = {"half": 0.5, "twice": 2, "double": 2, "triple": 3, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
          "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15,
          "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "dozen": 12, "quarter": 0.25}
# operands a worked answer may bring without the question stating them: units and the usual conversions
_CONSTANTS = {0.5, 1.0, 2.0, 7.0, 10.0, 12.0, 24.0, 60.0, 100.0, 1000.0}


def numbers_in(text: str) -> list[float]:
    """Every number written in digits in `text` (thousands separators allowed), in order."""
    out = []
    for m in _NUMBER.findall(text):
        try:
            out.append(float(m.replace(",", "").rstrip(".")))
        except ValueError:
            continue
    return out


def _final(text: str) -> tuple[float | None, int]:
    marks = _FINAL.findall(text)
    if not marks:
        return None, 0
    try:
        return float(marks[-1].replace(",", "").rstrip(".")), len(marks)
    except ValueError:
        return None, len(marks)


def question_signals(prompts: Sequence[str | None], responses: Sequence[str | None]) -> np.ndarray:
    """(n, len(QUESTION_SIGNALS)) checks of each answer against its question (module docstring)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} answers")
    rows = []
    for prompt, text in zip(prompts, responses):
        prompt, text = prompt or "", text or ""
        given = set(numbers_in(prompt))
        used = set(numbers_in(text))
        words = {v for w, v in _WORDS.items() if re.search(rf"\b{w}\b", prompt, re.IGNORECASE)}
        final, marks = _final(text)
        known = given | words | _CONSTANTS
        operands = unsupported = 0
        for m in _STEP.finditer(text):
            ops = numbers_in(m.group(1))
            operands += len(ops)
            unsupported += sum(1 for o in ops if o not in known)
            known.update(numbers_in(m.group(2)))
        rows.append([
            len(given - used),
            len(given & used) / len(given) if given else 1.0,
            final is not None and final in given,
            math.log10(1.0 + abs(final)) if final is not None else 0.0,
            unsupported / operands if operands else 0.0,
            marks,
        ])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(QUESTION_SIGNALS))

"""Shape comparison of a shadow pair: is the cheap answer acceptable, judged against the premium one? Pure, no I/O.

A shadow pair is one row answered by a cheap tier and, for the shadow sample, by the premium tier too
(sluice/stages/review/shadow.py). Where the answers have a shape, the shapes are compared, and the premium answer
stands in for the reference:

    json    the row has a `response_schema` (a JSON Schema or a choice list): both answers are validated under it
            (sluice/contracts/answers.py) and their parsed values must be equal (1 == 1.0, true is not 1, lists
            in order, objects with the same keys); the row's grader is `json` (no schema): the JSON in each answer
            (sluice/contracts/grading.py `parse_json_answer`) compared the same way
    number  the answers' final numbers are equal (the grading module's number extraction: after "####", in
            \\boxed{}, after "the answer is", else the last number)
    choice  the answers' option letters A-E are equal (the grading module's `choice_letter`)

The shape comes from the row (its schema; else its grader, when that is number, choice or json: the dataset's
`grader` column or the run's `--grader`, which names the answer's shape even where no reference is given), else
from the premium answer itself when the whole answer is a number, one option letter, or a JSON object or array
(the grading module's `auto` rules). Anything else is free text: the verdict is None (a judge is needed), even
when the two texts are equal, so that which pairs are judged never depends on the verdict (counting only the
identical free-text pairs would bias an estimate upwards).

Verdicts: True / False, or None when the pair cannot be judged by shape: free text, no premium answer, or a
premium answer without the shape (no number in it, invalid under the schema). A cheap answer without the shape
(no answer, no number, invalid JSON) is not acceptable: False, with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sluice.contracts.answers import validate_answer
from sluice.contracts.grading import grade, json_equal, parse_json_answer, resolve_grader

SHAPES = ("json", "number", "choice")
# an answer that is only an option letter, any case: "b", "(b)", "b." (the grader reads a lone lower-case letter in
# running text as a word, but an answer of one letter is the letter)
_LONE_LETTER = re.compile(r"\(? ?[A-Ea-e] ?\)?[.:]?")  # matched against the answer with its spaces squashed


@dataclass(frozen=True)
class Verdict:
    acceptable: bool | None  # None: not judgeable by shape
    shape: str | None  # json | number | choice; None: free text (or no premium answer)
    reason: str | None = None  # why not acceptable, or why not judged


def answer_shape(premium: str | None, schema: str | None = None, grader: str | None = None) -> str | None:
    """The shape a pair is compared by (module docstring): json, number, choice, or None (free text)."""
    if schema:
        return "json"
    hint = (grader or "").strip().lower()
    if hint in SHAPES:
        return hint
    if premium is None or not premium.strip():
        return None
    kind = resolve_grader(premium, "auto")
    return kind if kind in SHAPES else None


def same_json(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1; lists in order; objects with the same keys and equal values
    (the grader's own comparison)."""
    return json_equal(a, b)


def _json_values(cheap: str | None, premium: str, schema: str | None) -> tuple[object, object, str | None, bool]:
    """(cheap value, premium value, why not, the premium side is the one at fault)."""
    if schema:
        want, why = validate_answer(premium, schema)
        if want is None:
            return None, None, f"the premium answer is not valid under the schema: {why}", True
        got, why = validate_answer(cheap, schema)
        if got is None:
            return None, None, why, False
        return json.loads(got), json.loads(want), None, False
    want, why = parse_json_answer(premium)
    if why:
        return None, None, "the premium answer is not valid JSON", True
    if cheap is None or not cheap.strip():
        return None, None, "no answer", False
    got, why = parse_json_answer(cheap)
    return got, want, why, False


def compare_shapes(cheap: str | None, premium: str | None, schema: str | None = None,
                   grader: str | None = None) -> Verdict:
    """The verdict on the cheap answer of a shadow pair, by the pair's shape (module docstring)."""
    if premium is None or not premium.strip():
        return Verdict(None, None, "no premium answer to compare with")
    shape = answer_shape(premium, schema, grader)
    if shape is None:
        return Verdict(None, None, "free text: needs a judge")
    if shape == "json":
        got, want, why, premium_at_fault = _json_values(cheap, premium, schema)
        if why:
            return Verdict(None if premium_at_fault else False, shape, why)
        if same_json(got, want):
            return Verdict(True, shape)
        return Verdict(False, shape, "the parsed values differ")
    if shape == "choice" and cheap is not None and _LONE_LETTER.fullmatch(" ".join(cheap.split())):
        cheap = cheap.upper()
    try:
        ok, why = grade(cheap, premium, shape)  # the premium answer as the reference
    except Exception as exc:  # noqa: BLE001 - a comparison never stops a landing: the pair stays unjudged
        return Verdict(None, shape, f"comparison failed: {type(exc).__name__}")
    if ok is None:
        return Verdict(None, shape, f"the premium answer has no {shape}: {why}")
    return Verdict(bool(ok), shape, None if ok else why)

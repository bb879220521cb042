"""Reference grading: is a landed answer the correct one? Pure functions, no I/O.

A dataset may carry a `reference` column (the correct answer) and a `grader` column (how to compare); a run may
set a default grader (`sluice run --grader`, `RequestDefaults.grader`). `grade(answer, reference, grader)` returns
(correct, reason):

    correct  True / False, or None when the row cannot be graded: no reference (null or blank), or a reference
             the grader cannot use (say, `number` with a reference holding no number)
    reason   why the answer is wrong or why the row is not graded; None when it is right or has no reference

An answer that is null, blank or malformed (no number in it, no option letter, JSON that does not parse) is wrong,
with the reason: grading never raises on an answer.

Graders:
    auto      picks from the reference's shape: a number (also GSM8K's "... #### 42") -> number; one option letter
              A-E ("B", "(B)", "b.") -> choice; a JSON object or array -> json; anything else -> exact
    exact     the whole answer equals the reference, both normalised: Unicode form (NFKC), case, runs of
              whitespace, surrounding quotes or backticks, trailing punctuation (. ! ? , ; :)
    number    the answer's number equals the reference's, numerically: the number after the answer's last "####"
              (GSM8K), else in its last \\boxed{}, else right after its last "answer is" / "answer:", else its last
              number; "$1,234.50", "-7", "42." and "3.0" (= 3) read as numbers, "50%" as 50
    choice    the answer's option letter equals the reference's: an explicit "answer: C" / "the answer is (C)"
              first, then the first "(C)", "C." or "C)", then the first standalone capital A-E; an "A" followed by a
              lowercase word ("A good option ...") is read as the article, not an option
    contains  the normalised reference (case, whitespace, trailing punctuation) occurs in the normalised answer
    json      the answer parsed as JSON (a ```json fence, or the first {...} / [...] in the text, is accepted)
              equals the reference's value; for a reference object, only the fields the reference names are
              compared (recursively for nested objects), extra fields in the answer are fine
"""

from __future__ import annotations

import json
import re
import unicodedata
from decimal import Decimal

GRADERS = ("auto", "exact", "number", "choice", "contains", "json")

# a number: optional sign (not a hyphen inside a word or range: "3-5" is 3 and 5), optional $, thousands commas
_NUMBER = re.compile(r"(?<![\w.])(-|−)?\s?\$?\s?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![\d])")
_GSM8K = re.compile(r"####\s*(.*)", re.S)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# Patterns matched against text whose whitespace runs are single spaces (`_squash`), with at most one optional
# space between optional parts: no two unbounded repeats meet, so matching stays linear on any answer.
_WHOLE_NUMBER = re.compile(r" ?(-|−)? ?\$? ?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+) ?%? ?\.? ?")
_LETTER_REF = re.compile(r" ?\(? ?([A-Ea-e]) ?\)? ?[.:]? ?")
# "the answer is 42", "Final answer: $1,200" (the number must follow at once: "the answer is that ..." is not one)
_ANSWER_IS = re.compile(r"\b(?i:answer)(?: ?(?i:is|:|=|-))+ ?(?=[-−$.\d])")
# "answer: C", "The answer is (C)", "Answer - **c**." (a lower-case letter only where it cannot be a word)
_LETTER = r"[(\[*]? ?([A-E]|[a-e](?= ?[)\].,:;*]| ?$)) ?[)\]*]?(?![\w'])"
_EXPLICIT = [re.compile(rf"\b(?i:{marker})(?: ?(?i:is|:|=|-))?(?: ?(?i:option))? ?:? ?{_LETTER}")
             for marker in ("answer", "option|choice")]
_MARKED = re.compile(r"\(([A-E])\)|(?<![\w'])([A-E])[.)](?![\w'])")
_BARE = re.compile(r"(?<![\w'])([A-E])(?![\w'])")
_ARTICLE = re.compile(r" (?!is\b|was\b)[a-z]")
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
_JSON_STARTS = 20  # at most this many "{" / "[" are tried as the start of the answer's JSON
_TRAILING = ".!?,;:"
_QUOTES = "\"'`“”‘’"


def check_grader(name: str | None) -> str | None:
    """A grader name as written (any case, surrounding spaces), or ValueError naming the choices; None stays None
    (the dataset's default, else auto)."""
    if name is None:
        return None
    clean = str(name).strip().lower()
    if clean not in GRADERS:
        raise ValueError(f"grader {str(name)[:40]!r} is not one of {', '.join(GRADERS)}")
    return clean


def resolve_grader(reference: str | None, grader: str | None = None) -> str | None:
    """The grader that will compare against `reference` (`auto` or None resolved by the reference's shape); None
    without a reference."""
    if reference is None or not reference.strip():
        return None
    grader = check_grader(grader) or "auto"
    if grader != "auto":
        return grader
    ref = reference.strip()
    if _reference_number(ref, strict=True) is not None:
        return "number"
    if _LETTER_REF.fullmatch(_squash(ref)):
        return "choice"
    if ref[0] in "{[":
        try:
            value = json.loads(ref)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; RecursionError: nested too deep
            value = None
        if isinstance(value, (dict, list)):
            return "json"
    return "exact"


def grade(answer: str | None, reference: str | None, grader: str | None = "auto") -> tuple[bool | None, str | None]:
    """(correct, reason) of `answer` against `reference` under `grader` (module docstring)."""
    kind = resolve_grader(reference, grader)
    if kind is None:
        return None, None
    assert reference is not None
    if answer is None or not str(answer).strip():
        return False, "no answer"
    return _GRADE[kind](str(answer), reference.strip())


# --- graders ----------------------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def normalise(text: str) -> str:
    """Unicode form, case and whitespace (what `contains` compares)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalise_exact(text: str) -> str:
    """`normalise`, then surrounding quotes and trailing punctuation off (what `exact` compares)."""
    text = normalise(text)
    previous = None
    while text != previous:
        previous = text
        text = text.rstrip(_TRAILING).strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
    return text


def _exact(answer: str, reference: str) -> tuple[bool, str | None]:
    if normalise_exact(answer) == normalise_exact(reference):
        return True, None
    return False, f"expected {_clip(reference)!r}, got {_clip(answer)!r}"


def _contains(answer: str, reference: str) -> tuple[bool | None, str | None]:
    ref = normalise(reference).rstrip(_TRAILING).strip()
    if not ref:
        return None, "reference is only punctuation"
    if ref in normalise(answer):
        return True, None
    return False, f"{_clip(reference)!r} not found in the answer"


def _to_decimal(sign: str | None, digits: str) -> Decimal:
    value = Decimal(digits.replace(",", ""))
    return -value if sign else value


def _answer_number(text: str) -> Decimal | None:
    """The number the answer gives: after its last "####", else in its last \\boxed{...}, else right after its last
    "answer is" / "answer:", else its last number."""
    marked = text.rsplit("####", 1)
    if len(marked) == 2:
        found = _NUMBER.findall(marked[1])
        if found:
            return _to_decimal(*found[0])
    for boxed in reversed(_BOXED.findall(text)):
        found = _NUMBER.findall(boxed)
        if found:
            return _to_decimal(*found[0])
    flat = _squash(text)
    said = None
    for said in _ANSWER_IS.finditer(flat):
        pass
    if said is not None:
        found = _NUMBER.search(flat, said.end(), said.end() + 40)
        if found:
            return _to_decimal(*found.groups())
    found = _NUMBER.findall(text)
    return _to_decimal(*found[-1]) if found else None


def _reference_number(text: str, strict: bool = False) -> Decimal | None:
    """A reference's number: after a GSM8K "####", or the whole reference; `strict` (auto): nothing else; else the
    last number in it."""
    gsm = _GSM8K.search(text)
    if gsm:
        whole = _WHOLE_NUMBER.fullmatch(_squash(gsm.group(1)))
        return _to_decimal(*whole.groups()) if whole else None
    whole = _WHOLE_NUMBER.fullmatch(_squash(text))
    if whole:
        return _to_decimal(*whole.groups())
    if strict:
        return None
    return _answer_number(text)


def _number(answer: str, reference: str) -> tuple[bool | None, str | None]:
    want = _reference_number(reference)
    if want is None:
        return None, f"reference {_clip(reference)!r} holds no number"
    got = _answer_number(answer)
    if got is None:
        return False, "no number in the answer"
    if got == want:
        return True, None
    return False, f"expected {_show(want)}, got {_show(got)}"


def choice_letter(text: str) -> str | None:
    """The option letter an answer gives (module docstring), upper case, or None."""
    text = _squash(text)
    for pattern in _EXPLICIT:
        explicit = pattern.search(text)
        if explicit:
            return explicit.group(1).upper()
    marked = _MARKED.search(text)
    if marked:
        return marked.group(1) or marked.group(2)
    for m in _BARE.finditer(text):
        if m.group(1) == "A" and _ARTICLE.match(text, m.end()):
            continue  # "A good option is ..." : the article
        return m.group(1)
    return None


def _choice(answer: str, reference: str) -> tuple[bool | None, str | None]:
    ref = _LETTER_REF.fullmatch(_squash(reference))
    want = ref.group(1).upper() if ref else choice_letter(reference)
    if want is None:
        return None, f"reference {_clip(reference)!r} is not an option letter A-E"
    got = choice_letter(answer)
    if got is None:
        return False, "no option letter A-E in the answer"
    if got == want:
        return True, None
    return False, f"expected {want}, got {got}"


def parse_json_answer(text: str) -> tuple[object, str | None]:
    """(value, None) of the JSON in an answer, or (None, why): the whole text, else a ```json fence, else the first
    {...} or [...] in it."""
    text = text.strip()
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for c in candidates:
        try:
            return json.loads(c), None
        except (ValueError, RecursionError):
            pass
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[{\[]", text)][:_JSON_STARTS]
    for i in starts:
        try:
            return decoder.raw_decode(text, i)[0], None
        except (ValueError, RecursionError):
            continue
    return None, "the answer is not valid JSON"


def _json(answer: str, reference: str) -> tuple[bool | None, str | None]:
    try:
        want = json.loads(reference)
    except (ValueError, RecursionError):
        return None, f"reference {_clip(reference)!r} is not valid JSON"
    got, why = parse_json_answer(answer)
    if why:
        return False, why
    try:
        diff = _json_diff(want, got, "")
    except RecursionError:
        return False, "the answer's JSON is nested too deeply to compare"
    return (True, None) if diff is None else (False, diff)


def _json_diff(want: object, got: object, path: str) -> str | None:
    """None when `got` matches `want` (the fields a reference object names; exact values elsewhere), else why."""
    where = path or "the answer"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where}: expected an object, got {_kind(got)}"
        for key, value in want.items():
            if key not in got:
                return f"{where}: missing field {key!r}"
            diff = _json_diff(value, got[key], f"{path}.{key}" if path else f"field {key!r}")
            if diff:
                return diff
        return None
    if json_equal(want, got):
        return None
    return f"{where}: expected {_clip(json.dumps(want, ensure_ascii=False))}, got " \
           f"{_clip(json.dumps(got, ensure_ascii=False))}"


def json_equal(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1, and lists compare in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


_GRADE = {"exact": _exact, "number": _number, "choice": _choice, "contains": _contains, "json": _json}


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."

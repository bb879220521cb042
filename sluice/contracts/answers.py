"""Structured answers: check each answer against its row's `response_schema` and keep the parsed value.

A schema is a JSON Schema (the answer must be JSON that validates) or a choice list `{"enum": [labels]}` (the
answer must be one of the labels, as plain text or as a JSON string). Backends constrain decoding where they can
(vLLM structured outputs, OpenAI `response_format`, Anthropic tool use), but an answer can still be cut short by
`max_tokens`, or come from a server that ignored the constraint: every answer is checked here, and an invalid one
is retried once on the same tier, then escalated (sluice/stages/review/decide.py).

`parsed` is the answer as canonical JSON text (a label becomes a JSON string), landed in `results.parsed`; the
per-dataset view `structured_<dataset>` (sluice/warehouse/views.py) exposes the schema's top-level fields as typed columns.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from models.backends import choice_list

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@lru_cache(maxsize=256)
def _validator(schema_text: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_text))


def validate_answer(text: str | None, schema_text: str) -> tuple[str | None, str | None]:
    """(parsed JSON text, None) when `text` satisfies the schema, else (None, why not)."""
    if text is None:
        return None, "no answer"
    labels = choice_list(schema_text)
    if labels is not None:
        value = text.strip()
        if value not in labels:
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                decoded = None
            if not isinstance(decoded, str) or decoded not in labels:
                return None, f"answer {value[:60]!r} is not one of the choices {labels}"
            value = decoded
        return json.dumps(value, ensure_ascii=False), None
    body = text.strip()
    fenced = _FENCE.match(body)  # a model that wraps its JSON in a Markdown fence still answered in JSON
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    error = next(iter(sorted(_validator(schema_text).iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        return None, f"answer does not match the schema at {where}: {error.message[:200]}"
    return json.dumps(value, ensure_ascii=False, sort_keys=True), None


def top_level_fields(schema_text: str) -> dict[str, str]:
    """The schema's top-level properties and the DuckDB type each becomes in the structured view:
    string/enum -> VARCHAR, integer -> BIGINT, number -> DOUBLE, boolean -> BOOLEAN, anything else -> JSON.
    A choice list is one field, `label`."""
    if choice_list(schema_text) is not None:
        return {"label": "VARCHAR"}
    schema = json.loads(schema_text)
    kinds = {"string": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        t = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(prop, dict) and t is None and "enum" in prop and all(isinstance(e, str) for e in prop["enum"]):
            t = "string"
        out[name] = kinds.get(t, "JSON") if isinstance(t, str) else "JSON"
    return out


def _final_number(text: str) -> str | None:
    import re

    nums = re.findall(r"-?\d[\d,]*\.?\d*", text or "")
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def answers_agree(cheap: str | None, premium: str | None) -> bool:
    """The cheap answer agrees with the premium one: equal up to case and whitespace, or, for answers ending in a
    number, the same final number (the premium answer is the reference; a judge can replace this check)."""
    a, b = " ".join((cheap or "").lower().split()), " ".join((premium or "").lower().split())
    if not a or not b:
        return False
    if a == b:
        return True
    na, nb = _final_number(a), _final_number(b)
    if na is None or nb is None:
        return False
    try:
        return abs(float(na) - float(nb)) < 1e-9
    except ValueError:
        return na == nb

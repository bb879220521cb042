"""Request shapes: what a row asks besides its prompt, validated once at ingest.

A row is either
    - prompt-shaped: `prompt` (+ optional `system`), or
    - chat-shaped: `messages`, a conversation in the OpenAI chat format, a list of {role, content} with roles
      system (first turn only), user and assistant, ending with a user turn. Stored as a Parquet list of structs
      or as JSON text.

Both become the same carried columns, so dedup, routing, caching and token estimates work on either shape:
    prompt           the last user turn (what is being asked now)
    system           the system prompt (a chat's leading system turn)
    history          the turns in between as JSON, [[role, content], ...], or null: part of the request
                     fingerprint, so two conversations differing only in an earlier turn never share an answer
    temperature      per-row sampling temperature (null: greedy, the default: repeatable answers)
    stop             JSON list of stop strings, or null
    response_schema  JSON Schema the answer must satisfy (structured output), or a choice list written as
                     {"enum": [labels]} (classification), or null for free text; canonical JSON text

Dataset-level values (`sluice run --schema FILE`, `--choices a,b,c`, `--temperature`, `--grader`) fill rows that
leave them null. A row whose value is unusable is quarantined with the reason; a dataset-level value that is
unusable is an error of the whole run, raised before anything is read.

Reference grading (`sluice.contracts.grading`) is not part of the request: a row's `reference` and `grader` are
carried beside it to land, never sent to a model and never part of its fingerprint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from sluice.contracts.grading import check_grader

ROLES = ("system", "user", "assistant")
MAX_TURNS = 1_000
MAX_STOPS = 8
MAX_STOP_CHARS = 200
MAX_SCHEMA_CHARS = 64_000
TEMPERATURE_RANGE = (0.0, 2.0)


class ShapeError(ValueError):
    """A value that cannot be used; the message says why (the caller adds the file and row)."""


@dataclass(frozen=True)
class Chat:
    prompt: str
    system: str | None
    history: str | None  # JSON [[role, content], ...] or None


@dataclass(frozen=True)
class RequestDefaults:
    """Dataset-level request settings, applied to rows that leave the column null."""

    response_schema: str | None = None
    temperature: float | None = None
    stop: str | None = None
    # how rows with a `reference` are graded when their `grader` column is null (sluice.contracts.grading; None: auto)
    grader: str | None = None

    def __post_init__(self) -> None:
        if self.response_schema is not None:
            object.__setattr__(self, "response_schema", canonical_schema(self.response_schema))
        if self.temperature is not None:
            object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if self.stop is not None:
            object.__setattr__(self, "stop", canonical_stop(self.stop))
        if self.grader is not None:
            try:
                object.__setattr__(self, "grader", check_grader(self.grader))
            except ValueError as exc:
                raise ShapeError(str(exc)) from exc


def schema_from_file(path: str | Path) -> str:
    """A JSON Schema file, validated; the error names the file."""
    path = Path(path)
    try:
        return canonical_schema(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ShapeError) as exc:
        raise ShapeError(f"{path}: {exc}") from exc


def schema_from_choices(choices: str | list[str]) -> str:
    """A choice list (`a,b,c` or a list) as the schema {"enum": [...]}."""
    labels = [c.strip() for c in choices.split(",")] if isinstance(choices, str) else [str(c) for c in choices]
    if not labels or any(not c for c in labels) or len(set(labels)) != len(labels):
        raise ShapeError(f"choices must be distinct non-empty labels, got {choices!r}")
    return canonical_schema(json.dumps({"type": "string", "enum": labels}))


def canonical_schema(text: str | dict) -> str:
    """Parse and check a JSON Schema; returns it as canonical JSON text (sorted keys), so equal schemas give equal
    fingerprints however they were written."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if isinstance(text, dict):
        schema = text
    else:
        if len(text) > MAX_SCHEMA_CHARS:
            raise ShapeError(f"response schema is {len(text):,} characters, over the {MAX_SCHEMA_CHARS:,} limit")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShapeError(f"response schema is not valid JSON ({exc.msg} at line {exc.lineno} column "
                             f"{exc.colno})") from exc
    if not isinstance(schema, dict):
        raise ShapeError(f"response schema must be a JSON object, got {type(schema).__name__}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ShapeError(f"response schema is not a valid JSON Schema: {exc.message}") from exc
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_temperature(value: float) -> float:
    lo, hi = TEMPERATURE_RANGE
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not lo <= value <= hi:
        raise ShapeError(f"temperature={value!r} is outside {lo:g}..{hi:g}")
    return float(value)


def canonical_stop(value: str | list | tuple) -> str:
    """Stop strings as a JSON list: a single string or a list of at most MAX_STOPS non-empty strings."""
    stops = [value] if isinstance(value, str) else list(value)
    if not stops or len(stops) > MAX_STOPS:
        raise ShapeError(f"stop must hold 1..{MAX_STOPS} strings, got {len(stops)}")
    for s in stops:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise ShapeError(f"stop strings must be non-empty text of at most {MAX_STOP_CHARS} characters, "
                             f"got {str(s)[:40]!r}")
    return json.dumps(stops, ensure_ascii=False)


def parse_chat(value: object) -> Chat:
    """One `messages` value (list of {role, content} dicts, or its JSON text) as prompt, system and history."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ShapeError(f"messages is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(value, list) or not value:
        raise ShapeError("messages must be a non-empty list of {role, content} turns")
    if len(value) > MAX_TURNS:
        raise ShapeError(f"messages has {len(value)} turns, over the {MAX_TURNS} limit")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ShapeError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise ShapeError(f"messages[{i}].role {str(role)[:40]!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ShapeError(f"messages[{i}].content is {'empty' if isinstance(content, str) else 'not text'}")
        if role == "system" and i:
            raise ShapeError(f"messages[{i}] is a system turn: only the first turn may be one")
        turns.append((role, content))
    system = turns[0][1] if turns[0][0] == "system" else None
    rest = turns[1:] if system is not None else turns
    if not rest or rest[-1][0] != "user":
        raise ShapeError("messages must end with a user turn (the one to answer)")
    history = rest[:-1]
    return Chat(prompt=rest[-1][1], system=system,
                history=json.dumps([list(t) for t in history], ensure_ascii=False) if history else None)


def history_turns(history: str | None) -> tuple[tuple[str, str], ...]:
    """The `history` column's JSON back as (role, content) turns."""
    return tuple((role, content) for role, content in json.loads(history)) if history else ()


def conversation_texts(df) -> list[str]:
    """Each row's prompt with its earlier turns before it (a polars frame with `prompt` and maybe `history`):
    what token estimates count, since every turn is sent."""
    prompts = df["prompt"].to_list()
    if "history" not in df.columns:
        return prompts
    return ["\n".join([c for _, c in history_turns(h)] + [p or ""]) if h else p
            for h, p in zip(df["history"].to_list(), prompts)]


def stop_strings(stop: str | None) -> tuple[str, ...]:
    return tuple(json.loads(stop)) if stop else ()


def column_values(col: pa.ChunkedArray) -> list:
    """A nested or text column as Python values (lists of dicts for list<struct>)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.to_pylist()

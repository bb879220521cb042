"""Ingest's column readers: each input column decoded into Python values, with per-row reasons for what cannot
be used (the row is quarantined) and `IngestError` for what makes the whole file unusable."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from sluice.contracts.columns import READ_INPUT_COLUMNS
from sluice.contracts.grading import check_grader
from sluice.contracts.shapes import (
    RequestDefaults,
    ShapeError,
    canonical_schema,
    canonical_stop,
    check_temperature,
    column_values,
    parse_chat,
)
from sluice.contracts.tags import TagError, tag_value, tags_json

REQUIRED = "prompt"  # or `messages` (a chat-shaped dataset, `sluice.contracts.shapes`)
OPTIONAL = tuple(c for c in READ_INPUT_COLUMNS if c != REQUIRED)


class IngestError(ValueError):
    """A whole file cannot be ingested; the message names the file and the reason."""



def _check_columns(names: list[str], source: str) -> None:
    if REQUIRED not in names and "messages" not in names:
        shown = ", ".join(_clip(str(c), 60) for c in names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20
                                                                     else "")
        raise IngestError(f"{source}: missing required column 'prompt' (found: {shown or 'no columns'}) "
                          "(a chat dataset has 'messages' instead)")
    for c in (REQUIRED, *OPTIONAL):
        if names.count(c) > 1:
            raise IngestError(f"{source}: column {c!r} appears {names.count(c)} times")


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column (pandas categoricals) as its values."""
    if pa.types.is_dictionary(col.type):
        return col.cast(col.type.value_type)
    return col


def _decode(values: list[bytes | None]) -> tuple[list[str | None], list[str | None]]:
    """UTF-8 decode each value; a value that is not valid UTF-8 is kept readable (replacement characters) and its
    problem returned beside it."""
    out: list[str | None] = []
    bad: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            bad.append(None)
            continue
        try:
            out.append(v.decode("utf-8"))
            bad.append(None)
        except UnicodeDecodeError as exc:
            out.append(v.decode("utf-8", "replace"))
            bad.append(f"is not valid UTF-8 (byte 0x{v[exc.start]:02x} at offset {exc.start})")
    return out, bad


def _text_column(raw: pa.Table, name: str, source: str) -> tuple[list[str | None], list[str | None]]:
    """Values of a text column as str, plus per row why a value is unusable (None when it is fine)."""
    values, bad = text_array(raw, name, source)
    return values.to_pylist(), [bad.get(i) for i in range(raw.num_rows)]


def text_array(t: pa.Table, name: str, source: str) -> tuple[pa.ChunkedArray, dict[int, str]]:
    """A text column as UTF-8 strings (valid text is not copied), plus per row (local) why a value is unusable."""
    col = _plain(t.column(name))
    if pa.types.is_null(col.type):
        return pa.chunked_array([pa.nulls(t.num_rows, pa.string())]), {}
    if not (_is_string(col.type) or _is_binary(col.type)):
        raise IngestError(f"{source}: column {name!r} must hold strings, found {col.type}")
    try:
        if _is_string(col.type):
            col.validate(full=True)  # Parquet writers other than Arrow may store invalid UTF-8 in a string column
        return col.cast(pa.string()), {}  # binary -> string checks the UTF-8 itself
    except pa.ArrowInvalid:
        if _is_string(col.type):
            binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(col.type, pa.binary_view())
            col = pa.chunked_array([c.view(binary) for c in col.chunks], binary)
        values, bad = _decode(col.to_pylist())
        return pa.chunked_array([pa.array(values, pa.string())]), {i: why for i, why in enumerate(bad) if why}


def _number_column(raw: pa.Table, name: str, source: str) -> tuple[list[int | None], dict[int, str]]:
    """Whole numbers of an integer, float or decimal column (pandas stores integers with gaps as floats, NaN
    being null; warehouse exports often write NUMBER(38, 0) as decimals); a fraction or an infinity is a row
    problem."""
    col = _plain(raw.column(name))
    if pa.types.is_null(col.type):
        return [None] * raw.num_rows, {}
    if pa.types.is_integer(col.type):
        return col.to_pylist(), {}  # Python ints: no overflow for uint64
    if not (pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
        raise IngestError(f"{source}: column {name!r} must hold integers, found {col.type}")
    out: list[int | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(col.to_pylist()):
        if v is None or v != v:  # null, or NaN
            out.append(None)
        elif v in (math.inf, -math.inf) or v != int(v):
            out.append(None)
            bad[i] = f"{name}={v!r} is not a whole number"
        else:
            out.append(int(v))
    return out, bad


@dataclass
class _Shapes:
    """Per row: the request-shape columns (sluice.contracts.shapes) and why a row's shape is unusable (None when fine).
    Chat-shaped rows also fill `prompts` and `systems` in place."""

    history: list[str | None]
    temperature: list[float | None]
    stop: list[str | None]
    response_schema: list[str | None]
    bad: list[str | None]


def _request_shapes(raw: pa.Table, source: str, prompts: list, systems: list, defaults: RequestDefaults) -> _Shapes:
    n = raw.num_rows
    cols = raw.column_names
    out = _Shapes([None] * n, [defaults.temperature] * n, [defaults.stop] * n, [defaults.response_schema] * n,
                  [None] * n)

    def column(name: str, kinds: tuple) -> list:
        col = raw.column(name)
        t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_null(t) or any(k(t) for k in kinds)):
            raise IngestError(f"{source}: column {name!r} has type {col.type}, which Sluice cannot read")
        return column_values(col)

    if "messages" in cols:
        values = column("messages", (pa.types.is_list, pa.types.is_large_list, _is_string, _is_binary))
        for i, v in enumerate(values):
            if v is None:
                continue
            if prompts[i] is not None:
                out.bad[i] = "row has both a prompt and messages: give one of them"
                continue
            if systems[i] is not None:
                out.bad[i] = "row has both a system column and messages: put the system turn in messages"
                continue
            try:
                chat = parse_chat(v.decode("utf-8") if isinstance(v, bytes) else v)
            except (ShapeError, UnicodeDecodeError) as exc:
                out.bad[i] = str(exc)
                continue
            prompts[i], systems[i], out.history[i] = chat.prompt, chat.system, chat.history
    if "temperature" in cols:
        for i, v in enumerate(column("temperature", (pa.types.is_integer, pa.types.is_floating,
                                                     pa.types.is_decimal))):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            try:
                out.temperature[i] = check_temperature(float(v))
            except ShapeError as exc:
                out.bad[i] = out.bad[i] or str(exc)
    if "stop" in cols:
        for i, v in enumerate(column("stop", (pa.types.is_list, pa.types.is_large_list, _is_string))):
            if v is None:
                continue
            try:
                out.stop[i] = canonical_stop(v)
            except ShapeError as exc:
                out.bad[i] = out.bad[i] or str(exc)
    if "response_schema" in cols:
        seen: dict[str, str | ShapeError] = {}  # a dataset usually repeats one schema: check each text once
        for i, v in enumerate(column("response_schema", (_is_string,))):
            if v is None:
                continue
            if v not in seen:
                try:
                    seen[v] = canonical_schema(v)
                except ShapeError as exc:
                    seen[v] = exc
            if isinstance(seen[v], ShapeError):
                out.bad[i] = out.bad[i] or str(seen[v])
            else:
                out.response_schema[i] = seen[v]
    return out


def _grading(raw: pa.Table, source: str, defaults: RequestDefaults
             ) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Per row: the reference as text (numbers, booleans and nested values written as text / JSON; blank: none),
    the grader name (the column's, else the run's default) and why either is unusable (None when fine)."""
    n = raw.num_rows
    refs: list[str | None] = [None] * n
    bad: list[str | None] = [None] * n
    if "reference" in raw.column_names:
        t = _plain(raw.column("reference")).type
        if _is_string(t) or _is_binary(t) or pa.types.is_null(t):
            refs, why = _text_column(raw, "reference", source)
            bad = [f"reference {w}" if w else None for w in why]
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t) \
                or pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t):
            for i, v in enumerate(column_values(raw.column("reference"))):
                refs[i], bad[i] = _reference_text(v)
        else:
            raise IngestError(f"{source}: column 'reference' must hold text, numbers or JSON values, found {t}")
        refs = [r if r is not None and r.strip() else None for r in refs]
    graders: list[str | None] = [defaults.grader] * n
    if "grader" in raw.column_names:
        values, why = _text_column(raw, "grader", source)
        for i, v in enumerate(values):
            if why[i]:
                bad[i] = bad[i] or f"grader {why[i]}"
            elif v is not None:
                try:
                    graders[i] = check_grader(v)
                except ValueError as exc:
                    bad[i] = bad[i] or str(exc)
    return refs, graders, bad


def _tags(raw: pa.Table, source: str) -> tuple[list[str | None], list[str | None]]:
    """Per row: the row's own chargeback tags as JSON text (`sluice.contracts.tags`; null: none) and why they are
    unusable. A struct's fields and a map's keys and values must be strings (else the whole file is refused: every
    row would be); a JSON text that is not an object of strings quarantines its row."""
    n = raw.num_rows
    if "tags" not in raw.column_names:
        return [None] * n, [None] * n
    col = _plain(raw.column("tags"))
    t = col.type
    if pa.types.is_struct(t):
        wrong = [f"{f.name} ({f.type})" for f in t if not (_is_string(f.type) or pa.types.is_null(f.type))]
    elif pa.types.is_map(t):
        wrong = [f"{x} ({y})" for x, y in (("key", t.key_type), ("value", t.item_type)) if not _is_string(y)]
    elif _is_string(t) or _is_binary(t) or pa.types.is_null(t):
        wrong = []
    else:
        raise IngestError(f"{source}: column 'tags' must hold a struct or map of strings, or JSON text, found {t}")
    if wrong:
        raise IngestError(f"{source}: column 'tags' must hold strings, found {', '.join(wrong)}")
    out: list[str | None] = [None] * n
    bad: list[str | None] = [None] * n
    for i, v in enumerate(column_values(col)):
        if v is None:
            continue
        try:
            out[i] = tags_json(tag_value(v))
        except TagError as exc:
            bad[i] = str(exc)
    return out, bad


def _reference_text(v: object) -> tuple[str | None, str | None]:
    """One non-text reference value as text: 42.0 -> "42", Decimal("1.50") -> "1.5", True -> "true", a list or struct
    -> JSON; NaN is null (pandas), an infinity a row problem."""
    if v is None:
        return None, None
    if isinstance(v, bool):
        return ("true" if v else "false"), None
    if isinstance(v, float):
        if math.isnan(v):
            return None, None
        if math.isinf(v):
            return None, f"reference={v!r} is not a finite number"
        return (str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)), None
    if isinstance(v, Decimal):
        return format(v.normalize(), "f"), None
    if isinstance(v, int):
        return str(v), None
    try:
        return json.dumps(v, ensure_ascii=False, default=str), None
    except (TypeError, ValueError) as exc:  # a nested value JSON cannot hold (NaN is written as NaN, not raised)
        return None, f"reference cannot be written as JSON ({_short(exc)})"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _short(exc: BaseException) -> str:
    return _clip(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 300)

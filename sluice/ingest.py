"""Ingest: read a prompt dataset (Parquet) into Sluice's row schema, quarantining what cannot run.

File-level problems raise `IngestError` naming the file and the reason: nothing in such a file can be trusted.
They are: no such file, an empty (0-byte) file, not Parquet or unreadable (truncated, corrupt), no `prompt`
column, a required or optional column given twice, a column of the wrong type (`prompt`/`system` not text,
`max_tokens` not numbers, `id` not strings or numbers), and a file with no rows.

Row-level problems quarantine that row with a reason `<file> row <i>: <why>`; the other rows proceed, and the
quarantined ones are still landed so nothing is lost. They are: null, empty or repeated `id`, an `id` that is a
fraction, text that is not valid UTF-8, a null or blank prompt, a prompt (with its system prompt) longer than
`max_prompt_chars` (checked before any tokenizer sees it), `max_tokens` that is not a whole number in
1..MAX_TOKENS_LIMIT, and, when the caller gives `max_context_tokens`, a prompt that cannot fit that context window
with its answer budget (a tokenizer-free estimate, `estimate_tokens`).

Request shapes (`sluice.shapes`): a chat-shaped dataset has `messages` instead of (or beside) `prompt`; optional
`temperature`, `stop` and `response_schema` columns, and dataset-level `RequestDefaults`. An unusable conversation,
temperature, stop list or schema quarantines its row with the reason.

Columns other than `prompt`, `messages`, `id`, `system`, `max_tokens`, `temperature`, `stop` and `response_schema`
are never read (however they are typed or nested).

Row schema produced here and carried through every stage:
    row_id (str), row_index (int64), prompt (str), system (str|null), max_tokens (int32|null),
    history (str|null), temperature (float64|null), stop (str|null), response_schema (str|null),
    status ("pending" | "quarantined"), error (str|null)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sluice.shapes import (
    RequestDefaults,
    ShapeError,
    canonical_schema,
    canonical_stop,
    check_temperature,
    column_values,
    parse_chat,
)

REQUIRED = "prompt"  # or `messages` (a chat-shaped dataset, `sluice.shapes`)
OPTIONAL = ("id", "system", "max_tokens", "messages", "temperature", "stop", "response_schema")
MAX_TOKENS_LIMIT = 32_768
# Characters of prompt + system per row. 200k characters is ~50k tokens of English, beyond every self-hosted
# tier's window and most APIs'; a longer row is almost always a mistake (a whole document pasted in), and
# stopping it here keeps megabyte strings away from tokenizers, the router and the API.
MAX_PROMPT_CHARS = 200_000

ROW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_index", pa.int64()),
        ("prompt", pa.string()),
        ("system", pa.string()),
        ("max_tokens", pa.int32()),
        # request shape (sluice.shapes): earlier chat turns, sampling parameters, structured-output schema
        ("history", pa.string()),
        ("temperature", pa.float64()),
        ("stop", pa.string()),
        ("response_schema", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

_SCHEMA_DEPTH_LIMIT = 1024
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class IngestError(ValueError):
    """A whole file cannot be ingested; the message names the file and the reason."""


def dataset_name_for(path: str | Path) -> str:
    """The dataset name a file lands under: its stem, restricted to characters safe in paths, SQL and S3 keys."""
    stem = Path(path).name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "dataset"
    return validate_dataset_name(name[:128])


def validate_dataset_name(name: str, what: str = "dataset name") -> str:
    """`name` if it is safe in paths, SQL and S3 keys; `what` names it in the error (run ids follow the same rule)."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 128, not starting "
            "with a symbol)"
        )
    return name


def estimate_tokens(text: str) -> int:
    """A tokenizer-free upper-ish estimate: ~4 bytes per token for English, at least one token per word."""
    return max(len(text.split()), math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4))


def widest_context_window(catalogue) -> int | None:
    """The largest context window among a catalogue's tiers, when every tier states one, else None (unbounded).

    Self-hosted tiers always have one (`max_model_len`); an API tier has one only when the catalogue sets
    `max_model_len` explicitly (the same rule as the drop box's check).
    """
    tiers = list(getattr(catalogue, "tiers", []) or [])
    windows = [t.max_model_len for t in tiers if t.self_hosted or "max_model_len" in t.model_fields_set]
    return max(windows) if tiers and len(windows) == len(tiers) else None


def read_prompts(
    path: str | Path,
    *,
    max_prompt_chars: int | None = MAX_PROMPT_CHARS,
    max_context_tokens: int | None = None,
    default_max_tokens: int = 256,
    defaults: RequestDefaults | None = None,
) -> pa.Table:
    """Read and validate one Parquet file; returns the row schema above (quarantined rows included).

    `max_prompt_chars`: rows whose prompt + system is longer are quarantined (None: no cap).
    `max_context_tokens`: rows whose estimated prompt + system tokens plus their answer budget (`max_tokens`, else
    `default_max_tokens`) exceed it are quarantined (None: no context check).
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: empty file (0 bytes)")
    try:
        # Parquet counts two levels per list: 50 nested lists in a metadata column Sluice never reads would pass
        # the reader's default limit (100); the limit only stops hostile schemas from exhausting the stack
        pf = pq.ParquetFile(path, schema_depth_limit=_SCHEMA_DEPTH_LIMIT)
        names = pf.schema_arrow.names
    except Exception as exc:  # pyarrow raises several kinds (ArrowInvalid, OSError, ...) for a bad footer
        raise IngestError(f"{path}: not a readable Parquet file ({_short(exc)})") from exc
    with pf:
        _check_columns(names, str(path))
        try:
            # only the columns Sluice uses: extra columns are never decoded, however they are typed or nested
            raw = pf.read(columns=[c for c in (REQUIRED, *OPTIONAL) if c in names])
        except Exception as exc:  # corrupt pages, truncated column chunks
            raise IngestError(f"{path}: not a readable Parquet file ({_short(exc)})") from exc
    if raw.num_rows == 0:
        raise IngestError(f"{path}: no rows")
    return validate_prompts(raw, source=str(path), max_prompt_chars=max_prompt_chars,
                            max_context_tokens=max_context_tokens, default_max_tokens=default_max_tokens,
                            defaults=defaults)


def validate_prompts(
    raw: pa.Table,
    source: str = "<table>",
    *,
    max_prompt_chars: int | None = MAX_PROMPT_CHARS,
    max_context_tokens: int | None = None,
    default_max_tokens: int = 256,
    defaults: RequestDefaults | None = None,
) -> pa.Table:
    """Validate an in-memory table the same way `read_prompts` validates a file (a table may have no rows)."""
    cols = raw.column_names
    _check_columns(cols, source)
    n = raw.num_rows
    prompts, prompt_bad = _text_column(raw, "prompt", source) if "prompt" in cols else ([None] * n, [None] * n)
    systems, system_bad = _text_column(raw, "system", source) if "system" in cols else ([None] * n, [None] * n)
    shape = _request_shapes(raw, source, prompts, systems, defaults or RequestDefaults())
    max_tokens, mt_bad = _number_column(raw, "max_tokens", source) if "max_tokens" in cols else ([None] * n, {})
    if "id" in cols:
        ids, id_bad = _id_column(raw, source)
    else:
        ids, id_bad = [str(i) for i in range(n)], {}

    status: list[str] = []
    errors: list[str | None] = []
    clean_max: list[int | None] = []
    first_seen: dict[str, int] = {}
    for i in range(n):
        rid, prompt, system, mt = ids[i], prompts[i], systems[i], max_tokens[i]
        reason = None
        if i in id_bad:
            reason = id_bad[i]
        elif rid is None:
            reason = "id is null"
        elif not rid.strip():
            reason = "id is empty"
        elif rid in first_seen:
            reason = f"duplicate id {_clip(rid)!r} (first seen at row {first_seen[rid]})"
        elif shape.bad[i]:
            reason = shape.bad[i]
        elif prompt_bad[i]:
            reason = f"prompt {prompt_bad[i]}"
        elif prompt is None:
            reason = "prompt and messages are both null" if "messages" in cols else "prompt is null"
        elif not prompt.strip():
            reason = "prompt is empty"
        elif system_bad[i]:
            reason = f"system {system_bad[i]}"
        elif max_prompt_chars is not None and (
            size := len(prompt) + len(system or "") + len(shape.history[i] or "")) > max_prompt_chars:
            reason = (f"prompt too long: {size:,} characters (with the system prompt), over the "
                      f"{max_prompt_chars:,} limit")
        elif i in mt_bad:
            reason = mt_bad[i]
        elif mt is not None and not (0 < mt <= MAX_TOKENS_LIMIT):
            reason = f"max_tokens={mt} is outside 1..{MAX_TOKENS_LIMIT}"
        elif max_context_tokens is not None and (
            need := estimate_tokens(prompt) + estimate_tokens(system or "") + estimate_tokens(shape.history[i] or "")
            + (mt or default_max_tokens)
        ) > max_context_tokens:
            reason = (f"prompt too long: ~{need} tokens with the answer budget, over the largest context window "
                      f"in the catalogue ({max_context_tokens})")
        if rid is not None and rid not in first_seen and i not in id_bad:
            first_seen[rid] = i
        status.append("quarantined" if reason else "pending")
        errors.append(f"{source} row {i}: {reason}" if reason else None)
        clean_max.append(mt if reason is None else None)
    # A row whose id is null, repeated or unusable still needs a unique key to land under; the generated key must
    # not collide with an id of the file (a file may itself contain an id like "__row3").
    taken = set(first_seen)
    row_ids: list[str] = []
    for i, rid in enumerate(ids):
        if rid is not None and first_seen.get(rid) == i:
            row_ids.append(rid)
            continue
        key = f"__row{i}"
        while key in taken:
            key = f"_{key}"
        taken.add(key)
        row_ids.append(key)
    return pa.table(
        [
            pa.array(row_ids, pa.string()),
            pa.array(range(n), pa.int64()),
            pa.array(prompts, pa.string()),
            pa.array(systems, pa.string()),
            pa.array(clean_max, pa.int32()),
            pa.array(shape.history, pa.string()),
            pa.array(shape.temperature, pa.float64()),
            pa.array(shape.stop, pa.string()),
            pa.array(shape.response_schema, pa.string()),
            pa.array(status, pa.string()),
            pa.array(errors, pa.string()),
        ],
        schema=ROW_SCHEMA,
    )


def quarantined(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["status"], "quarantined"))


# --- column readers -------------------------------------------------------------------------------------------


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
    col = _plain(raw.column(name))
    n = raw.num_rows
    if pa.types.is_null(col.type):
        return [None] * n, [None] * n
    if _is_binary(col.type):
        return _decode(col.to_pylist())
    if not _is_string(col.type):
        raise IngestError(f"{source}: column {name!r} must hold strings, found {col.type}")
    try:
        col.validate(full=True)  # Parquet writers other than Arrow may store invalid UTF-8 in a string column
    except pa.ArrowInvalid:
        binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(col.type, pa.binary_view())
        return _decode(pa.chunked_array([c.view(binary) for c in col.chunks], binary).to_pylist())
    return col.to_pylist(), [None] * n


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


def _id_column(raw: pa.Table, source: str) -> tuple[list[str | None], dict[int, str]]:
    col = _plain(raw.column("id"))
    t = col.type
    if _is_string(t) or _is_binary(t) or pa.types.is_null(t):
        ids, bad = _text_column(raw, "id", source)
        return ids, {i: f"id {why}" for i, why in enumerate(bad) if why}
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        nums, bad = _number_column(raw, "id", source)
        return [None if v is None else str(v) for v in nums], bad
    raise IngestError(f"{source}: column 'id' must hold strings or integers, found {t}")


@dataclass
class _Shapes:
    """Per row: the request-shape columns (sluice.shapes) and why a row's shape is unusable (None when fine).
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


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _short(exc: BaseException) -> str:
    return _clip(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 300)

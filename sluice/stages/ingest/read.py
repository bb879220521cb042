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
with its answer budget (a tokenizer-free estimate, `models.tokens.estimate_tokens`).

Request shapes (`sluice.contracts.shapes`): a chat-shaped dataset has `messages` instead of (or beside) `prompt`; optional
`temperature`, `stop` and `response_schema` columns, and dataset-level `RequestDefaults`. An unusable conversation,
temperature, stop list or schema quarantines its row with the reason.

Reference grading (`sluice.contracts.grading`): an optional `reference` column (the correct answer: text; numbers,
booleans, lists and structs are written as text / JSON; null or blank: the row is not graded) and `grader` column
(auto, exact, number, choice, contains, json; null: the run's `RequestDefaults.grader`, else auto). A grader name
that is not one of these quarantines its row (a bad `sluice run --grader` is an error of the whole run, raised by
`RequestDefaults`); a reference the grader cannot use does not: the row is answered and lands ungraded with the
reason (`sluice.stages.land.grading`). Neither column is sent to a model or part of the request fingerprint.

Chargeback (`sluice.contracts.tags`): an optional `tags` column, the row's own tags (a struct or map of strings, or
a JSON object as text); tags that are not string keys and values quarantine their row. Never sent to a model.

Columns other than `prompt`, `messages`, `id`, `system`, `max_tokens`, `temperature`, `stop`, `response_schema`,
`reference`, `grader` and `tags` are never read here (however they are typed or nested): they pass through, read
again from the file by the land stage (`sluice.stages.land.chargeback`) into `results.meta` and the results file.

Row schema produced here and carried through every stage:
    row_id (str), row_index (int64), prompt (str), system (str|null), max_tokens (int32|null),
    history (str|null), temperature (float64|null), stop (str|null), response_schema (str|null),
    reference (str|null), grader (str|null), tags (JSON text|null), status ("pending" | "quarantined"), error (str|null)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sluice.contracts.columns import DEFAULT_MAX_TOKENS, MAX_PROMPT_CHARS, ROW_SCHEMA
from sluice.contracts.shapes import RequestDefaults
from sluice.stages.ingest.batch import check_slice
from sluice.stages.ingest.columns import OPTIONAL, REQUIRED, IngestError, _check_columns, _clip, _short

BATCH_ROWS = 1 << 16  # rows checked at a time

_SCHEMA_DEPTH_LIMIT = 1024


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
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
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
        # pre_buffer off: with it, the reader keeps the file's compressed column chunks cached after the read
        # (288 MB of 808 MB at 1M rows of prompts, still allocated once the table is gone)
        pf = pq.ParquetFile(path, schema_depth_limit=_SCHEMA_DEPTH_LIMIT, pre_buffer=False)
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
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    defaults: RequestDefaults | None = None,
    batch_rows: int = BATCH_ROWS,
) -> pa.Table:
    """Validate an in-memory table the same way `read_prompts` validates a file (a table may have no rows).

    The checks run on `batch_rows` rows at a time as Arrow compute (batch.py); a valid text column is carried into
    the result without a copy. Only the duplicate-id check and the generated keys look at all rows at once."""
    _check_columns(raw.column_names, source)
    defaults = defaults or RequestDefaults()
    n = raw.num_rows
    parts = [check_slice(raw.slice(lo, batch_rows), lo, source, defaults, max_prompt_chars, max_context_tokens,
                         default_max_tokens)
             for lo in range(0, max(n, 1), batch_rows)]  # no rows: one empty slice, so the types are still checked
    ids = pa.chunked_array([c for p in parts for c in _chunks(p.ids)], pa.string())
    registered = np.concatenate([p.registered for p in parts])
    id_reasons = {i: why for p in parts for i, why in p.id_reasons.items()}
    reasons = {i: why for p in parts for i, why in p.reasons.items()}

    # the first row holding an id (among rows whose id counts) keeps it; a later one is a duplicate of it
    index = pl.DataFrame({"id": ids, "registered": registered}).with_row_index("i").with_columns(
        first=pl.when("registered").then(pl.col("i")).min().over("id"))
    keeps = (index["registered"] & (index["i"] == index["first"])).fill_null(False).to_numpy()
    later = index.filter(pl.col("registered") & (pl.col("i") != pl.col("first")))
    for i, rid, first in later.select("i", "id", "first").iter_rows():
        if i not in id_reasons:
            id_reasons[i] = f"duplicate id {_clip(rid)!r} (first seen at row {first})"
    reasons.update(id_reasons)  # the id checks come first
    del index, later

    bad = np.zeros(n, dtype=bool)
    bad[list(reasons)] = True
    errors: list[str | None] = [None] * n
    for i, why in reasons.items():
        errors[i] = f"{source} row {i}: {why}"
    columns = {name: pa.chunked_array([c for p in parts for c in _chunks(p.columns[name])], field.type)
               for name, field in zip(ROW_SCHEMA.names, ROW_SCHEMA) if parts and name in parts[0].columns}
    bad_arrow = pa.array(bad)
    columns["max_tokens"] = pc.if_else(bad_arrow, pa.scalar(None, pa.int32()), columns["max_tokens"])
    return pa.table(
        {
            "row_id": pc.if_else(pa.array(keeps), ids, _generated_keys(ids, keeps)),
            "row_index": pa.array(np.arange(n, dtype=np.int64)),
            **columns,
            "status": pc.if_else(bad_arrow, "quarantined", "pending"),
            "error": pa.array(errors, pa.string()),
        },
        schema=ROW_SCHEMA,
    )


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _generated_keys(ids: pa.ChunkedArray, keeps: np.ndarray) -> pa.Array:
    """A key for each row that does not keep its id (null, repeated or unusable): `__row<i>`, with more leading
    underscores while an id of the file (or a key already given) holds it. Only ids of that shape can collide."""
    shaped = pc.match_substring_regex(ids, r"^_+row[0-9]+$")
    taken = set(ids.filter(pc.and_(shaped, pa.array(keeps))).to_pylist())
    keys: list[str | None] = [None] * len(ids)
    for i in np.flatnonzero(~keeps).tolist():
        key = f"__row{i}"
        while key in taken:
            key = f"_{key}"
        taken.add(key)
        keys[i] = key
    return pa.array(keys, pa.string())


def quarantined(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["status"], "quarantined"))

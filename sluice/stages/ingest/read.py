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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.tokens import estimate_tokens
from sluice.contracts.columns import DEFAULT_MAX_TOKENS, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, ROW_SCHEMA
from sluice.contracts.shapes import RequestDefaults
from sluice.stages.ingest.columns import (
    OPTIONAL,
    REQUIRED,
    IngestError,
    _check_columns,
    _clip,
    _grading,
    _id_column,
    _number_column,
    _request_shapes,
    _short,
    _tags,
    _text_column,
)

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
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    defaults: RequestDefaults | None = None,
) -> pa.Table:
    """Validate an in-memory table the same way `read_prompts` validates a file (a table may have no rows)."""
    cols = raw.column_names
    _check_columns(cols, source)
    n = raw.num_rows
    prompts, prompt_bad = _text_column(raw, "prompt", source) if "prompt" in cols else ([None] * n, [None] * n)
    systems, system_bad = _text_column(raw, "system", source) if "system" in cols else ([None] * n, [None] * n)
    defaults = defaults or RequestDefaults()
    shape = _request_shapes(raw, source, prompts, systems, defaults)
    references, graders, grade_bad = _grading(raw, source, defaults)
    tags, tags_bad = _tags(raw, source)
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
        elif grade_bad[i]:
            reason = grade_bad[i]
        elif tags_bad[i]:
            reason = tags_bad[i]
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
            pa.array(references, pa.string()),
            pa.array(graders, pa.string()),
            pa.array(tags, pa.string()),
            pa.array(status, pa.string()),
            pa.array(errors, pa.string()),
        ],
        schema=ROW_SCHEMA,
    )


def quarantined(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["status"], "quarantined"))

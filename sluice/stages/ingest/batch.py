"""Ingest's checks on one slice of rows (issue 19: 64k rows at a time), as Arrow compute over whole columns.

The common columns (`prompt`, `system`, `id`, integer `max_tokens`) stay Arrow arrays: a valid text column is
passed through without a copy, and each check is a mask over the slice. Python only sees the rows a cheap mask
cannot clear (a prompt with no letter, digit or printable ASCII character might be blank; a prompt long enough
that it might not fit the context window) and the rows that fail, to write their reason. The rarer columns
(`messages`, `temperature`, `stop`, `response_schema`, `reference`, `grader`, `tags`, float or decimal numbers)
go through the per-value readers of columns.py, one slice at a time.

Each check is the same, in the same order, as the row-by-row loop it replaced: a row's reason is the first check
it fails (`Checked.reasons` keeps the first one given per row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.tokens import estimate_tokens
from sluice.contracts.columns import MAX_TOKENS_LIMIT
from sluice.contracts.shapes import RequestDefaults
from sluice.stages.ingest.columns import (
    IngestError,
    _grading,
    _is_binary,
    _is_string,
    _number_column,
    _plain,
    _request_shapes,
    _tags,
    text_array,
)

# a character Python's str.strip() never removes: printable ASCII other than space, any letter, any digit
_NOT_BLANK = r"[!-~]|\pL|\pN"


@dataclass
class Checked:
    """One slice's columns of the row schema (Arrow) and its rows' reasons, by row number in the whole table.

    `id_reasons`: the id checks that come before the duplicate-id check (unusable, null, empty); `reasons`: the
    checks after it. `registered`: rows whose id counts for duplicates (not null, not unusable)."""

    ids: pa.Array
    registered: np.ndarray
    columns: dict[str, pa.ChunkedArray | pa.Array]
    id_reasons: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)

    def fail(self, rows, why, ids: bool = False) -> None:
        """Give `rows` (local numbers, offset already added) the reason `why(i)` unless they have one."""
        into = self.id_reasons if ids else self.reasons
        for i in rows:
            i = int(i)
            if i not in into:
                into[i] = why(i)


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def blank(values: pa.ChunkedArray) -> np.ndarray:
    """Rows whose text is not null and is empty or only whitespace (Python's `not s.strip()`)."""
    maybe = np.flatnonzero(_mask(pc.invert(pc.match_substring_regex(values, _NOT_BLANK))))
    out = np.zeros(len(values), dtype=bool)
    if maybe.size:
        texts = values.take(pa.array(maybe)).to_pylist()
        out[maybe] = [s is not None and not s.strip() for s in texts]
    return out


def _chars(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.utf8_length(values), 0).to_numpy(), dtype=np.int64)


def _bytes(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.binary_length(values), 0).to_numpy(), dtype=np.int64)


def _ids(t: pa.Table, lo: int, source: str) -> tuple[pa.ChunkedArray, dict[int, str]]:
    """The `id` column as text (an integer's decimal digits; a whole float's or decimal's), and per row (local)
    why an id is unusable; no column: the row numbers."""
    m = t.num_rows
    if "id" not in t.column_names:
        return pa.chunked_array([pc.cast(pa.array(np.arange(lo, lo + m, dtype=np.int64)), pa.string())]), {}
    col = _plain(t.column("id"))
    kind = col.type
    if _is_string(kind) or _is_binary(kind) or pa.types.is_null(kind):
        ids, bad = text_array(t, "id", source)
        return ids, {i: f"id {why}" for i, why in bad.items()}
    if pa.types.is_integer(kind):
        return col.cast(pa.string()), {}
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        nums, bad = _number_column(t, "id", source)
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in nums], pa.string())]), bad
    raise IngestError(f"{source}: column 'id' must hold strings or integers, found {kind}")


def _max_tokens(t: pa.Table, source: str, into: Checked, lo: int) -> pa.Array:
    """`max_tokens` as int32 where it is usable (null elsewhere); a fraction or a value outside 1..MAX_TOKENS_LIMIT
    fails its row."""
    m = t.num_rows
    if "max_tokens" not in t.column_names:
        return pa.nulls(m, pa.int32())
    col = _plain(t.column("max_tokens"))
    if pa.types.is_null(col.type):
        return pa.nulls(m, pa.int32())
    if pa.types.is_integer(col.type):
        wide = pa.uint64() if col.type == pa.uint64() else pa.int64()  # every integer type fits one of them
        usable = pc.and_(pc.greater(col, pa.scalar(0, wide)), pc.less_equal(col, pa.scalar(MAX_TOKENS_LIMIT, wide)))
        outside = np.flatnonzero(_mask(pc.invert(usable)))
        values = col.take(pa.array(outside)).to_pylist() if outside.size else []
        shown = dict(zip(outside.tolist(), values))
        into.fail(outside + lo, lambda i: f"max_tokens={shown[i - lo]} is outside 1..{MAX_TOKENS_LIMIT}")
        return pc.if_else(usable, col, pa.nulls(1, col.type)[0]).cast(pa.int32()).combine_chunks()
    nums, bad = _number_column(t, "max_tokens", source)  # floats (pandas) and decimals; raises on other types
    into.fail(np.array(sorted(bad), dtype=np.int64) + lo, lambda i: bad[i - lo])
    outside = [i for i, v in enumerate(nums) if v is not None and not (0 < v <= MAX_TOKENS_LIMIT)]
    into.fail(np.array(outside, dtype=np.int64) + lo,
              lambda i: f"max_tokens={nums[i - lo]} is outside 1..{MAX_TOKENS_LIMIT}")
    return pa.array([v if v is not None and 0 < v <= MAX_TOKENS_LIMIT else None for v in nums], pa.int32())


def check_slice(
    t: pa.Table,
    lo: int,
    source: str,
    defaults: RequestDefaults,
    max_prompt_chars: int | None,
    max_context_tokens: int | None,
    default_max_tokens: int,
) -> Checked:
    """The rows `lo .. lo + t.num_rows` of a table: their columns of the row schema and their reasons."""
    cols = t.column_names
    m = t.num_rows
    none = pa.chunked_array([pa.nulls(m, pa.string())])
    prompt, prompt_bad = text_array(t, "prompt", source) if "prompt" in cols else (none, {})
    system, system_bad = text_array(t, "system", source) if "system" in cols else (none, {})
    if "messages" in cols:  # chat rows fill the prompt and system from their turns
        prompts, systems = prompt.to_pylist(), system.to_pylist()
        shape = _request_shapes(t, source, prompts, systems, defaults)
        prompt, system = pa.chunked_array([pa.array(prompts, pa.string())]), pa.chunked_array(
            [pa.array(systems, pa.string())])
    else:
        shape = _request_shapes(t, source, [], [], defaults)
    history = pa.array(shape.history, pa.string())
    references, graders, grade_bad = _grading(t, source, defaults)
    tags, tags_bad = _tags(t, source)

    # max_tokens is read (and its type checked) before the ids, as the row-by-row code did
    pending = Checked(ids=pa.nulls(0, pa.string()), registered=np.zeros(0, dtype=bool), columns={})
    max_tokens = _max_tokens(t, source, pending, lo)
    ids, id_bad = _ids(t, lo, source)
    out = Checked(ids=ids, registered=np.zeros(m, dtype=bool), columns={})

    out.fail(np.array(sorted(id_bad), dtype=np.int64) + lo, lambda i: id_bad[i - lo], ids=True)
    null_id = _mask(pc.is_null(ids))
    out.fail(np.flatnonzero(null_id) + lo, lambda i: "id is null", ids=True)
    out.fail(np.flatnonzero(blank(ids)) + lo, lambda i: "id is empty", ids=True)
    out.registered = ~null_id
    if id_bad:
        out.registered[list(id_bad)] = False

    def listed(bad: list[str | None]) -> np.ndarray:
        return np.array([i for i, why in enumerate(bad) if why] if any(bad) else [], dtype=np.int64) + lo

    out.fail(listed(shape.bad), lambda i: shape.bad[i - lo])
    out.fail(listed(grade_bad), lambda i: grade_bad[i - lo])
    out.fail(listed(tags_bad), lambda i: tags_bad[i - lo])
    out.fail(np.array(sorted(prompt_bad), dtype=np.int64) + lo, lambda i: f"prompt {prompt_bad[i - lo]}")
    null_prompt = "prompt and messages are both null" if "messages" in cols else "prompt is null"
    out.fail(np.flatnonzero(_mask(pc.is_null(prompt))) + lo, lambda i: null_prompt)
    out.fail(np.flatnonzero(blank(prompt)) + lo, lambda i: "prompt is empty")
    out.fail(np.array(sorted(system_bad), dtype=np.int64) + lo, lambda i: f"system {system_bad[i - lo]}")
    if max_prompt_chars is not None:
        texts = [prompt, system, pa.chunked_array([history])]
        maybe = np.flatnonzero(sum(_bytes(t) for t in texts) > max_prompt_chars)  # a character is 1-4 bytes
        size = sum(_chars(t.take(pa.array(maybe))) for t in texts) if maybe.size else np.zeros(0, dtype=np.int64)
        sizes = dict(zip((maybe + lo).tolist(), np.asarray(size).tolist()))
        out.fail([i for i, s in sizes.items() if s > max_prompt_chars],
                 lambda i: (f"prompt too long: {sizes[i]:,} characters (with the system prompt), over the "
                            f"{max_prompt_chars:,} limit"))
    out.fail(sorted(pending.reasons), pending.reasons.__getitem__)  # max_tokens: a fraction, then out of range
    if max_context_tokens is not None:
        _context(out, lo, [prompt, system, pa.chunked_array([history])], max_tokens, max_context_tokens,
                 default_max_tokens)
    out.columns = {"prompt": prompt, "system": system, "max_tokens": max_tokens, "history": history,
                   "temperature": pa.array(shape.temperature, pa.float64()),
                   "stop": pa.array(shape.stop, pa.string()),
                   "response_schema": pa.array(shape.response_schema, pa.string()),
                   "reference": pa.array(references, pa.string()), "grader": pa.array(graders, pa.string()),
                   "tags": pa.array(tags, pa.string())}
    return out


def _context(out: Checked, lo: int, texts: list[pa.ChunkedArray], max_tokens: pa.Array, window: int,
             default_max_tokens: int) -> None:
    """Rows whose estimated tokens (`estimate_tokens` of prompt, system and history) plus their answer budget
    exceed the context window. A bound first: a text of c characters and b bytes has at most (c + 1) // 2
    words, so its estimate is at most max((c + 1) // 2, ceil(b / 4)) <= (b + 1) // 2; only rows the bound cannot clear are
    estimated exactly."""
    budget = np.asarray(pc.fill_null(max_tokens, default_max_tokens).to_numpy(zero_copy_only=False), dtype=np.int64)
    bound = budget.copy()
    for t in texts:
        bound += (_bytes(t) + 1) // 2  # c <= b, and (b + 1) // 2 >= ceil(b / 4)
    maybe = np.flatnonzero(bound > window)
    if not maybe.size:
        return
    taken = [t.take(pa.array(maybe)).to_pylist() for t in texts]
    need = {int(i): sum(estimate_tokens(v[k] or "") for v in taken) + int(budget[i]) for k, i in enumerate(maybe)}
    over = [i for i, n in need.items() if n > window]
    out.fail(np.array(over, dtype=np.int64) + lo,
             lambda i: (f"prompt too long: ~{need[i - lo]} tokens with the answer budget, over the largest "
                        f"context window in the catalogue ({window})"))


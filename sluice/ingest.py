"""Ingest: read a prompt dataset (Parquet) into Sluice's row schema, quarantining what cannot run.

File-level problems (unreadable, not Parquet, no `prompt` column, a column of the wrong type) raise
`IngestError` naming the file and the reason: nothing in such a file can be trusted. Row-level problems (null or
empty prompt, bad `max_tokens`, null or repeated `id`) quarantine that row with a reason; the other rows proceed,
and the quarantined ones are still landed so nothing is lost.

Row schema produced here and carried through every stage:
    row_id (str), row_index (int64), prompt (str), system (str|null), max_tokens (int32|null),
    status ("pending" | "quarantined"), error (str|null)
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REQUIRED = "prompt"
OPTIONAL = ("id", "system", "max_tokens")
MAX_TOKENS_LIMIT = 32_768

ROW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_index", pa.int64()),
        ("prompt", pa.string()),
        ("system", pa.string()),
        ("max_tokens", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

# Further row checks a caller sets for the duration of a run (the drop box's context-window check): each gets
# (prompt, system, max_tokens) of a row that passed the built-in checks and returns a quarantine reason or None.
EXTRA_ROW_CHECKS: ContextVar[tuple[Callable[[str, str | None, int | None], str | None], ...]] = ContextVar(
    "sluice_extra_row_checks", default=()
)

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class IngestError(ValueError):
    """A whole file cannot be ingested; the message names the file and the reason."""


def dataset_name_for(path: str | Path) -> str:
    """The dataset name a file lands under: its stem, restricted to characters safe in paths, SQL and S3 keys."""
    stem = Path(path).name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "dataset"
    return validate_dataset_name(name[:128])


def validate_dataset_name(name: str) -> str:
    if not _DATASET_NAME.match(name):
        raise ValueError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, not starting "
            "with a symbol)"
        )
    return name


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def read_prompts(path: str | Path) -> pa.Table:
    """Read and validate one Parquet file; returns the row schema above (quarantined rows included)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        raw = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc})") from exc
    return validate_prompts(raw, source=str(path))


def validate_prompts(raw: pa.Table, source: str = "<table>") -> pa.Table:
    """Validate an in-memory table the same way `read_prompts` validates a file."""
    cols = raw.column_names
    if REQUIRED not in cols:
        raise IngestError(
            f"{source}: missing required column 'prompt' (found: {', '.join(cols) if cols else 'no columns'})"
        )
    n = raw.num_rows
    prompt = raw.column("prompt")
    if not _is_string(prompt.type) and not pa.types.is_null(prompt.type):
        raise IngestError(f"{source}: column 'prompt' must hold strings, found {prompt.type}")
    prompt = prompt.cast(pa.string())

    if "system" in cols:
        system = raw.column("system")
        if not (_is_string(system.type) or pa.types.is_null(system.type)):
            raise IngestError(f"{source}: column 'system' must hold strings, found {system.type}")
        system = system.cast(pa.string())
    else:
        system = pa.nulls(n, pa.string())

    if "max_tokens" in cols:
        mt = raw.column("max_tokens")
        if not (pa.types.is_integer(mt.type) or pa.types.is_null(mt.type)):
            raise IngestError(f"{source}: column 'max_tokens' must hold integers, found {mt.type}")
        max_tokens = mt.cast(pa.int64()).to_pylist()
    else:
        max_tokens = [None] * n

    if "id" in cols:
        ids_col = raw.column("id")
        if not (_is_string(ids_col.type) or pa.types.is_integer(ids_col.type)):
            raise IngestError(f"{source}: column 'id' must hold strings or integers, found {ids_col.type}")
        ids = ids_col.cast(pa.string()).to_pylist()
    else:
        ids = [str(i) for i in range(n)]

    prompts = prompt.to_pylist()
    extra_checks = EXTRA_ROW_CHECKS.get()
    systems = system.to_pylist() if extra_checks else [None] * n
    status: list[str] = []
    errors: list[str | None] = []
    clean_max: list[int | None] = []
    first_seen: dict[str, int] = {}
    for i in range(n):
        reason = None
        rid = ids[i]
        mt = max_tokens[i]
        if rid is None:
            reason = "id is null"
        elif rid in first_seen:
            reason = f"duplicate id {rid!r} (first seen at row {first_seen[rid]})"
        elif prompts[i] is None:
            reason = "prompt is null"
        elif not prompts[i].strip():
            reason = "prompt is empty"
        elif mt is not None and not (0 < mt <= MAX_TOKENS_LIMIT):
            reason = f"max_tokens={mt} is outside 1..{MAX_TOKENS_LIMIT}"
        else:
            reason = next((r for check in extra_checks if (r := check(prompts[i], systems[i], mt))), None)
        if rid is not None and rid not in first_seen:
            first_seen[rid] = i
        status.append("quarantined" if reason else "pending")
        errors.append(f"{source} row {i}: {reason}" if reason else None)
        clean_max.append(mt if reason is None else None)
    # a row whose id is null or repeated still needs a unique key to land under
    row_ids = [
        rid if (rid is not None and first_seen.get(rid) == i) else f"__row{i}" for i, rid in enumerate(ids)
    ]
    return pa.table(
        [
            pa.array(row_ids, pa.string()),
            pa.array(range(n), pa.int64()),
            prompt,
            system,
            pa.array(clean_max, pa.int32()),
            pa.array(status, pa.string()),
            pa.array(errors, pa.string()),
        ],
        schema=ROW_SCHEMA,
    )


def quarantined(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["status"], "quarantined"))

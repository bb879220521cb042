"""Recorded answers of one tier, read from the warehouse: a team's own history as a replay tier's answers file.

Every request a tier answered ok is a recorded answer: a row's final answer (`results`), and every attempt of that
tier (`attempts`): first answers, retries, escalations, and shadow answers (the premium tier's answers to rows the
cheap tier kept, the most valuable replay data). Near and semantic duplicates are not: their answer was given to
another prompt. A run landed before `attempts` existed contributes its `results` rows.

One row per distinct request (prompt, system prompt and earlier turns), the latest answer winning, latest first;
the columns are those a replay tier reads (models/backends/replay.py): `prompt`, `system`, `messages` (the whole
conversation in the OpenAI chat format), `response`, `input_tokens`, `output_tokens` (that attempt's own),
`latency_ms`, `finish_reason`, and where the answer came from: `tier`, `model`, `kind`, `dataset`, `run_id`,
`row_id`, `answered_at`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from sluice.warehouse.db import connect

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
ANSWERS_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("system", pa.string()), ("messages", pa.list_(MESSAGE)), ("response", pa.string()),
    ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("latency_ms", pa.float64()),
    ("finish_reason", pa.string()), ("tier", pa.string()), ("model", pa.string()), ("kind", pa.string()),
    ("dataset", pa.string()), ("run_id", pa.string()), ("row_id", pa.string()), ("answered_at", pa.timestamp("us", "UTC")),
])

# every ok answer of the tier, with its request; `kind` 'result' for rows of runs that landed no attempts
_QUERY = """
WITH answered AS (
    SELECT r.prompt, r.system, r.history, a.response, a.input_tokens, a.output_tokens, a.latency_ms,
           CASE WHEN a.kind <> 'shadow' AND r.tier = a.tier AND r.response IS NOT DISTINCT FROM a.response
                THEN r.finish_reason END AS finish_reason,
           a.tier, a.model, a.kind, r.dataset, a.run_id, a.row_id, a.attempt
    FROM attempts a JOIN results r ON r.run_id = a.run_id AND r.row_id = a.row_id
    WHERE a.tier = $tier AND a.status = 'ok' AND a.response IS NOT NULL
    UNION ALL
    SELECT r.prompt, r.system, r.history, r.response, r.input_tokens, r.output_tokens, r.latency_ms,
           r.finish_reason, r.tier, r.model, 'result', r.dataset, r.run_id, r.row_id, 1
    FROM results r
    WHERE r.tier = $tier AND r.status = 'ok' AND r.response IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.run_id = r.run_id AND a.row_id = r.row_id)
)
SELECT x.*, coalesce(u.finished_at, u.started_at) AS answered_at
FROM answered x LEFT JOIN runs u ON u.run_id = x.run_id
WHERE x.prompt IS NOT NULL
  AND ($dataset IS NULL OR x.dataset = $dataset)
  AND ($since IS NULL OR coalesce(u.finished_at, u.started_at) >= $since)
QUALIFY row_number() OVER (PARTITION BY x.prompt, x.system, x.history
                           ORDER BY answered_at DESC NULLS LAST, x.run_id DESC, x.attempt DESC) = 1
ORDER BY answered_at DESC NULLS LAST, x.run_id DESC, x.row_id
"""


def messages_of(system: str | None, history: str | None, prompt: str) -> list[dict[str, str]]:
    """A request as the OpenAI chat conversation it was: system prompt, earlier turns, the last user turn."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.extend({"role": role, "content": content} for role, content in (json.loads(history) if history else []))
    msgs.append({"role": "user", "content": prompt})
    return msgs


def answered_tiers(warehouse: str | Path) -> list[str]:
    """Tiers with at least one ok answer in the warehouse (to say which exist when a tier has none)."""
    with connect(warehouse, read_only=True) as con:
        return [t for (t,) in con.execute(
            "SELECT DISTINCT tier FROM results WHERE status = 'ok' AND tier IS NOT NULL UNION "
            "SELECT DISTINCT tier FROM attempts WHERE status = 'ok' AND tier IS NOT NULL ORDER BY 1").fetchall()]


def recorded_answers(warehouse: str | Path, tier: str, dataset: str | None = None,
                     since: datetime | None = None) -> pa.Table:
    """Every request `tier` answered ok (see the module doc), one row per request, latest first. Reads the
    warehouse read-only."""
    with connect(warehouse, read_only=True) as con:
        rows = con.execute(_QUERY, {"tier": tier, "dataset": dataset, "since": since}).fetchall()
        cols = [d[0] for d in con.description]
    out = []
    for values in rows:
        r = dict(zip(cols, values, strict=True))
        r["messages"] = messages_of(r["system"], r.pop("history"), r["prompt"])
        r.pop("attempt")
        out.append(r)
    return pa.Table.from_pylist(out, schema=ANSWERS_SCHEMA)

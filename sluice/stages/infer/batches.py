"""Provider batches of a run: read back from the journals its shards wrote, landed in `provider_batches`.

Each API shard answered through a provider batch API journals its batches beside its answers
(`answers/[<kind>/]tier=<name>/shard-NNNNN.batches.jsonl`, models/backends/batch_journal.py). The journal is what
a resumed run polls instead of submitting again; this module turns the journals into rows for the warehouse when
the run lands, so an analyst can see every batch the provider was paid for, and how it ended.
"""

from __future__ import annotations

from pathlib import Path

from models.backends import BatchJournal

COLUMNS = ["run_id", "tier", "kind", "shard", "batch_id", "provider", "round", "rows", "submitted_at", "status",
           "ended_at", "collected_at"]


def batch_journals(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "answers").rglob("shard-*.batches.jsonl")) if (run_dir / "answers").is_dir() else []


def journaled_batches(run_dir: Path, run_id: str) -> list[dict]:
    """One record per provider batch of the run (COLUMNS), in journal order."""
    out = []
    for path in batch_journals(run_dir):
        rel = path.relative_to(run_dir / "answers").parts  # ("tier=x", file) or (kind, "tier=x", file)
        kind = rel[0] if len(rel) == 3 else "first"
        shard = int(path.name.split(".")[0].removeprefix("shard-"))
        for b in BatchJournal(path).batches():
            out.append({"run_id": run_id, "tier": b.tier, "kind": kind, "shard": shard, "batch_id": b.batch_id,
                        "provider": b.provider, "round": b.round, "rows": len(b.rows),
                        "submitted_at": b.submitted_at, "status": b.status, "ended_at": b.ended_at,
                        "collected_at": b.collected_at})
    return out


def land_provider_batches(warehouse: str | Path, run_id: str, run_dir: Path) -> int:
    """Replace the run's rows of `provider_batches` with its journals' batches; returns how many."""
    from sluice.warehouse.db import connect

    rows = journaled_batches(run_dir, run_id)
    with connect(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM provider_batches WHERE run_id = ?", [run_id])
        if rows:
            marks = ", ".join("?" * len(COLUMNS))
            con.executemany(f"INSERT INTO provider_batches ({', '.join(COLUMNS)}) VALUES ({marks})",
                            [[r[c] for c in COLUMNS] for r in rows])
        con.execute("COMMIT")
    return len(rows)

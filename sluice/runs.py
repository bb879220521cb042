"""Run folders: where a run's stage hand-offs live, and how an interrupted run is found and resumed.

`<runs_dir>/<run_id>/manifest.json` records what the run answers (the dataset file's SHA-256, the catalogue's
and settings' fingerprint) and whether it has landed. Starting the same dataset again with the same catalogue
while an earlier run of it has not landed resumes that run: finished stages and shards are read back from disk,
not recomputed and not re-sent, so nothing is paid twice. A run whose API tier submitted provider batches and
did not wait for them (`batch_wait = false`) is "waiting": `collect-batches` resumes it once they have ended.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from sluice.contracts.columns import ATTEMPT_KINDS

MANIFEST = "manifest.json"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_parquet(table, path: Path) -> Path:
    """A stage hand-off (Arrow table or Polars frame), atomically: a resumed run finds the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    if hasattr(table, "write_parquet"):  # Polars
        table.write_parquet(tmp)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def catalogue_fingerprint(catalogue) -> str:
    """The catalogue as a run depends on it: its settings, and the content of every replay tier's answers file (a
    replay tier answers from the file, so a changed file is a different tier: the run is not resumed)."""
    files = [f"{t.name}={file_sha256(t.answers)}" for t in catalogue.tiers
             if getattr(t, "answers", None) and Path(t.answers).is_file()]
    return fingerprint(catalogue.model_dump_json(), *files)


def write_manifest(run_dir: Path, manifest: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, run_dir / MANIFEST)


def read_manifest(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def find_unfinished_run(runs_dir: Path, input_sha256: str, config_fingerprint: str) -> str | None:
    """The newest run of the same input and configuration that has not landed, if any."""
    if not runs_dir.is_dir():
        return None
    candidates = []
    for d in runs_dir.iterdir():
        m = read_manifest(d) if d.is_dir() else None
        if (m and m.get("input_sha256") == input_sha256 and m.get("config") == config_fingerprint
                and m.get("status") != "landed"):
            candidates.append((m.get("created_at", ""), d.name))
    return max(candidates)[1] if candidates else None


def mark_landed(run_dir: Path) -> None:
    m = read_manifest(run_dir) or {}
    m.pop("waiting_on", None)
    m.update(status="landed", landed_at=datetime.now(timezone.utc).isoformat())
    write_manifest(run_dir, m)


def mark_waiting(run_dir: Path, waiting_on: dict, resume: dict) -> None:
    """The run waits on provider batches (`waiting_on`: tier, batch ids, rows, journals): nothing has landed and
    nothing is lost. `resume`: the run's own arguments, with which `collect-batches` resumes it."""
    m = read_manifest(run_dir) or {}
    m.update(status="waiting", waiting_on=waiting_on, resume=resume,
             waiting_since=datetime.now(timezone.utc).isoformat())
    write_manifest(run_dir, m)


def waiting_runs(runs_dir: Path) -> list[Path]:
    """Run folders waiting on provider batches, the longest waiting first."""
    if not runs_dir.is_dir():
        return []
    found = [(m.get("waiting_since", ""), d) for d in runs_dir.iterdir()
             if d.is_dir() and (m := read_manifest(d)) and m.get("status") == "waiting"]
    return [d for _, d in sorted(found)]


def answers_dir(run_dir: Path, kind: str) -> Path:
    """Where a run keeps the answers of one attempt kind: the routed rows' ("first") under answers/, the others
    under answers/<kind>/ (each with one tier=<name>/ folder of shards). A tier validation's answers
    ("validation/<tier>": the tier's and its reference's answers to a sample of its rows) are kept apart under
    validation/<tier>/: they are not the rows' attempts and never land as such."""
    if kind.startswith("validation/") and kind.count("/") == 1 and kind != "validation/":
        return run_dir / "validation" / kind.split("/", 1)[1]
    if kind not in ATTEMPT_KINDS:
        raise ValueError(f"unknown attempt kind {kind!r}: one of {', '.join(ATTEMPT_KINDS)}")
    return run_dir / "answers" if kind == "first" else run_dir / "answers" / kind

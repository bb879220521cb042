"""The provider-batch journal: which batches a shard's rows are in, written the moment the provider accepts each.

A provider batch is paid for once it is accepted, and it answers up to 24 h later. Its id must therefore outlive
the process that submitted it: a run killed while polling, or a run that submits and returns (`batch_wait =
false`), finds its batches here and polls them instead of submitting (and paying for) the same rows again.

One JSON object per line, appended and fsynced before the loop goes on (a kill leaves at most a torn last line,
which is skipped):

    {"event": "submitted", "batch_id", "tier", "provider", "round", "rows": [row ids], "request_sha256": [one per
     row, of the request as submitted], "submitted_at", "deadline_at"}
    {"event": "ended", "batch_id", "status", "at"}          the provider says the batch has ended
    {"event": "collected", "batch_id", "at"}                its results were read

`deadline_at` (epoch seconds) is fixed by the first submission: a resumed run waits until the same moment, not a
new window from its own start. Requests are identified by hash, so a resumed run adopts a journaled row only when
it would send exactly the same request. The journal holds ids, hashes and times only: never a prompt, an answer
or a key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


def request_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class JournaledBatch:
    batch_id: str
    tier: str
    provider: str
    round: int
    rows: list[str]
    request_sha256: list[str]
    submitted_at: str
    deadline_at: float
    status: str | None = None  # the provider's final status once it has ended
    ended_at: str | None = None
    collected_at: str | None = None
    hashes: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hashes = dict(zip(self.rows, self.request_sha256, strict=True))


class ProviderBatchPending(Exception):
    """A tier's rows are with the provider in batches that have not ended, and the tier does not wait for them
    (`batch_wait = false`). Nothing is lost: the batches are journaled, and the run resumes by polling them."""

    def __init__(self, tier: str, batch_ids: list[str], rows: int, journals: list[Path]) -> None:
        self.tier, self.batch_ids, self.rows, self.journals = tier, batch_ids, rows, journals
        super().__init__(f"tier {tier}: waiting on provider batch {', '.join(batch_ids)} ({rows} rows)")

    @classmethod
    def of(cls, waits: list["ProviderBatchPending"]) -> "ProviderBatchPending":
        """One wait for several shards' batches (a tier's shards are all submitted before the run waits)."""
        return cls(waits[0].tier, [b for w in waits for b in w.batch_ids], sum(w.rows for w in waits),
                   [j for w in waits for j in w.journals])


class BatchJournal:
    """Append-only, fsynced JSON lines at `path` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _append(self, record: dict) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, separators=(",", ":")) + "\n"
        if not new and self.path.stat().st_size:  # after a line torn by a kill, start a line of our own
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if new:  # the file's name must survive a crash too: sync its folder
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def submitted(self, batch_id: str, tier: str, provider: str, round_: int, rows: list[str],
                  hashes: list[str], deadline_at: float) -> None:
        self._append({"event": "submitted", "batch_id": batch_id, "tier": tier, "provider": provider,
                      "round": round_, "rows": rows, "request_sha256": hashes, "submitted_at": now_iso(),
                      "deadline_at": deadline_at})

    def ended(self, batch_id: str, status: str) -> None:
        self._append({"event": "ended", "batch_id": batch_id, "status": status, "at": now_iso()})

    def collected(self, batch_id: str) -> None:
        self._append({"event": "collected", "batch_id": batch_id, "at": now_iso()})

    def batches(self) -> list[JournaledBatch]:
        """Every batch submitted, in submission order, with what is known of its end."""
        if not self.path.is_file():
            return []
        out: dict[str, JournaledBatch] = {}
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(raw)
            except ValueError:  # a line torn by a kill mid-write: the batch it named was never acknowledged
                continue
            bid = e.get("batch_id")
            if e.get("event") == "submitted":
                out[bid] = JournaledBatch(bid, e["tier"], e.get("provider", ""), int(e.get("round", 0)), e["rows"],
                                          e["request_sha256"], e["submitted_at"], float(e["deadline_at"]))
            elif bid in out and e.get("event") == "ended":
                out[bid].status, out[bid].ended_at = e.get("status"), e.get("at")
            elif bid in out and e.get("event") == "collected":
                out[bid].collected_at = e.get("at")
        return list(out.values())

    def deadline_at(self) -> float | None:
        got = self.batches()
        return got[0].deadline_at if got else None

"""The run's spend ledger: reserve before a pass sends, settle the measured cost after, release the difference.

One entry per pass, keyed like the run's billing ("small" for a tier's first answers, "premium/escalation",
"small/retry", "premium/shadow", "premium/judge"; the dedup stage's cluster checks, before routing:
"small/cluster-check" and one "premium/cluster-judge-<hash>" per judged pair; a tier's check against its
reference tier, booked after it ran: "small/validation"):

    reserve(key, usd)   before sending: the pass's expected cost is held against the budget; refused (False) when
                        it does not fit in what is available. Reserving a key that already has an entry returns
                        True and holds nothing more: a resumed run reserved it before it was killed.
    settle(key, usd)    after the pass: its measured cost becomes spent, the reservation is closed, and what was
                        reserved but not spent is released (available to later passes). Settling twice changes
                        nothing (a resumed pass returns the same billing from its shards on disk).

    available = budget - spent - reserved by passes not yet settled

The ledger is a JSON file in the run folder (`<run_dir>/budget/ledger.json`), rewritten atomically after every
change, so a resumed run continues the same ledger: passes it settled stay spent, a pass it had reserved keeps its
reservation. A measured cost above its reservation (possible only where the reservation is an estimate, not a
bound: self-hosted time) is spent all the same and counted in `overrun_usd`: the ledger never hides a dollar.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

LEDGER_FILE = "ledger.json"
# dollars below this are rounding, not money (a reservation is compared with what is left at this tolerance)
EPSILON_USD = 1e-12


def ledger_path(run_dir: Path) -> Path:
    return Path(run_dir) / "budget" / LEDGER_FILE


@dataclass
class Entry:
    key: str
    reserved_usd: float
    rows: int = 0
    settled_usd: float | None = None  # None: reserved, not yet settled

    @property
    def released_usd(self) -> float:
        return 0.0 if self.settled_usd is None else max(self.reserved_usd - self.settled_usd, 0.0)


@dataclass
class Ledger:
    budget_usd: float
    path: Path | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    # the cost model the reservations are priced with (sluice.stages.budget.costs), kept so a resume prices alike
    model: dict = field(default_factory=dict)
    # what the budget turned away: rows moved to a cheaper tier, deferred, left out of a follow-up pass
    notes: dict = field(default_factory=lambda: {"moved": 0, "deferred": 0, "skipped": {}, "reached": None})

    # --- the three verbs -----------------------------------------------------------------------------------

    def reserve(self, key: str, usd: float, rows: int = 0) -> bool:
        if key in self.entries:
            return True
        if usd > self.available_usd + EPSILON_USD:
            return False
        self.entries[key] = Entry(key, float(usd), int(rows))
        self.save()
        return True

    def settle(self, key: str, usd: float) -> None:
        entry = self.entries.get(key)
        if entry is None:  # a pass the budget never saw (sent before the ledger existed): spent all the same
            entry = self.entries[key] = Entry(key, 0.0)
        if entry.settled_usd is not None and abs(entry.settled_usd - usd) <= EPSILON_USD:
            return
        entry.settled_usd = float(usd)
        self.save()

    def release(self, key: str) -> None:
        """A reservation whose pass sent nothing: it is settled at 0 and all of it released."""
        self.settle(key, 0.0)

    # --- what it says ----------------------------------------------------------------------------------------

    @property
    def spent_usd(self) -> float:
        return sum(e.settled_usd for e in self.entries.values() if e.settled_usd is not None)

    @property
    def held_usd(self) -> float:
        """Reserved by passes not settled yet."""
        return sum(e.reserved_usd for e in self.entries.values() if e.settled_usd is None)

    @property
    def available_usd(self) -> float:
        return max(self.budget_usd - self.spent_usd - self.held_usd, 0.0)

    def note(self, what: str, n: int = 1, key: str | None = None) -> None:
        """Count rows the budget turned away: "moved", "deferred", or "skipped" from the pass `key`."""
        if what == "skipped":
            self.notes["skipped"][key] = self.notes["skipped"].get(key, 0) + n
        else:
            self.notes[what] = self.notes.get(what, 0) + n
        self.save()

    def mark_reached(self, why: str) -> bool:
        """Record the first time the budget turned something away; True only that first time (one event)."""
        if self.notes.get("reached"):
            return False
        self.notes["reached"] = why
        self.save()
        return True

    def summary(self) -> dict:
        settled = [e for e in self.entries.values() if e.settled_usd is not None]
        return {
            "budget_usd": self.budget_usd,
            "spent_usd": self.spent_usd,
            "reserved_usd": sum(e.reserved_usd for e in self.entries.values()),
            "released_usd": sum(e.released_usd for e in settled),
            "held_usd": self.held_usd,
            "overrun_usd": sum(max(e.settled_usd - e.reserved_usd, 0.0) for e in settled),  # type: ignore[operator]
            "passes": {e.key: {"reserved_usd": e.reserved_usd, "spent_usd": e.settled_usd, "rows": e.rows}
                       for e in self.entries.values()},
            "moved_rows": self.notes.get("moved", 0),
            "deferred_rows": self.notes.get("deferred", 0),
            "skipped_rows": dict(self.notes.get("skipped", {})),
            "reached": self.notes.get("reached"),
        }

    # --- the file --------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, run_dir: Path, budget_usd: float | None = None, model: dict | None = None) -> "Ledger | None":
        """The run's ledger: read back when the run folder has one, else a new one for `budget_usd` (None: the
        run has no budget and no ledger)."""
        path = ledger_path(run_dir)
        if path.is_file():
            doc = json.loads(path.read_text())
            return cls(doc["budget_usd"], path, {k: Entry(**e) for k, e in doc["entries"].items()},
                       doc.get("model", {}), doc["notes"])
        if budget_usd is None:
            return None
        ledger = cls(float(budget_usd), path, model=model or {})
        ledger.save()
        return ledger

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"budget_usd": self.budget_usd, "entries": {k: asdict(e) for k, e in self.entries.items()},
               "model": self.model, "notes": self.notes}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.path)  # atomic: a kill never leaves half a ledger

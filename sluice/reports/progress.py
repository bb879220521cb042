"""How far a run is: rows done of total per stage, tokens per second while answering, dollars spent so far, ETA.

A plain in-process model, no Prefect: the tasks update it (`tasks/progress.py`, which also publishes it as Prefect
progress artifacts), the `sluice run` command renders it (`sluice/cli/live.py`). The clock is injectable, so
rates and ETAs are testable without sleeping.

    progress = RunProgress(budget_usd=1.0)
    progress.start("infer small", total=300)
    progress.advance("infer small", rows=100, tokens=5_000, cost_usd=0.01)   # one shard answered
    progress.finish("infer small")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass
class StageProgress:
    """One stage (or one tier's pass of the infer stage): rows done of total, tokens, dollars, its clock."""

    name: str
    total: int | None = None
    done: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    artifact_id: object | None = None  # the Prefect progress artifact publishing it (tasks/progress.py)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def elapsed(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, (self.finished_at if self.finished_at is not None else now) - self.started_at)

    def tokens_per_second(self, now: float) -> float | None:
        seconds = self.elapsed(now)
        return self.tokens / seconds if self.tokens and seconds > 0 else None

    def fraction(self) -> float | None:
        if self.finished:
            return 1.0
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def eta_seconds(self, now: float) -> float | None:
        """Seconds left at the pace so far (rows done per second since the stage started); None before the first
        rows are done or without a total."""
        if self.finished:
            return 0.0
        seconds = self.elapsed(now)
        if not self.total or self.done <= 0 or seconds <= 0:
            return None
        return seconds / self.done * max(0, self.total - self.done)


class RunProgress:
    """The stages of one run in the order they started. Thread-safe: tasks update it while a view reads it."""

    def __init__(self, budget_usd: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_usd = budget_usd
        self.clock = clock
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.started_at = clock()
        self._stages: dict[str, StageProgress] = {}
        self._lock = threading.Lock()
        self._on_run: list[Callable[[str, Path], None]] = []

    # -- the run --------------------------------------------------------------------------------------------
    def on_run(self, callback: Callable[[str, Path], None]) -> None:
        """Call `callback(run_id, run_dir)` once the flow knows which run this is (a new one, or one resumed)."""
        self._on_run.append(callback)

    def begin_run(self, run_id: str, run_dir: Path) -> None:
        self.run_id, self.run_dir = run_id, Path(run_dir)
        with self._lock:
            self._stages.clear()  # the default progress serves one flow run after another in a worker process
        for callback in self._on_run:
            callback(run_id, self.run_dir)

    # -- stages ---------------------------------------------------------------------------------------------
    def start(self, name: str, total: int | None = None) -> StageProgress:
        with self._lock:
            stage = self._stages.get(name)
            if stage is None or stage.finished:  # a stage run again (a task retry) starts over
                stage = self._stages[name] = StageProgress(name, artifact_id=stage.artifact_id if stage else None)
            stage.total, stage.started_at = total, self.clock()
            return replace(stage)

    def advance(self, name: str, rows: int = 0, tokens: int = 0, cost_usd: float = 0.0) -> StageProgress:
        with self._lock:
            stage = self._stages.get(name) or self._stages.setdefault(name, StageProgress(name, started_at=self.clock()))
            stage.done += rows
            stage.tokens += tokens
            stage.cost_usd += cost_usd
            return replace(stage)

    def finish(self, name: str, rows: int | None = None) -> StageProgress:
        """The stage is done; `rows` (when given) is its final count, and its total if it had none."""
        with self._lock:
            stage = self._stages.get(name) or self._stages.setdefault(name, StageProgress(name, started_at=self.clock()))
            if rows is not None:
                stage.done = rows
                stage.total = stage.total or rows
            stage.finished_at = self.clock()
            return replace(stage)

    def set_artifact(self, name: str, artifact_id: object) -> None:
        with self._lock:
            if name in self._stages:
                self._stages[name].artifact_id = artifact_id

    def stages(self) -> list[StageProgress]:
        """A copy of every stage, in the order they started (safe to read while tasks go on updating)."""
        with self._lock:
            return [replace(s) for s in self._stages.values()]

    # -- the run's totals -----------------------------------------------------------------------------------
    def spent_usd(self) -> float:
        with self._lock:
            return sum(s.cost_usd for s in self._stages.values())

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started_at)

    def current(self) -> StageProgress | None:
        """The stage running now (the last one started and not finished), if any."""
        running = [s for s in self.stages() if not s.finished and s.started_at is not None]
        return running[-1] if running else None


_default = RunProgress()
_installed: RunProgress | None = None


def current() -> RunProgress:
    """The progress of the run in this process: the one `install`ed by the `sluice run` command, else a default."""
    return _installed if _installed is not None else _default


def install(progress: RunProgress | None) -> None:
    """Make `progress` the one tasks update (None: back to the default)."""
    global _installed
    _installed = progress

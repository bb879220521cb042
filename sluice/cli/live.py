"""`sluice run`'s terminal: one live progress view, the engine and library logs in the run folder.

vLLM's engine runs in spawned processes (EngineCore, workers) and the Prefect server in another, all writing to the
stdout and stderr they inherit, so logging configuration alone cannot quiet them. For the flow's duration, file
descriptors 1 and 2 point at a log file (os.dup2; children inherit it), the Python log handlers that wrote to the
console (Prefect's, the root logger's) write to the same file, and the view writes to a saved duplicate of the
terminal. The run id (and so the run folder) is known only once the flow has found a run to resume or started a new
one: the log starts in `<runs_dir>/.logs/` and is renamed into `<runs_dir>/<run_id>/logs/` then (a rename keeps
every open descriptor writing to it); its path is printed once. `--verbose` keeps everything live, as before.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sluice.reports import progress as progress_model
from sluice.reports.progress import RunProgress


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def render(progress: RunProgress) -> Group:
    """The view: one row per stage (rows done/total, tokens/s, $, elapsed, ETA), then the run's spend."""
    now = progress.clock()
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column, justify in (("stage", "left"), ("rows", "right"), ("", "left"), ("tok/s", "right"),
                            ("spent", "right"), ("time", "right"), ("ETA", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for s in progress.stages():
        fraction = s.fraction()
        bar = "" if fraction is None else "█" * int(fraction * 20) + "░" * (20 - int(fraction * 20))
        rate = s.tokens_per_second(now) if s.elapsed(now) >= 1.0 else None  # replayed answers take no time
        table.add_row(
            ("✓ " if s.finished else "… ") + s.name,
            f"{s.done}/{s.total}" if s.total else str(s.done or "-"),
            bar,
            f"{rate:,.0f}" if rate else "",
            f"${s.cost_usd:.4f}" if s.cost_usd else "",
            _duration(s.elapsed(now)),
            "done" if s.finished else _duration(s.eta_seconds(now)),
        )
    spent = f"${progress.spent_usd():.4f}"
    if progress.budget_usd is not None:
        spent += f" of ${progress.budget_usd:.4f} budget"
    footer = Text(f"{progress.run_id or 'starting'}: spent {spent}, elapsed {_duration(progress.elapsed())}")
    return Group(table, footer)


@contextmanager
def run_display(runs_dir: Path, verbose: bool, budget_usd: float | None = None,
                console: Console | None = None) -> Iterator[tuple[RunProgress, Console]]:
    """For the flow's duration: the progress model tasks update, shown live while every log line of this process
    and its children goes to the run's log file; `verbose`: no view, every log line on the terminal as it comes.
    Yields the progress and the terminal's console."""
    progress = RunProgress(budget_usd=budget_usd)
    progress_model.install(progress)
    try:
        if verbose:
            yield progress, console or Console()
            return
        with _logs_to_file(runs_dir, progress, console) as term, \
                Live(get_renderable=lambda: render(progress), console=term, refresh_per_second=1,
                     redirect_stdout=False, redirect_stderr=False):
            yield progress, term
    finally:
        progress_model.install(None)


@contextmanager
def _logs_to_file(runs_dir: Path, progress: RunProgress, console: Console | None) -> Iterator[Console]:
    pending = runs_dir / ".logs" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    pending.parent.mkdir(parents=True, exist_ok=True)
    log = open(pending, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below
    where = {"path": pending}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # The terminal: a duplicate of fd 1 taken before it is redirected (under a test runner, sys.stdout itself).
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    term_stream = os.fdopen(os.dup(saved[1]), "w", buffering=1) if _is_fd(sys.stdout, 1) else sys.stdout
    term = console or Console(file=term_stream)

    def move_into_run(run_id: str, run_dir: Path) -> None:
        target = run_dir / "logs" / f"sluice-{pending.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(where["path"], target)
        where["path"] = target
        try:
            pending.parent.rmdir()  # the runs folder holds runs only (unless an earlier failed start left its log)
        except OSError:
            pass
        term.print(f"logs: {target}", highlight=False, soft_wrap=True)

    progress.on_run(move_into_run)
    swapped = []
    try:
        swapped = _route_handlers(log)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with redirect_stdout(log), redirect_stderr(log):  # progress bars and prints of this process, too
            yield term
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except ValueError:  # closed
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        _restore_handlers(swapped)
        log.close()
        term.line()  # the view's last line ends
        if where["path"] == pending:  # the flow stopped before it knew its run: the log stays where it started
            if pending.stat().st_size:
                term.print(f"logs: {pending}", highlight=False, soft_wrap=True)
            else:  # nothing was said
                pending.unlink()
                try:
                    pending.parent.rmdir()
                except OSError:
                    pass
        if term_stream is not sys.stdout:
            term_stream.close()


def _is_fd(stream: object, fd: int) -> bool:
    try:
        return stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _route_handlers(log: io.TextIOBase) -> list[tuple[logging.StreamHandler, object, object]]:
    """Point every console log handler (the root logger's, Prefect's and the loggers' own) at the log file."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    swapped, seen = [], set()
    for lg in loggers:
        for h in lg.handlers:
            if (id(h) in seen or not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)
                    or isinstance(getattr(type(h), "stream", None), property)):  # sys.stderr's own, whatever it is
                continue
            seen.add(id(h))
            for f in [f for f in h.filters if isinstance(f, _AfterTheRun)]:  # an earlier run's, in this process
                h.removeFilter(f)
            rich_console = getattr(h, "console", None)  # Prefect's handler prints through a rich Console
            old_file = rich_console.file if isinstance(rich_console, Console) else None
            swapped.append((h, _set_stream(h, log), old_file))
            if old_file is not None:
                rich_console.file = log  # type: ignore[union-attr]
    return swapped


class _AfterTheRun(logging.Filter):
    """Once the run is over, Prefect's INFO lines (its temporary server stopping at exit) stay off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect")


def _set_stream(handler: logging.StreamHandler, stream: object) -> object:
    """`handler.setStream` without flushing the old stream (a test runner's may be closed by now)."""
    handler.acquire()
    try:
        old, handler.stream = handler.stream, stream
    finally:
        handler.release()
    return old


def _restore_handlers(swapped: list[tuple[logging.StreamHandler, object, object]]) -> None:
    for h, old_stream, old_file in swapped:
        _set_stream(h, old_stream)
        if not any(isinstance(f, _AfterTheRun) for f in h.filters):
            h.addFilter(_AfterTheRun())
        if old_file is not None:
            h.console.file = old_file  # type: ignore[attr-defined]

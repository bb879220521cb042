"""Progress from inside the tasks: the run's progress model (`sluice.reports.progress`) updated, and the same
numbers published as Prefect progress artifacts (one per stage, created on its start and updated after)."""

from __future__ import annotations

import logging

from sluice.reports.progress import StageProgress, current

log = logging.getLogger(__name__)


def stage_started(name: str, total: int | None = None) -> None:
    _publish(current().start(name, total))


def stage_advanced(name: str, rows: int = 0, tokens: int = 0, cost_usd: float = 0.0) -> None:
    _publish(current().advance(name, rows, tokens, cost_usd))


def stage_finished(name: str, rows: int | None = None) -> None:
    _publish(current().finish(name, rows))


def describe(stage: StageProgress) -> str:
    parts = [f"{stage.name}: {stage.done}" + (f"/{stage.total}" if stage.total else "") + " rows"]
    if stage.tokens:
        parts.append(f"{stage.tokens} tokens")
    if stage.cost_usd:
        parts.append(f"${stage.cost_usd:.4f}")
    return ", ".join(parts)


def _publish(stage: StageProgress) -> None:
    """The stage as a Prefect progress artifact; never fails the task (outside a flow run there is nothing to do)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    percent = 100.0 * (stage.fraction() or 0.0)
    try:
        if stage.artifact_id is None:
            key = "sluice-progress-" + "".join(c if c.isalnum() else "-" for c in stage.name.lower())
            current().set_artifact(stage.name, create_progress_artifact(percent, key=key, description=describe(stage)))
        else:
            update_progress_artifact(stage.artifact_id, percent, description=describe(stage))
    except Exception as exc:  # noqa: BLE001 - progress is a courtesy: a failed publish never fails the run
        log.debug("progress artifact for %s not published: %s", stage.name, exc)

"""process-drop-box: answer every Parquet file waiting in the drop box, each exactly once.

    recover   -> claims whose run died (no heartbeat for `stale_after_s`) are taken over, same run id
    claim     -> each file in incoming/ is claimed (one winner however many runs race) and moved to processing/,
                 its manifest (NAME.sluice.toml / .json: budget, deadline, router, share, schema, tags, priority;
                 sluice/dropbox/manifest.py) with it; files with a higher manifest priority are claimed first
    check     -> a file that cannot be read (empty, not Parquet, no `prompt`, wrong types, zero rows) or whose
                 manifest is not valid goes to failed/ (with its manifest) with a JSON reason beside it; the other
                 files go on
    run       -> `sluice-run` answers the file (a subflow) under its manifest's options, which are recorded on the
                 run (runs.submission, runs.tags): row problems are quarantined there (null or empty prompt,
                 repeated id, a prompt too long for every tier's stated context window, ...)
    file      -> results Parquet to results/<dataset>/<run_id>/, the file (and its manifest) to done/<run_id>/
    share     -> the pass answers its files on one warm engine per self-hosted engine (started once, by the first
                 run that needs it); when the pass ends, every start is apportioned across the pass's landed runs
                 by their tokens on that engine (sluice/stages/land/engine_share.py), in the warehouse and in the
                 results files handed back

Deployed as `nightly` (everything at 02:00) and `drop-watch` (every 5 minutes) in prefect.yaml. Submit files
with `sluice submit FILE.parquet`. Run it once by hand, with no Prefect server:

    python -m flows.drop_box                      # the local drop box, data/drop/ (or SLUICE_DROP_URL)
    python -m flows.drop_box s3://bucket/prefix   # AWS_ENDPOINT_URL for MinIO or moto
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path, PurePosixPath

from prefect import flow, get_run_logger

from flows.batch_run import new_run_id, sluice_run
from models.backends import engines_kept_warm
from sluice.config import Settings, load_settings
from sluice.contracts.names import dataset_name_for
from sluice.dropbox import DEFAULT_STALE_AFTER_S, Claim, ClaimLost, DropBox, Heartbeat, Skipped, open_drop_box
from sluice.dropbox.manifest import (
    ManifestError,
    SubmissionOptions,
    claim_manifests,
    file_manifests,
    order_by_priority,
    read_options,
    reject_manifests,
)
from sluice.stages.ingest.read import IngestError, read_prompts
from sluice.stages.land.engine_share import apportion_engine_starts
from tasks.dashboard import refresh_dashboard


class BadFile(ValueError):
    """The whole file cannot be processed; the message is the reason filed beside it in failed/."""


def check_file(path: Path) -> int:
    """File-level checks before anything is spent; returns the row count or raises BadFile."""
    if path.stat().st_size == 0:
        raise BadFile(f"{path.name}: empty file (0 bytes)")
    try:
        rows = read_prompts(path)
    except IngestError as exc:
        raise BadFile(str(exc).replace(str(path), path.name)) from exc
    if rows.num_rows == 0:
        raise BadFile(f"{path.name}: no rows")
    return rows.num_rows


def check_options(box: DropBox, manifests: list[str]) -> SubmissionOptions | None:
    """The file's manifest (sluice/dropbox/manifest.py), validated before anything is spent; raises BadFile."""
    try:
        options = read_options(box, manifests)
    except ManifestError as exc:
        raise BadFile(str(exc)) from exc
    if options is not None and options.router and not Path(options.router).is_dir():
        raise BadFile(f"{PurePosixPath(manifests[0]).name}: router {options.router!r} is not a folder on this worker")
    return options


def process_claim(
    box: DropBox, claim: Claim, settings: Settings, catalogue_path: str | None, stale_after_s: float
) -> dict:
    """Run one claimed file through the pipeline and file it under done/ or failed/. Raises only on a pipeline
    error that is not the file's fault (the file still goes to failed/, with that error)."""
    logger = get_run_logger()
    name = claim.obj.name
    work = settings.data_dir / "drop-work" / claim.run_id
    local = work / name
    outcome = {"key": claim.obj.key, "run_id": claim.run_id, "recovered": claim.recovered}
    manifests = claim_manifests(box, claim.obj, claim.run_id)  # its options travel with it, filed beside it
    try:
        options = check_options(box, manifests)
        box.download(claim.working_key, local)
        dataset = dataset_name_for(name)
        # heartbeat well inside the stale timeout, so a slow run is never taken over as a dead one
        with Heartbeat(box, claim, every_s=max(1.0, stale_after_s / 4)) as beat:
            rows = check_file(local)
            summary = sluice_run(
                str(local), warehouse=str(settings.warehouse), catalogue=catalogue_path,
                data_dir=str(settings.data_dir), run_id=claim.run_id, dataset=dataset,
                **(options.run_options() if options else {}),
                submission=options.record(PurePosixPath(manifests[0]).name) if options else None,
            )
        if beat.lost:  # another run took over while this one was stalled: it files the object, not us
            raise beat.lost
        results_key = box.put_results(claim, dataset, settings.runs_dir / claim.run_id / "results.parquet")
        dest = box.finish(claim, ok=True, report={
            "dataset": dataset, "results_key": results_key, "rows": rows,
            "summary": {k: summary.get(k) for k in ("rows", "duplicates", "quarantined", "failed", "cost_usd")},
        })
        file_manifests(box, manifests, dest)
        logger.info("%s: %d rows landed (run %s); results at %s", name, rows, claim.run_id,
                    box.locate(results_key))
        return {**outcome, "state": "done", "dest": dest, "results": box.locate(results_key), "rows": rows,
                "results_key": results_key}
    except BadFile as exc:
        dest = box.finish(claim, ok=False, report={"reason": str(exc), "kind": "bad_file"})
        file_manifests(box, manifests, dest)
        logger.warning("%s: failed: %s (see %s.error.json)", name, exc, box.locate(dest))
        return {**outcome, "state": "failed", "dest": dest, "reason": str(exc)}
    except ClaimLost:
        raise
    except Exception as exc:
        reason = f"pipeline error ({type(exc).__name__}): {exc}; resubmit the file to try again"
        dest = box.finish(claim, ok=False, report={"reason": reason, "kind": "pipeline_error"})
        file_manifests(box, manifests, dest)
        logger.error("%s: %s", name, reason)
        return {**outcome, "state": "error", "dest": dest, "reason": reason}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def share_engine_starts(box: DropBox, settings: Settings, outcomes: list[dict]) -> dict[str, dict]:
    """The pass's engine starts, apportioned across its landed runs by tokens (sluice/stages/land/engine_share.py);
    the results files already handed back are replaced by ones with the apportioned costs."""
    runs = {o["run_id"]: settings.runs_dir / o["run_id"] for o in outcomes}
    landed = {o["run_id"]: runs[o["run_id"]] for o in outcomes if o["state"] == "done"}
    if not landed or not Path(str(settings.warehouse)).exists():
        return {}
    shares = apportion_engine_starts(str(settings.warehouse), settings.catalogue(), landed,
                                     {r: d for r, d in runs.items() if r not in landed})
    for o in outcomes:
        if o["run_id"] in shares:
            box.upload(landed[o["run_id"]] / "results.parquet", o["results_key"])
            get_run_logger().info("%s: engine start shared with the pass: %s", o["key"], ", ".join(
                f"{g} ${s['share_usd']:.6f} ({s['share_s']:.1f} of {s['pass_start_s']:.1f} s)"
                for g, s in shares[o["run_id"]].items()))
    return shares


@flow(name="process-drop-box")
def process_drop_box(
    drop: str | None = None,
    warehouse: str | None = None,
    catalogue: str | None = None,
    data_dir: str | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    max_files: int | None = None,
) -> dict:
    """Claim and answer every file in the drop box's incoming/ (at most `max_files`), each exactly once."""
    logger = get_run_logger()
    settings = load_settings(warehouse=warehouse, catalogue_path=catalogue, data_dir=data_dir)
    settings.catalogue()  # a broken catalogue fails the run before any file is claimed
    box = open_drop_box(drop, default_root=settings.data_dir / "drop")
    logger.info("drop box %s", box.url)

    outcomes: list[dict] = []
    skipped: list[dict] = []

    def room() -> bool:
        return max_files is None or len(outcomes) < max_files

    # one warm engine per self-hosted engine for the whole pass: each run's release waits for the pass's end
    with engines_kept_warm():
        # one at a time: a claim taken over now is processed now, while its fresh heartbeat keeps others off it
        while room() and (recovered := box.recover_stale(stale_after_s, limit=1)):
            [claim] = recovered
            logger.warning("%s: run %s stopped heartbeating; taking it over", claim.obj.key, claim.run_id)
            outcomes.append(process_claim(box, claim, settings, catalogue, stale_after_s))
        for obj in order_by_priority(box, box.incoming()):  # a manifest's priority first, then its deadline
            if not room():
                break
            got = box.claim(obj, new_run_id(), stale_after_s)
            if isinstance(got, Skipped):
                if got.entry.get("state") == "done":  # the same bytes again: filed away with the reason, not rerun
                    rejected = new_run_id()
                    dest = box.reject(obj, rejected, got.reason)
                    reject_manifests(box, obj, rejected)
                    logger.warning("%s: %s; moved to %s", obj.key, got.reason, dest or "(already gone)")
                skipped.append({"key": obj.key, "reason": got.reason})
                continue
            outcomes.append(process_claim(box, got, settings, catalogue, stale_after_s))
    shares = share_engine_starts(box, settings, outcomes)

    summary = {
        "drop": box.url,
        "done": [o for o in outcomes if o["state"] == "done"],
        "failed": [o for o in outcomes if o["state"] != "done"],
        "skipped": skipped,
        "engine_shares": shares,
    }
    logger.info("drop box: %d done, %d failed, %d skipped", len(summary["done"]), len(summary["failed"]),
                len(skipped))
    if summary["done"] and Path(str(settings.warehouse)).exists():  # the nightly view across runs, kept current
        summary["dashboard"] = str(refresh_dashboard(str(settings.warehouse), settings.data_dir / "dashboard.html"))
    errors = [o for o in outcomes if o["state"] == "error"]
    if errors:  # bad files are expected; a pipeline error is not: fail the flow run so someone looks
        raise RuntimeError("; ".join(f"{o['key']}: {o['reason']}" for o in errors))
    return summary


if __name__ == "__main__":
    print(process_drop_box(sys.argv[1] if len(sys.argv) > 1 else None))

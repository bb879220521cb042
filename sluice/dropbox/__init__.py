"""The drop box: submit a Parquet file, get results. One small interface, two stores (a local folder, S3).

    base.py       the interface and the exactly-once claim protocol (layout and ledger described there)
    local.py      the embedded store: a local folder, for one machine
    s3.py         the production store: an S3 bucket and prefix
    workspace.py  the deployments' pull step (enter the checkout)

This module re-exports the interface and opens a drop box from its URL; stores import from `base`, never from
here.
"""

from __future__ import annotations

from pathlib import Path

from sluice.config import load_settings
from sluice.dropbox.base import (
    CLAIMS,
    DEFAULT_STALE_AFTER_S,
    DONE,
    FAILED,
    INCOMING,
    PROCESSING,
    RESULTS,
    Claim,
    ClaimLost,
    DropBox,
    DropObject,
    Heartbeat,
    Skipped,
    check_submitted_name,
    dumps,
)

__all__ = [
    "CLAIMS", "DEFAULT_STALE_AFTER_S", "DONE", "FAILED", "INCOMING", "PROCESSING", "RESULTS", "SUBMITTED_EVENT",
    "Claim", "ClaimLost", "DropBox", "DropObject", "Heartbeat", "Skipped", "announce", "check_submitted_name",
    "dumps", "open_drop_box", "results_location",
]


def open_drop_box(url: str | Path | None = None, default_root: str | Path = "data/drop") -> DropBox:
    """`s3://bucket/prefix` -> S3 (boto3; AWS_ENDPOINT_URL points it at moto or MinIO), anything else a folder.

    With no url: SLUICE_DROP_URL, else `default_root` (the embedded local drop box).
    """
    url = str(url or load_settings().drop_url or default_root)
    if url.startswith("s3://"):
        from sluice.dropbox.s3 import S3DropBox

        bucket, _, prefix = url[len("s3://"):].partition("/")
        return S3DropBox(bucket, prefix)
    from sluice.dropbox.local import LocalDropBox

    return LocalDropBox(url)


SUBMITTED_EVENT = "sluice.drop.submitted"


def announce(box: DropBox, key: str) -> None:
    """Tell a Prefect server a file was dropped: the `drop-watch` deployment's trigger starts a pass at once
    (its schedule would pick the file up within 5 minutes anyway). Needs PREFECT_API_URL."""
    from prefect.events import emit_event

    emit_event(
        SUBMITTED_EVENT,
        resource={"prefect.resource.id": f"sluice.drop-box.{box.url}", "prefect.resource.name": box.url},
        payload={"drop": box.url, "key": key},
    )


def results_location(box: DropBox, dataset: str) -> str:
    return box.locate(f"{RESULTS}/{dataset}/") + "<run_id>/results.parquet"

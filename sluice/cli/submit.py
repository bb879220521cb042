"""`sluice submit`: put a dataset into the drop box, with its own options.

    sluice submit batch.parquet [--drop s3://bucket/prefix | PATH] [--budget-usd 5] [--deadline-h 24]
                  [--tag team=search ...] [--priority 10] [--premium-share 0.2] [--router DIR] [--min-quality 0.9]
                  [--schema schema.json | --choices a,b,c]

With any option, a manifest (`batch.sluice.json`, sluice/dropbox/manifest.py) is validated here and uploaded
before the file, so the pass that picks the file up always finds it; the run takes the options and records them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def submit_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    drop: Annotated[Optional[str], typer.Option(
        help="drop box: s3://bucket/prefix or a folder [SLUICE_DROP_URL, else data/drop]")] = None,
    name: Annotated[Optional[str], typer.Option(help="name in the drop box [the file's name]")] = None,
    notify: Annotated[Optional[bool], typer.Option(
        help="emit a `sluice.drop.submitted` event so `drop-watch` starts now [when PREFECT_API_URL is set]")] = None,
    budget_usd: Annotated[Optional[float], typer.Option(help="route the whole batch under this dollar budget")] = None,
    deadline_h: Annotated[Optional[float], typer.Option(
        help="hours until the answers are needed (batch APIs when it allows; orders the pass, not enforced)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(
        "--tag", help="chargeback tag KEY=VALUE for every row (repeatable; a row's own `tags` column wins)")] = None,
    priority: Annotated[Optional[int], typer.Option(help="higher is picked up first within a pass [0]")] = None,
    premium_share: Annotated[Optional[float], typer.Option(help="send this share of rows to the premium tier")] = None,
    router: Annotated[Optional[str], typer.Option(help="a router folder on the workers (`sluice router train`)")] = None,
    min_quality: Annotated[Optional[float], typer.Option(help="a floor for the run's quality estimate")] = None,
    schema: Annotated[Optional[Path], typer.Option(help="JSON Schema file every answer must satisfy")] = None,
    choices: Annotated[Optional[str], typer.Option(help="each answer is one of these comma-separated labels")] = None,
) -> None:
    """Put DATASET into the drop box's incoming/ (its options beside it); `process-drop-box` answers it next pass."""
    from sluice.config import load_settings
    from sluice.contracts.names import dataset_name_for
    from sluice.contracts.shapes import ShapeError, schema_from_file
    from sluice.contracts.tags import parse_tags
    from sluice.dropbox import announce, check_submitted_name, open_drop_box, results_location
    from sluice.dropbox.manifest import ManifestError, SubmissionOptions, manifest_names, parse_manifest

    if not dataset.is_file():
        _fail(f"{dataset}: no such file")
    given = {"budget_usd": budget_usd, "deadline_h": deadline_h, "priority": priority, "premium_share": premium_share,
             "router": router, "min_quality": min_quality,
             "choices": [c.strip() for c in choices.split(",")] if choices else None}
    options: SubmissionOptions | None = None
    try:
        target = check_submitted_name(name or dataset.name)
        doc = {k: v for k, v in given.items() if v is not None}
        if schema:
            doc["schema"] = schema_from_file(schema)
        if tag:
            doc["tags"] = parse_tags(tag)
        if doc:  # validated as the worker will validate it: a bad option fails here, before anything is uploaded
            options = parse_manifest(manifest_names(target)[1], json.dumps(doc).encode())
    except (ManifestError, ShapeError, ValueError) as exc:
        _fail(str(exc))
    box = open_drop_box(drop, default_root=load_settings().data_dir / "drop")
    if options is not None:
        from sluice.dropbox.manifest import submit_manifest

        console.print(f"options {box.locate(submit_manifest(box, target, options))}", highlight=False, soft_wrap=True)
    key = box.submit(dataset, target)
    console.print(f"submitted {box.locate(key)}", highlight=False, soft_wrap=True)
    if notify if notify is not None else bool(os.environ.get("PREFECT_API_URL")):
        announce(box, key)
        console.print("drop-watch notified (event sluice.drop.submitted)", highlight=False)
    console.print(f"results will appear at {results_location(box, dataset_name_for(target))}"
                  f" (bad files: {box.locate('failed/')}<run_id>/, with a .error.json reason)",
                  highlight=False, soft_wrap=True)

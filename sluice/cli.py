"""The `sluice` command.

    sluice run DATASET.parquet [--warehouse PATH] [--catalogue PATH]   answer a dataset, land it in DuckDB
    sluice prepare                                                     convert the packaged demo model (first use)
    sluice submit DATASET.parquet [--drop s3://bucket/prefix | PATH]   put a dataset into the drop box
"""

from __future__ import annotations

import os

# Prefect reads these when it is imported: no telemetry host to reach, and a patient temporary server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sluice: make the inference bill small.")
console = Console()

WarehouseOpt = Annotated[Optional[Path], typer.Option(help="DuckDB file to land results in [data/warehouse.duckdb]")]
CatalogueOpt = Annotated[Optional[Path], typer.Option(help="tier catalogue TOML [models/catalogue.toml]")]
DataDirOpt = Annotated[Optional[Path], typer.Option(help="data folder: models cache, run folders [data]")]


def _print_summary(summary: dict, seconds: float) -> None:
    from sluice.summary import summary_lines

    table = Table(title=f"Sluice run {summary['run_id']} ({summary['dataset']})", show_header=False)
    for k, v in summary_lines(summary):
        table.add_row(k, v)
    table.add_row("wall time", f"{seconds:.1f} s")
    table.add_row("warehouse", f"{summary['warehouse']} (table `results`)")
    console.print(table)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


@app.command()
def run(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    warehouse: WarehouseOpt = None,
    catalogue: CatalogueOpt = None,
    data_dir: DataDirOpt = None,
    run_id: Annotated[Optional[str], typer.Option(help="run id (default: time + random suffix)")] = None,
) -> None:
    """Answer every row of DATASET on the cheapest tier that will do, and land the results in DuckDB."""
    from models.catalogue import CatalogueError
    from sluice.ingest import IngestError

    t0 = time.perf_counter()
    try:
        from flows.batch_run import sluice_run

        summary = sluice_run(
            str(dataset),
            warehouse=str(warehouse) if warehouse else None,
            catalogue=str(catalogue) if catalogue else None,
            data_dir=str(data_dir) if data_dir else None,
            run_id=run_id,
        )
    except (IngestError, CatalogueError, ValueError) as exc:
        _fail(str(exc))
    _print_summary(summary, time.perf_counter() - t0)


@app.command()
def prepare(data_dir: DataDirOpt = None) -> None:
    """Convert the packaged SmolLM2 model into data/models/ (done on first use anyway)."""
    from models.packaged import PACKAGED_PREFIX, resolve_model
    from sluice.config import load_settings

    settings = load_settings(data_dir=data_dir)
    console.print(resolve_model(PACKAGED_PREFIX + "smollm2-135m-instruct", settings.data_dir))


@app.command()
def submit(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    drop: Annotated[Optional[str], typer.Option(
        help="drop box: s3://bucket/prefix or a folder [SLUICE_DROP_URL, else data/drop]")] = None,
    name: Annotated[Optional[str], typer.Option(help="name in the drop box [the file's name]")] = None,
) -> None:
    """Put DATASET into the drop box's incoming/; the `process-drop-box` flow answers it on its next pass."""
    from sluice.config import load_settings
    from sluice.dropbox import open_drop_box, results_location
    from sluice.ingest import dataset_name_for

    if not dataset.is_file():
        _fail(f"{dataset}: no such file")
    box = open_drop_box(drop, default_root=load_settings().data_dir / "drop")
    key = box.submit(dataset, name)
    console.print(f"submitted {box.locate(key)}", highlight=False, soft_wrap=True)
    console.print(f"results will appear at {results_location(box, dataset_name_for(name or dataset.name))}"
                  f" (bad files: {box.locate('failed/')}<run_id>/, with a .error.json reason)",
                  highlight=False, soft_wrap=True)


# the learned router: `sluice router train`, `sluice route` (sluice/router/cli.py)
from sluice.router.cli import route_command, router_app  # noqa: E402

app.add_typer(router_app, name="router")
app.command("route")(route_command)

if __name__ == "__main__":
    app()

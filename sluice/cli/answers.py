"""`sluice answers export`: a tier's recorded answers from the warehouse, as a replay tier's answers file.

    sluice answers export --tier premium -o answers.parquet [--warehouse PATH] [--dataset NAME] [--since DATE]

Every request the tier answered ok (final answers, retries, escalations and shadow answers), one row per request,
latest answer first (sluice/warehouse/answers.py). Point a replay tier at the file (`backend = "replay"`,
`answers = "answers.parquet"`) to evaluate routing, budgets and cascades on these answers for $0.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

answers_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="Recorded answers: export a tier's answers for replay tiers.")
console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@answers_app.command("export")
def export(
    tier: Annotated[str, typer.Option(help="the tier whose answers to export")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    warehouse: Annotated[Optional[Path], typer.Option(help="DuckDB warehouse [data/warehouse.duckdb]")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="only rows of this dataset")] = None,
    since: Annotated[Optional[datetime], typer.Option(help="only runs that finished on or after this date")] = None,
) -> None:
    """Write TIER's recorded answers (one row per request, latest first) to a Parquet file a replay tier reads."""
    from sluice.config import load_settings
    from sluice.runs import write_parquet
    from sluice.warehouse.answers import answered_tiers, recorded_answers

    path = load_settings(warehouse=warehouse).warehouse
    if path is None or not Path(path).is_file():
        _fail(f"{path}: no warehouse (run `sluice run` first)")
    table = recorded_answers(path, tier, dataset=dataset, since=since)
    if table.num_rows == 0:
        known = answered_tiers(path)
        _fail(f"{path}: no answers by tier {tier!r}" + (f" for dataset {dataset!r}" if dataset else "")
              + (f" since {since:%Y-%m-%d %H:%M}" if since else "")
              + f" (tiers with answers: {', '.join(known) or 'none'})")
    write_parquet(table, output)
    kinds = table.group_by("kind").aggregate([("kind", "count")]).to_pylist()
    console.print(f"wrote {output}: {table.num_rows} recorded answers of tier {tier} ("
                  + ", ".join(f"{k['kind_count']} {k['kind']}" for k in kinds) + ")", highlight=False,
                  soft_wrap=True)

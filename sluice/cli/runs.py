"""`sluice runs`: the last runs, one line each (like `prefect flow-run ls`), and `sluice runs show RUN_ID`.

    sluice runs [--limit 20] [--dataset NAME] [--warehouse PATH] [--runs-dir PATH]
    sluice runs show RUN_ID [--warehouse PATH]

Landed runs come from the warehouse (read-only); run folders that have not landed are listed as `unfinished`
(sluice/reports/runs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sluice.cli.tables import print_table

runs_app = typer.Typer(add_completion=False, help="The last runs: cost, saving, quality, status, wall time.")
console = Console()

WarehouseOpt = Annotated[Optional[Path], typer.Option(help="DuckDB warehouse [data/warehouse.duckdb]")]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _money(v) -> str:
    return "" if v is None else f"${v:.4f}"


def _wall(seconds) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def _quality(r: dict) -> str:
    """Measured accuracy where graded (beside the all-premium baseline's), and the judged estimate with its 95%
    interval and judged pairs where the shadow sample gave one."""
    parts = []
    if r["accuracy"] is not None:
        parts.append(f"{r['accuracy']:.3f} of {r['graded_rows']}" + (
            f" (all-premium {r['baseline_accuracy']:.3f})" if r["baseline_accuracy"] is not None else ""))
    if r.get("quality_estimate") is not None:
        parts.append(f"est. {r['quality_estimate']:.2f} [{r['quality_low']:.2f}, {r['quality_high']:.2f}] "
                     f"n={r['quality_n']}")
    return "; ".join(parts)


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="how many runs, newest first")] = 20,
    dataset: Annotated[Optional[str], typer.Option(help="only runs of this dataset")] = None,
    warehouse: WarehouseOpt = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="run folders, for unfinished runs [data/runs]")] = None,
) -> None:
    """List the last runs: rows, cost, saving against all-premium, accuracy, status and wall time."""
    if ctx.invoked_subcommand is not None:
        return
    from sluice.config import load_settings
    from sluice.reports.runs import list_runs

    settings = load_settings(warehouse=warehouse, runs_dir=runs_dir)
    df = list_runs(settings.warehouse, settings.runs_dir, limit=limit, dataset=dataset)
    if df.is_empty():
        console.print(f"no runs in {settings.warehouse}" + (f" for dataset {dataset!r}" if dataset else ""),
                      highlight=False)
        return
    table = Table(title=f"Runs ({settings.warehouse})")
    for col, justify in [("run id", "left"), ("dataset", "left"), ("started (UTC)", "left"), ("rows", "right"),
                         ("cost", "right"), ("saving", "right"), ("quality", "right"), ("status", "left"),
                         ("wall time", "right")]:
        # on a narrow terminal a cell folds onto a second line rather than losing its digits to an ellipsis
        table.add_column(col, justify=justify, no_wrap=col == "run id", overflow="fold")
    for r in df.iter_rows(named=True):
        saving = "" if r["saving_usd"] is None else _money(r["saving_usd"]) + (
            f" ({r['saving_pct']:.1f}%)" if r["saving_pct"] is not None else "")
        status = r["status"] if not r["failed"] else f"{r['status']}, {r['failed']} failed"
        table.add_row(r["run_id"], r["dataset"] or "", f"{r['started_at']:%Y-%m-%d %H:%M}" if r["started_at"] else "",
                      "" if r["rows"] is None else f"{r['rows']:,}", _money(r["cost_usd"]), saving, _quality(r),
                      status, _wall(r["wall_s"]))
    print_table(console, table)


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="the run")],
    warehouse: WarehouseOpt = None,
) -> None:
    """RUN_ID's summary: the lines the run printed when it landed."""
    from sluice.config import load_settings
    from sluice.reports.runs import RunNotFound, run_summary
    from sluice.reports.summary import summary_lines

    path = load_settings(warehouse=warehouse).warehouse
    if path is None or not Path(path).is_file():
        _fail(f"{path}: no warehouse (run `sluice run` first)")
    try:
        s = run_summary(path, run_id)
    except RunNotFound as exc:
        _fail(str(exc))
    table = Table(title=f"Sluice run {run_id} ({s['dataset']})", show_header=False)
    for k, v in summary_lines(s):
        table.add_row(k, v)
    if s["started_at"] is not None:
        table.add_row("started", f"{s['started_at']:%Y-%m-%d %H:%M:%S %Z}")
    table.add_row("wall time", "" if s["wall_s"] is None else f"{s['wall_s']:.1f} s")
    table.add_row("warehouse", f"{path} (table `results`)")
    print_table(console, table)

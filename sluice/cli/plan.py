"""`sluice plan DATASET`: forecast rows per tier, tokens, cost and savings before a run (sluice/reports/forecast.py),
routed as the next run of the dataset will route (the promoted router, the quality loop's share)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sluice.cli.options import CatalogueOpt, DataDirOpt, WarehouseOpt
from sluice.cli.router import _fail, console


def plan_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    warehouse: WarehouseOpt = None,
    catalogue: CatalogueOpt = None,
    data_dir: DataDirOpt = None,
    run_id: Annotated[Optional[str], typer.Option(
        help="the run id you will give `sluice run` [none: matched to the next run of this dataset]")] = None,
    cache: Annotated[bool, typer.Option(
        "--cache", help="count answers of earlier runs as cache hits (when the run uses the cache stage)")] = False,
) -> None:
    """Forecast rows per tier, tokens, cost and savings of DATASET before spending (sluice/reports/forecast.py)."""
    from models.catalogue import CatalogueError
    from sluice.config import load_settings
    from sluice.contracts.names import dataset_name_for
    from sluice.reports.forecast import forecast_dataset, load_history, store_forecast
    from sluice.stages.ingest.read import IngestError
    from sluice.stages.route.loop import plan_routing
    from sluice.warehouse.db import connect

    try:
        settings = load_settings(warehouse=warehouse, catalogue_path=catalogue, data_dir=data_dir)
        tiers = settings.catalogue()
        history, router, routing, decision = None, settings.router, None, None
        if settings.warehouse.is_file():  # learn from earlier runs; closed again before the slow part
            with connect(settings.warehouse, read_only=True) as con:
                history = load_history(con, tiers, settings.default_max_tokens)
            # route as the next run will: the promoted router, the premium share the quality loop sets
            router, routing, decision = plan_routing(settings.router, settings.warehouse,
                                                     settings.data_dir / "routers", dataset_name_for(dataset))
        f = forecast_dataset(dataset, tiers, settings.data_dir, settings.default_max_tokens, router,
                             history=history,
                             cache_warehouse=settings.warehouse if cache and settings.warehouse.is_file() else None)
    except (IngestError, CatalogueError, ValueError) as exc:
        _fail(str(exc))
    with connect(settings.warehouse) as con:
        fid = store_forecast(con, f, dataset_name_for(dataset), str(dataset), run_id)
    table = Table(title=f"Sluice plan for {dataset} (forecast {fid})")
    for col in ("tier", "rows", "input tokens", "output tokens", "cost (USD)", "all-premium (USD)", "assumptions"):
        table.add_column(col, justify="left" if col in ("tier", "assumptions") else "right")
    for name, t in f["tiers"].items():
        a = f["assumptions"][name]
        how = f"{t['output_tokens'] / max(t['rows'], 1):.0f} output tok/row ({a['fill_ratio_source']} fill)"
        if a.get("output_tokens_per_s"):
            how += (f"; {a['output_tokens_per_s']:.0f} tok/s, {t.get('engine_start_s', 0):.0f} s start "
                    f"({a['throughput_source']})")
        table.add_row(name, f"{t['rows']}", f"{t['input_tokens']:,}", f"{t['output_tokens']:,}",
                      f"{t['cost_usd']:.6f}", f"{t['baseline_cost_usd']:.6f}", how)
    table.add_row("total", f"{f['rows']}", f"{f['input_tokens']:,}", f"{f['output_tokens']:,}",
                  f"{f['cost_usd']:.6f}", f"{f['baseline_cost_usd']:.6f}",
                  f"{f['duplicates']} duplicates, {f['cache_hits']} cache hits, {f['quarantined']} quarantined")
    console.print(table)
    if routing is not None:
        console.print(f"routes with: {routing['router']}, by {routing['mode']}"
                      + (f" (premium share {router.premium_share:g})" if router.premium_share is not None else ""),
                      highlight=False)
    if decision:
        console.print(f"quality loop: {decision['setting']} {decision['from']} -> {decision['to']}: {decision['why']}",
                      highlight=False)
    console.print(f"expected saving ${f['baseline_cost_usd'] - f['cost_usd']:.6f}: dedup ${f['dedup_saving_usd']:.6f},"
                  f" cache ${f['cache_saving_usd']:.6f}, routing ${f['routing_saving_usd']:.6f}", highlight=False)
    counted = sorted({a["tokenizer"] for a in f["assumptions"].values()})
    console.print(f"input tokens counted with: {', '.join(counted)}; compare after the run: sluice report RUN_ID",
                  highlight=False)

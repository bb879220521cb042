"""`sluice router train` and `sluice route`: train the learned router, and route a Parquet file with it.

    sluice router train LABELS.parquet -o ROUTER [--no-embeddings] [--l2-text 100] [--l2-embedding 1000]
    sluice router train --from-warehouse data/warehouse.duckdb -o ROUTER
    sluice route IN.parquet -o OUT.parquet [--router ROUTER] (--premium-share F | --budget-usd X)

`sluice route` writes every input column plus `tier`, `route_score` (the estimated probability that the premium
tier is needed) and `route_reason`; in budget mode a row the budget cannot cover has no tier and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

router_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train the learned router.")
console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def _read_table(path: Path):
    import polars as pl

    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001  (any unreadable file is reported the same way)
        _fail(f"{path}: cannot read Parquet: {exc}")


@router_app.command("train")
def train(
    labels: Annotated[Optional[Path], typer.Argument(
        help="Parquet with `prompt`, `cheap_ok` [, `premium_ok`, `cheap_response`]")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="folder to save the router in")] = Path("router"),
    from_warehouse: Annotated[Optional[Path], typer.Option(help="train on the warehouse's router_training table")] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings/--no-embeddings", help="use MiniLM embeddings")] = True,
    l2_text: Annotated[float, typer.Option(help="L2 strength of the text-feature head")] = 100.0,
    l2_embedding: Annotated[float, typer.Option(help="L2 strength of the text + embedding head")] = 1000.0,
) -> None:
    """Fit the router on labelled prompts and save it to OUTPUT."""
    from sluice.stages.route.learned import RouterError, train_router

    if (labels is None) == (from_warehouse is None):
        _fail("give a LABELS.parquet file or --from-warehouse PATH (one of them)")
    if from_warehouse is not None:
        from sluice.warehouse.labels import read_labels

        df = read_labels(from_warehouse)
        source = f"{from_warehouse} (router_training)"
    else:
        assert labels is not None
        df = _read_table(labels)
        source = str(labels)
    try:
        router = train_router(df, use_embeddings=embeddings, l2_text=l2_text, l2_embedding=l2_embedding)
    except RouterError as exc:
        _fail(f"{source}: {exc}")
    router.trained_on["source"] = source
    router.save(output)
    console.print(f"router trained on {df.height} rows of {source} (target: {router.target}) -> {output}")
    if "cheap_response" in df.columns:  # the cheap tier's answers too: answer checks for the cascade
        from sluice.stages.review.verifier import train_verifier

        known = df.filter(df["cheap_response"].is_not_null() & df["cheap_ok"].is_not_null())
        try:
            verifier = train_verifier(known["cheap_response"].to_list(), known["cheap_ok"].to_list())
        except ValueError as exc:
            _fail(f"{source}: answer verifier: {exc}")
        verifier.trained_on["source"] = source
        path = verifier.save(output)
        console.print(f"answer verifier trained on {known.height} cheap answers -> {path}")


def route_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet file to write")],
    router: Annotated[Optional[Path], typer.Option(help="saved router folder (default: heuristic score)")] = None,
    premium_share: Annotated[Optional[float], typer.Option(help="share of rows for the premium tier")] = None,
    budget_usd: Annotated[Optional[float], typer.Option(help="dollar budget for the whole batch")] = None,
    catalogue: Annotated[Optional[Path], typer.Option(help="tier catalogue TOML [models/catalogue.toml]")] = None,
    max_tokens: Annotated[int, typer.Option(help="planned output tokens for rows without max_tokens")] = 256,
) -> None:
    """Assign every row of DATASET a tier; write it with tier, route_score and route_reason."""
    import polars as pl
    from pydantic import ValidationError

    from models.catalogue import CatalogueError, load_catalogue
    from sluice.config import RouterSettings
    from sluice.stages.route.assign import route_batch
    from sluice.stages.route.learned import RouterError

    df = _read_table(dataset)
    if "prompt" not in df.columns:
        _fail(f"{dataset}: no `prompt` column")
    try:
        settings = RouterSettings(model=router, premium_share=premium_share, budget_usd=budget_usd)
        cat = load_catalogue(catalogue)
        routed = pl.from_arrow(route_batch(df.to_arrow(), cat.names, settings, cat, max_tokens))
    except (ValidationError, CatalogueError, RouterError, ValueError) as exc:
        _fail(str(exc))
    assert isinstance(routed, pl.DataFrame)
    output.parent.mkdir(parents=True, exist_ok=True)
    routed.write_parquet(output)
    counts = routed.group_by("tier").len().sort("tier", nulls_last=True)
    console.print(", ".join(f"{t or 'unrouted'}={n}" for t, n in counts.iter_rows()) + f" -> {output}")
    unrouted = routed.filter(pl.col("tier").is_null())
    if unrouted.height:
        console.print(f"[yellow]{unrouted.height} rows not routed:[/] {unrouted['route_reason'][0]}", highlight=False)

"""`sluice router train` and `sluice route`: train the learned router, and route a Parquet file with it.

    sluice router train LABELS.parquet -o ROUTER [--kind logistic|knn|per-tier|auto] [--no-embeddings]
                        [--l2-text 100] [--l2-embedding 1000]
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
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line: greppable
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
    kind: Annotated[str, typer.Option(
        help="logistic (heads over text features + embedding), knn (nearest labelled prompts), per-tier (a quality "
             "predictor per tier), or auto (the best of them by 5-fold cross-validation on the labels)")] = "logistic",
    l2_text: Annotated[float, typer.Option(help="L2 strength of the text-feature head")] = 100.0,
    l2_embedding: Annotated[float, typer.Option(help="L2 strength of the text + embedding head")] = 1000.0,
    register: Annotated[bool, typer.Option(
        help="with --from-warehouse: keep it as the next version in the warehouse's `routers` table, promoted "
             "only if it beats the promoted version on held-out folds")] = False,
) -> None:
    """Fit the router on labelled prompts and save it to OUTPUT."""
    from sluice.stages.route.learned import RouterError, train_router

    if (labels is None) == (from_warehouse is None):
        _fail("give a LABELS.parquet file or --from-warehouse PATH (one of them)")
    through = None  # the newest label learned from: a registered version counts new labels from it
    if from_warehouse is not None:
        from sluice.warehouse.routers import training_labels

        df, through = training_labels(from_warehouse)
        source = f"{from_warehouse} (router_training)"
    else:
        assert labels is not None
        df = _read_table(labels)
        source = str(labels)
    try:
        if kind == "logistic":
            router = train_router(df, use_embeddings=embeddings, l2_text=l2_text, l2_embedding=l2_embedding)
        else:
            from sluice.stages.route.choose import train as train_kind

            router = train_kind(kind, df, use_embeddings=embeddings)
    except RouterError as exc:
        _fail(f"{source}: {exc}")
    if "auto" in router.trained_on:
        auto = router.trained_on["auto"]
        console.print(f"chose {auto['chosen']} by {auto['metric']}: "
                      + ", ".join(f"{k} {v}" for k, v in auto["candidates"].items()), highlight=False)
    router.trained_on["source"] = source
    router.save(output)
    console.print(f"router trained on {df.height} rows of {source} (target: {router.target}) -> {output}")
    if "cheap_response" in df.columns:  # the cheap tier's answers too: answer checks for the cascade
        from sluice.stages.review.verifier import train_verifier

        known = df.filter(df["cheap_response"].is_not_null() & df["cheap_ok"].is_not_null())
        try:
            verifier = train_verifier(known["cheap_response"].to_list(), known["cheap_ok"].to_list(),
                                      prompts=known["prompt"].to_list() if "prompt" in known.columns else None)
        except ValueError as exc:
            _fail(f"{source}: answer verifier: {exc}")
        verifier.trained_on["source"] = source
        path = verifier.save(output)
        console.print(f"answer verifier trained on {known.height} cheap answers -> {path}")
    if register:
        if from_warehouse is None:
            _fail("--register keeps versions in a warehouse: give --from-warehouse")
        from sluice.stages.route.versions import register_candidate

        version, verdict = register_candidate(from_warehouse, output, df, embeddings, l2_text, l2_embedding,
                                              labels_through=through, kind=kind)
        console.print(f"router version {version}: {verdict.reason}")


@router_app.command("list")
def list_versions(warehouse: Annotated[Path, typer.Option(help="the warehouse holding the versions")] = Path(
        "data/warehouse.duckdb")) -> None:
    """Every router version kept in the warehouse, the promoted one marked."""
    from rich.table import Table

    from sluice.warehouse.routers import list_routers

    table = Table("version", "trained", "labels", "cv AUROC", "vs promoted", "promoted", "reason")
    for r in list_routers(warehouse).iter_rows(named=True):
        before = "" if r["previous_auroc"] is None else f"{r['previous_auroc']:.3f}"
        table.add_row(str(r["version"]), f"{r['trained_at']:%Y-%m-%d %H:%M}", str(r["labels"]),
                      f"{r['cv_auroc']:.3f}", before, "*" if r["promoted"] else "", r["reason"] or "")
    console.print(table)


@router_app.command("promote")
def promote_version(version: int, warehouse: Annotated[Path, typer.Option()] = Path("data/warehouse.duckdb")) -> None:
    """Promote VERSION by hand: runs use it by default from now on."""
    from sluice.warehouse.routers import promote

    try:
        promote(warehouse, version, "promoted by hand")
    except LookupError as exc:
        _fail(str(exc))
    console.print(f"router version {version} promoted")


@router_app.command("rollback")
def rollback_version(warehouse: Annotated[Path, typer.Option()] = Path("data/warehouse.duckdb")) -> None:
    """Promote again the version the promoted one replaced."""
    from sluice.warehouse.routers import rollback

    try:
        version = rollback(warehouse)
    except LookupError as exc:
        _fail(str(exc))
    console.print(f"rolled back: router version {version} promoted")


# where a command's map/reduce partitions run (`sluice route`, `sluice dedup`): flags over SLUICE_CLUSTER*
ClusterOpt = Annotated[Optional[str], typer.Option(
    help="where the partitions run: local (this process) or dask (docs/cluster.md) [SLUICE_CLUSTER, local]")]
ClusterAddressOpt = Annotated[Optional[str], typer.Option(
    help="scheduler of a running Dask cluster, tcp://HOST:8786; implies --cluster dask (without it, dask starts a "
         "temporary local cluster) [SLUICE_CLUSTER_ADDRESS]")]


def route_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet file to write")],
    router: Annotated[Optional[Path], typer.Option(help="saved router folder (default: heuristic score)")] = None,
    premium_share: Annotated[Optional[float], typer.Option(help="share of rows for the premium tier")] = None,
    budget_usd: Annotated[Optional[float], typer.Option(help="dollar budget for the whole batch")] = None,
    catalogue: Annotated[Optional[Path], typer.Option(help="tier catalogue TOML [models/catalogue.toml]")] = None,
    max_tokens: Annotated[int, typer.Option(help="planned output tokens for rows without max_tokens")] = 256,
    cluster: ClusterOpt = None,
    cluster_address: ClusterAddressOpt = None,
) -> None:
    """Assign every row of DATASET a tier; write it with tier, route_score and route_reason.

    The file is read and written in record batches (`sluice.stages.route.stream`), so memory stays bounded
    whatever its size; a premium share or a budget reads it twice. With --cluster dask its partitions are routed
    on a Dask cluster (flows/cluster.py), with the same output."""
    import pyarrow.parquet as pq
    from pydantic import ValidationError

    from models.catalogue import CatalogueError, load_catalogue
    from sluice.config import RouterSettings
    from sluice.stages.route.learned import RouterError
    from sluice.stages.route.stream import route_file

    try:
        columns = pq.ParquetFile(dataset).schema_arrow.names
    except Exception as exc:  # noqa: BLE001  (any unreadable file is reported the same way)
        _fail(f"{dataset}: cannot read Parquet: {exc}")
    if "prompt" not in columns:
        _fail(f"{dataset}: no `prompt` column")
    try:
        settings = RouterSettings(model=router, premium_share=premium_share, budget_usd=budget_usd)
        where = cluster_settings(cluster, cluster_address)
        cat = load_catalogue(catalogue)
        if where.engine == "local":
            counts, unrouted_reason = route_file(dataset, output, cat.names, settings, cat, max_tokens)
        else:
            from flows.cluster import route_on_cluster  # cluster_settings checked the extra is there

            counts, unrouted_reason = route_on_cluster(where, dataset, output, cat.names, settings, cat, max_tokens)
    except (ValidationError, CatalogueError, RouterError, ValueError) as exc:
        _fail(str(exc))
    ordered = sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    console.print(", ".join(f"{t or 'unrouted'}={n}" for t, n in ordered) + f" -> {output}")
    if unrouted_reason is not None:
        console.print(f"[yellow]{counts[None]} rows not routed:[/] {unrouted_reason}", highlight=False)


def cluster_settings(engine: str | None, address: str | None):
    """SLUICE_CLUSTER* from the environment, overridden by the flags (an address implies dask; local drops it).
    ValueError, before any work starts, for settings that do not validate or dask without the cluster extra."""
    from pydantic import ValidationError

    from sluice.config import ClusterSettings, load_settings

    values = load_settings().cluster.model_dump()
    if address:
        values.update(engine="dask", address=address)
    if engine:
        values["engine"] = engine
    if values["engine"] == "local":
        values["address"] = None
    try:
        where = ClusterSettings.model_validate(values)
    except ValidationError as exc:
        raise ValueError(f"--cluster: {exc.errors()[0]['msg']}") from None
    if where.engine == "dask":
        try:
            import flows.cluster  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"--cluster dask needs the cluster extra (pip install 'sluice[cluster]'): {exc}") from None
    return where

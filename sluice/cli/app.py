"""The `sluice` command.

    sluice run DATASET.parquet [--warehouse PATH] [--catalogue PATH]   answer a dataset, land it in DuckDB
    sluice prepare                                                     convert the packaged demo model (first use)
    sluice submit DATASET.parquet [--drop s3://bucket/prefix | PATH] [--budget-usd 5 --tag team=x ...]   drop box
    sluice plan DATASET.parquet [--run-id ID]                          forecast cost and savings before a run
    sluice report RUN_ID [-o report.html]                              one run as a self-contained HTML report
    sluice dedup IN.parquet -o OUT.parquet [--only exact,near,semantic,cache --warehouse PATH]   mark duplicates
    sluice answers export --tier premium -o answers.parquet [--warehouse PATH]   a tier's answers, for replay tiers
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sluice: make the inference bill small.")
console = Console()


@app.callback()
def _runtime_environment() -> None:
    """Before any command imports Prefect, transformers or vLLM: their environment defaults (sluice.config)."""
    from sluice.config import apply_runtime_env

    apply_runtime_env()

from sluice.cli.options import CatalogueOpt, DataDirOpt, WarehouseOpt  # noqa: E402
from sluice.cli.router import ClusterAddressOpt, ClusterOpt  # noqa: E402  (shared with sluice route / dedup)


def _print_summary(summary: dict, seconds: float) -> None:
    from sluice.cli.tables import print_table
    from sluice.reports.summary import summary_lines

    table = Table(title=f"Sluice run {summary['run_id']} ({summary['dataset']})", show_header=False)
    for k, v in summary_lines(summary):
        table.add_row(k, v)
    if summary.get("replayed_tiers"):
        table.add_row("replayed tiers", f"{', '.join(summary['replayed_tiers'])} (recorded answers, no network)")
    table.add_row("wall time", f"{seconds:.1f} s")
    table.add_row("warehouse", f"{summary['warehouse']} (table `results`)")
    print_table(console, table)  # whole, even when the output is a file (sluice/cli/tables.py)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line: greppable
    raise typer.Exit(code=2)


@app.command()
def run(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    warehouse: WarehouseOpt = None,
    catalogue: CatalogueOpt = None,
    data_dir: DataDirOpt = None,
    run_id: Annotated[Optional[str], typer.Option(help="run id (default: time + random suffix)")] = None,
    cache: Annotated[bool, typer.Option(help="reuse answers landed by earlier runs")] = True,
    premium_share: Annotated[Optional[float], typer.Option(help="send this share of rows to the premium tier")] = None,
    mid_share: Annotated[Optional[float], typer.Option(
        help="with --premium-share: the next share of rows goes to the middle tier(s) [0.20]")] = None,
    budget_usd: Annotated[Optional[float], typer.Option(help="route the whole batch under this dollar budget")] = None,
    router: Annotated[Optional[Path], typer.Option(help="a router trained with `sluice router train`")] = None,
    deadline_h: Annotated[Optional[float], typer.Option(help="hours until answers are needed (batch APIs)")] = None,
    schema: Annotated[Optional[Path], typer.Option(
        help="JSON Schema file every answer must satisfy (rows may also carry a `response_schema` column)")] = None,
    choices: Annotated[Optional[str], typer.Option(
        help="classification: each answer is one of these comma-separated labels")] = None,
    temperature: Annotated[Optional[float], typer.Option(
        help="sampling temperature for rows without a `temperature` column [greedy]")] = None,
    cascade_share: Annotated[Optional[float], typer.Option(
        help="at most this share of a tier's answers is escalated to the next tier [0.10]")] = None,
    cascade_min_confidence: Annotated[Optional[float], typer.Option(
        help="only answers less confident than this are escalated (1.0: the share alone decides) [0.5]")] = None,
    shadow_share: Annotated[Optional[float], typer.Option(
        help="this share of the cheapest tier's answers is also answered by premium, to retrain the router [0.05]",
    )] = None,
    grader: Annotated[Optional[str], typer.Option(
        help="how answers are compared with a `reference` column, for rows without a `grader` column: auto, exact, "
             "number, choice, contains or json [auto]")] = None,
    min_quality: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="a floor for the quality estimate (from the shadow sample): the summary and "
                               "runs.quality_alert say when its 95% lower bound falls under it")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(
        "--tag", help="chargeback tag KEY=VALUE for every row (repeatable; a row's own `tags` column wins)")] = None,
    max_false_hit: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="the semantic dedup rule keeps the upper 95% bound on its false-hit rate at or "
                               "under this (calibrated on labelled pairs) [0.01]")] = None,
    trim: Annotated[Optional[bool], typer.Option(
        "--trim/--no-trim", help="trim redundant whitespace from prompts before routing; the tokens and dollars "
                                 "saved land per row [the catalogue's `trim`, else off]")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="every engine and library log line on the terminal, live (default: a progress view; "
                          "the logs go to data/runs/<run_id>/logs/)")] = False,
    cluster: ClusterOpt = None,
    cluster_address: ClusterAddressOpt = None,
) -> None:
    """Answer every row of DATASET on the cheapest tier that will do, and land the results in DuckDB. With
    --cluster dask the dedup stage's near partitions and the route stage's partitions run on a Dask cluster
    (docs/cluster.md), with the same hand-offs."""
    from models.catalogue import CatalogueError
    from sluice.contracts.shapes import ShapeError, schema_from_choices, schema_from_file
    from sluice.stages.ingest.read import IngestError

    t0 = time.perf_counter()
    try:
        from flows.batch_run import sluice_run

        if schema and choices:
            raise ValueError("give --schema or --choices, not both")
        response_schema = schema_from_file(schema) if schema else schema_from_choices(choices) if choices else None
        from sluice.contracts.tags import parse_tags

        tags = parse_tags(tag or [])  # a malformed tag fails here, before the flow starts
        from sluice.cli.router import cluster_settings

        # a bad engine name or a missing cluster extra fails here too; no flag: the settings decide in the flow
        where = cluster_settings(cluster, cluster_address) if cluster or cluster_address else None
        if grader is not None:  # an unknown grader name fails here, before the flow starts
            from sluice.contracts.grading import check_grader

            check_grader(grader)

        from sluice.cli.live import run_display
        from sluice.config import load_settings

        runs_dir = load_settings(warehouse=str(warehouse) if warehouse else None,
                                 data_dir=str(data_dir) if data_dir else None).runs_dir
        assert runs_dir is not None
        with run_display(runs_dir, verbose, budget_usd):
            summary = sluice_run(
                str(dataset),
                warehouse=str(warehouse) if warehouse else None,
                catalogue=str(catalogue) if catalogue else None,
                data_dir=str(data_dir) if data_dir else None,
                run_id=run_id,
                use_cache=cache,
                premium_share=premium_share,
                budget_usd=budget_usd,
                router=str(router) if router else None,
                deadline_h=deadline_h,
                response_schema=response_schema,
                temperature=temperature,
                cascade_share=cascade_share,
                shadow_share=shadow_share,
                cascade_min_confidence=cascade_min_confidence,
                mid_share=mid_share,
                grader=grader,
                min_quality=min_quality,
                tags=tags,
                max_false_hit=max_false_hit,
                trim=trim,
                cluster=where.model_dump() if where is not None else None,
            )
    except (IngestError, CatalogueError, ShapeError, ValueError) as exc:
        _fail(str(exc))
    if summary.get("status") == "waiting":  # a tier with batch_wait = false: nothing landed yet, nothing lost
        console.print(f"run {summary['run_id']}: {summary['message']} (or run the same command again)",
                      highlight=False)
        return
    _print_summary(summary, time.perf_counter() - t0)


@app.command()
def prepare(
    data_dir: DataDirOpt = None,
    quantised: Annotated[bool, typer.Option("--quantised", help="also build its W8A8 int8 copy "
                                            "(packaged:smollm2-135m-instruct-w8a8, models/quantise.py)")] = False,
) -> None:
    """Convert the packaged SmolLM2 model into data/models/ (done on first use anyway)."""
    from models.packaged import PACKAGED_PREFIX, resolve_model
    from sluice.config import load_settings

    settings = load_settings(data_dir=data_dir)
    console.print(resolve_model(PACKAGED_PREFIX + "smollm2-135m-instruct", settings.data_dir))
    if quantised:
        console.print(resolve_model(PACKAGED_PREFIX + "smollm2-135m-instruct-w8a8", settings.data_dir))


# put a dataset (and its options) into the drop box: `sluice submit` (sluice/cli/submit.py)
from sluice.cli.submit import submit_command  # noqa: E402

app.command("submit")(submit_command)

# the learned router: `sluice router train`, `sluice route` (sluice/cli/router.py)
from sluice.cli.router import route_command, router_app  # noqa: E402

app.add_typer(router_app, name="router")
app.command("route")(route_command)

# `sluice dedup`, on this process or a cluster (sluice/cli/dedup.py)
from sluice.cli.dedup import dedup_command  # noqa: E402

app.command("dedup")(dedup_command)

# recorded answers for replay tiers: `sluice answers export` (sluice/cli/answers.py)
from sluice.cli.answers import answers_app  # noqa: E402

app.add_typer(answers_app, name="answers")

# the last runs and one run's summary: `sluice runs`, `sluice runs show RUN_ID` (sluice/cli/runs.py)
from sluice.cli.runs import runs_app  # noqa: E402

app.add_typer(runs_app, name="runs")

# the forecast before a run: `sluice plan` (sluice/cli/plan.py)
from sluice.cli.plan import plan_command  # noqa: E402

app.command("plan")(plan_command)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="the run to report on")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("report.html"),
    warehouse: WarehouseOpt = None,
) -> None:
    """Write RUN_ID's report (plots, key table, forecast against actual) as one self-contained HTML file."""
    from sluice.config import load_settings
    from sluice.reports.html import ReportError, write_report

    settings = load_settings(warehouse=warehouse)
    if not settings.warehouse.is_file():
        _fail(f"{settings.warehouse}: no warehouse (run `sluice run` first)")
    try:
        out = write_report(settings.warehouse, run_id, output)
    except ReportError as exc:
        _fail(str(exc))
    console.print(f"wrote {out}", highlight=False)


@app.command()
def dashboard(
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("dashboard.html"),
    warehouse: WarehouseOpt = None,
    days: Annotated[int, typer.Option(help="nights covered, counting back from the latest run")] = 30,
    tag_key: Annotated[Optional[str], typer.Option(
        "--tag-key", help="chargeback tag key of the per-tag section (default: the key most rows carry)")] = None,
) -> None:
    """Write the dashboard (per night and dataset, and per tag: cost, savings, tokens, latency, errors, quality) as
    HTML."""
    from sluice.config import load_settings
    from sluice.reports.dashboard import write_dashboard

    settings = load_settings(warehouse=warehouse)
    if not settings.warehouse.is_file():
        _fail(f"{settings.warehouse}: no warehouse (run `sluice run` first)")
    console.print(f"wrote {write_dashboard(settings.warehouse, output, days=days, tag_key=tag_key)}", highlight=False)


@app.command()
def economics(
    run_id: Annotated[str, typer.Argument(help="a landed run")],
    warehouse: WarehouseOpt = None,
    catalogue: CatalogueOpt = None,
) -> None:
    """The run's saving by mechanism; which worker class is cheapest for each self-hosted tier, self-host vs API,
    per run vs always on."""
    from sluice.config import load_settings
    from sluice.reports.economics import economics_lines, run_economics, run_savings, savings_lines

    settings = load_settings(warehouse=warehouse, catalogue_path=catalogue)
    try:
        items = run_economics(str(settings.warehouse), run_id, settings.catalogue())
    except KeyError as exc:
        _fail(str(exc.args[0]))
    for line in savings_lines(run_savings(str(settings.warehouse), run_id)):
        console.print(line, highlight=False, soft_wrap=True)
    for line in economics_lines(items) or ["this run has no self-hosted tier"]:
        console.print(line, highlight=False, soft_wrap=True)


@app.command("validate-tier")
def validate_tier_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file the sample is drawn from (with `reference` to grade)")],
    tier: Annotated[str, typer.Option(help="tier to validate (a quantised one, say)")],
    reference: Annotated[Optional[str], typer.Option(help="tier to compare with (default: its reference_tier)")] = None,
    rows: Annotated[Optional[int], typer.Option(help="sampled rows (default: its validation_rows)")] = None,
    margin: Annotated[Optional[float], typer.Option(help="accuracy it may lose (default: its validation_margin)")] = None,
    quantization: Annotated[Optional[str], typer.Option(help="override the tier's quantisation")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="override the tier's dtype (CPU: bfloat16 with int8/fp8)")] = None,
    max_tokens: Annotated[int, typer.Option(help="answer length per row, at most")] = 64,
    catalogue: CatalogueOpt = None,
    warehouse: WarehouseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Compare a tier with its reference tier on a sample, as a run does before using it; exit 1 when refused."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from models.catalogue import Catalogue
    from sluice.config import load_settings
    from sluice.stages.infer.tier_validation import land_decision, sample_rows, validate_tier
    from sluice.stages.ingest.read import read_prompts
    from tasks.validate import judge_free_text

    settings = load_settings(warehouse=warehouse, catalogue_path=catalogue, data_dir=data_dir)
    cat = settings.catalogue()
    update = {"quantization": quantization, "dtype": dtype, "reference_tier": reference, "validation_rows": rows,
              "validation_margin": margin}
    t = cat.tier(tier).model_copy(update={k: v for k, v in update.items() if v is not None})
    try:  # validated again: the reference must exist and must not be the tier itself
        cat = Catalogue.model_validate({**cat.model_dump(), "tiers": [
            t.model_dump() if x.name == tier else x.model_dump() for x in cat.tiers]})
    except ValueError as exc:
        _fail(str(exc))
    if t.reference_tier is None:
        _fail(f"tier {tier!r} names no reference_tier: pass --reference")
    table = read_prompts(dataset)
    table = table.filter(pc.not_equal(table["status"], "quarantined"))
    if "max_tokens" in table.column_names:
        capped = pc.min_element_wise(pc.fill_null(table["max_tokens"], max_tokens), pa.scalar(max_tokens, pa.int64()))
        table = table.set_column(table.column_names.index("max_tokens"), "max_tokens", pc.cast(capped, pa.int32()))
    t0 = time.perf_counter()
    d = validate_tier(t, cat, sample_rows(table, t.validation_rows), max_tokens, str(settings.data_dir),
                      judge=judge_free_text)
    run_id = f"validate-{time.strftime('%Y%m%dT%H%M%S')}"
    land_decision(str(settings.warehouse), run_id, d)
    console.print(f"{d.message()} in {time.perf_counter() - t0:.0f} s; landed as {run_id} in `validations`",
                  highlight=False)
    if not d.passed:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()

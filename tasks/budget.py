"""The hard budget's hooks in the flow (`sluice.stages.budget`), and the Prefect events teams automate on.

    carry_deferred        the dataset's rows earlier runs deferred, in front of tonight's (before dedup)
    admit_first_answers   opens the run's ledger and holds the routed rows' first answers to the budget
    gate / settle         around every follow-up pass: reserve what fits before sending, settle the bill after
    judge_admission       the judge's reservation (all or nothing)
    budget_summary        the ledger as the summary and `runs.budget` show it

Events (docs/events.md), emitted with `prefect.events.emit_event` on resource `sluice.run.<run_id>`:
    sluice.run.budget-reached  the first time in a run the budget turned rows away (moved, deferred or left out)
    sluice.run.deferred        rows of the run deferred to the dataset's next run (how many, why)
    sluice.run.failed          the sluice-run flow failed (`run_failed`, its on_failure hook)
Without a budget every hook passes its input through: no ledger, no event but `failed`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import MissingContextError

from models.catalogue import Catalogue
from models.tokens import estimate_tokens
from sluice.config import Settings
from sluice.reports.assumptions import learn_assumptions
from sluice.runs import read_manifest, write_parquet
from sluice.stages.budget import DEFERRED, Ledger, admit_judge, admit_pass, rate_of, tier_rates
from sluice.stages.budget import admit_first_answers as admit_first
from sluice.stages.budget import carry_deferred as carry
from sluice.stages.budget.costs import BYTES_PER_TOKEN_UPPER, TEMPLATE_TOKENS, pass_fixed_usd, row_costs
from sluice.warehouse.db import connect
from sluice.warehouse.deferred import outstanding_deferred

log = logging.getLogger(__name__)


def emit(event: str, run_dir: Path, payload: dict) -> None:
    """One `sluice.run.*` event about the run in `run_dir`; never fails the run (no server: logged only)."""
    manifest = read_manifest(run_dir) or {}
    run_id = manifest.get("run_id", Path(run_dir).name)
    try:
        emit_event(event=event, resource={"prefect.resource.id": f"sluice.run.{run_id}",
                                          "prefect.resource.name": run_id,
                                          "sluice.dataset": str(manifest.get("dataset", ""))},
                   payload={"run_id": run_id, "dataset": manifest.get("dataset"), **payload})
    except Exception as exc:  # noqa: BLE001 - an event nobody can receive is not the run's failure
        log.warning("event %s not emitted: %s", event, exc)


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow (a test, a script): the module's logger
        return log


def _reached(ledger: Ledger, run_dir: Path, why: str) -> None:
    if ledger.mark_reached(why):
        _logger().warning("budget $%.6g reached: %s", ledger.budget_usd, why)
        emit("sluice.run.budget-reached", run_dir, {**ledger.summary(), "why": why})


@task(name="carry-deferred", cache_policy=NO_CACHE)
def carry_deferred(run_dir: Path, ingested: Path, warehouse: str, dataset: str) -> Path:
    """`ingested` with the dataset's outstanding deferred rows in front (`carried.parquet`), decided once."""
    out = run_dir / "carried.parquet"
    if out.is_file() or (run_dir / "deduped.parquet").is_file():
        return out if out.is_file() else ingested
    deferred = outstanding_deferred(warehouse, dataset)
    if deferred is None:
        return ingested
    write_parquet(carry(pl.read_parquet(ingested), deferred).to_arrow(), out)
    get_run_logger().info("%d rows deferred by earlier runs of %s go first (%s)", deferred.height, dataset,
                          ", ".join(sorted(set(deferred["run_id"].to_list()))))
    return out


def _throughput(warehouse: str, catalogue: Catalogue, default_max_tokens: int) -> dict:
    """Each self-hosted tier's measured generation rate and engine start (recent runs), else the defaults."""
    if Path(warehouse).is_file():
        with connect(warehouse) as con:
            learned = learn_assumptions(con, catalogue, default_max_tokens)
    else:
        learned = learn_assumptions(None, catalogue, default_max_tokens)
    return {t: (a.output_tokens_per_s, a.engine_start_s, a.throughput_source) for t, a in learned.items()
            if a.output_tokens_per_s}


def open_ledger(run_dir: Path, catalogue: Catalogue, budget_usd: float | None, warehouse: str,
                default_max_tokens: int) -> Ledger | None:
    """The run's ledger: the one in its folder, else a new one for `budget_usd`, priced with the tiers' rates
    (None: the run has no budget). Whichever spends first opens it: the cluster checks (before routing), else the
    first answers."""
    ledger = Ledger.open(run_dir)
    if ledger is None and budget_usd is not None:
        ledger = Ledger.open(run_dir, budget_usd,
                             tier_rates(catalogue, _throughput(warehouse, catalogue, default_max_tokens)))
    return ledger


def cluster_check_admission(run_dir: Path, catalogue: Catalogue, budget_usd: float | None, warehouse: str,
                            default_max_tokens: int):
    """For the cluster checks (tasks/verify_clusters.py): hold(key, rows or judge prompts) -> bool reserves a
    probe pass or one judge call against the budget before it is sent (False: it does not fit; it is not sent),
    settle(key, usd) books what it cost. None without a budget."""
    ledger = open_ledger(run_dir, catalogue, budget_usd, warehouse, default_max_tokens)
    if ledger is None:
        return None

    def hold(key: str, rows: pl.DataFrame | None = None, judge_prompts: list[str] | None = None,
             system: str = "", max_tokens: int = 0) -> bool:
        rate = rate_of(ledger.model, key.split("/")[0])
        if rows is not None:
            usd, n = float(row_costs(rows, rate, default_max_tokens).sum()) + pass_fixed_usd(rate), rows.height
            ok = ledger.reserve(key, usd, n)
            if not ok:
                ledger.note("skipped", n, key)
        else:
            tokens = _judge_tokens(judge_prompts or [], system)
            ok = admit_judge(key, rate, tokens, max_tokens, ledger)
            n = len(tokens)
        if not ok:
            _reached(ledger, run_dir, f"{key}: {n} cluster checks not sent; their clusters are answered instead")
        return ok

    def settle_check(key: str, usd: float) -> None:
        ledger.settle(key, usd)

    return hold, settle_check


@task(name="admit-first-answers", cache_policy=NO_CACHE)
def admit_first_answers(run_dir: Path, routed: Path, catalogue: Catalogue, settings: Settings) -> Path:
    """With a budget: open the run's ledger, hold the routed rows' first answers to it (rows moved to a cheaper
    tier or deferred, written into `routed`), once; a resumed run finds it done. Without one: nothing."""
    ledger = open_ledger(run_dir, catalogue, settings.router.budget_usd, str(settings.warehouse),
                         settings.default_max_tokens)
    if ledger is None:
        return routed
    if ledger.notes.get("first_admitted"):
        return routed
    scratch = Ledger(ledger.budget_usd, None, model=ledger.model)  # the file takes it once routed is written
    out = admit_first(pl.read_parquet(routed), catalogue.names, scratch, settings.default_max_tokens)
    write_parquet(out.to_arrow(), routed)
    ledger.entries.update(scratch.entries)
    # what the scratch ledger noted joins what the run's ledger noted before (the cluster checks)
    ledger.notes.update(moved=ledger.notes.get("moved", 0) + scratch.notes.get("moved", 0),
                        deferred=ledger.notes.get("deferred", 0) + scratch.notes.get("deferred", 0),
                        skipped={**ledger.notes.get("skipped", {}), **scratch.notes.get("skipped", {})},
                        reached=ledger.notes.get("reached") or scratch.notes.get("reached"), first_admitted=True)
    ledger.save()
    s = ledger.summary()
    get_run_logger().info("budget $%.6g: first answers reserved $%.6g; %d rows moved to a cheaper tier, %d deferred",
                          ledger.budget_usd, s["reserved_usd"], s["moved_rows"], s["deferred_rows"])
    if s["moved_rows"] or s["deferred_rows"]:
        _reached(ledger, run_dir, f"first answers: {s['moved_rows']} rows moved to a cheaper tier, "
                                  f"{s['deferred_rows']} deferred")
    if s["deferred_rows"]:
        reasons = out.filter(pl.col("status") == DEFERRED)["error"].head(3).to_list()
        emit("sluice.run.deferred", run_dir, {"rows": s["deferred_rows"], "budget_usd": ledger.budget_usd,
                                              "reasons": reasons})
    return routed


@task(name="budget-gate", cache_policy=NO_CACHE)
def gate(run_dir: Path, key: str, partition: Path, default_max_tokens: int) -> Path | None:
    """The rows of pass `key` the budget has room for (the partition rewritten to them); None: none fit."""
    ledger = Ledger.open(run_dir)
    if ledger is None or key in ledger.entries:  # no budget, or reserved before a kill
        return partition
    rows = pl.read_parquet(partition)
    take, usd = admit_pass(rows, key, ledger, default_max_tokens)
    if not take.all():
        write_parquet(rows.filter(pl.Series(take)).to_arrow(), partition)  # the decision first, then the hold
        ledger.note("skipped", int((~take).sum()), key)
        _reached(ledger, run_dir, f"{key}: {int((~take).sum())} of {rows.height} rows left out")
    if not take.any():
        return None
    ledger.reserve(key, usd, int(take.sum()))
    return partition


def settle(run_dir: Path, key: str, billing: dict) -> dict:
    """The pass's measured cost into the ledger (its billing, returned unchanged)."""
    ledger = Ledger.open(run_dir)
    if ledger is not None:
        ledger.settle(key, float(billing.get("cost_usd", 0.0)))
    return billing


def _judge_tokens(prompts: list[str], system: str) -> np.ndarray:
    """Input tokens per judge request, over-counted: its prompt and system, two short labels, the template."""
    return np.array([estimate_tokens(p, BYTES_PER_TOKEN_UPPER) + estimate_tokens(system, BYTES_PER_TOKEN_UPPER)
                     + 2 * 4 + TEMPLATE_TOKENS for p in prompts], dtype=np.float64)


def judge_admission(run_dir: Path, tier_name: str, system: str, max_tokens: int):
    """For `sluice.stages.review.judge_shadow_pairs`: reserve the judge's requests, given their prompts; None
    without a budget."""
    ledger = Ledger.open(run_dir)
    if ledger is None:
        return None
    key = f"{tier_name}/judge"

    def admit(prompts: list[str]) -> bool:
        ok = admit_judge(key, rate_of(ledger.model, tier_name), _judge_tokens(prompts, system), max_tokens, ledger)
        if not ok:
            _reached(ledger, run_dir, f"{key}: {len(prompts)} free-text shadow pairs left unjudged")
        return ok

    return admit


def budget_summary(run_dir: Path) -> dict | None:
    """The ledger as the summary and `runs.budget` show it (None: the run has no budget)."""
    ledger = Ledger.open(run_dir)
    return None if ledger is None else ledger.summary()


def run_failed(flow, flow_run, state) -> None:
    """The sluice-run flow's on_failure hook: `sluice.run.failed`, with the error and the dataset."""
    params = dict(flow_run.parameters or {})
    try:
        emit_event(event="sluice.run.failed",
                   resource={"prefect.resource.id": f"sluice.flow-run.{flow_run.id}",
                             "prefect.resource.name": flow_run.name},
                   payload={"flow_run_id": str(flow_run.id), "dataset_path": params.get("dataset_path"),
                            "run_id": params.get("run_id"), "error": state.message})
    except Exception as exc:  # noqa: BLE001
        log.warning("event sluice.run.failed not emitted: %s", exc)

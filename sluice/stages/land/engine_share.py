"""One engine start per pass: a drop-box pass's engine starts, apportioned across its runs by tokens.

A drop-box pass answers its datasets one after another in one process, on one warm engine per self-hosted engine
(`models.backends.engines_kept_warm`). The run that starts an engine is billed the start in its shard (the rows of
that shard carry it, by tokens: sluice/stages/infer/answer.py); the runs after it reuse the engine and bill no
start. When the pass ends, `apportion_engine_starts` spreads every start over the pass's landed runs:

    S        the start seconds billed to the pass's answer shards on one engine (tiers with the same engine
             settings and worker class; a dataset that failed after starting the engine counts too)
    T_r      run r's tokens (input + output, every attempt) on that engine's tiers;  T = sum of T_r
    share_r  = S x T_r / T seconds, at the worker's $/s: run r's part of the start
    row i    its start part is share_r x t_i / T_r (t_i its attempt's tokens); the part it was billed before
             (cost x start / billed seconds of its shard) is taken off

so the shares add up to the starts, and each run's rows add up to its share plus its own generation time.
`results.cost_usd`, `attempts.cost_usd` (and `shadow_cost_usd` of shadow attempts), `runs.cost_usd`, and the
run's billing entries (`cost_usd`, `engine_start_s`, `billed_seconds`) move by the same amounts in one transaction;
`runs.billing['engine_pass']` records the share. A run already apportioned is skipped (never twice); re-landing a
run (a resume) lands it unapportioned again. The starts of tier validation and of the judge are not pooled.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from models.backends import engine_identity
from models.catalogue import Catalogue
from sluice.contracts.columns import ATTEMPT_KINDS
from sluice.runs import answers_dir, write_parquet

PASS_KEY = "engine_pass"


def engine_groups(catalogue: Catalogue) -> dict[str, tuple[str, str]]:
    """Each self-hosted tier's engine: (engine settings, worker class); tiers with equal keys share one start."""
    return {t.name: (ident, str(t.worker)) for t in catalogue.tiers
            if t.self_hosted and (ident := engine_identity(t)) is not None}


def billed_starts(run_dir: Path, tiers: set[str]) -> tuple[float, list[dict]]:
    """The start seconds billed to a run's answer shards on `tiers`, and each carrying row's start part
    (row_id, kind, tier, part in USD: its cost x the shard's start / billed seconds)."""
    seconds, parts = 0.0, []
    for kind in ATTEMPT_KINDS:
        for tier in sorted(tiers):
            for bill_path in sorted((answers_dir(run_dir, kind) / f"tier={tier}").glob("shard-*.billing.json")):
                bill = json.loads(bill_path.read_text())
                start, billed = float(bill.get("engine_start_s", 0.0)), float(bill.get("billed_seconds", 0.0))
                answers = bill_path.with_name(bill_path.name.replace(".billing.json", ".parquet"))
                if start <= 0 or billed <= 0 or not answers.is_file():
                    continue
                seconds += start
                rows = pq.read_table(answers, columns=["row_id", "cost_usd"]).to_pylist()
                parts += [{"row_id": r["row_id"], "kind": kind, "tier": tier,
                           "old": float(r["cost_usd"] or 0.0) * start / billed} for r in rows]
    return seconds, parts


def _billing_key(tier: str, kind: str) -> str:
    return tier if kind == "first" else f"{tier}/{kind}"


def apportion_engine_starts(warehouse: str | Path, catalogue: Catalogue, landed: dict[str, Path],
                            others: dict[str, Path] | None = None) -> dict[str, dict]:
    """Apportion a pass's engine starts over its `landed` runs (run_id -> run folder); `others`: the pass's runs
    that did not land (their starts are pooled too). Returns run_id -> {group: share record}."""
    from sluice.warehouse.db import connect

    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for tier, key in engine_groups(catalogue).items():
        groups[key].add(tier)
    if not groups or not landed:
        return {}
    with connect(warehouse) as con:
        done = {rid for rid, billing in con.execute(
            "SELECT run_id, billing FROM runs WHERE run_id IN (SELECT unnest(?))", [list(landed)]).fetchall()
            if PASS_KEY in json.loads(billing or "{}")}
        landed = {rid: d for rid, d in landed.items() if rid not in done}  # never apportioned twice
        if not landed:
            return {}
        attempts = con.execute(
            "SELECT run_id, row_id, kind, tier, coalesce(input_tokens, 0) + coalesce(output_tokens, 0) AS tokens "
            "FROM attempts WHERE run_id IN (SELECT unnest(?)) AND kind IN (SELECT unnest(?))",
            [list(landed), list(ATTEMPT_KINDS)]).pl()
        billings = {rid: json.loads(b or "{}") for rid, b in con.execute(
            "SELECT run_id, billing FROM runs WHERE run_id IN (SELECT unnest(?))", [list(landed)]).fetchall()}
    deltas, records = [], defaultdict(dict)
    for (_, worker), tiers in groups.items():
        label = "+".join(sorted(tiers))
        usd_per_s = catalogue.worker_usd_per_hour(catalogue.tier(sorted(tiers)[0])) / 3600.0
        pooled = 0.0
        held: dict[str, list[dict]] = {}
        for rid, run_dir in {**(others or {}), **landed}.items():
            seconds, parts = billed_starts(run_dir, tiers)
            pooled += seconds
            if rid in landed:
                held[rid] = parts
        used = attempts.filter(pl.col("tier").is_in(sorted(tiers)))
        tokens = dict(used.group_by("run_id").agg(pl.col("tokens").sum()).iter_rows())
        total = sum(tokens.values())
        if pooled <= 0 or total <= 0:
            continue  # no start in this pass, or no tokens to carry it: it stays where it was billed
        for rid in landed:
            share = pooled * usd_per_s * tokens.get(rid, 0) / total
            mine = used.filter(pl.col("run_id") == rid)
            new = {(r["row_id"], r["kind"], r["tier"]): share * r["tokens"] / tokens[rid]
                   for r in mine.iter_rows(named=True)} if tokens.get(rid) else {}
            old = {(p["row_id"], p["kind"], p["tier"]): p["old"] for p in held[rid]}
            for key in new.keys() | old.keys():
                deltas.append({"run_id": rid, "row_id": key[0], "kind": key[1], "tier": key[2],
                               "delta": new.get(key, 0.0) - old.get(key, 0.0)})
            records[rid][label] = {"pass_start_s": pooled, "pass_tokens": total, "tokens": tokens.get(rid, 0),
                                   "share_s": share / usd_per_s, "share_usd": share,
                                   "held_usd": sum(old.values()), "runs": len(landed)}
            _move_billing(billings[rid], new, old, usd_per_s)
    if not deltas:
        return {}
    for rid, rec in records.items():
        billings[rid][PASS_KEY] = rec
    _write(warehouse, pl.DataFrame(deltas), billings, records)
    for rid, run_dir in landed.items():
        _patch_results_file(run_dir / "results.parquet", pl.DataFrame(deltas).filter(pl.col("run_id") == rid))
    return dict(records)


def _move_billing(billing: dict, new: dict, old: dict, usd_per_s: float) -> None:
    """The run's billing entries ("small", "small/escalation", ...) follow their rows' start parts."""
    by_key: dict[str, float] = defaultdict(float)
    for (_, kind, tier), usd in new.items():
        by_key[_billing_key(tier, kind)] += usd
    for (_, kind, tier), usd in old.items():
        by_key[_billing_key(tier, kind)] -= usd
    for key, usd in by_key.items():
        entry = billing.setdefault(key, {})
        entry["cost_usd"] = float(entry.get("cost_usd", 0.0)) + usd
        for field in ("engine_start_s", "billed_seconds"):
            entry[field] = float(entry.get(field, 0.0)) + usd / usd_per_s


def _write(warehouse, deltas: pl.DataFrame, billings: dict[str, dict], records: dict) -> None:
    from sluice.warehouse.db import connect

    rows = deltas.group_by("run_id", "row_id").agg(pl.col("delta").sum(),
                                                     pl.col("delta").filter(pl.col("kind") == "shadow").sum()
                                                     .alias("shadow_delta"))
    runs = deltas.group_by("run_id").agg(pl.col("delta").sum())
    with connect(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("_d", deltas.to_arrow())
            con.execute("UPDATE attempts a SET cost_usd = a.cost_usd + d.delta FROM _d d WHERE a.run_id = d.run_id "
                        "AND a.row_id = d.row_id AND a.kind = d.kind AND a.tier = d.tier")
            con.register("_r", rows.to_arrow())
            con.execute("UPDATE results x SET cost_usd = x.cost_usd + r.delta, shadow_cost_usd = CASE WHEN "
                        "r.shadow_delta <> 0 THEN coalesce(x.shadow_cost_usd, 0) + r.shadow_delta ELSE "
                        "x.shadow_cost_usd END FROM _r r WHERE x.run_id = r.run_id AND x.row_id = r.row_id")
            for rid, delta in runs.iter_rows():
                con.execute("UPDATE runs SET cost_usd = cost_usd + ?, billing = ? WHERE run_id = ?",
                            [delta, json.dumps(billings[rid]), rid])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("_d", "_r"):
                con.unregister(name)


def _patch_results_file(path: Path, deltas: pl.DataFrame) -> None:
    """The run folder's results file (the one the drop box hands back) carries the apportioned costs too; its
    other columns (the input's own, with their Arrow types) are left as they are."""
    if not path.is_file() or not deltas.height:
        return
    import pyarrow as pa

    table = pq.read_table(path)
    moved = {r: (d, s) for r, d, s in deltas.group_by("row_id").agg(
        pl.col("delta").sum(), pl.col("delta").filter(pl.col("kind") == "shadow").sum().alias("s")).iter_rows()}
    ids = table["row_id"].to_pylist()
    for column, pick in (("cost_usd", 0), ("shadow_cost_usd", 1)):
        if column not in table.column_names:
            continue
        values = table[column].to_pylist()
        values = [v if not moved.get(r, (0.0, 0.0))[pick] else (v or 0.0) + moved[r][pick]
                  for r, v in zip(ids, values)]
        table = table.set_column(table.column_names.index(column), table.schema.field(column),
                                 pa.array(values, table.schema.field(column).type))
    write_parquet(table, path)

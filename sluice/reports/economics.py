"""Self-hosting economics of a finished run: which worker class, self-host or API, always-on or per run.

For each self-hosted tier of the run, from what the run measured (`runs.billing`: engine start and generation
seconds; `results`: the tier's output tokens):

    measured throughput   T = output tokens / generation seconds, on the tier's own worker class
    other classes         T_w = the tier's declared `throughput_by_worker[w]`, else T x bandwidth_w / bandwidth
                          (decoding is memory-bandwidth-bound; an estimate, marked as such)
    $ per 1M output tok   usd_per_hour_w / (3600 x T_w) x 1e6
    batch on class w      (engine start + output tokens / T_w) / 3600 x usd_per_hour_w
    API alternative       the same rows at the baseline (premium) tier's prices: sum(baseline_cost_usd)
    per run vs always-on  a worker started for each nightly run and stopped after (scale to zero) costs the batch
                          cost each night; an always-on instance costs 24 h x usd_per_hour each night

The engine start measured on this run's worker is assumed for every class (it is dominated by model loading).

The run's savings attribution (`run_savings`) comes first: what dedup, the cache, routing, the provider batch
discount and trimming each saved against all-premium, every mechanism on its own line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.catalogue import Catalogue
from models.pricing import cost_usd, worker_price


@dataclass
class WorkerOption:
    worker: str
    usd_per_hour: float
    out_tok_per_s: float | None
    source: str  # "measured", "declared", "estimate (bandwidth)" or "unknown"
    usd_per_1m_output: float | None
    batch_usd: float | None


@dataclass
class TierEconomics:
    tier: str
    worker: str
    rows: int
    output_tokens: int
    engine_start_s: float
    generate_s: float
    billed_usd: float
    api_usd: float
    options: list[WorkerOption]

    @property
    def measured_tok_per_s(self) -> float:
        return self.output_tokens / self.generate_s if self.generate_s > 0 else 0.0

    @property
    def cheapest(self) -> WorkerOption | None:
        priced = [o for o in self.options if o.batch_usd is not None]
        return min(priced, key=lambda o: o.batch_usd) if priced else None

    def per_night(self, nights: int = 30) -> dict[str, float | str]:
        best = self.cheapest
        if best is None:
            return {}
        always_on = cost_usd(worker_price(best.worker, best.usd_per_hour), seconds=24 * 3600.0 * nights)
        return {"worker": best.worker, "scale_to_zero_usd_month": best.batch_usd * nights,
                "always_on_usd_month": always_on, "api_usd_month": self.api_usd * nights}


def worker_options(catalogue: Catalogue, tier_name: str, measured_tok_s: float, engine_start_s: float,
                   output_tokens: int) -> list[WorkerOption]:
    tier = catalogue.tier(tier_name)
    home = catalogue.workers[tier.worker] if tier.worker else None
    options = []
    for name, w in catalogue.workers.items():
        if name == tier.worker and measured_tok_s > 0:
            tok_s, source = measured_tok_s, "measured"
        elif name in tier.throughput_by_worker:
            tok_s, source = tier.throughput_by_worker[name], "declared"
        elif home and home.memory_bandwidth_gbs and w.memory_bandwidth_gbs and measured_tok_s > 0:
            tok_s, source = measured_tok_s * w.memory_bandwidth_gbs / home.memory_bandwidth_gbs, "estimate (bandwidth)"
        else:
            tok_s, source = None, "unknown"
        # output tokens only: the throughput measured and declared here is output tokens per second
        price = worker_price(name, w.usd_per_hour, tok_s)
        per_1m = cost_usd(price, output_tokens=1_000_000) if tok_s else None
        batch = cost_usd(price, seconds=engine_start_s + output_tokens / tok_s) if tok_s else None
        options.append(WorkerOption(name, w.usd_per_hour, tok_s, source, per_1m, batch))
    return options


def run_economics(warehouse: str | Path, run_id: str, catalogue: Catalogue) -> list[TierEconomics]:
    from sluice.warehouse.db import connect

    with connect(warehouse, read_only=True) as con:
        row = con.execute("SELECT billing FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {warehouse}")
        billing: dict[str, dict[str, float]] = {}
        for key, bill in json.loads(row[0] or "{}").items():  # a tier's passes ("mid", "mid/escalation") add up
            tier = billing.setdefault(key.split("/")[0], {})
            for k, v in bill.items():
                if isinstance(v, (int, float)):
                    tier[k] = tier.get(k, 0.0) + float(v)
        per_tier = {t: (n, out, api) for t, n, out, api in con.execute(
            "SELECT tier, count(*), sum(output_tokens), sum(baseline_cost_usd) FROM results "
            "WHERE run_id = ? AND tier IS NOT NULL GROUP BY tier", [run_id]).fetchall()}
        # runs that land every request (`attempts`): what each tier itself answered, retries and escalations in
        if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'attempts'").fetchone()[0]:
            per_tier.update({t: (n, out, per_tier.get(t, (0, 0, 0.0))[2]) for t, n, out in con.execute(
                "SELECT tier, count(*), sum(output_tokens) FROM attempts WHERE run_id = ? AND tier IS NOT NULL "
                "GROUP BY tier", [run_id]).fetchall()})
    result = []
    for name, bill in billing.items():
        if name not in catalogue.names or not catalogue.tier(name).self_hosted:
            continue
        rows, out, api = per_tier.get(name, (0, 0, 0.0))
        start, gen = float(bill.get("engine_start_s", 0.0)), float(bill.get("generate_s", 0.0))
        measured = out / gen if gen > 0 else 0.0
        result.append(TierEconomics(
            tier=name, worker=catalogue.tier(name).worker or "", rows=rows, output_tokens=int(out or 0),
            engine_start_s=start, generate_s=gen, billed_usd=float(bill.get("cost_usd", 0.0)), api_usd=float(api or 0),
            options=worker_options(catalogue, name, measured, start, int(out or 0)),
        ))
    return result


# the run's savings attribution (view `savings_per_row`, sluice/warehouse/views.py): each mechanism its own line
SAVING_LINES = [("dedup_saving_usd", "dedup"), ("cache_saving_usd", "cache (earlier nights' answers)"),
                ("routing_saving_usd", "routing (cheaper tiers)"), ("batch_saving_usd", "provider batch discount"),
                ("trim_saving_usd", "prompt trimming"), ("waste_usd", "less failed spend")]


def run_savings(warehouse: str | Path, run_id: str) -> dict[str, float]:
    """The run's saving against all-premium, by mechanism: baseline - cost = dedup + cache + routing + batch
    discount + trimming - waste. The batch discount is the rows' `batch_discount_usd`, not part of routing."""
    from sluice.warehouse.db import connect

    keys = ["baseline_cost_usd", "cost_usd", "saving_usd", *(k for k, _ in SAVING_LINES)]
    with connect(warehouse, read_only=True) as con:
        got = con.execute(f"SELECT {', '.join(f'sum({k})' for k in keys)} FROM savings_per_row WHERE run_id = ?",
                          [run_id]).fetchone()
    return {k: float(v or 0.0) for k, v in zip(keys, got or [], strict=True)}


def savings_lines(s: dict[str, float]) -> list[str]:
    lines = [f"saving ${s['saving_usd']:.6f} of all-premium ${s['baseline_cost_usd']:.6f} (cost "
             f"${s['cost_usd']:.6f}), by mechanism:"]
    for key, label in SAVING_LINES:
        amount = -s[key] if key == "waste_usd" else s[key]
        lines.append(f"  {label:32s} ${amount:.6f}")
    return lines


def economics_lines(items: list[TierEconomics]) -> list[str]:
    lines = []
    for e in items:
        lines.append(f"tier {e.tier}: {e.rows} rows, {e.output_tokens} output tokens, measured "
                     f"{e.measured_tok_per_s:.1f} tok/s on {e.worker} (engine start {e.engine_start_s:.0f} s, "
                     f"generation {e.generate_s:.0f} s), billed ${e.billed_usd:.6f}; the same rows on the API: "
                     f"${e.api_usd:.6f}")
        for o in sorted(e.options, key=lambda o: (o.batch_usd is None, o.batch_usd or 0)):
            if o.batch_usd is None:
                lines.append(f"  {o.worker:10s} ${o.usd_per_hour:.4f}/h  throughput unknown")
                continue
            lines.append(f"  {o.worker:10s} ${o.usd_per_hour:.4f}/h  {o.out_tok_per_s:10.1f} tok/s ({o.source})  "
                         f"${o.usd_per_1m_output:.4f} per 1M output tokens  this batch ${o.batch_usd:.6f}")
        best = e.cheapest
        if best:
            verdict = "self-hosting" if best.batch_usd < e.api_usd else "the API"
            month = e.per_night()
            lines.append(
                f"  cheapest worker class for this tier: {best.worker} (${best.batch_usd:.6f} for this batch, "
                f"engine start included); {verdict} is cheaper for a batch like this one "
                f"(API ${e.api_usd:.6f})")
            lines.append(
                f"  at this nightly volume, per month: a {best.worker} started per run and stopped after "
                f"${month['scale_to_zero_usd_month']:.2f}, always on ${month['always_on_usd_month']:.2f}, "
                f"API ${month['api_usd_month']:.2f}")
    return lines

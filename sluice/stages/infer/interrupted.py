"""Interrupted requests: what a killed shard had sent, landed as attempts the provider charged for.

An API shard's answers are checkpointed when the whole shard is done (answer.py). Before it sends, each try of a
shard points its backend at a sent log of its own (`tier=<name>/shard-NNNNN.sent-<k>.jsonl`,
models/backends/sent_log.py): every request is written down before it leaves and again when its answer arrives.
The shard's next try finds the log of a try that never finished and, before it sends anything, turns each request
in it into an `interrupted` attempt (`tier=<name>/interrupted/shard-NNNNN-<k>.parquet`, ANSWER_SCHEMA), then
removes the log. The land stage adds those attempts to their rows (sluice/stages/land/interrupted.py): in
`attempts` with status `interrupted`, and in the row's tokens and cost, because the provider billed them.

Usage of an interrupted request, by its last state in the log:
    answered  the provider's own usage (the answer came back, the kill came before the shard's checkpoint), at
              list price; `usage_estimated` as the answer said
    sent      in flight at the kill: no usage ever came back. Estimated, `usage_estimated` true: input by the rate
              limiter's estimate (3 bytes a token: it over-counts English by about a third), output at the
              request's `max_tokens` (a provider cannot bill more). An upper bound: the bill is never under-stated
    failed    refused with an HTTP status (429, 5xx, 4xx): nothing billed, landed at $0; a failure without a status
              (a timeout, a dropped connection) may have been answered in full: estimated like `sent`
Self-hosted tiers keep no sent log: their engine time is billed per finished shard, and the time a killed shard
had used is not counted (README, "Kill it anywhere, run it again"). Provider batches are journaled instead
(batch_journal.py): a resumed shard polls them, nothing is sent twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models.backends.sent_log import SentRequest, read_sent_log
from models.catalogue import Tier
from sluice.contracts.columns import ANSWER_SCHEMA, INTERRUPTED
from sluice.runs import write_parquet

_WHY = {
    "answered": "interrupted: answered, but the run was killed before the shard's answers were saved; sent again",
    "sent": "interrupted: in flight when the run was killed (usage estimated: input over-counted, output at "
            "max_tokens); sent again",
    "failed": "interrupted: the request had failed before the kill (no response: usage estimated as in flight); "
              "sent again",
    "refused": "interrupted: refused with HTTP {status} before the kill (not billed); sent again",
}


def sent_log_path(tier_dir: Path, shard: int, attempt: int) -> Path:
    return tier_dir / f"shard-{shard:05d}.sent-{attempt}.jsonl"


def _tries(tier_dir: Path, shard: int) -> dict[int, Path]:
    """The shard's unfinished tries: their number -> sent log."""
    pat = re.compile(rf"shard-{shard:05d}\.sent-(\d+)\.jsonl$")
    return {int(m.group(1)): p for p in tier_dir.glob(f"shard-{shard:05d}.sent-*.jsonl")
            if (m := pat.search(p.name))}


def _landed(tier_dir: Path, shard: int) -> dict[int, Path]:
    pat = re.compile(rf"shard-{shard:05d}-(\d+)\.parquet$")
    return {int(m.group(1)): p for p in (tier_dir / "interrupted").glob(f"shard-{shard:05d}-*.parquet")
            if (m := pat.search(p.name))}


def next_try(tier_dir: Path, shard: int) -> int:
    return 1 + max([0, *_tries(tier_dir, shard), *_landed(tier_dir, shard)])


def forget_tries(tier_dir: Path, shard: int) -> None:
    """The shard's answers are saved: its sent logs record nothing the bill still needs."""
    for path in _tries(tier_dir, shard).values():
        path.unlink(missing_ok=True)


def _attempt(r: SentRequest, tier: Tier, trim_saved: int) -> dict:
    billed = r.state in ("answered", "sent") or (r.state == "failed" and r.status is None)
    measured = r.state == "answered"
    inp = r.input_tokens if billed else 0
    out = (r.output_tokens if measured else r.max_tokens) if billed else 0
    cached = r.cached_input_tokens if measured else 0
    why = _WHY["refused"].format(status=r.status) if not billed else _WHY[r.state]
    return {
        "row_id": r.row_id, "tier": tier.name, "model": tier.model, "response": None, "status": INTERRUPTED,
        "error": why, "input_tokens": inp, "output_tokens": out, "latency_ms": None, "finish_reason": None,
        "cost_usd": tier.token_cost_usd(inp, out, cached) if billed else 0.0, "batch_discount_usd": 0.0,
        # the row's final answer carries its baseline; the prompt it sent was trimmed like the answered one's
        "trim_saving_usd": tier.token_cost_usd(trim_saved, 0) if billed else 0.0,
        "baseline_cost_usd": 0.0, "price_basis": "list", "cached_input_tokens": cached,
        "usage_estimated": r.usage_estimated if measured else billed, "mean_logprob": None, "parsed": None,
        "schema_valid": None,
    }


def land_interrupted_tries(tier_dir: Path, shard: int, tier: Tier, trim_saved: dict[str, int] | None = None) -> None:
    """Turn the sent logs of the shard's unfinished tries into interrupted attempts (module docstring). A log whose
    attempts are already written (a kill between the two steps) is only removed: nothing is landed twice."""
    landed = _landed(tier_dir, shard)
    for k, log in sorted(_tries(tier_dir, shard).items()):
        if k not in landed:
            sent = read_sent_log(log).values()
            rows = [_attempt(r, tier, (trim_saved or {}).get(r.row_id, 0)) for r in sent]
            write_parquet(pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA),
                          tier_dir / "interrupted" / f"shard-{shard:05d}-{k}.parquet")
        log.unlink(missing_ok=True)


def interrupted_billing(tier_dir: Path, shard: int) -> dict[str, float]:
    """What the shard's interrupted attempts cost: requests, of which estimated, and dollars (in the shard's
    billing: the provider charged them)."""
    files = sorted(_landed(tier_dir, shard).values())
    if not files:
        return {}
    t = pa.concat_tables([pq.read_table(f, columns=["cost_usd", "usage_estimated"]) for f in files])
    return {"interrupted_requests": float(t.num_rows),
            "interrupted_estimated": float(sum(bool(v) for v in t["usage_estimated"].to_pylist())),
            "interrupted_cost_usd": float(sum(t["cost_usd"].to_pylist()))}

"""What the cost forecast (`sluice.reports.forecast`, `sluice plan`) assumes about tokens, fill and throughput.

    input tokens   `token_counter`: the tier model's own tokenizer with its chat template when the model is a local
                   folder; otherwise `models.tokens.estimate_tokens` + MESSAGE_OVERHEAD_TOKENS per message
    fill ratio     `learn_assumptions`: output tokens / max_tokens of answered rows in the HISTORY_RUNS most recent
                   runs, per tier and max_tokens value (MIN_BUCKET_ROWS rows needed), else per tier, else over every
                   tier, else DEFAULT_FILL_RATIO
    self-hosted    output tokens per second of generation and engine start, learned from the `utilisation` view,
                   else DEFAULT_OUTPUT_TOKENS_PER_S and DEFAULT_ENGINE_START_S

`load_history` reads all of it (and the cache's request keys) from the warehouse in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb

from models.catalogue import Catalogue, Tier
from models.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

# Without history. Chat models write until max_tokens more often than not at the small limits batch jobs set:
# SmolLM2-135M on the sample dataset filled 0.67 of 48, 0.84 of 96 and 1.0 of 160 max tokens (0.74 overall on
# the self-hosted tiers). One landed run replaces this with measured ratios.
DEFAULT_FILL_RATIO = 0.85
# rows with one max_tokens value needed before its own fill ratio is trusted
MIN_BUCKET_ROWS = 5
# Without history: SmolLM2-135M fp32 on a 2-vCPU CPU worker measured ~73 output tokens/s in one large batch
# (../shared/GUIDE.md); rounded down for smaller batches.
DEFAULT_OUTPUT_TOKENS_PER_S = 60.0
# Without history: engine start on that worker (18 s eager tiny model to ~96 s for SmolLM2, cold cache).
DEFAULT_ENGINE_START_S = 60.0
# Characters per token for text without a local tokenizer, and tokens a chat message adds (role markers).
# How many recent runs the learned ratios look at.
HISTORY_RUNS = 20

Counter = Callable[[list[str | None], list[str]], list[int]]


@dataclass
class TierAssumptions:
    fill_ratio: float
    fill_ratio_source: str
    fill_by_max_tokens: dict[int, float] = field(default_factory=dict)
    output_tokens_per_s: float | None = None
    engine_start_s: float | None = None
    throughput_source: str | None = None
    tokenizer: str = "chars/4"

    def fill_for(self, max_tokens: int) -> float:
        return self.fill_by_max_tokens.get(max_tokens, self.fill_ratio)


# --- tokens -------------------------------------------------------------------------------------------------


def _approx_counter(systems: list[str | None], prompts: list[str]) -> list[int]:
    out = []
    for s, p in zip(systems, prompts, strict=True):
        n = estimate_tokens(p) + MESSAGE_OVERHEAD_TOKENS
        if s:
            n += estimate_tokens(s) + MESSAGE_OVERHEAD_TOKENS
        out.append(n)
    return out


def _local_model_folder(tier: Tier, data_dir: Path) -> Path | None:
    """The folder holding this tier's tokenizer, if it is on disk (never converts or downloads anything)."""
    from models.packaged import PACKAGED_PREFIX

    # replay: the tokenizer the catalogue names for counting (its `model` is only a label)
    model = tier.tokenizer if tier.backend == "replay" else tier.local_server or tier.model
    if model is None:
        return None
    if model.startswith(PACKAGED_PREFIX):
        folder = data_dir / "models" / model[len(PACKAGED_PREFIX):]
    else:
        folder = Path(model)
    return folder if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file() else None


def token_counter(tier: Tier, data_dir: Path) -> tuple[Counter, str]:
    """Count a request's input tokens the way the tier's model will see them (chat template included)."""
    folder = _local_model_folder(tier, data_dir)
    if folder is None:
        return _approx_counter, "chars/4"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception:  # noqa: BLE001 - no usable tokenizer: fall back to the approximation
        return _approx_counter, "chars/4"

    def count(systems: list[str | None], prompts: list[str]) -> list[int]:
        out = []
        for s, p in zip(systems, prompts, strict=True):
            msgs = ([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": p}]
            if tok.chat_template:
                ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                out.append(len(ids))
            else:
                out.append(sum(len(tok.encode(m["content"])) + MESSAGE_OVERHEAD_TOKENS for m in msgs))
        return out

    return count, f"{folder} tokenizer"


# --- history ------------------------------------------------------------------------------------------------


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()[0])


def learn_assumptions(
    con: duckdb.DuckDBPyConnection | None, catalogue: Catalogue, default_max_tokens: int
) -> dict[str, TierAssumptions]:
    """Fill ratio per tier, and for self-hosted tiers throughput and engine start, from recent runs."""
    fill: dict[str, float] = {}
    buckets: dict[str, dict[int, float]] = {}  # tier ("" for every tier) -> max_tokens -> fill ratio
    pooled_fill: float | None = None
    speed: dict[str, tuple[float, float | None]] = {}
    pooled_start: float | None = None
    if con is not None and _has_table(con, "results") and _has_table(con, "utilisation"):
        recent = f"(SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST LIMIT {HISTORY_RUNS})"
        per_bucket = con.execute(
            f"""SELECT tier, coalesce(max_tokens, ?) AS m, count(*), sum(output_tokens) FROM results
                WHERE status = 'ok' AND tier IS NOT NULL AND run_id IN {recent} GROUP BY ALL""",
            [default_max_tokens],
        ).fetchall()
        totals: dict[str, list[float]] = {}
        pooled_buckets: dict[int, list[float]] = {}
        for tier, m, n, out in per_bucket:
            out = out or 0
            if n >= MIN_BUCKET_ROWS and m:
                buckets.setdefault(tier, {})[m] = min(1.0, out / (n * m))
            for acc in (totals.setdefault(tier, [0.0, 0.0]), totals.setdefault("", [0.0, 0.0])):
                acc[0] += out
                acc[1] += n * m
            pb = pooled_buckets.setdefault(m, [0.0, 0.0])
            pb[0] += out
            pb[1] += n
        fill = {t: min(1.0, o / mx) for t, (o, mx) in totals.items() if mx and t}
        if totals.get("", [0, 0])[1]:
            pooled_fill = min(1.0, totals[""][0] / totals[""][1])
        buckets[""] = {m: min(1.0, o / (n * m)) for m, (o, n) in pooled_buckets.items()
                       if n >= MIN_BUCKET_ROWS and m}
        for tier, out, gen, start in con.execute(
            f"""SELECT tier, sum(output_tokens), sum(generate_s), avg(engine_start_s) FILTER (engine_start_s > 0)
                FROM utilisation WHERE run_id IN {recent} GROUP BY tier"""
        ).fetchall():
            if gen and out:
                speed[tier] = (out / gen, start)
        pooled_start = con.execute(
            f"SELECT avg(engine_start_s) FROM utilisation WHERE engine_start_s > 0 AND run_id IN {recent}"
        ).fetchone()[0]
    out: dict[str, TierAssumptions] = {}
    for t in catalogue.tiers:
        if t.name in fill:
            a = TierAssumptions(fill_ratio=fill[t.name], fill_ratio_source="learned",
                                fill_by_max_tokens=buckets.get(t.name, {}))
        elif pooled_fill is not None:
            a = TierAssumptions(fill_ratio=pooled_fill, fill_ratio_source="learned (all tiers)",
                                fill_by_max_tokens=buckets.get("", {}))
        else:
            a = TierAssumptions(fill_ratio=DEFAULT_FILL_RATIO, fill_ratio_source="default")
        if t.self_hosted:
            if t.name in speed:
                a.output_tokens_per_s, start = speed[t.name]
                a.engine_start_s = start if start is not None else (pooled_start or DEFAULT_ENGINE_START_S)
                a.throughput_source = "learned"
            else:
                a.output_tokens_per_s = DEFAULT_OUTPUT_TOKENS_PER_S
                a.engine_start_s = pooled_start or DEFAULT_ENGINE_START_S
                a.throughput_source = "default"
        out[t.name] = a
    return out


def load_history(
    con: duckdb.DuckDBPyConnection | None, catalogue: Catalogue, default_max_tokens: int
) -> tuple[dict[str, TierAssumptions], set[str] | None]:
    """What the forecast learns from the warehouse: per-tier assumptions and the cache's request keys."""
    cache_keys = None
    if con is not None and _has_table(con, "cache"):
        cache_keys = {r[0] for r in con.execute("SELECT request_key FROM cache").fetchall()}
    return learn_assumptions(con, catalogue, default_max_tokens), cache_keys

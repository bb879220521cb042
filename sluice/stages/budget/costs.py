"""What a pass is expected to cost before it is sent: the prices the ledger reserves with.

Per row on an API tier (list prices: a provider batch or a prompt-cache read only costs less), at most:
    input tokens   the conversation, system prompt and schema at 3 bytes a token (`models.tokens`: over-counts
                   English by about a third), + 4 per message and TEMPLATE_TOKENS
    output tokens  the row's max_tokens: a provider never bills more
so a settled API pass never costs more than it reserved, and API spend never crosses the budget.
Per row on a self-hosted tier: worker time, from the tier's measured throughput (the `utilisation` view of recent
runs, `sluice.reports.assumptions.learn_assumptions`; its default without history):
    seconds = max_tokens / output tokens per second (the batch's aggregate rate under continuous batching)
plus, once per pass, the engine's start (measured likewise): the worker is billed for it. This is an estimate,
not a bound: a slower night costs more than it reserved, and the ledger counts the overrun.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from models.catalogue import Catalogue
from models.pricing import TierPrice, api_price, cost_usd
from models.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from sluice.contracts.shapes import conversation_texts, history_turns

TEMPLATE_TOKENS = 8
# over-count input tokens (models.tokens: 3 bytes a token is about a third more than English needs)
BYTES_PER_TOKEN_UPPER = 3.0


@dataclass(frozen=True)
class TierRate:
    """One tier's reservation prices (a JSON-able dict in the ledger, so a resumed run prices alike)."""

    name: str
    usd_per_input_token: float = 0.0
    usd_per_output_token: float = 0.0
    usd_per_second: float = 0.0  # self-hosted: the worker's $/hour / 3600
    output_tokens_per_s: float | None = None  # self-hosted: measured generation rate
    engine_start_s: float = 0.0
    source: str = "list price"

    @property
    def self_hosted(self) -> bool:
        return self.output_tokens_per_s is not None


def tier_rates(catalogue: Catalogue, throughput: dict[str, tuple[float, float, str]]) -> dict[str, dict]:
    """Every tier's TierRate as a dict; `throughput`: tier -> (output tokens/s, engine start s, where from)."""
    out = {}
    for t in catalogue.tiers:
        if t.self_hosted:
            tps, start, source = throughput.get(t.name, (60.0, 60.0, "default"))
            rate = TierRate(t.name, usd_per_second=catalogue.worker_usd_per_hour(t) / 3600.0,
                            output_tokens_per_s=tps, engine_start_s=start, source=f"throughput {source}")
        else:
            p = api_price(t)
            rate = TierRate(t.name, p.usd_per_input_token, p.usd_per_output_token)
        out[t.name] = asdict(rate)
    return out


def rate_of(model: dict, tier: str) -> TierRate:
    return TierRate(**model[tier])


def input_tokens_upper(rows: pl.DataFrame) -> np.ndarray:
    """Each row's input tokens, over-counted (module docstring)."""
    texts = conversation_texts(rows) if rows.height else []
    systems = rows["system"].to_list() if "system" in rows.columns else [None] * rows.height
    schemas = rows["response_schema"].to_list() if "response_schema" in rows.columns else [None] * rows.height
    turns = ([len(history_turns(h)) if h else 0 for h in rows["history"].to_list()] if "history" in rows.columns
             else [0] * rows.height)
    return np.array([
        estimate_tokens(x, BYTES_PER_TOKEN_UPPER) + estimate_tokens(s, BYTES_PER_TOKEN_UPPER)
        + estimate_tokens(sc, BYTES_PER_TOKEN_UPPER) + MESSAGE_OVERHEAD_TOKENS * (n + 1 + bool(s)) + TEMPLATE_TOKENS
        for x, s, sc, n in zip(texts, systems, schemas, turns, strict=True)], dtype=np.float64)


def max_output_tokens(rows: pl.DataFrame, default_max_tokens: int) -> np.ndarray:
    if "max_tokens" not in rows.columns:
        return np.full(rows.height, float(default_max_tokens))
    return rows["max_tokens"].cast(pl.Float64).fill_null(float(default_max_tokens)).to_numpy()


def row_costs(rows: pl.DataFrame, rate: TierRate, default_max_tokens: int) -> np.ndarray:
    """Each row's reservation on the tier (without the self-hosted engine start: `pass_fixed_usd`)."""
    out_tok = max_output_tokens(rows, default_max_tokens)
    if rate.self_hosted:
        assert rate.output_tokens_per_s
        return out_tok / rate.output_tokens_per_s * rate.usd_per_second
    price = TierPrice(rate.name, rate.usd_per_input_token, rate.usd_per_output_token, rate.source)
    return np.asarray(cost_usd(price, input_tokens_upper(rows), out_tok), dtype=np.float64)


def pass_fixed_usd(rate: TierRate) -> float:
    """What a pass costs before its first row: the self-hosted engine's start (0 for API tiers)."""
    return rate.engine_start_s * rate.usd_per_second if rate.self_hosted else 0.0


def judge_usd(rate: TierRate, input_tokens: np.ndarray, max_tokens: int) -> float:
    """The judge's reservation: each pair asked twice (both orders), `input_tokens` per pair already counted
    (request, both answers and the question), `max_tokens` per verdict."""
    if rate.self_hosted:
        assert rate.output_tokens_per_s
        return pass_fixed_usd(rate) + 2 * len(input_tokens) * max_tokens / rate.output_tokens_per_s * rate.usd_per_second
    price = TierPrice(rate.name, rate.usd_per_input_token, rate.usd_per_output_token, rate.source)
    return float(2 * np.sum(cost_usd(price, input_tokens, float(max_tokens))))

"""Prices -> dollars, in one place.

A tier's `TierPrice` says what one unit of its work costs:
    API tiers          list prices per token (input, cached input, output), or the provider's batch prices
    self-hosted tiers  the worker's $/hour per second held; for planning before any time is measured, also per token
                       at an assumed throughput: $/hour / 3600 / (tokens in + out per second)
and `cost_usd` is the one function that turns quantities (tokens, seconds) into dollars. It is plain arithmetic,
so it prices a number, a numpy array of rows or a polars expression alike. Every dollar figure Sluice computes
(a landed row, the all-premium baseline, a budget plan, a cascade's planned cost, the forecast, the economics
report) goes through it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TierPrice:
    name: str
    usd_per_input_token: float
    usd_per_output_token: float
    basis: str
    # prompt-cache reads (a subset of the input tokens); None: billed as input
    usd_per_cached_input_token: float | None = None
    # self-hosted: what the worker costs per second it is held
    usd_per_second: float = 0.0


def cost_usd(price: TierPrice, input_tokens=0, output_tokens=0, cached_input_tokens=0, seconds=0.0):
    """Dollars for `input_tokens` (of which `cached_input_tokens` are prompt-cache reads), `output_tokens` and
    `seconds` of worker time at `price`. Scalars, numpy arrays and polars expressions all work."""
    cached_rate = (price.usd_per_input_token if price.usd_per_cached_input_token is None
                   else price.usd_per_cached_input_token)
    return ((input_tokens - cached_input_tokens) * price.usd_per_input_token + cached_input_tokens * cached_rate
            + output_tokens * price.usd_per_output_token + seconds * price.usd_per_second)


def api_price(tier, batch: bool = False) -> TierPrice:
    """An API tier's per-token prices from its catalogue entry (list prices, or its batch prices). In a batch
    without its own cached price, cached tokens are billed as batch input (no further discount assumed)."""
    if batch:
        prices = (tier.batch_input_usd_per_1m, tier.batch_output_usd_per_1m, tier.batch_cached_input_usd_per_1m)
    else:
        prices = (tier.input_usd_per_1m, tier.output_usd_per_1m, tier.cached_input_usd_per_1m)
    i, o, c = prices
    return TierPrice(tier.name, i / 1e6, o / 1e6, "batch price" if batch else "list price",
                     None if c is None else c / 1e6)


def worker_price(name: str, usd_per_hour: float, tokens_per_s: float | None = None, basis: str = "") -> TierPrice:
    """A self-hosted tier's price: per second held, and per token at `tokens_per_s` (in + out) when given."""
    per_token = usd_per_hour / 3600.0 / tokens_per_s if tokens_per_s else 0.0
    return TierPrice(name, per_token, per_token, basis or f"worker ${usd_per_hour}/h", None, usd_per_hour / 3600.0)


def tier_prices(catalogue, self_hosted_tokens_per_s: float) -> list[TierPrice]:
    """USD per token of each tier, cheapest-first as listed; self-hosted tiers from worker $/hour and throughput
    (the tier's `tokens_per_s`, else `self_hosted_tokens_per_s`)."""
    out = []
    for t in catalogue.tiers:
        if t.self_hosted:
            tps = t.tokens_per_s or self_hosted_tokens_per_s
            usd_h = catalogue.worker_usd_per_hour(t)
            out.append(worker_price(t.name, usd_h, tps, f"worker {t.worker} ${usd_h}/h at {tps:g} tok/s"))
        else:
            assert t.input_usd_per_1m is not None and t.output_usd_per_1m is not None
            out.append(api_price(t))
    return out

"""The budget-mode and prompt-brevity sections of `bench/routing_quality.py` (split out to keep modules small):
`route_by_budget` swept over budgets on the GSM8K test rows, and `apply_brevity` on real ShareGPT first turns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SHAREGPT = ROOT.parent / "shared" / "data" / "prompts" / "sharegpt_first_turns_dev.jsonl.gz"

# USD per 1M tokens (input, output): Mixtral-8x7B-Instruct at a typical hosted price; gpt-4-1106-preview list price
PRICES = {"cheap": (0.60, 0.60), "premium": (10.0, 30.0)}


def budget_sweep(prompts: list[str], scores: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray) -> dict:
    """`sluice.stages.route.policies.route_by_budget` on the test rows: accuracy and spend for budgets between all-cheap and
    all-premium (planned with the router's scores, 8 + chars/4 input tokens and 256 output tokens a row)."""
    from models.pricing import TierPrice
    from sluice.stages.route.policies import estimate_input_tokens, expected_quality, route_by_budget, row_tier_costs

    prices = [TierPrice(k, i / 1e6, o / 1e6, "list") for k, (i, o) in PRICES.items()]
    costs = row_tier_costs(estimate_input_tokens(prompts), np.full(len(prompts), 256.0), prices)
    low, high = costs[:, 0].sum(), costs[:, 1].sum()
    rows = []
    for frac in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        budget = low + frac * (high - low)
        plan = route_by_budget(costs, expected_quality(scores, 2), budget)
        acc = float(np.where(plan.tier == 1, premium_ok, cheap_ok).mean())
        rows.append({"budget_usd": round(budget, 4), "share_of_premium_cost": round(budget / high, 3),
                     "planned_usd": round(plan.planned_usd, 4), "premium_share": round(float((plan.tier == 1).mean()), 3),
                     "accuracy": round(acc, 4)})
    return {"prices_usd_per_1m": PRICES, "all_cheap_usd": round(low, 4), "all_premium_usd": round(high, 4),
            "sweep": rows}


def brevity_on_sharegpt() -> dict:
    """Tokens `sluice.stages.route.brevity` trims from 8,700 real first user turns (ShareGPT), and the max_tokens caps it sets."""
    from models.tokens import count_word_pieces as estimate_tokens
    from sluice.stages.route.brevity import apply_brevity

    rows = pl.read_ndjson(SHAREGPT).select("prompt")
    count, how = estimate_tokens, "word-piece estimate (models.tokens.count_word_pieces)"
    tok_file = ROOT / "data" / "models" / "smollm2-135m-instruct" / "tokenizer.json"
    if tok_file.exists():  # the demo model's BPE tokenizer (made by `sluice prepare`): exact counts
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_file))
        count, how = (lambda t: len(tok.encode(t, add_special_tokens=False).ids)), "SmolLM2 BPE tokenizer"
    t0 = time.perf_counter()
    out, rep = apply_brevity(rows.with_columns(pl.lit(None, pl.Int32).alias("max_tokens")), count_tokens=count)
    seconds = time.perf_counter() - t0
    _, rep_opt = apply_brevity(rows, count_tokens=count, cap_max_tokens=False, drop_repeated_lines=True)
    caps = out["max_tokens"].value_counts().sort("max_tokens")
    return {
        "data": str(SHAREGPT.relative_to(ROOT.parent)), "rows": rep.rows, "rows_trimmed": rep.rows_trimmed,
        "tokens_before": rep.tokens_before, "tokens_after": rep.tokens_after, "tokens_saved": rep.tokens_saved,
        "saved_pct": round(100 * rep.tokens_saved / max(rep.tokens_before, 1), 2),
        "max_tokens_caps": {str(k): v for k, v in caps.iter_rows()},
        "rows_capped_below_default_256": rep.rows_capped, "max_output_tokens_saved": rep.max_output_tokens_saved,
        "us_per_row_including_token_counting": round(seconds / rep.rows * 1e6, 1),
        "token_count": how,
        "with_drop_repeated_lines": {"rows_trimmed": rep_opt.rows_trimmed, "tokens_saved": rep_opt.tokens_saved},
    }

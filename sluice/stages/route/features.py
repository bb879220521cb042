"""Gatekeeper features for the learned router: cheap text signals plus (optionally) a sentence embedding.

Text signals (vectorised polars, a few microseconds a row):
    - length: log(1 + words), log(1 + characters), sentences, question marks
    - quantities: how many numbers the prompt carries (arithmetic load), the largest one (log10), and cues of
      multi-step arithmetic: percentages, fractions, rates and units of time, money, comparisons, remainders
    - intent: one-hot of the heuristic gatekeeper's intents (code, math, reasoning, analysis, extraction,
      classification, explanation, chit-chat, writing, qa), and its rigour flag and complexity score
Embedding signals: the 384-d all-MiniLM-L6-v2 sentence embedding (`models.embeddings`, offline). It is what lets a
router learn *which kinds* of prompt the cheap tier gets wrong beyond what regexes see; it costs milliseconds a
row on CPU, so it is optional (`use_embeddings`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from sluice.stages.route.gatekeeper import INTENTS, gatekeeper_features

EMBED_MAX_TOKENS = 256  # prompts are embedded up to this many tokens (training and routing alike)
INTENT_NAMES = [name for name, _, _ in INTENTS]
# cue name -> regex counted in the lower-cased prompt
QUANT_CUES = {
    "percent": r"%|\bpercent",
    "fraction": r"\b(half|halves|third|quarter|fraction)\b|\d/\d",
    "rate": r"\b(twice|times|each|per|every|average|ratio|rate)\b",
    "time_units": r"\b(seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b",
    "money": r"\$|\b(dollars?|cents?|price|cost)\b",
    "comparison": r"\b(more|less|fewer|than)\b",
    "remainder": r"\b(remaining|rest|left|remainder)\b",
}
TEXT_FEATURES = [
    "log_words", "log_chars", "sentences", "questions", "numbers", "log_max_number", "rigour", "heuristic_score",
    *[f"cue_{c}" for c in QUANT_CUES],
    *[f"intent_{n}" for n in INTENT_NAMES],
]


def text_features(prompts: Sequence[str] | pl.Series) -> np.ndarray:
    """(n, len(TEXT_FEATURES)) float64 matrix of the cheap signals."""
    s = prompts if isinstance(prompts, pl.Series) else pl.Series("prompt", list(prompts), dtype=pl.String)
    s = s.fill_null("")
    g = gatekeeper_features(s)
    df = pl.DataFrame({"t": s}).select(
        (pl.col("t").str.len_chars().cast(pl.Float64) + 1).log().alias("log_chars"),
        pl.col("t").str.count_matches(r"[.!?](\s|$)").cast(pl.Float64).alias("sentences"),
        pl.col("t").str.count_matches(r"\?").cast(pl.Float64).alias("questions"),
        # `\d` also matches non-ASCII digits ("𝟭"), which do not parse: those count as no number here
        pl.col("t").str.extract_all(r"\d+(?:\.\d+)?").list.eval(pl.element().cast(pl.Float64, strict=False))
        .list.max().fill_null(0.0).alias("max_number"),
        *[pl.col("t").str.to_lowercase().str.count_matches(rx).cast(pl.Float64).alias(c) for c, rx in QUANT_CUES.items()],
    )
    cols = [
        np.log1p(g["words"].to_numpy().astype(np.float64)),
        df["log_chars"].to_numpy(),
        df["sentences"].to_numpy(),
        df["questions"].to_numpy(),
        g["numbers"].to_numpy().astype(np.float64),
        np.log10(1.0 + df["max_number"].to_numpy()),
        g["rigour"].to_numpy().astype(np.float64),
        g["route_score"].to_numpy().astype(np.float64),
        *[df[c].to_numpy() for c in QUANT_CUES],
    ]
    intent = g["intent"].to_numpy()
    cols += [(intent == n).astype(np.float64) for n in INTENT_NAMES]
    return np.column_stack(cols) if len(s) else np.zeros((0, len(TEXT_FEATURES)))


def router_features(
    prompts: Sequence[str] | pl.Series, use_embeddings: bool, embeddings: np.ndarray | None = None
) -> np.ndarray:
    """Text features, followed by the sentence embedding when `use_embeddings` (pass precomputed ones to reuse)."""
    x = text_features(prompts)
    if not use_embeddings:
        return x
    if embeddings is None:
        from models.embeddings import embed

        texts = prompts.fill_null("").to_list() if isinstance(prompts, pl.Series) else [p or "" for p in prompts]
        embeddings = embed(texts, max_length=EMBED_MAX_TOKENS)
    return np.hstack([x, embeddings.astype(np.float64)])

"""Prompt brevity: send fewer tokens without changing what is asked, and cap answers by task type.

Trimming is deliberately conservative, each rule something a model reading the prompt cannot tell apart:
    - runs of spaces and tabs inside a line become one space (leading indentation is kept: it can be syntax)
    - trailing spaces at line ends are removed; more than one blank line in a row becomes one
    - a line repeated verbatim (>= 30 characters once stripped, e.g. a pasted disclaimer or signature) is kept
      at its first occurrence only
    - nothing inside ``` fenced blocks is touched (code, tables, data where whitespace and repeats may matter)
Tokens are counted with `count_tokens` (default: a word-piece estimate, words and punctuation marks, close to
BPE counts on English), so the saving is measured, not assumed; pass a tier's real tokenizer to count exactly.

`MAX_TOKENS_BY_INTENT` caps the answer length of rows that did not set `max_tokens`, by the gatekeeper's intent
(`sluice.route.gatekeeper_features`): a yes/no label does not need 256 tokens of budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import polars as pl

MIN_REPEATED_LINE = 30
_RUNS = re.compile(r"(?<=\S)[ \t]{2,}")
_TOKENS = re.compile(r"\w+|[^\w\s]")

MAX_TOKENS_BY_INTENT = {
    "chit-chat": 64,
    "classification": 32,
    "extraction": 256,
    "qa": 256,
    "explanation": 384,
    "writing": 512,
    "analysis": 768,
    "reasoning": 768,
    "math": 768,
    "code": 1024,
}


def estimate_tokens(text: str) -> int:
    return len(_TOKENS.findall(text or "")) + (text or "").count("\n")


def trim_prompt(text: str | None) -> str | None:
    """The prompt with redundant whitespace and repeated boilerplate lines removed (rules in the module doc)."""
    if text is None:
        return None
    out: list[str] = []
    seen: set[str] = set()
    fenced = False
    blank_run = 0
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append(line)
            blank_run = 0
            continue
        if fenced:
            out.append(line)
            continue
        line = _RUNS.sub(" ", line.rstrip())
        if not line:
            blank_run += 1
            if blank_run > 1:
                continue
            out.append(line)
            continue
        blank_run = 0
        key = line.strip()
        if len(key) >= MIN_REPEATED_LINE:
            if key in seen:
                continue
            seen.add(key)
        out.append(line)
    return "\n".join(out).strip("\n")


@dataclass
class BrevityReport:
    rows: int
    rows_trimmed: int
    tokens_before: int
    tokens_after: int
    rows_capped: int

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


def apply_brevity(
    rows: pl.DataFrame, count_tokens: Callable[[str], int] = estimate_tokens, cap_max_tokens: bool = True
) -> tuple[pl.DataFrame, BrevityReport]:
    """Trim `prompt`, and fill a null `max_tokens` with the intent's cap; returns the table and what it saved."""
    from sluice.route import gatekeeper_features

    before = rows["prompt"].to_list()
    after = [trim_prompt(p) for p in before]
    out = rows.with_columns(pl.Series("prompt", after, dtype=pl.String))
    capped = 0
    if cap_max_tokens:
        intent = gatekeeper_features(out["prompt"])["intent"]
        cap = intent.replace_strict(MAX_TOKENS_BY_INTENT, default=MAX_TOKENS_BY_INTENT["qa"], return_dtype=pl.Int32)
        current = out["max_tokens"].cast(pl.Int32) if "max_tokens" in out.columns else pl.Series([None] * out.height,
                                                                                                   dtype=pl.Int32)
        capped = int(current.is_null().sum())
        out = out.with_columns(current.fill_null(cap).alias("max_tokens"))
    report = BrevityReport(
        rows=rows.height,
        rows_trimmed=sum(1 for a, b in zip(before, after) if a != b),
        tokens_before=sum(count_tokens(p or "") for p in before),
        tokens_after=sum(count_tokens(p or "") for p in after),
        rows_capped=capped,
    )
    return out, report

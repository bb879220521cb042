"""Prompt brevity: send fewer tokens without changing what is asked, and cap answers by task type.

Trimming is deliberately conservative, each rule something a model reading the prompt cannot tell apart:
    - runs of spaces and tabs inside a prose line become one space (leading indentation is kept: it can be
      syntax; lines with code punctuation keep their spacing: string literals, alignment)
    - trailing spaces at line ends are removed; more than one blank line in a row becomes one
    - nothing inside ``` fenced blocks is touched (code, tables, data where whitespace and repeats may matter)
Opt-in (`drop_repeated_lines=True`, for batches known to carry boilerplate such as a disclaimer or signature pasted
into every message): a prose line (>= 30 characters and 5 words, mostly letters, no code or path punctuation)
repeated anywhere in the prompt is kept at its first occurrence only. It is off by default because, checked on
8,700 real ShareGPT prompts, repeated lines are usually content: unfenced code, form-like lists ("Trial Period:
Enable trial period" once per plan), a song's chorus, a heading that follows its table of contents, data rows.
Tokens are counted with `count_tokens` (default: a word-piece estimate, words and punctuation marks, close to
BPE counts on English), so the saving is measured, not assumed; pass a tier's real tokenizer to count exactly.

`trim_pending` is what a run with `trim` on (`sluice run --trim`, the catalogue's top-level `trim = true`, a drop-box
manifest's `trim`) does before routing: each pending row's `prompt` (its last user turn; the system prompt and
earlier turns are left alone) is trimmed, the original kept in `untrimmed_prompt` (the landed `prompt`:
sluice/stages/land/trimmed.py) and the input tokens saved in `trim_tokens_saved`, counted with `count_tokens`. The
infer stage prices them per attempt (`trim_saving_usd`) and the baseline prices the untrimmed prompt. The answer
caps below are not applied by `trim`: they change what an answer may say, and what they save cannot be measured
per row.

`MAX_TOKENS_BY_INTENT` caps the answer length of rows that did not set `max_tokens`, by the gatekeeper's intent
(`sluice.stages.route.assign.gatekeeper_features`): a yes/no label does not need 256 tokens of budget. A row without
`max_tokens` gets min(its intent's cap, the run's default), so a cap only ever lowers what a row may spend; the
report counts the output tokens this takes off the batch's worst case (what budget routing plans with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import polars as pl

from models.tokens import count_word_pieces as estimate_tokens
from sluice.contracts.columns import DEFAULT_MAX_TOKENS

MIN_REPEATED_LINE = 30
_RUNS = re.compile(r"(?<=\S)[ \t]{2,}")
_CODE = re.compile(r"[;{}()=<>\[\]`/\\_|]")


def _is_prose(line: str) -> bool:
    """At least 30 characters and 5 words, mostly letters, no code or path punctuation: safe to de-duplicate."""
    letters = sum(c.isalpha() for c in line)
    return (len(line) >= MIN_REPEATED_LINE and len(line.split()) >= 5 and letters >= 0.6 * len(line)
            and not _CODE.search(line))

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


def trim_prompt(text: str | None, drop_repeated_lines: bool = False) -> str | None:
    """The prompt with redundant whitespace (and, if asked, repeated prose lines) removed (module doc)."""
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
        line = line.rstrip()
        if not _CODE.search(line):  # a code-like line keeps its spacing (string literals, alignment)
            line = _RUNS.sub(" ", line)
        if not line:
            blank_run += 1
            if blank_run > 1:
                continue
            out.append(line)
            continue
        blank_run = 0
        key = line.strip()
        if drop_repeated_lines and _is_prose(key):
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
    max_output_tokens_saved: int

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


def apply_brevity(
    rows: pl.DataFrame,
    count_tokens: Callable[[str], int] = estimate_tokens,
    cap_max_tokens: bool = True,
    drop_repeated_lines: bool = False,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[pl.DataFrame, BrevityReport]:
    """Trim `prompt`, and fill a null `max_tokens` with min(intent's cap, default); returns the table and what it
    saved."""
    from sluice.stages.route.gatekeeper import gatekeeper_features

    before = rows["prompt"].to_list()
    after = [trim_prompt(p, drop_repeated_lines) for p in before]
    out = rows.with_columns(pl.Series("prompt", after, dtype=pl.String))
    capped = out_saved = 0
    if cap_max_tokens:
        intent = gatekeeper_features(out["prompt"])["intent"]
        cap = intent.replace_strict(MAX_TOKENS_BY_INTENT, default=MAX_TOKENS_BY_INTENT["qa"], return_dtype=pl.Int32)
        cap = cap.clip(upper_bound=default_max_tokens)
        current = out["max_tokens"].cast(pl.Int32) if "max_tokens" in out.columns else pl.Series([None] * out.height,
                                                                                                   dtype=pl.Int32)
        lowered = current.is_null() & (cap < default_max_tokens)
        capped = int(lowered.sum())
        out_saved = int((default_max_tokens - cap).filter(lowered).sum()) if capped else 0
        out = out.with_columns(current.fill_null(cap).alias("max_tokens"))
    report = BrevityReport(
        rows=rows.height,
        rows_trimmed=sum(1 for a, b in zip(before, after) if a != b),
        tokens_before=sum(count_tokens(p or "") for p in before),
        tokens_after=sum(count_tokens(p or "") for p in after),
        rows_capped=capped,
        max_output_tokens_saved=out_saved,
    )
    return out, report


def trim_pending(rows: pl.DataFrame, count_tokens: Callable[[str], int] = estimate_tokens) -> pl.DataFrame:
    """Trim the prompt of every pending row (status "pending"; all rows without a status); adds `untrimmed_prompt`
    (the original, null where nothing changed) and `trim_tokens_saved` (0 where nothing changed, null for rows not
    sent). Rows that are not sent (duplicates, quarantined, deferred) keep their prompt."""
    pending = (rows["status"] == "pending").fill_null(False) if "status" in rows.columns else pl.Series(
        [True] * rows.height)
    before = rows["prompt"].to_list()
    after = [trim_prompt(p) if go else p for p, go in zip(before, pending.to_list())]
    changed = [a != b for a, b in zip(before, after)]
    saved = [max(count_tokens(b or "") - count_tokens(a or ""), 0) if c else (0 if go else None)
             for a, b, c, go in zip(after, before, changed, pending.to_list())]
    return rows.with_columns(
        pl.Series("prompt", after, dtype=pl.String),
        pl.Series("untrimmed_prompt", [b if c else None for b, c in zip(before, changed)], dtype=pl.String),
        pl.Series("trim_tokens_saved", saved, dtype=pl.Int64),
    )


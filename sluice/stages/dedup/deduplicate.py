"""Dedup: answer each distinct request once, and reuse earlier nights' answers.

Stages, cheapest first; each only looks at rows still canonical after the previous one:

    exact     equal normalised prompt, system prompt and max_tokens (below)            dup_kind "exact", score 1
    near      MinHash LSH over word shingles, Jaccard >= threshold (`sluice.stages.dedup.near`)     dup_kind "near", score J
    semantic  MiniLM cosine >= threshold on short prompts (`sluice.stages.dedup.semantic`)          dup_kind "semantic", cosine
    cache     the same three matches against answered rows of earlier runs in the warehouse (`sluice.stages.dedup.cache`):
              dup_kind "cache", dup_of "<run_id>/<row_id>", the earlier response copied, cost 0

Every near, semantic or cache match must also share the request fingerprint (normalised system prompt and effective
max_tokens; the tier/model is checked for cache entries, whose model must still be served) and pass the content
guards of `sluice.stages.dedup.guards` (numbers, negation and polarity, names, word order).

Exact stage: two rows are the same request when their normalised prompt, normalised system prompt and
effective `max_tokens` are equal (Unicode NFKC, case-folded, whitespace collapsed). The first row of each group
is canonical and goes on to routing and inference; the others get `dup_of` = the canonical `row_id`,
`dup_kind` = "exact", `dup_score` = 1.0 and status "duplicate": they are answered from the canonical row at
cost 0.

Everything here is vectorised in polars, so the stage stays linear in rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from sluice.allocators import give_back_freed
from sluice.contracts.columns import DEFAULT_MAX_TOKENS, DUP_COLUMNS, SHAPE_COLUMNS, with_shape_columns
from sluice.stages.dedup.cache import CACHE_COLUMNS, CacheConfig
from sluice.stages.dedup.cache_index import cache_candidates
from sluice.stages.dedup.calibrate import Rule
from sluice.stages.dedup.guards import forget_tokens
from sluice.stages.dedup.near import Mapper, NearConfig, near_duplicate_pairs, nfkc, run_locally
from sluice.stages.dedup.semantic import Embedder, SemanticConfig, semantic_duplicate_pairs, short_prompts


def _shape_parts() -> list[pl.Expr]:
    """Everything besides the prompt and system prompt that changes the answer, as text: a conversation's earlier
    turns (normalised like the prompt), temperature, stop strings and the response schema."""
    return [
        normalise(pl.col("history")),
        pl.col("temperature").cast(pl.String).fill_null(""),
        pl.col("stop").fill_null(""),
        pl.col("response_schema").fill_null(""),
    ]


def normalise(expr: pl.Expr) -> pl.Expr:
    """Text equal up to Unicode form, case and whitespace maps to the same string."""
    return (
        expr.fill_null("")
        .map_batches(nfkc, return_dtype=pl.String)
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def request_key(default_max_tokens: int) -> pl.Expr:
    """A 64-bit fingerprint of everything in the row that changes the answer."""
    return pl.concat_str(
        [
            normalise(pl.col("system")),
            normalise(pl.col("prompt")),
            pl.col("max_tokens").fill_null(default_max_tokens).cast(pl.String),
            *_shape_parts(),
        ],
        separator="\x1f",
    ).hash(seed=0x51_1CE)


def _by_chunks(df: pl.DataFrame, expr: pl.Expr, chunk_rows: int = 1 << 15) -> pl.Series:
    """A row-wise expression evaluated chunk_rows rows at a time: the normalised copies of the texts it makes
    exist for one chunk at a time, so memory per row stays flat as batches grow."""
    return pl.concat([df.slice(lo, chunk_rows).select(expr).to_series()
                      for lo in range(0, max(df.height, 1), chunk_rows)])


def exact_duplicates(rows: pa.Table, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> pa.Table:
    """Mark exact duplicates among pending rows; returns the rows with dup_of / dup_kind / dup_score added."""
    df = pl.from_arrow(rows)
    assert isinstance(df, pl.DataFrame)
    return _mark_exact(df, default_max_tokens).to_arrow()


def _mark_exact(df: pl.DataFrame, default_max_tokens: int) -> pl.DataFrame:
    """`exact_duplicates` on a polars frame (no Arrow round trip: each one copies the prompts)."""
    df = with_shape_columns(df)
    for name, dtype in DUP_COLUMNS.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    pending = pl.col("status") == "pending"
    df = df.with_columns(
        _by_chunks(df, pl.when(pending).then(request_key(default_max_tokens)).otherwise(None).alias("_key"))
    ).with_columns(
        pl.col("row_id").first().over("_key", order_by="row_index").alias("_canonical")
    )
    is_dup = pending & (pl.col("_canonical") != pl.col("row_id"))
    df = df.with_columns(
        pl.when(is_dup).then(pl.col("_canonical")).otherwise(pl.col("dup_of")).alias("dup_of"),
        pl.when(is_dup).then(pl.lit("exact")).otherwise(pl.col("dup_kind")).alias("dup_kind"),
        pl.when(is_dup).then(pl.lit(1.0)).otherwise(pl.col("dup_score")).alias("dup_score"),
        pl.when(is_dup).then(pl.lit("duplicate")).otherwise(pl.col("status")).alias("status"),
    ).drop("_key", "_canonical")
    return df


STAGES = ("exact", "near", "semantic", "cache")


@dataclass(frozen=True)
class DedupConfig:
    """Which stages run and their settings. The cache stage needs a warehouse to read.

    reuse_sampled: rows with temperature > 0 asked for a sample each; they are never duplicates (no stage marks
        them, nor reuses an answer for them) unless this is set: then two sampled requests with equal fingerprints
        (temperature included) may share one sample like any other rows."""

    stages: tuple[str, ...] = ("exact", "near", "semantic")
    reuse_sampled: bool = False
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    near: NearConfig = field(default_factory=NearConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown dedup stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)}")


def calibrated(cfg: DedupConfig, rule: Rule) -> DedupConfig:
    """`cfg` under a calibrated rule (`sluice.stages.dedup.calibrate`): its semantic thresholds, and character
    shingles for short prompts in the near stage only when the rule keeps them."""
    near = cfg.near if rule.char_shingles else replace(cfg.near, char_max_words=0)
    return replace(cfg, near=near, semantic=replace(cfg.semantic, rule=rule))


def request_fingerprint(default_max_tokens: int) -> pl.Expr:
    """What besides the prompt changes the answer: the system prompt, the effective max_tokens and the request
    shape (a conversation's earlier turns, sampling parameters, response schema). Near and semantic matches are
    only looked for between rows with the same fingerprint."""
    return pl.concat_str(
        [normalise(pl.col("system")), pl.col("max_tokens").fill_null(default_max_tokens).cast(pl.String),
         *_shape_parts()],
        separator="\x1f",
    ).hash(seed=0xF1_9E)


def _unmark_sampled(df: pl.DataFrame, sampled: pl.Series) -> pl.DataFrame:
    return df.with_columns(pl.when(sampled).then(pl.lit("pending")).otherwise(pl.col("status")).alias("status"))


def _scattered(df: pl.DataFrame, marked: dict[int, tuple[str, str, float]]) -> list[pl.Series]:
    """dup_of, dup_kind and dup_score with the marked rows' values written in."""
    cols = [df[name].clone() for name in ("dup_of", "dup_kind", "dup_score")]
    if marked:
        at = np.fromiter(marked, np.int64, len(marked))
        for col, values in zip(cols, zip(*marked.values())):
            col.scatter(at, pl.Series(values, dtype=col.dtype))
    return cols


def deduplicate(
    rows: pa.Table | Callable[[], pa.Table],
    cfg: DedupConfig = DedupConfig(),
    warehouse: str | Path | None = None,
    embedder: Embedder | None = None,
    mapper: Mapper | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Run the selected stages over ingested rows (row schema of `sluice.stages.ingest.read`); returns the rows with dup_of,
    dup_kind, dup_score set and status "duplicate" for every duplicate. With the cache stage, cache hits also
    carry cache_response, cache_model and cache_baseline_cost_usd for landing. `mapper` runs the near stage's
    partitions (`sluice.stages.dedup.near`; default: one after another in this process). `columns`: return only
    these (`sluice dedup` takes the marks alone: converting the prompts back to Arrow copies them, 600 MB at 1M
    rows). `rows` may be a function that reads them: then the stage holds the only copy, and when `columns` leaves
    the prompt out it lets the prompts the semantic stage never compares go once the near stage is done (480 MB of
    500 at 1M rows, issue 19)."""
    use_cache = "cache" in cfg.stages
    if use_cache and warehouse is None:
        raise ValueError("the cache stage needs a warehouse (DuckDB file) to read earlier answers from")
    df = pl.from_arrow(rows() if callable(rows) else rows)
    assert isinstance(df, pl.DataFrame)
    df = with_shape_columns(df)
    for name, dtype in DUP_COLUMNS.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    sampled = pl.Series(np.zeros(df.height, bool))
    if not cfg.reuse_sampled:  # a sampled row stays out of every stage: status "sampled" while they run
        sampled = ((pl.col("temperature").fill_null(0.0) > 0) & (pl.col("status") == "pending"))
        sampled = df.select(sampled).to_series()
        df = df.with_columns(pl.when(sampled).then(pl.lit("sampled")).otherwise(pl.col("status")).alias("status"))
    if "exact" in cfg.stages:
        df = _mark_exact(df, cfg.default_max_tokens)
    if not use_cache and "near" not in cfg.stages and "semantic" not in cfg.stages:
        return _unmark_sampled(df, sampled).select(columns or df.columns).to_arrow()

    if use_cache:
        entries = cache_candidates(warehouse, cfg, df, request_key(cfg.default_max_tokens),
                                   request_fingerprint(cfg.default_max_tokens))  # only what tonight could match
    else:
        entries = pl.DataFrame(schema={"cache_ref": pl.String, "prompt": pl.String, "system": pl.String,
                                       "max_tokens": pl.Int32, **SHAPE_COLUMNS, **CACHE_COLUMNS})
    m, n = entries.height, df.height
    pending = (df["status"] == "pending").to_numpy().copy()
    hit_entry = np.full(n, -1, np.int64)  # which cache entry answers a tonight row
    marked: dict[int, tuple[str, str, float]] = {}  # row -> (dup_of, dup_kind, dup_score), only rows marked here

    def mark(row: int, of: str, kind: str, score: float, entry: int = -1) -> None:
        marked[row] = (of, kind, score)
        pending[row] = False
        hit_entry[row] = entry

    if use_cache and m:
        # exact cache hits: the same request key as an earlier answered row (newest first)
        key = request_key(cfg.default_max_tokens)
        first_entry = (entries.with_row_index("_entry").with_columns(key.alias("_key"))
                       .group_by("_key", maintain_order=True).agg(pl.col("_entry").first()))
        hits = (df.with_row_index("_row").with_columns(key.alias("_key"))
                .join(first_entry, on="_key", how="inner").select("_row", "_entry"))
        refs = entries["cache_ref"].to_list()
        for row, entry in hits.iter_rows():
            if pending[row]:
                mark(row, refs[entry], "cache", 1.0, entry)

    # near and semantic stages over earlier answers (positions 0..m-1) then tonight's rows (m..m+n-1); the prompts
    # stay one Arrow column (never a Python string per row): the stages fetch the texts they need
    both = pl.concat([entries.select("prompt", "system", "max_tokens", *SHAPE_COLUMNS),
                      df.select("prompt", "system", pl.col("max_tokens").cast(pl.Int32), *SHAPE_COLUMNS)])
    texts = both["prompt"]
    block = _by_chunks(both, request_fingerprint(cfg.default_max_tokens)).to_numpy().view(np.int64)
    del both
    is_prior = np.arange(m + n) < m
    refs = entries["cache_ref"].to_list()
    for stage, find, stage_cfg in (("near", near_duplicate_pairs, cfg.near),
                                   ("semantic", semantic_duplicate_pairs, cfg.semantic)):
        in_batch = stage in cfg.stages
        if not in_batch and not (use_cache and m):
            continue
        tonight = np.concatenate([np.zeros(m, bool), pending])
        can_be_canonical = (is_prior if use_cache else np.zeros(m + n, bool)) | (tonight if in_batch else False)
        if not tonight.any() or not can_be_canonical.any():
            continue
        kwargs: dict = {"embedder": embedder} if stage == "semantic" else {"mapper": mapper or run_locally}
        if stage == "semantic" and columns is not None and "prompt" not in columns:
            texts, kwargs["n_words"] = short_prompts(texts, stage_cfg)  # no later step reads the long prompts
            df = df.drop("prompt")
        found = find(texts, block, tonight, can_be_canonical, stage_cfg, **kwargs)
        forget_tokens()  # the guards' token caches and the heap pages the stage freed (issue 19)
        give_back_freed()
        ids = df["row_id"].gather(np.maximum(found.canonical - m, 0)).to_list()  # row ids of tonight's canonicals
        for j, c, score, row_id in zip(found.dup.tolist(), found.canonical.tolist(), found.score.tolist(), ids):
            if c < m:
                mark(j - m, refs[c], "cache", round(score, 4), c)
            else:
                mark(j - m, row_id, stage, round(score, 4))

    is_dup = pl.Series(~pending & (df["status"] == "pending").to_numpy())
    df = df.with_columns(
        pl.when(is_dup).then(pl.lit("duplicate")).otherwise(pl.col("status")).alias("status"),
        *_scattered(df, marked),
    )
    if use_cache:
        picked = pl.DataFrame({"_entry": hit_entry})
        cached = entries.select(*CACHE_COLUMNS).with_row_index("_entry").with_columns(pl.col("_entry").cast(pl.Int64))
        extra = picked.join(cached, on="_entry", how="left", maintain_order="left").drop("_entry")
        df = pl.concat([df.drop([c for c in CACHE_COLUMNS if c in df.columns]), extra], how="horizontal")
    return _unmark_sampled(df, sampled).select(columns or df.columns).to_arrow()

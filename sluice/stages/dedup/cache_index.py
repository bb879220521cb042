"""The cache index: tonight's rows look earlier answers up instead of loading them all.

The cache stage (`sluice.stages.dedup.cache`) matches tonight's rows against every valid earlier answer with the
exact, near and semantic matchers of `sluice.stages.dedup.deduplicate`. Here the index narrows and those matchers
still decide: only entries that could change a decision are read, in the reference order, so the hits are the
same as with every entry loaded. What each matcher can look at, and what is read for it:

    exact     the first entry (newest) with tonight's request key              cache_entries.request_key
    near      per LSH band, the first valid entry of each bucket (same band, block and band values) that holds
              one of tonight's rows: the only entry of that bucket `candidate_pairs` pairs with it   cache_bands
    semantic  for each of tonight's short rows, its top_k valid entries of the same request fingerprint by static
              cosine: an ANN index over the entries' static vectors (`sluice.stages.dedup.cache_ann`), asked for
              more neighbours until top_k + MARGIN such entries at >= candidate_threshold - FLOOR_MARGIN are seen
              or the next are below it

Index rows are written when a run lands (`index_answers`, called by the land task), under a scheme (the key
hashes' polars version, default max_tokens, MinHash settings): runs not indexed under tonight's scheme, such as
runs landed before this index existed, are read whole (the reference path for them), and the next landing
indexes them. The ANN file is derived: it lives beside the warehouse and is brought up to date at lookup.
Exactness rests on the ANN search finding each row's nearest entries (usearch HNSW, exhaustive below 20k entries;
at 1M entries 4 of 10k rows lost a cache hit: bench/results/cache_index.md); the exact and near lookups are exact.
The exact and near lookups pick entry ids first (no texts through the window), then read those rows.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sluice.stages.dedup.cache import (
    ENTRY_SCHEMA,
    ORDER,
    empty_entries,
    entry_params,
    entry_sql,
    has_tables,
    load_cache_entries,
)
from sluice.stages.dedup.cache_ann import ANN_MAX_WORDS, semantic_candidates
from sluice.stages.dedup.minhash import NearConfig, _band_keys, normalised_words, shingle_hashes, signatures

INDEX_TABLES = {"cache_entries", "cache_bands", "cache_index_runs"}
log = logging.getLogger(__name__)


def scheme(default_max_tokens: int, near: NearConfig) -> str:
    """What the stored keys depend on. Character shingles on or off share one scheme: short rows are indexed both
    ways."""
    bands, rows = near.lsh_params()
    chars = near.char_max_words or NearConfig().char_max_words
    return (f"v1 polars={pl.__version__} max_tokens={default_max_tokens} near={near.shingle_words},{near.num_perm},"
            f"{near.seed},{near.max_words},{chars},{near.char_shingle},{bands}x{rows}")


def _band_rows(texts: pl.Series, block: np.ndarray, near: NearConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, band, key) of every LSH bucket key the near stage forms for these rows (`minhash.candidate_pairs`);
    short rows twice: with character shingles and with word shingles only."""
    bands, r = near.lsh_params()
    n_words = normalised_words(texts, near.max_words).list.len().fill_null(0).to_numpy()
    variants = [(np.arange(len(texts)), near)]
    if near.char_max_words:
        short = np.flatnonzero((n_words > 0) & (n_words <= near.char_max_words))
        variants.append((short, replace(near, char_max_words=0)))
    out_row, out_band, out_key = [], [], []
    for rows, cfg in variants:
        if not len(rows):
            continue
        hashes, offsets = shingle_hashes(texts.gather(rows), cfg)
        sig = signatures(hashes, offsets, cfg)
        live = np.flatnonzero(np.diff(offsets) > 0)
        for band in range(bands):
            out_row.append(rows[live])
            out_band.append(np.full(len(live), band, np.uint8))
            out_key.append(_band_keys(block[rows[live]], sig[live, band * r:(band + 1) * r]))
    if not out_row:
        return np.empty(0, np.int64), np.empty(0, np.uint8), np.empty(0, np.uint64)
    return np.concatenate(out_row), np.concatenate(out_band), np.concatenate(out_key)


def index_answers(warehouse: str | Path, request_key: pl.Expr, fingerprint: pl.Expr, default_max_tokens: int,
                  runs: list[str] = (), near: NearConfig = NearConfig(), chunk_rows: int = 1 << 16) -> int:
    """Index the answered rows of `runs` (re-landed: indexed again) and of every run not yet indexed under this
    scheme; returns the entries written. request_key / fingerprint: `deduplicate.request_key` and
    `request_fingerprint` for `default_max_tokens`."""
    from sluice.warehouse.db import connect

    current = scheme(default_max_tokens, near)
    written = 0
    with connect(warehouse) as con:
        todo = [r for (r,) in con.execute(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest($runs::VARCHAR[])) OR run_id NOT IN "
            "(SELECT run_id FROM cache_index_runs WHERE scheme = $s) ORDER BY finished_at, run_id",
            {"runs": list(runs), "s": current}).fetchall()]
        for run_id in todo:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM cache_bands WHERE entry_id IN (SELECT entry_id FROM cache_entries "
                        "WHERE run_id = ?)", [run_id])
            con.execute("DELETE FROM cache_entries WHERE run_id = ?", [run_id])
            rows = con.execute(entry_sql(valid=False) + " AND r.run_id = $run ORDER BY r.row_index",
                               {"default_max_tokens": default_max_tokens, "run": run_id}).pl().cast(
                {k: v for k, v in ENTRY_SCHEMA.items()}, strict=False)
            for lo in range(0, rows.height, chunk_rows):
                part = rows.slice(lo, chunk_rows)
                ids = np.sort(con.execute("SELECT nextval('cache_entry_ids') FROM range(?)",
                                          [part.height]).fetchnumpy()["nextval('cache_entry_ids')"]).astype(np.int64)
                keys = part.select(request_key.alias("k"), fingerprint.alias("b"))
                words = [len(t.split()) for t in part["prompt"].fill_null("").to_list()]
                con.register("_entries", pa.table({
                    "entry_id": ids, "run_id": part["_run_id"].to_arrow(),
                    "row_id": part["cache_ref"].str.slice(len(run_id) + 1).to_arrow(),
                    "request_key": keys["k"].to_arrow(), "words": pa.array(words, pa.int32())}))
                con.execute("INSERT INTO cache_entries SELECT * FROM _entries")
                row, band, key = _band_rows(part["prompt"].fill_null(""), keys["b"].to_numpy(), near)
                con.register("_bands", pa.table({"entry_id": ids[row], "band": band, "band_key": key}))
                con.execute("INSERT INTO cache_bands SELECT * FROM _bands")
                con.unregister("_entries")
                con.unregister("_bands")
            con.execute("INSERT OR REPLACE INTO cache_index_runs VALUES (?, ?, ?, ?)",
                        [run_id, current, rows.height, datetime.now(timezone.utc)])
            con.execute("COMMIT")
            written += rows.height
    return written


def _tonight_bands(df: pl.DataFrame, block: np.ndarray, near: NearConfig) -> pa.Table:
    """Tonight's rows' bucket keys under tonight's near settings (one variant: the one the near stage uses)."""
    bands, r = near.lsh_params()
    hashes, offsets = shingle_hashes(df["prompt"].fill_null(""), near)
    sig = signatures(hashes, offsets, near)
    live = np.flatnonzero(np.diff(offsets) > 0)
    keys = [_band_keys(block[live], sig[live, b * r:(b + 1) * r]) for b in range(bands)]
    band = np.repeat(np.arange(bands, dtype=np.uint8), len(live))
    return pa.table({"band": band, "band_key": np.concatenate(keys) if keys else np.empty(0, np.uint64)})


def _read(con, params: dict, condition: str) -> pl.DataFrame:
    return con.execute(entry_sql() + " AND " + condition, params).pl()


def _in_order(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The union of the frames read, each entry once, in the reference order (`cache.ORDER`)."""
    frames = [f.select(*ENTRY_SCHEMA, "_run_id", "_row_index", "_finished_at") for f in frames if f.height]
    if not frames:
        return empty_entries()
    both = pl.concat(frames).unique("cache_ref")
    both = both.sort(["_finished_at", "_row_index", "_run_id"], descending=[True, False, False], nulls_last=True)
    return both.select(list(ENTRY_SCHEMA)).cast(ENTRY_SCHEMA)


def cache_candidates(warehouse: str | Path | None, cfg: Any, df: pl.DataFrame, request_key: pl.Expr,
                     fingerprint: pl.Expr, use_index: bool = True) -> pl.DataFrame:
    """The entries tonight's pending rows could match (`cfg`: the DedupConfig; request_key / fingerprint:
    `deduplicate.request_key` / `request_fingerprint` for its default max_tokens), in `load_cache_entries`'s order
    and columns. Without the index tables, or with use_index=False, every entry is read."""
    if warehouse is None or not Path(warehouse).is_file():
        return empty_entries()
    sem = cfg.semantic
    if not use_index or sem.candidate_threshold is None or sem.max_words > ANN_MAX_WORDS:
        return load_cache_entries(warehouse, cfg.cache, cfg.default_max_tokens)
    from sluice.warehouse.db import connect

    tonight = df.filter(pl.col("status") == "pending")
    with connect(warehouse, read_only=True) as con:
        tables = has_tables(con, {"results", "runs"}), has_tables(con, INDEX_TABLES)
        if all(tables):
            frames = _candidates(con, warehouse, cfg, tonight, request_key, fingerprint)
    if not tables[0]:
        return empty_entries()
    if not tables[1]:  # a warehouse no writer has migrated since the index came: read whole
        return load_cache_entries(warehouse, cfg.cache, cfg.default_max_tokens)
    return _in_order(frames)


def _temp_table(con, name: str, table: pa.Table) -> None:
    """Copy an Arrow table into a temporary DuckDB table (allowed on a read-only connection). Joined as a
    registered Arrow scan, DuckDB 1.5 pushes the join's key range into the scan as a pyarrow filter and fails on
    UBIGINT keys above 2**63 ("Python int too large to convert to C long")."""
    con.register("_arrow_in", table)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _arrow_in")
    con.unregister("_arrow_in")


def _candidates(con, warehouse: str | Path, cfg: Any, tonight: pl.DataFrame, request_key: pl.Expr,
                fingerprint: pl.Expr) -> list[pl.DataFrame]:
    params = entry_params(con, cfg.cache, cfg.default_max_tokens)
    current = scheme(cfg.default_max_tokens, cfg.near)
    indexed = ("r.run_id IN (SELECT run_id FROM cache_index_runs WHERE scheme = $scheme)")
    frames = [_read(con, {**params, "scheme": current}, "NOT " + indexed)]  # runs read whole
    if tonight.height:
        block = tonight.select(fingerprint).to_series().to_numpy()
        _temp_table(con, "_keys", tonight.select(request_key.alias("request_key")).unique().to_arrow())
        _temp_table(con, "_bands", pl.from_arrow(_tonight_bands(tonight, block, cfg.near)).unique().to_arrow())
        first = f"QUALIFY row_number() OVER (PARTITION BY {{by}} ORDER BY {ORDER}) = 1"
        narrow = "SELECT e.entry_id FROM" + entry_sql().split("FROM", 1)[1]  # ids only: no texts in the window
        ids = []
        for table, by in (("_keys", "k.request_key"), ("_bands", "k.band, k.band_key")):
            join = "k.request_key = e.request_key" if table == "_keys" else \
                "k.band = b.band AND k.band_key = b.band_key"
            bands = "" if table == "_keys" else "JOIN cache_bands b ON b.entry_id = e.entry_id "
            ids.append(con.execute(
                narrow.replace("FROM results r JOIN runs USING (run_id)",
                               "FROM results r JOIN runs USING (run_id) "
                               "JOIN cache_entries e ON e.run_id = r.run_id AND e.row_id = r.row_id "
                               f"{bands}JOIN {table} k ON {join}")
                + f" AND {indexed} " + first.format(by=by),
                {**{k: v for k, v in params.items() if k != "default_max_tokens"}, "scheme": current}
            ).fetchnumpy()["entry_id"])
        con.register("_ids", pa.table({"entry_id": np.unique(np.concatenate(ids)).astype(np.int64)}))
        frames.append(_read(con, params, "(r.run_id, r.row_id) IN (SELECT run_id, row_id "
                            "FROM cache_entries JOIN _ids USING (entry_id))"))
        frames += semantic_candidates(con, warehouse, tonight, block, cfg.semantic, fingerprint,
                                      lambda cond, p: _read(con, {**params, "scheme": current, **p},
                                                            f"{indexed} AND {cond}"))
    return frames

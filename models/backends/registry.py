"""Which backend answers a tier, and releasing what self-hosted backends keep warm between batches.

The concrete backends are imported here only when asked for: an API-only run never imports vLLM's module, and
a backend module never needs another.
"""

from __future__ import annotations

import sys

from models.backends.base import Backend
from models.catalogue import Tier

_VLLM_MODULE = "models.backends.vllm_offline"


def make_backend(tier: Tier, data_dir: str = "data", deadline_s: float | None = None) -> Backend:
    """`deadline_s`: seconds from now by which the run needs this tier's answers (API tiers with
    `batch_api = "auto"` use the provider batch API when it fits); None: the tier's own `deadline_h`."""
    if tier.backend == "vllm":
        from models.backends.vllm_offline import VLLMBackend

        return VLLMBackend(tier, data_dir=data_dir)
    if tier.backend == "openai":
        from models.backends.openai_http import OpenAIBackend

        return OpenAIBackend(tier, data_dir=data_dir, deadline_s=deadline_s)
    if tier.backend == "anthropic":
        from models.backends.anthropic_http import AnthropicBackend

        return AnthropicBackend(tier, deadline_s=deadline_s)
    if tier.backend == "replay":
        from models.backends.replay import ReplayBackend

        return ReplayBackend(tier, data_dir=data_dir)
    raise ValueError(f"tier {tier.name!r}: unknown backend {tier.backend!r}")


def release_engines() -> None:
    """Release the self-hosted engine this process keeps warm (vLLM's, kept across shards), if it holds one;
    inside `engines_kept_warm()` a live engine waits for the scope's end.

    Cheap when there is none: a process that never loaded the vLLM backend module never started an engine, so
    nothing is imported (neither that module nor vllm)."""
    if _VLLM_MODULE not in sys.modules:
        return
    from models.backends.vllm_offline import shutdown_engine

    shutdown_engine()


def engines_kept_warm():
    """A scope (context manager) in which the self-hosted engine outlives the runs that use it: a drop-box pass
    answers its datasets on one warm engine and releases it when the scope closes (vllm_offline.py)."""
    from models.backends.vllm_offline import engines_kept_warm as kept_warm

    return kept_warm()


def engine_identity(tier: Tier) -> str | None:
    """Tiers with equal identities run on one engine (a worker keeps one); None for a tier that is not vLLM."""
    if tier.backend != "vllm":
        return None
    from models.backends.vllm_offline import engine_identity as identity

    return identity(tier)

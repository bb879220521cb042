"""Self-hosted tier: vLLM's offline engine, every row of a shard in one `LLM.generate` call.

vLLM already does continuous batching inside one call; Sluice's job is to hand it the whole shard at once, keep
one engine per worker process, and account for the time the worker was held (engine start included), which
the infer stage apportions to rows by tokens.

Decoding is greedy (temperature 0) with a fixed engine seed: a nightly batch must give the same answer to the same
request, which is also what makes answers safe to reuse from the cache.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Sequence

from models.backends import BatchResult, Completion, Request
from models.catalogue import Tier
from models.packaged import resolve_model

log = logging.getLogger(__name__)


# One engine per worker process, kept across shards, tiers and runs that ask for the same engine: restarting it
# costs 20-90 s of billed time. A different engine replaces it (a worker holds one engine's memory at a time).
_engine_key: tuple | None = None
_engine = None


def _engine_args(tier: Tier, model: str) -> dict:
    return dict(
        model=model,
        dtype=tier.dtype,
        quantization=tier.quantization,
        max_model_len=tier.max_model_len,
        enforce_eager=tier.enforce_eager,
        seed=tier.seed,
        disable_log_stats=False,  # keeps per-request timestamps (queued -> last token) on outputs
        **tier.engine_args,
    )


def acquire_engine(tier: Tier, data_dir: str = "data"):
    """The process's engine for this tier's settings, and the seconds spent starting it (0 when reused)."""
    global _engine, _engine_key
    args = _engine_args(tier, resolve_model(tier.model, data_dir))
    key = tuple(sorted(args.items()))
    if _engine is not None and _engine_key == key:
        return _engine, 0.0
    shutdown_engine()
    # On CPU vLLM sizes its KV cache from this (GiB); without it it assumes the whole NUMA node.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    t0 = time.perf_counter()
    _engine = LLM(**args)
    _engine_key = key
    started = time.perf_counter() - t0
    log.info("tier %s: vLLM engine for %s ready in %.1f s", tier.name, args["model"], started)
    return _engine, started


def shutdown_engine() -> None:
    global _engine, _engine_key
    if _engine is not None:
        try:
            _engine.llm_engine.engine_core.shutdown()
        except Exception:  # already down: nothing left to release
            log.debug("engine shutdown raised", exc_info=True)
    _engine, _engine_key = None, None
    gc.collect()


def _mean_logprob(gen) -> float | None:
    """Mean log-probability of the sampled tokens (logprobs=0 returns exactly the sampled token's)."""
    if not gen.logprobs or not gen.token_ids:
        return None
    values = [step[tok].logprob for tok, step in zip(gen.token_ids, gen.logprobs) if step and tok in step]
    return sum(values) / len(values) if values else None


class VLLMBackend:
    def __init__(self, tier: Tier, data_dir: str = "data") -> None:
        self.tier = tier
        self.data_dir = data_dir

    def complete(self, requests: Sequence[Request]) -> BatchResult:
        if not requests:
            return BatchResult([], billed_seconds=0.0)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm, start_cost = acquire_engine(self.tier, self.data_dir)
        t0 = time.perf_counter()
        # Template and tokenize here, once, so a prompt that cannot fit the context fails alone: handed to
        # vLLM, one over-long prompt raises for the whole call and would sink the shard.
        completions: list[Completion | None] = [None] * len(requests)
        prompts, params, index = [], [], []
        for i, req in enumerate(requests):
            ids = self._prompt_ids(llm, req)
            room = self.tier.max_model_len - len(ids)
            if room < 1:
                completions[i] = Completion(
                    req.row_id, None, input_tokens=0,
                    error=f"prompt is {len(ids)} tokens; tier {self.tier.name!r} holds {self.tier.max_model_len} "
                          "tokens of prompt and answer",
                )
                continue
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            # an answer is cut at the context's end rather than refused (finish_reason "length" says so)
            params.append(SamplingParams(max_tokens=min(req.max_tokens, room), temperature=0.0,
                                         logprobs=0 if self.tier.logprobs else None))
            index.append(i)
        outputs = llm.generate(prompts, sampling_params=params, use_tqdm=True) if prompts else []
        wall = time.perf_counter() - t0
        for i, out in zip(index, outputs, strict=True):
            gen = out.outputs[0]
            m = out.metrics
            # engine-side time from queueing to the last token: what this row waited inside the batch
            latency = (m.last_token_ts - m.queued_ts) * 1000 if m is not None and m.last_token_ts else wall * 1000
            completions[i] = Completion(
                row_id=requests[i].row_id,
                text=gen.text,
                input_tokens=len(out.prompt_token_ids or []),
                output_tokens=len(gen.token_ids),
                latency_ms=latency,
                finish_reason=gen.finish_reason,
                mean_logprob=_mean_logprob(gen) if self.tier.logprobs else None,
            )
        return BatchResult(
            [c for c in completions if c is not None],
            billed_seconds=start_cost + wall,
            details={"engine_start_s": start_cost, "generate_s": wall},
        )

    @staticmethod
    def _prompt_ids(llm, req: Request) -> list[int]:
        """The chat-templated prompt's token ids, as `LLM.chat` would build them."""
        tok = llm.get_tokenizer()
        ids = tok.apply_chat_template(req.messages(), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def close(self) -> None:
        """The engine stays warm for the next shard; `shutdown_engine()` releases it."""

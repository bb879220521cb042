"""Self-hosted tier: vLLM's offline engine, every row of a shard in one `LLM.generate` call.

vLLM already does continuous batching inside one call; Sluice's job is to hand it the whole shard at once, keep
one engine per worker process, and account for the time the worker was held (engine start included), which
the infer stage apportions to rows by tokens. The shard goes in arrival order: grouping rows by system
prompt for vLLM's prefix cache, longest first, measured no faster (bench/results/prefix_order.md), because one
`generate` call already shares each cached prefix whatever the order.

Each row brings its own sampling: max tokens, temperature (None: greedy, with a fixed engine seed, so a nightly batch
gives the same answer to the same request, which is what makes answers safe to reuse from the cache), stop strings,
and a response schema, which vLLM's structured outputs enforce while decoding (the llguidance backend, which runs on
CPU): a JSON Schema gives JSON text, a choice list gives one of its labels as plain text.

A drop-box pass answers several datasets in one process: inside `engines_kept_warm()` a run's request to release
the engine (after its last self-hosted tier) waits for the pass to end, so the next dataset's run reuses it and
the start is paid once per pass (the land stage's engine_share.py apportions it across the pass's runs).

A dead engine must fail the shard, not hang it: vLLM notices its EngineCore process dying but leaves `LLM.generate`
waiting for outputs that will never come, so `generate` runs under a watchdog (`_generate_or_raise`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from multiprocessing import connection
from typing import Sequence

from models.backends.base import BatchResult, Completion, Request
from models.catalogue import Tier
from models.packaged import resolve_model

log = logging.getLogger(__name__)


# One engine per worker process, kept across shards, tiers and runs that ask for the same engine: restarting it
# costs 20-90 s of billed time. A different engine replaces it (a worker holds one engine's memory at a time).
_engine_key: tuple | None = None
_engine = None
# True inside `engines_kept_warm()`: `shutdown_engine()` keeps a live engine until the pass ends
_kept_warm = False


def _engine_args(tier: Tier, model: str) -> dict:
    return {
        **dict(
            model=model,
            dtype=tier.dtype,
            quantization=tier.quantization,
            max_model_len=tier.max_model_len,
            enforce_eager=tier.enforce_eager,
            seed=tier.seed,
            disable_log_stats=False,  # keeps per-request timestamps (queued -> last token) on outputs
            # Structured outputs write compact JSON (no free whitespace between tokens): fewer output tokens, and a
            # small model cannot loop on spaces and newlines inside the object, a known way a constrained answer
            # runs to max_tokens without closing (seen with the tiny test model under "auto"/xgrammar). vLLM sets this
            # per engine, not per request, and refuses it with backend "auto": guidance (llguidance) is the backend
            # covering the most JSON Schema, the one "auto" falls back to when xgrammar lacks a feature.
            structured_outputs_config={"backend": "guidance", "disable_any_whitespace": True},
        ),
        **tier.engine_args,
    }


def engine_identity(tier: Tier) -> str:
    """What decides whether two tiers run on one engine: equal identities share the process's engine."""
    return repr(sorted(_engine_args(tier, tier.model).items()))


@contextmanager
def engines_kept_warm():
    """While open (a drop-box pass), `shutdown_engine()` keeps a live engine warm for the next run; the engine is
    released when the outermost scope closes. A dead engine, or one another tier's settings replace, still goes."""
    global _kept_warm
    outer = not _kept_warm
    _kept_warm = True
    try:
        yield
    finally:
        if outer:
            _kept_warm = False
            shutdown_engine()


def acquire_engine(tier: Tier, data_dir: str = "data"):
    """The process's engine for this tier's settings, and the seconds spent starting it (0 when reused)."""
    global _engine, _engine_key
    args = _engine_args(tier, resolve_model(tier.model, data_dir))
    key = tuple(sorted(args.items()))
    if _engine is not None and _engine_key == key and not _engine_is_dead(_engine):
        return _engine, 0.0
    shutdown_engine(force=True)
    # On CPU vLLM sizes its KV cache from this (GiB); without it it assumes the whole NUMA node.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    t0 = time.perf_counter()
    _engine = LLM(**args)
    _engine_key = key
    started = time.perf_counter() - t0
    log.info("tier %s: vLLM engine for %s ready in %.1f s", tier.name, args["model"], started)
    return _engine, started


# How long a released EngineCore may take to exit after SIGTERM before vLLM kills it and its worker. vLLM's default
# is 5 s, and on this CPU build the worker never exits by itself within it (every release was a 5 s wait and then a
# kill): the engine is released between passes, with nothing in flight, so the wait buys nothing.
_RELEASE_GRACE_S = 1.0


def shutdown_engine(force: bool = False) -> None:
    """Release the process's engine; inside `engines_kept_warm()` a live engine is kept unless `force`."""
    global _engine, _engine_key
    if _kept_warm and not force and _engine is not None and not _engine_is_dead(_engine):
        log.info("engine kept warm for the next run of this pass")
        return
    if _engine is not None:
        try:
            _engine.llm_engine.engine_core.shutdown(timeout=_RELEASE_GRACE_S)
        except Exception:  # already down: nothing left to release
            log.debug("engine shutdown raised", exc_info=True)
    _engine, _engine_key = None, None
    gc.collect()


class EngineDiedError(RuntimeError):
    """The vLLM EngineCore process died while (or before) answering: the batch has no answers; retry it on a
    fresh engine (the backend has already released the dead one)."""


def _engine_processes(llm) -> list:
    """The EngineCore processes behind an `LLM` (multiprocessing handles); [] when the engine runs in-process."""
    core = llm.llm_engine.engine_core
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


def _engine_is_dead(llm) -> bool:
    core = llm.llm_engine.engine_core
    if getattr(getattr(core, "resources", None), "engine_dead", False):
        return True
    return any(p.exitcode is not None for p in _engine_processes(llm))


def _exit_codes(llm, wait_s: float = 2.0) -> list[int | None]:
    """The EngineCore processes' exit codes (-9: SIGKILL), waiting briefly for a dying one to be reaped.

    vLLM's liveness monitor thread reads `exitcode` on the same handles when the process dies. Two threads reaping one
    child race: the loser's `waitpid` fails with ECHILD and `multiprocessing` reports None until the winner has stored
    the code on the shared handle, so a None is read again until the deadline rather than trusted at once.
    """
    procs = _engine_processes(llm)
    deadline = time.monotonic() + wait_s
    codes = [p.exitcode for p in procs]  # each read reaps the process if it is ours to reap
    while None in codes and time.monotonic() < deadline:
        time.sleep(0.05)
        codes = [p.exitcode for p in procs]
    return codes


# How often the watchdog wakes to see whether generate has ended; a death itself is seen at once (process sentinel).
_WATCH_POLL_S = 0.5


def _generate_or_raise(llm, prompts, params):
    """`llm.generate`, raising `EngineDiedError` within moments of the EngineCore process dying.

    Why this is needed (vLLM 0.32, SyncMPClient): `LLM.generate` loops on `engine_core.get_output()`, a blocking
    `outputs_queue.get()`. When the EngineCore process is killed, vLLM's own monitor thread marks the engine dead and
    shuts the client down, but the output thread exits without queueing anything, so `get()` waits forever. The
    watchdog waits on the process sentinels alongside generate; when one fires it queues an `EngineDeadError` (which
    `get_output` raises) and fails any pending utility call, so generate unwinds. The dead engine is then released,
    so the next call starts a fresh one.
    """
    from vllm.v1.engine.exceptions import EngineDeadError

    core = llm.llm_engine.engine_core
    sentinels = [p.sentinel for p in _engine_processes(llm)]
    done = threading.Event()
    died: dict[str, object] = {}

    def watch() -> None:
        while not done.is_set():
            if sentinels:
                fired = connection.wait(sentinels, timeout=_WATCH_POLL_S)
            else:
                fired, _ = [], done.wait(_WATCH_POLL_S)
            if done.is_set():
                return
            if fired or getattr(getattr(core, "resources", None), "engine_dead", False):
                died["at"] = time.perf_counter()
                queue = getattr(core, "outputs_queue", None)
                if queue is not None:
                    queue.put_nowait(EngineDeadError(suppress_context=True))
                for fut in list(getattr(core, "utility_results", {}).values()):
                    if not fut.done():
                        fut.set_exception(EngineDeadError(suppress_context=True))
                return

    watchdog = threading.Thread(target=watch, name="sluice-vllm-watchdog", daemon=True)
    watchdog.start()
    try:
        return llm.generate(prompts, sampling_params=params, use_tqdm=True)
    except Exception as exc:
        if died or isinstance(exc, EngineDeadError) or _engine_is_dead(llm):
            exitcodes = _exit_codes(llm)
            if died:
                log.warning("vLLM EngineCore died (exit codes %s); generate unwound %.2f s after the watchdog saw it",
                            exitcodes, time.perf_counter() - died["at"])
            shutdown_engine(force=True)
            raise EngineDiedError(
                f"vLLM engine died during generate (EngineCore exit codes {exitcodes}); "
                f"{len(prompts)} requests unanswered, the engine was released: retry on a fresh one"
            ) from exc
        raise
    finally:
        done.set()
        watchdog.join(timeout=5)


def _structured_outputs(req: Request):
    """vLLM structured-output parameters for the row's schema, or None for free text."""
    if not req.response_schema:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    choices = req.choices()
    if choices is not None:
        return StructuredOutputsParams(choice=choices)
    # compact JSON: the engine is started with disable_any_whitespace (see _engine_args)
    return StructuredOutputsParams(json=json.loads(req.response_schema))


def _sampling_params(req: Request, max_tokens: int, logprobs: bool):
    from vllm import SamplingParams

    # Per-request seeds crash large batches on CPU (GUIDE): sampled rows draw from the engine's seeded generator.
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=0.0 if req.temperature is None else req.temperature,
        stop=list(req.stop) or None,
        structured_outputs=_structured_outputs(req),
        logprobs=0 if logprobs else None,
    )


def _schema_problem(llm, params) -> str | None:
    """Why vLLM would refuse this row's sampling parameters (an unsupported or malformed schema), or None.

    vLLM validates every request before any runs, and one refusal raises for the whole `generate` call; checking
    here lets a bad schema fail its own rows only. Uses the engine's own validation on a copy of the parameters.
    """
    from vllm.exceptions import VLLMClientError

    processor = getattr(llm.llm_engine, "input_processor", None)
    if processor is None:  # another vLLM layout: let generate validate
        return None
    try:
        params.clone().verify(processor.model_config, processor.speculative_config,
                              processor.structured_outputs_config, processor.tokenizer)
    except (ValueError, VLLMClientError) as exc:  # VLLMValidationError is not a ValueError
        return str(exc)
    return None


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
        from vllm.inputs import TokensPrompt

        llm, start_cost = acquire_engine(self.tier, self.data_dir)
        t0 = time.perf_counter()
        # Template and tokenize here, once, so a prompt that cannot fit the context fails alone: handed to
        # vLLM, one over-long prompt (or one refused schema) raises for the whole call and would sink the shard.
        completions: list[Completion | None] = [None] * len(requests)
        prompts, params, index = [], [], []
        schema_problems: dict[str | None, str | None] = {None: None}
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
            # an answer is cut at the context's end rather than refused (finish_reason "length" says so)
            try:
                sp = _sampling_params(req, min(req.max_tokens, room), self.tier.logprobs)
            except ValueError as exc:  # schema text that is not JSON
                completions[i] = Completion(req.row_id, None, error=f"response schema refused: {exc}")
                continue
            if req.response_schema not in schema_problems:
                schema_problems[req.response_schema] = _schema_problem(llm, sp)
            if schema_problems[req.response_schema]:
                completions[i] = Completion(
                    req.row_id, None, error=f"response schema refused: {schema_problems[req.response_schema]}")
                continue
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(sp)
            index.append(i)
        outputs = _generate_or_raise(llm, prompts, params) if prompts else []
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
        """The engine stays warm for the next shard; `shutdown_engine()` (`registry.release_engines()`) releases it."""

"""Replay tier: each row answered from recorded answers of a real model, never touching a network.

A replay tier (`backend = "replay"`, `answers = "PATH"`) reads a Parquet file of answers a real model already gave
(your shadow samples, earlier runs via `sluice answers export`, public evaluation sets) and answers every request
whose conversation it has, so routing settings, budgets and cascades can be evaluated for $0. Rows are priced
like an API tier: recorded tokens x the tier's list prices (`models/catalogue.py`).

The answers file:
    response                  the recorded answer (rows where it is null are skipped)
    prompt (+ system)         the request, or
    messages                  the whole conversation in the OpenAI chat format (list of {role, content}, or its
                              JSON text): an optional leading system turn, earlier turns, the last user turn.
                              A row's `messages` wins over its `prompt`/`system`. A `history` column (JSON
                              [[role, content], ...], as the warehouse stores it) is read too.
    input_tokens, output_tokens   optional; missing counts are counted with the tier's `tokenizer` when it has
                              one, else estimated (`models.tokens`, the Completion flagged `usage_estimated`)
    finish_reason, latency_ms optional (defaults "stop" and 0)

Matching: the exact conversation (system prompt, earlier turns with their roles, last user turn) after whitespace
normalisation (stripped, runs of whitespace collapsed to one space). Sampling parameters, `max_tokens` and the
response schema are not part of the key: a structured request gets the recorded text, which the infer stage
validates like any answer. When the file holds the same conversation twice, the first row wins (an export lists
the latest answer first). A request with no recorded answer fails with the reason; the other rows proceed.

The file is read once per process and path (again when it changes on disk).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from models.backends.base import BatchResult, Completion, Request
from models.catalogue import Tier
from models.tokens import estimate_message_tokens, estimate_tokens

log = logging.getLogger(__name__)

OPTIONAL_COLUMNS = ("system", "messages", "history", "input_tokens", "output_tokens", "finish_reason", "latency_ms")
ROLES = ("system", "user", "assistant")


class ReplayError(ValueError):
    """The answers file or the tier's tokenizer cannot be used; the message names the tier and the file."""


@dataclass(frozen=True)
class Recorded:
    response: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Answers:
    path: Path
    by_key: dict[str, Recorded]
    rows: int  # rows in the file
    unusable: int  # rows without a response or a usable request
    duplicates: int  # rows whose conversation an earlier row already recorded (first wins)


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def request_key(system: str | None, history: Sequence[tuple[str, str]], prompt: str) -> str:
    """The matching key of a conversation: every text whitespace-normalised, roles kept, no system == empty."""
    return json.dumps([_norm(system), [[role, _norm(content)] for role, content in history], _norm(prompt)],
                      ensure_ascii=False)


def key_of(req: Request) -> str:
    return request_key(req.system, req.history, req.prompt)


def _conversation(messages: object) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system, earlier turns, last user turn) of an OpenAI chat `messages` value (list or JSON text)."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} turns")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] is not a {{role, content}} turn with role system, user or assistant")
        turns.append((m["role"], m["content"]))
    system = turns[0][1] if turns[0][0] == "system" else None
    rest = turns[1:] if system is not None else turns
    if not rest or rest[-1][0] != "user":
        raise ValueError("messages must end with the user turn that was answered")
    if any(role == "system" for role, _ in rest):
        raise ValueError("only the first turn of messages may be a system turn")
    return system, rest[:-1], rest[-1][1]


def _row_key(row: dict) -> str:
    if row.get("messages") is not None:
        system, history, prompt = _conversation(row["messages"])
        return request_key(system, history, prompt)
    if row.get("prompt") is None:
        raise ValueError("no prompt")
    history = [(r, c) for r, c in json.loads(row["history"])] if row.get("history") else []
    return request_key(row.get("system"), history, row["prompt"])


def _count(value) -> int | None:
    return None if value is None else int(value)


def read_answers(path: Path) -> Answers:
    """Index an answers file by conversation key (first row wins); unusable rows are skipped and logged."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    table = pq.read_table(path, columns=[c for c in ("prompt", "response", *OPTIONAL_COLUMNS) if c in names])
    by_key: dict[str, Recorded] = {}
    unusable = duplicates = 0
    for i, row in enumerate(table.to_pylist()):
        try:
            if row.get("response") is None:
                raise ValueError("no response")
            key = _row_key(row)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            unusable += 1
            if unusable <= 5:
                log.warning("%s row %d: skipped, %s", path, i, exc)
            continue
        if key in by_key:
            duplicates += 1
            continue
        by_key[key] = Recorded(row["response"], _count(row.get("input_tokens")), _count(row.get("output_tokens")),
                               row.get("finish_reason"), row.get("latency_ms"))
    return Answers(Path(path), by_key, table.num_rows, unusable, duplicates)


_CACHE: dict[tuple[str, int, int], Answers] = {}
_CACHE_LOCK = threading.Lock()


def load_answers(path: Path) -> Answers:
    """`read_answers`, cached per path, modification time and size: read once per process, again when changed."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            for old in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[old]
            _CACHE[key] = read_answers(Path(path))
        return _CACHE[key]


Counter = Callable[[Request, str], tuple[int, int]]


def estimate_counter(req: Request, response: str) -> tuple[int, int]:
    """Input (the conversation, plus the response schema, which providers bill as input) and output estimates."""
    schema = estimate_tokens(req.response_schema) if req.response_schema else 0
    return estimate_message_tokens(req.messages()) + schema, estimate_tokens(response)


def tokenizer_counter(folder: str) -> Counter:
    """Counts with a Hugging Face tokenizer: the conversation through its chat template (when it has one), the
    answer's tokens without special tokens."""
    from transformers import AutoTokenizer

    from models.tokens import MESSAGE_OVERHEAD_TOKENS

    tok = AutoTokenizer.from_pretrained(folder)

    def count(req: Request, response: str) -> tuple[int, int]:
        msgs = req.messages()
        if tok.chat_template:
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            n_in = len(ids["input_ids"] if hasattr(ids, "keys") else ids)
        else:
            n_in = sum(len(tok.encode(m["content"], add_special_tokens=False)) + MESSAGE_OVERHEAD_TOKENS
                       for m in msgs)
        return n_in, len(tok.encode(response, add_special_tokens=False))

    return count


class ReplayBackend:
    """Answers a tier's requests from its recorded answers file (see the module doc)."""

    def __init__(self, tier: Tier, data_dir: str = "data") -> None:
        if tier.answers is None:
            raise ReplayError(f"tier {tier.name!r}: a replay tier needs `answers`")
        self.tier = tier
        self.data_dir = data_dir
        try:
            self.answers = load_answers(tier.answers)
        except (OSError, ValueError) as exc:
            raise ReplayError(f"tier {tier.name!r}: cannot read answers file {tier.answers}: {exc}") from exc
        self._counter: Counter | None = None

    @property
    def counting(self) -> str:
        """How missing token counts are counted: the tier's tokenizer, or the estimate."""
        return f"tokenizer {self.tier.tokenizer}" if self.tier.tokenizer else "estimate (models.tokens)"

    def _count_missing(self, req: Request, response: str) -> tuple[int, int]:
        if self._counter is None:
            self._counter = self._load_counter()
        return self._counter(req, response)

    def _load_counter(self) -> Counter:
        if not self.tier.tokenizer:
            return estimate_counter
        from models.packaged import resolve_model

        try:
            return tokenizer_counter(resolve_model(self.tier.tokenizer, self.data_dir))
        except Exception as exc:  # noqa: BLE001 - any loader failure: name the tier and the tokenizer
            raise ReplayError(f"tier {self.tier.name!r}: cannot load tokenizer {self.tier.tokenizer}: {exc}") from exc

    def complete(self, requests: Sequence[Request]) -> BatchResult:
        comps: list[Completion] = []
        counts = {"replay_hits": 0, "replay_misses": 0, "rows_tokens_recorded": 0, "rows_tokens_counted": 0,
                  "rows_tokens_estimated": 0}
        for req in requests:
            rec = self.answers.by_key.get(key_of(req))
            if rec is None:
                counts["replay_misses"] += 1
                comps.append(Completion(req.row_id, None, error=(
                    f"no recorded answer for this prompt in {self.answers.path} (tier {self.tier.name})")))
                continue
            counts["replay_hits"] += 1
            n_in, n_out, how = rec.input_tokens, rec.output_tokens, "recorded"
            if n_in is None or n_out is None:
                c_in, c_out = self._count_missing(req, rec.response)
                n_in = c_in if n_in is None else n_in
                n_out = c_out if n_out is None else n_out
                how = "counted" if self.tier.tokenizer else "estimated"
            counts[f"rows_tokens_{how}"] += 1
            comps.append(Completion(
                row_id=req.row_id, text=rec.response, input_tokens=n_in, output_tokens=n_out,
                latency_ms=float(rec.latency_ms or 0.0), finish_reason=rec.finish_reason or "stop",
                usage_estimated=how == "estimated",
            ))
        return BatchResult(comps, billed_seconds=None, details=dict(counts))

    def close(self) -> None:
        """Nothing to release: the answers stay cached for the next shard."""

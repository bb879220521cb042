"""The backend interface: what every kind of model service (self-hosted or API) implements and returns.

A backend answers a batch of requests for one tier and reports what it was billed for:
    - self-hosted backends (vLLM) report `billed_seconds` (engine start + generation), which the infer stage
      turns into a per-row cost by apportioning the worker's $/hour over the rows' tokens;
    - API backends report each row's token usage, priced per token from the catalogue.
Adding a provider is one class implementing `Backend`, one branch in `registry.make_backend`, and catalogue
entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from models.catalogue import Tier


@dataclass(frozen=True)
class Request:
    """One row to answer. A chat-shaped row is `system` + `history` + `prompt` (its last user turn)."""

    row_id: str
    prompt: str
    system: str | None
    max_tokens: int
    # earlier turns of a conversation, (role, content) with role "user" or "assistant", between the system prompt
    # and `prompt`; () for a single-prompt row
    history: tuple[tuple[str, str], ...] = ()
    # None: greedy decoding (temperature 0), what makes answers repeatable and safe to reuse from the cache
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    # JSON Schema text the answer must satisfy (structured outputs), or None for free text. A schema that is only
    # {"enum": [strings]} is a choice list (classification): the answer is one of the strings, as plain text.
    response_schema: str | None = None

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.extend({"role": role, "content": content} for role, content in self.history)
        msgs.append({"role": "user", "content": self.prompt})
        return msgs

    def choices(self) -> list[str] | None:
        """The choice list when `response_schema` is one (see above), else None."""
        return choice_list(self.response_schema)


def choice_list(schema_text: str | None) -> list[str] | None:
    """The labels of a choice-list schema ({"enum": [strings]}, optionally with "type": "string"), else None."""
    if not schema_text:
        return None
    import json

    schema = json.loads(schema_text)
    if not isinstance(schema, dict) or set(schema) - {"enum", "type", "title", "description"}:
        return None
    enum = schema.get("enum")
    if schema.get("type", "string") != "string" or not isinstance(enum, list) or not enum:
        return None
    return enum if all(isinstance(e, str) for e in enum) else None


@dataclass
class Completion:
    row_id: str
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    error: str | None = None  # set when the row failed; the batch goes on
    # API tiers: input tokens read from the provider's prompt cache (a subset of input_tokens, billed cheaper)
    cached_input_tokens: int = 0
    # the provider returned no usage: the token counts are the client's estimate, and so is the cost
    usage_estimated: bool = False
    # answered through a provider batch API, billed at batch prices
    via_batch_api: bool = False
    # tiers with `logprobs = true` (vLLM, OpenAI-compatible APIs): mean log-probability of the answer's tokens, the confidence the
    # batch cascade escalates on (closer to 0 = surer)
    mean_logprob: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchResult:
    completions: list[Completion]
    # self-hosted only: seconds the worker was held for this batch, engine start included
    billed_seconds: float | None = None
    details: dict[str, object] = field(default_factory=dict)


class Backend(Protocol):
    tier: Tier

    def complete(self, requests: Sequence[Request]) -> BatchResult:
        """Answer every request; a failed row is a Completion with `error` set, never an exception."""
        ...

    def close(self) -> None: ...

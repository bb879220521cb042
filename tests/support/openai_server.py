"""A small OpenAI-compatible HTTP server for tests and benchmarks, on loopback only.

It speaks, like a provider:
    - `POST /v1/chat/completions` (and `GET /v1/models`, `GET /health`): answers carry `usage` token counts and
      `x-ratelimit-*` headers;
    - the Batch API: `POST /v1/files` (multipart upload, purpose "batch"), `GET /v1/files/{id}` and
      `/v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`. A
      batch is answered in a background thread after `Faults.batch_delay_s` (and, with `Faults.batch_hold`, not
      before faults without it are set); per-row failures, expiry and cancellation write an error file the way
      OpenAI does.
Faults can be injected per chat request: 429 with `Retry-After`, 500, slow answers, and answers that come only
after `timeout_hold_s` (client timeouts). With `limits`, the server also enforces RPM/TPM like a provider (429 on
the excess) and advertises them in its headers.

It records every request it receives, at its arrival (time, endpoint, model, tokens, status), so tests can check
what a provider would have seen and billed: `max_in_window(60)` gives the most requests and tokens it received in
any 60 s window, `per_minute()` the counts per clock minute.

The answer is deterministic: "answer to: <first words of the last user message>", so tests can check that each
row got its own answer. A `responder` (optional) scripts free-text answers instead: called with each real-time chat
request's messages and model, it returns the answer's text (sent whole, whatever `max_tokens`), an HTTP status to
fail that request with (an int: 500, 429, ...), or None for the default answer; a judge's scripted verdicts, say
(tests/support/judge.py).

Structured requests (`response_format` json_schema or json_object; for Anthropic, a forced or only tool with an
`input_schema`) are answered with a JSON instance of the schema (`schema_instance`: deterministic in the last user
message; enums pick by a hash of it, so different rows get different labels) with finish reason "stop", never cut
at `max_tokens`. `Faults.invalid_answers` makes chosen ones invalid, for tests of validation, retries and
escalation: a tuple of `InvalidAnswers(marker=None, models=(), rate=1.0, times=None, kind="malformed")` rules; the
first rule that matches a request decides (a rule whose `times` are used up answers validly):

    marker   only conversations (system prompt + turns) containing this text
    models   only requests for these models (say, the cheap tier's, so that escalating to the next tier helps)
    rate     only this share of rows: a per-row draw from `Faults.seed` and the conversation, the same on
             every attempt and every model
    times    only the first `times` answers to the row by this rule (1: the retry succeeds); None: always
    kind     "malformed": truncated JSON (Anthropic: a text block, no tool call); "schema": well-formed JSON that
             violates the schema (a wrapped answer keeps its `value` key, with a wrong value)

Each record in `received` says what was given (`structured`: "valid", "malformed", "schema"; None for free text)
and the answer's text (`text`). For example, rows marked [flaky] fail once, [hard] fail on the cheap model only,
[bad] always fail:

    rules = (InvalidAnswers(marker="[flaky]", times=1), InvalidAnswers(marker="[hard]", models=("mid-test",)),
             InvalidAnswers(marker="[bad]", kind="schema"))
    with OpenAICompatServer(faults=Faults(invalid_answers=rules), model="premium-test") as srv:
        ...
        assert [r.structured for r in srv.received if "[flaky]" in str(r.body)] == ["malformed", "valid"]

    with OpenAICompatServer(faults=Faults(rate_429=0.1)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="test")
"""

from __future__ import annotations

import email.parser
import json
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def count_tokens(text: str) -> int:
    """The server's tokenizer: whitespace words (what it bills, and what the client sees in usage)."""
    return len(text.split())


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0  # the server holds the request for `timeout_hold_s` before answering
    retry_after_s: float = 1.0
    timeout_hold_s: float = 30.0
    delay_s: float = 0.0  # every successful answer waits this long
    seed: int = 0
    # batch APIs
    batch_delay_s: float = 0.0  # a batch starts answering this long after it is created
    batch_row_fail_rate: float = 0.0  # rows answered with a 500 in the error file (transient)
    batch_row_invalid_rate: float = 0.0  # rows answered with a 400 in the error file (permanent)
    batch_expire_fraction: float = 0.0  # the last fraction of each batch's rows expire unanswered
    batch_expire_batches: int | None = None  # only the first this many batches expire rows (None: every batch)
    # batches stay "in_progress" (after batch_delay_s) until faults without it are set (`set_faults`): a provider
    # taking its time, for tests that kill or leave a run while its batch is running
    batch_hold: bool = False
    omit_usage: bool = False  # answers carry no `usage` (the client must estimate)
    cached_prompt_tokens: int = 0  # usage reports this many prompt tokens as read from the prompt cache
    # structured requests (a json_schema response format, a forced tool) answered invalidly: the first rule that
    # matches a request decides (see InvalidAnswers)
    invalid_answers: tuple[InvalidAnswers, ...] = ()


@dataclass(frozen=True)
class InvalidAnswers:
    """A rule for answering structured requests invalidly, so that tests can drive validation, retries and
    escalation. A request matches when all of these hold:

        marker  the conversation (system prompt and every turn) contains this text (None: any conversation);
        models  the request is for one of these models (empty: any model);
        rate    the row falls in this share of rows: a draw seeded by `Faults.seed` and the conversation text,
                so the same row gets the same verdict on every attempt and from every model (1.0: every row);
        times   the row has been answered invalidly by this rule fewer than `times` times (None: no limit):
                `times=1` makes the first attempt fail and the retry succeed.
    and then its answer is `kind`: "malformed" (truncated JSON; for Anthropic a text block instead of the tool
    call) or "schema" (well-formed JSON that violates the schema; "malformed" where the schema admits anything).
    Free-text requests are never affected.
    """

    marker: str | None = None
    models: tuple[str, ...] = ()
    rate: float = 1.0
    times: int | None = None
    kind: str = "malformed"

    def __post_init__(self) -> None:
        if self.kind not in ("malformed", "schema"):
            raise ValueError(f"InvalidAnswers.kind must be 'malformed' or 'schema', not {self.kind!r}")
        if isinstance(self.models, str):  # a lone model name, not its characters
            object.__setattr__(self, "models", (self.models,))

    def matches(self, conversation: str, model: str, seed: int) -> bool:
        if self.marker is not None and self.marker not in conversation:
            return False
        if self.models and model not in self.models:
            return False
        return self.rate >= 1.0 or zlib.crc32(f"{seed}|{conversation}".encode()) / 2**32 < self.rate


@dataclass(frozen=True)
class ProviderLimits:
    """Limits the server enforces (429 on the excess) and advertises in its rate-limit headers."""

    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 60.0


@dataclass
class Received:
    at: float  # arrival time (time.time())
    model: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    body: dict = field(repr=False)
    endpoint: str = "chat"  # "chat" for a real-time request, "batch" for a row answered inside a batch
    held: bool = False  # an injected timeout: the answer came only after `timeout_hold_s`
    # structured requests: "valid", "malformed" or "schema" (the answer given, see InvalidAnswers); None: free text
    structured: str | None = None
    text: str | None = None  # the answer's text (structured: the JSON text, or for Anthropic the tool input's)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class WindowPeak:
    requests: int
    tokens: int


def answer_text(messages: list[dict], max_tokens: int) -> str:
    user = [m for m in messages if m.get("role") == "user"]
    content = user[-1].get("content", "") if user else ""
    if isinstance(content, list):  # content blocks
        content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    words = str(content).split()[:8]
    return " ".join(" ".join(["answer", "to:", *words]).split()[:max_tokens])


def prompt_of(messages: list[dict], system: object = None) -> str:
    parts = [str(system)] if system else []
    for m in messages:
        c = m.get("content", "")
        parts.append(" ".join(str(b.get("text", "")) for b in c if isinstance(b, dict)) if isinstance(c, list)
                     else str(c))
    return " ".join(parts)


def last_user_text(messages: list[dict]) -> str:
    user = [m for m in messages if m.get("role") == "user"]
    content = user[-1].get("content", "") if user else ""
    if isinstance(content, list):
        content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


# ---- structured answers: a deterministic instance of a JSON Schema, and one that violates it ----------------------

_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00Z",
            "email": "someone@example.com", "uri": "https://example.com/", "url": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "hostname": "example.com"}


def _resolve(schema: object, root: dict) -> object:
    """Follow a local "$ref" ("#/$defs/x", "#/definitions/x", "#" ...) to the schema it names."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        target: object = root
        for part in [p for p in schema["$ref"][1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target[int(part)] if isinstance(target, list) else target[part]  # type: ignore[index]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **extra} if isinstance(target, dict) else target
        seen += 1
        if seen > 32:
            break
    return schema


def _merged(schema: dict, root: dict) -> dict:
    """`allOf` folded into one schema (properties and required lists united): enough for instances."""
    if "allOf" not in schema:
        return schema
    out = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        sub = _resolve(sub, root)
        if not isinstance(sub, dict):
            continue
        sub = _merged(sub, root)
        for k, v in sub.items():
            if k == "properties":
                out["properties"] = {**out.get("properties", {}), **v}
            elif k == "required":
                out["required"] = list(dict.fromkeys([*out.get("required", []), *v]))
            else:
                out.setdefault(k, v)
    return out


def _type_of(schema: dict) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t:
        return str(t)
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _pick(seq: list, text: str) -> object:
    return seq[zlib.crc32(text.encode()) % len(seq)]


def _num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bounded(schema: dict, start: float, integer: bool) -> float:
    """`start` moved inside the schema's bounds (and onto its `multipleOf`, best effort for fractional ones)."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if integer:
        if _num(xlo):
            lo = max(lo, math.floor(xlo) + 1) if _num(lo) else math.floor(xlo) + 1
        if _num(xhi):
            hi = min(hi, math.ceil(xhi) - 1) if _num(hi) else math.ceil(xhi) - 1
        lo = math.ceil(lo) if _num(lo) else None
        hi = math.floor(hi) if _num(hi) else None
    else:  # exclusive bounds on numbers: step inside by a quarter of the room between them, or by 1
        room = (xhi - xlo) / 4 if _num(xlo) and _num(xhi) else 1.0
        if _num(xlo):
            lo = max(lo, xlo + room) if _num(lo) else xlo + room
        if _num(xhi):
            hi = min(hi, xhi - room) if _num(hi) else xhi - room
    v = start
    if _num(lo):
        v = max(v, lo)
    if _num(hi):
        v = min(v, hi)
    m = schema.get("multipleOf")
    if _num(m) and m > 0:
        if (not _num(lo) or lo <= 0) and (not _num(hi) or hi >= 0):
            v = 0  # a multiple of anything, with no rounding
        else:
            v = math.ceil(v / m) * m
            if _num(hi) and v > hi:
                v = math.floor(hi / m) * m
    return int(v) if integer else float(v)


def schema_instance(schema: object, text: str, root: object = None) -> object:
    """A small instance of `schema`, deterministic in `text` (the last user message): strings are "answer to:
    <first words>" (or a fixed value for a known `format`), enums pick by a hash of the text, integers and numbers
    the text's word count within the bounds, arrays `minItems` items (at least one), objects every listed property.
    Covers what structured-output schemas use: type (or a list of types), enum, const, properties, required,
    items, prefixItems, bounds, lengths, multipleOf, anyOf/oneOf (the first branch), allOf, local $ref."""
    root = schema if root is None else root
    schema = _resolve(schema, root)  # type: ignore[arg-type]
    if not isinstance(schema, dict):
        return answer_text([{"role": "user", "content": text}], 64)  # `true` or {}: anything goes
    schema = _merged(schema, root)  # type: ignore[arg-type]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return _pick(schema["enum"], text)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            rest = {k: v for k, v in schema.items() if k != key}
            first = _resolve(schema[key][0], root)  # type: ignore[arg-type]
            return schema_instance({**rest, **first} if isinstance(first, dict) else first, text, root)
    kind = _type_of(schema)
    words = text.split()
    if kind == "null":
        return None
    if kind == "boolean":
        return zlib.crc32(text.encode()) % 2 == 0
    if kind in ("integer", "number"):
        return _bounded(schema, len(words), kind == "integer")
    if kind == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        value = answer_text([{"role": "user", "content": text}], 64)
        value = value[: schema.get("maxLength", len(value))]
        value += "x" * max(schema.get("minLength", 0) - len(value), 0)
        pattern = schema.get("pattern")
        if pattern and not re.search(pattern, value):
            for candidate in ("a", "A", "0", "a0", "x" * max(schema.get("minLength", 1), 1), ""):
                if re.search(pattern, candidate):
                    return candidate
        return value
    if kind == "array":
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        n = max(schema.get("minItems", 0), 1, len(prefix) if schema.get("minItems") else 0)
        n = min(n, schema.get("maxItems", n))
        out: list = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            if sub is False:
                break
            sub_r = _resolve(sub, root)  # type: ignore[arg-type]
            if schema.get("uniqueItems") and isinstance(sub_r, dict) and isinstance(sub_r.get("enum"), list):
                out.append(sub_r["enum"][i % len(sub_r["enum"])])
            else:
                out.append(schema_instance(sub, f"{text} {i}" if i else text, root))
        return out
    # object
    props = schema.get("properties") or {}
    obj = {k: schema_instance(v, text, root) for k, v in props.items()}
    for k in schema.get("required") or []:
        if k not in obj:  # required but not described: a string fits unless additionalProperties says otherwise
            extra = schema.get("additionalProperties", {})
            obj[k] = schema_instance(extra if isinstance(extra, dict) else {}, text, root)
    return obj


_JSON_TYPES = {"null": (type(None),), "boolean": (bool,), "integer": (int,), "number": (int, float),
               "string": (str,), "array": (list,), "object": (dict,)}


def _is_type(value: object, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))


def violating_instance(schema: object, text: str, root: object = None) -> tuple[bool, object]:
    """(True, a value that `schema` rejects), or (False, None) where no simple one exists (a schema admitting
    anything). An object keeps its other properties and breaks its first required one (a wrong value, else
    missing): for the wrapper {"value": ...} that is a wrong `value`, which still unwraps."""
    root = schema if root is None else root
    schema = _resolve(schema, root)  # type: ignore[arg-type]
    if schema is False:
        return True, "anything"
    if not isinstance(schema, dict):
        return False, None
    schema = _merged(schema, root)  # type: ignore[arg-type]
    candidates: list = ["not one of the choices", 12345, True, None, [], {}]
    if "const" in schema:
        return True, next(c for c in candidates if c != schema["const"])
    if isinstance(schema.get("enum"), list):
        return True, next(c for c in candidates if c not in schema["enum"])
    declared = schema.get("type")
    kinds = declared if isinstance(declared, list) else [declared] if declared else []
    branches = [_resolve(b, root) for b in schema.get("anyOf") or schema.get("oneOf") or []]  # type: ignore[arg-type]
    if not kinds and branches and all(isinstance(b, dict) and "type" in b and "enum" not in b for b in branches):
        # a value of a type no branch allows
        kinds = [k for b in branches for k in (b["type"] if isinstance(b["type"], list) else [b["type"]])]
    if "object" in kinds or (not kinds and ("properties" in schema or "required" in schema)):
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        if required:
            obj = schema_instance(schema, text, root)
            key = required[0]
            ok, bad = violating_instance(props.get(key, {}), text, root)
            if ok:
                obj[key] = bad  # type: ignore[index]
            else:
                obj.pop(key, None)  # type: ignore[union-attr]
            return True, obj
    for c in ["a string, not the type asked for", 12345, 1.5, True, None, [], {}]:
        if kinds and not any(_is_type(c, k) for k in kinds):
            return True, c
    return False, None


def requested_schema(body: dict) -> tuple[dict, str | None] | None:
    """The schema a request asks its answer to follow, and the tool to answer with (Anthropic), or None:
    OpenAI's `response_format` (json_schema, or json_object: any object), or Anthropic's forced or only tool."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema") or {}, None
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return {"type": "object"}, None
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    if tools:
        choice = body.get("tool_choice") or {}
        named = [t for t in tools if t.get("name") == choice.get("name")] if choice.get("type") == "tool" else []
        tool = (named or tools)[0]
        return tool.get("input_schema") or {}, str(tool.get("name"))
    return None


@dataclass
class StructuredAnswer:
    verdict: str  # "valid", "malformed" or "schema"
    value: object  # the answer object (None when malformed)
    text: str  # its JSON text (cut short when malformed)
    charge: tuple[int, str] | None = None  # the (rule, row) whose count of invalid answers this adds to


# scripts free-text answers (module docstring): (messages, model) -> the text, an HTTP status, or None (default)
Responder = Callable[[list[dict], str], "str | int | None"]


class ServerState(ThreadingHTTPServer):
    """The listening socket plus what the handler threads share: faults, records, limits, files, batches."""

    daemon_threads = True

    def __init__(self, addr, handler, faults: Faults, model: str, limits: ProviderLimits | None,
                 responder: Responder | None = None) -> None:
        super().__init__(addr, handler)
        self.responder = responder
        self.faults = faults
        self.model = model
        self.limits = limits
        self.rng = random.Random(faults.seed)
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.ids = 0
        self.batches_decided = 0  # batches whose rows' outcomes were drawn (Faults.batch_expire_batches)
        self.invalid_given: dict[tuple[int, str], int] = {}  # InvalidAnswers (rule, row): invalid answers so far

    def handle_error(self, request, client_address) -> None:  # a client that hung up (timeouts): not news
        pass

    def new_id(self, prefix: str) -> str:
        with self.lock:
            self.ids += 1
            return f"{prefix}{self.ids:06d}"

    def structured_answer(self, schema: dict, messages: list[dict], system: object, model: str) -> StructuredAnswer:
        """The answer to a structured request: a valid instance of `schema`, unless an `InvalidAnswers` rule
        matches (the count of a rule with `times` moves only when the answer is sent: `record`)."""
        conversation = prompt_of(messages, system)
        verdict, charge = "valid", None
        with self.lock:
            for i, rule in enumerate(self.faults.invalid_answers):
                if rule.matches(conversation, model, self.faults.seed):
                    if rule.times is None or self.invalid_given.get((i, conversation), 0) < rule.times:
                        verdict, charge = rule.kind, (i, conversation)
                    break
        text = last_user_text(messages)
        value = schema_instance(schema, text)
        if verdict == "schema":
            ok, bad = violating_instance(schema, text)
            verdict, value = ("schema", bad) if ok else ("malformed", value)
        dumped = json.dumps(value, ensure_ascii=False)
        if verdict == "malformed":
            # a strict prefix of a JSON object's text is never valid JSON: the answer a model cut off mid-way
            return StructuredAnswer(verdict, None, dumped[: max(len(dumped) // 2, 1)], charge)
        return StructuredAnswer(verdict, value, dumped, charge)

    def record(self, rec: Received, answer: StructuredAnswer | None = None) -> None:
        """Record a request (caller holds the lock); an invalid structured answer that was sent is counted."""
        if answer is not None:
            rec.structured = answer.verdict
            rec.text = answer.text
            if answer.charge and rec.status == 200:
                self.invalid_given[answer.charge] = self.invalid_given.get(answer.charge, 0) + 1
        self.received.append(rec)

    def window_usage(self, now: float) -> tuple[int, int]:
        """Requests and tokens received in the enforced window ending now (caller holds the lock)."""
        assert self.limits
        start = now - self.limits.window_s
        recent = [r for r in self.received if r.at > start and r.endpoint == "chat"]
        return len(recent), sum(r.tokens for r in recent)

    def admit(self, prompt_tokens: int, completion_tokens: int, model: str, body: dict,
              answer: StructuredAnswer | None = None) -> tuple[int, dict]:
        """Decide a real-time request's fate at its arrival and record it. Returns the status (200, 429, 500,
        or 0 for "hold it, then answer") and the rate-limit headers to send."""
        with self.lock:
            now = time.time()
            f = self.faults
            roll = self.rng.random()
            headers: dict[str, str] = {}
            status = 200
            if self.limits:
                used_r, used_t = self.window_usage(now)
                lim = self.limits
                over = (lim.rpm is not None and used_r + 1 > lim.rpm) or (
                    lim.tpm is not None and used_t + prompt_tokens + completion_tokens > lim.tpm)
                if over:
                    status = 429
                headers = self.limit_headers(used_r + (status == 200), used_t + (
                    prompt_tokens + completion_tokens if status == 200 else 0))
            if status == 200:
                if roll < f.rate_429:
                    status = 429
                elif roll < f.rate_429 + f.rate_500:
                    status = 500
                elif roll < f.rate_429 + f.rate_500 + f.rate_timeout:
                    status = 0
            billed = completion_tokens if status in (200, 0) else 0
            self.record(Received(now, model, status or 200, prompt_tokens, billed, body, held=status == 0), answer)
            return status, headers

    def limit_headers(self, used_requests: int, used_tokens: int) -> dict[str, str]:
        assert self.limits
        lim, h = self.limits, {}
        reset = f"{lim.window_s:g}s"
        if lim.rpm:
            h |= {"x-ratelimit-limit-requests": str(lim.rpm),
                  "x-ratelimit-remaining-requests": str(max(lim.rpm - used_requests, 0)),
                  "x-ratelimit-reset-requests": reset}
        if lim.tpm:
            h |= {"x-ratelimit-limit-tokens": str(lim.tpm),
                  "x-ratelimit-remaining-tokens": str(max(lim.tpm - used_tokens, 0)),
                  "x-ratelimit-reset-tokens": reset}
        return h


class JSONHandler(BaseHTTPRequestHandler):
    server: ServerState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet: tests read `received`, not stderr
        pass

    def _send(self, status: int, payload: dict | bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _not_found(self) -> None:
        self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})


class _OpenAIHandler(JSONHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        srv = self.server
        if path in ("/health", ""):
            self._send(200, {"status": "ok"})
        elif path.startswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": srv.model, "object": "model"}]})
        elif path.startswith("/v1/files/") and path.endswith("/content"):
            f = srv.files.get(path.split("/")[3])
            if f is None:
                return self._not_found()
            self._send(200, f["data"], content_type="application/octet-stream")
        elif path.startswith("/v1/files/"):
            f = srv.files.get(path.split("/")[3])
            self._send(200, _file_object(f)) if f else self._not_found()
        elif path.startswith("/v1/batches/"):
            with srv.lock:
                b = srv.batches.get(path.split("/")[3])
                snapshot = dict(b) if b else None
            self._send(200, _batch_object(snapshot)) if snapshot else self._not_found()
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/chat/completions":
            return self._chat(json.loads(self._body() or b"{}"))
        if path == "/v1/files":
            return self._upload()
        if path == "/v1/batches":
            return self._create_batch(json.loads(self._body() or b"{}"))
        if path.startswith("/v1/batches/") and path.endswith("/cancel"):
            self._body()
            return self._cancel_batch(path.split("/")[3])
        self._body()
        self._not_found()

    def _chat(self, body: dict) -> None:
        srv = self.server
        messages = body.get("messages", [])
        prompt_tokens = count_tokens(prompt_of(messages))
        max_tokens = int(body.get("max_tokens") or 64)
        asked = requested_schema(body)
        answer = srv.structured_answer(asked[0], messages, None, body.get("model", "")) if asked else None
        scripted = srv.responder(messages, body.get("model", "")) if srv.responder and not asked else None
        if isinstance(scripted, int):  # the script fails this request
            with srv.lock:
                srv.record(Received(time.time(), body.get("model", ""), scripted, prompt_tokens, 0, body))
            return self._send(scripted, {"error": {"message": f"scripted {scripted}", "type": "server_error"}})
        text = answer.text if answer else scripted if scripted is not None else answer_text(messages, max_tokens)
        status, headers = srv.admit(prompt_tokens, count_tokens(text), body.get("model", ""), body, answer)
        f = srv.faults
        if status == 429:
            return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                              {"Retry-After": f"{f.retry_after_s:g}", **headers})
        if status == 500:
            return self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
        if status == 0:
            time.sleep(f.timeout_hold_s)
        if f.delay_s:
            time.sleep(f.delay_s)
        self._send(200, chat_completion(body.get("model", srv.model), text, prompt_tokens, max_tokens,
                                        srv.new_id("chatcmpl-"), f.omit_usage, f.cached_prompt_tokens,
                                        finish_reason="stop" if answer else None,
                                        logprobs=bool(body.get("logprobs")),
                                        unsure=UNSURE in prompt_of(messages)), headers)

    def _upload(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        raw = self._body()
        msg = email.parser.BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.get_payload() if msg.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields:
            return self._send(400, {"error": {"message": "no file part", "type": "invalid_request_error"}})
        filename, data = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        fid = self.server.new_id("file-")
        self.server.files[fid] = {"id": fid, "filename": filename or "upload.jsonl", "purpose": purpose,
                                  "data": data, "created_at": int(time.time())}
        self._send(200, _file_object(self.server.files[fid]))

    def _create_batch(self, body: dict) -> None:
        srv = self.server
        f = srv.files.get(body.get("input_file_id", ""))
        if f is None:
            return self._send(400, {"error": {"message": "unknown input_file_id", "type": "invalid_request_error"}})
        lines = [json.loads(x) for x in f["data"].decode().splitlines() if x.strip()]
        bid = srv.new_id("batch_")
        batch = {"id": bid, "endpoint": body.get("endpoint"), "input_file_id": f["id"],
                 "completion_window": body.get("completion_window", "24h"), "status": "validating",
                 "created_at": int(time.time()), "metadata": body.get("metadata"), "output_file_id": None,
                 "error_file_id": None, "total": len(lines), "completed": 0, "failed": 0, "cancel": False}
        with srv.lock:
            srv.batches[bid] = batch
        threading.Thread(target=_run_openai_batch, args=(srv, bid, lines), daemon=True).start()
        self._send(200, _batch_object(dict(batch)))

    def _cancel_batch(self, bid: str) -> None:
        srv = self.server
        with srv.lock:
            b = srv.batches.get(bid)
            if b is None:
                return self._not_found()
            if b["status"] not in ("completed", "failed", "expired", "cancelled"):
                b["cancel"] = True
                b["status"] = "cancelling"
            snapshot = dict(b)
        self._send(200, _batch_object(snapshot))


UNSURE = "[unsure]"  # a prompt with this marker is answered with low token logprobs (when logprobs are asked for)


def chat_completion(model: str, text: str, prompt_tokens: int, max_tokens: int, cid: str,
                    omit_usage: bool = False, cached_tokens: int = 0, finish_reason: str | None = None,
                    logprobs: bool = False, unsure: bool = False) -> dict:
    completion_tokens = count_tokens(text)
    out = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason or ("length" if completion_tokens >= max_tokens else "stop")}],
    }
    if logprobs:  # OpenAI's shape: one entry per generated token (here: per whitespace word)
        value = -2.0 if unsure else -0.05
        out["choices"][0]["logprobs"] = {"content": [{"token": w, "logprob": value, "top_logprobs": []}
                                                     for w in text.split()]}
    if not omit_usage:
        out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                        "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt_tokens)}}
    return out


def _file_object(f: dict) -> dict:
    return {"id": f["id"], "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
            "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}


def _batch_object(b: dict) -> dict:
    return {
        "id": b["id"], "object": "batch", "endpoint": b["endpoint"], "errors": None,
        "input_file_id": b["input_file_id"], "completion_window": b["completion_window"], "status": b["status"],
        "output_file_id": b["output_file_id"], "error_file_id": b["error_file_id"], "created_at": b["created_at"],
        "metadata": b["metadata"],
        "request_counts": {"total": b["total"], "completed": b["completed"], "failed": b["failed"]},
    }


def batch_row_outcomes(srv: ServerState, n: int) -> list[str]:
    """What happens to each of a batch's n rows: "ok", "fail" (500), "invalid" (400) or "expire"."""
    f = srv.faults
    with srv.lock:
        srv.batches_decided += 1
        expiring = f.batch_expire_batches is None or srv.batches_decided <= f.batch_expire_batches
    answered = n - math.floor(n * f.batch_expire_fraction) if expiring else n
    out = []
    with srv.lock:
        for i in range(n):
            roll = srv.rng.random()
            out.append("expire" if i >= answered else "fail" if roll < f.batch_row_fail_rate
                       else "invalid" if roll < f.batch_row_fail_rate + f.batch_row_invalid_rate else "ok")
    return out


def wait_or_cancelled(srv: ServerState, batch: dict, seconds: float) -> bool:
    """Wait `seconds`, then while the faults hold batches; True when the batch was cancelled meanwhile."""
    end = time.time() + seconds
    while time.time() < end or srv.faults.batch_hold:
        if batch["cancel"]:
            return True
        time.sleep(min(0.01, max(end - time.time(), 0.01 if srv.faults.batch_hold else 0)))
    return bool(batch["cancel"])


def _run_openai_batch(srv: ServerState, bid: str, lines: list[dict]) -> None:
    batch = srv.batches[bid]
    with srv.lock:
        batch["status"] = "in_progress"
    cancelled = wait_or_cancelled(srv, batch, srv.faults.batch_delay_s)
    outcomes = batch_row_outcomes(srv, len(lines))
    output, errors = [], []
    for line, outcome in zip(lines, outcomes):
        cid, body = line.get("custom_id"), line.get("body", {})
        cancelled = cancelled or batch["cancel"]
        if cancelled or outcome == "expire":
            code = "batch_cancelled" if cancelled else "batch_expired"
            errors.append({"id": srv.new_id("batch_req_"), "custom_id": cid, "response": None,
                           "error": {"code": code, "message": "This request was not executed."}})
            continue
        messages = body.get("messages", [])
        prompt_tokens = count_tokens(prompt_of(messages))
        max_tokens = int(body.get("max_tokens") or 64)
        asked = requested_schema(body)
        answer = srv.structured_answer(asked[0], messages, None, body.get("model", "")) if asked else None
        text = answer.text if answer else answer_text(messages, max_tokens)
        status = {"ok": 200, "fail": 500, "invalid": 400}[outcome]
        with srv.lock:
            srv.record(Received(time.time(), body.get("model", ""), status, prompt_tokens,
                                count_tokens(text) if status == 200 else 0, body, endpoint="batch"), answer)
        if status == 200:
            rbody = chat_completion(body.get("model", srv.model), text, prompt_tokens, max_tokens,
                                    srv.new_id("chatcmpl-"), srv.faults.omit_usage,
                                    srv.faults.cached_prompt_tokens, finish_reason="stop" if answer else None,
                                    logprobs=bool(body.get("logprobs")), unsure=UNSURE in prompt_of(messages))
            output.append({"id": srv.new_id("batch_req_"), "custom_id": cid,
                           "response": {"status_code": 200, "request_id": cid, "body": rbody}, "error": None})
        else:
            kind = "server_error" if status == 500 else "invalid_request_error"
            errors.append({"id": srv.new_id("batch_req_"), "custom_id": cid, "error": None,
                           "response": {"status_code": status, "request_id": cid,
                                        "body": {"error": {"message": f"injected {status}", "type": kind}}}})
    with srv.lock:
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                fid = f"file-{bid}-{name.split('_')[0]}"
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                srv.files[fid] = {"id": fid, "filename": f"{bid}_{name}.jsonl", "purpose": "batch_output",
                                  "data": data, "created_at": int(time.time())}
                batch[name] = fid
        batch["completed"] = len(output)
        batch["failed"] = len(errors)
        batch["status"] = ("cancelled" if cancelled else "expired" if "expire" in outcomes else "completed")


class LoopbackServer:
    """Run a server on 127.0.0.1 in a background thread (a real socket, a real HTTP exchange)."""

    handler: type[JSONHandler] = _OpenAIHandler

    def __init__(self, faults: Faults | None = None, model: str = "test-model", port: int = 0,
                 limits: ProviderLimits | None = None, responder: Responder | None = None) -> None:
        self._srv = ServerState(("127.0.0.1", port), self.handler, faults or Faults(), model, limits, responder)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._srv.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def received(self) -> list[Received]:
        with self._srv.lock:
            return list(self._srv.received)

    @property
    def batches(self) -> dict[str, dict]:
        with self._srv.lock:
            return {k: dict(v) for k, v in self._srv.batches.items()}

    @property
    def files(self) -> dict[str, dict]:
        with self._srv.lock:
            return dict(self._srv.files)

    def set_faults(self, faults: Faults) -> None:
        with self._srv.lock:
            self._srv.faults = faults
            self._srv.rng = random.Random(faults.seed)

    def max_in_window(self, window_s: float, endpoint: str = "chat") -> WindowPeak:
        """The most requests, and the most tokens (prompt + completion), received in any `window_s`-long window
        [t, t + window_s). The maximum is reached by a window starting at some arrival, so those are all tried."""
        got = sorted((r for r in self.received if r.endpoint == endpoint), key=lambda r: r.at)
        best_r = best_t = 0
        j = tokens = 0
        for i, first in enumerate(got):
            while j < len(got) and got[j].at < first.at + window_s:
                tokens += got[j].tokens
                j += 1
            best_r, best_t = max(best_r, j - i), max(best_t, tokens)
            tokens -= first.tokens
        return WindowPeak(best_r, best_t)

    def per_minute(self, endpoint: str = "chat") -> dict[int, WindowPeak]:
        """Requests and tokens received per clock minute (key: the minute's start, epoch seconds)."""
        out: dict[int, list[int]] = {}
        for r in self.received:
            if r.endpoint == endpoint:
                acc = out.setdefault(int(r.at // 60) * 60, [0, 0])
                acc[0] += 1
                acc[1] += r.tokens
        return {k: WindowPeak(*v) for k, v in sorted(out.items())}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()


class OpenAICompatServer(LoopbackServer):
    handler = _OpenAIHandler

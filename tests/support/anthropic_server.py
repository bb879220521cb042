"""A small Anthropic-compatible HTTP server for tests, on loopback only (same faults and records as the OpenAI one).

It speaks the Messages API, `POST /v1/messages` (answers carry `usage` and `anthropic-ratelimit-*` headers;
errors are `{"type": "error", "error": {...}}` with `retry-after` on 429), and Message Batches:
`POST /v1/messages/batches`, `GET /v1/messages/batches/{id}`, `GET /v1/messages/batches/{id}/results` (JSONL, one
line per request: succeeded / errored / expired / canceled) and `POST /v1/messages/batches/{id}/cancel`.
A request with a forced tool (`tool_choice` {"type": "tool", "name": ...}, or a single tool) is answered with a
`tool_use` block whose input is an instance of the tool's `input_schema`; `Faults.invalid_answers` works as on the
OpenAI server (a "malformed" answer is a text block with truncated JSON and no tool call).

    with AnthropicCompatServer() as srv:
        client = Anthropic(base_url=srv.root_url, api_key="test")
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

from tests.support.openai_server import (
    JSONHandler,
    LoopbackServer,
    Received,
    StructuredAnswer,
    answer_text,
    batch_row_outcomes,
    count_tokens,
    prompt_of,
    requested_schema,
    wait_or_cancelled,
)

_HEADER_NAMES = {
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-limit-tokens": "anthropic-ratelimit-tokens-limit",
    "x-ratelimit-remaining-tokens": "anthropic-ratelimit-tokens-remaining",
}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def message(model: str, text: str, input_tokens: int, max_tokens: int, mid: str, omit_usage: bool,
            tool: str | None = None, answer: StructuredAnswer | None = None) -> dict:
    """A Messages API answer: a text block, or for a structured request a call of `tool` with the answer as its
    input (a malformed answer comes as a text block instead: a model that did not call the tool)."""
    out_tokens = count_tokens(text)
    if answer is not None and answer.verdict != "malformed":
        content: list[dict] = [{"type": "tool_use", "id": mid.replace("msg_", "toolu_"), "name": tool or "answer",
                                "input": answer.value}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": text}]
        stop = "end_turn" if answer is not None or out_tokens < max_tokens else "max_tokens"
    out = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
           "stop_reason": stop, "stop_sequence": None}
    if not omit_usage:
        out["usage"] = {"input_tokens": input_tokens, "output_tokens": out_tokens,
                        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    return out


def _error(kind: str, msg: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": msg}}


class _AnthropicHandler(JSONHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        srv = self.server
        parts = path.split("/")
        if path.startswith("/v1/messages/batches/") and path.endswith("/results"):
            b = srv.batches.get(parts[4])
            if b is None or b["results"] is None:
                return self._send(404, _error("not_found_error", "no results"))
            data = "".join(json.dumps(r) + "\n" for r in b["results"]).encode()
            return self._send(200, data, content_type="application/binary")
        if path.startswith("/v1/messages/batches/"):
            with srv.lock:
                b = srv.batches.get(parts[4])
                snap = dict(b) if b else None
            return self._send(200, self._batch_object(snap)) if snap else self._send(
                404, _error("not_found_error", "no such batch"))
        self._send(404, _error("not_found_error", f"no route {self.path}"))

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        body = json.loads(self._body() or b"{}")
        if path == "/v1/messages":
            return self._message(body)
        if path == "/v1/messages/batches":
            return self._create_batch(body)
        if path.startswith("/v1/messages/batches/") and path.endswith("/cancel"):
            return self._cancel(path.split("/")[4])
        self._send(404, _error("not_found_error", f"no route {self.path}"))

    def _message(self, body: dict) -> None:
        srv = self.server
        messages = body.get("messages", [])
        input_tokens = count_tokens(prompt_of(messages, body.get("system")))
        max_tokens = int(body.get("max_tokens") or 64)
        asked = requested_schema(body)
        answer = srv.structured_answer(asked[0], messages, body.get("system"), body.get("model", "")) if asked else None
        text = answer.text if answer else answer_text(messages, max_tokens)
        status, headers = srv.admit(input_tokens, count_tokens(text), body.get("model", ""), body, answer)
        headers = {_HEADER_NAMES.get(k, k): v for k, v in headers.items() if "reset" not in k}
        f = srv.faults
        if status == 429:
            return self._send(429, _error("rate_limit_error", "rate limited"),
                              {"retry-after": f"{f.retry_after_s:g}", **headers})
        if status == 500:
            return self._send(500, _error("api_error", "injected server error"))
        if status == 0:
            time.sleep(f.timeout_hold_s)
        if f.delay_s:
            time.sleep(f.delay_s)
        self._send(200, message(body.get("model", srv.model), text, input_tokens, max_tokens,
                                srv.new_id("msg_"), f.omit_usage, asked[1] if asked else None, answer), headers)

    def _create_batch(self, body: dict) -> None:
        srv = self.server
        reqs = body.get("requests", [])
        bid = srv.new_id("msgbatch_")
        b = {"id": bid, "status": "in_progress", "created_at": time.time(), "ended_at": None, "cancel": False,
             "cancel_at": None, "results": None, "total": len(reqs),
             "counts": {"processing": len(reqs), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}}
        with srv.lock:
            srv.batches[bid] = b
        threading.Thread(target=self._run_batch, args=(srv, bid, reqs), daemon=True).start()
        self._send(200, self._batch_object(dict(b)))

    def _cancel(self, bid: str) -> None:
        srv = self.server
        with srv.lock:
            b = srv.batches.get(bid)
            if b is None:
                return self._send(404, _error("not_found_error", "no such batch"))
            if b["status"] != "ended":
                b["cancel"], b["status"], b["cancel_at"] = True, "canceling", time.time()
            snap = dict(b)
        self._send(200, self._batch_object(snap))

    def _batch_object(self, b: dict) -> dict:
        return {
            "id": b["id"], "type": "message_batch", "processing_status": b["status"],
            "request_counts": dict(b["counts"]), "created_at": _iso(b["created_at"]),
            "expires_at": _iso(b["created_at"] + 86400), "ended_at": _iso(b["ended_at"]), "archived_at": None,
            "cancel_initiated_at": _iso(b["cancel_at"]),
            "results_url": (f"http://127.0.0.1:{self.server.server_address[1]}/v1/messages/batches/{b['id']}/results"
                            if b["status"] == "ended" else None),
        }

    @staticmethod
    def _run_batch(srv, bid: str, reqs: list[dict]) -> None:
        b = srv.batches[bid]
        cancelled = wait_or_cancelled(srv, b, srv.faults.batch_delay_s)
        results = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for req, outcome in zip(reqs, batch_row_outcomes(srv, len(reqs))):
            cid, params = req.get("custom_id"), req.get("params", {})
            cancelled = cancelled or b["cancel"]
            if cancelled or outcome == "expire":
                kind = "canceled" if cancelled else "expired"
                counts[kind] += 1
                results.append({"custom_id": cid, "result": {"type": kind}})
                continue
            messages = params.get("messages", [])
            input_tokens = count_tokens(prompt_of(messages, params.get("system")))
            max_tokens = int(params.get("max_tokens") or 64)
            asked = requested_schema(params)
            answer = (srv.structured_answer(asked[0], messages, params.get("system"), params.get("model", ""))
                      if asked else None)
            text = answer.text if answer else answer_text(messages, max_tokens)
            status = {"ok": 200, "fail": 500, "invalid": 400}[outcome]
            with srv.lock:
                srv.record(Received(time.time(), params.get("model", ""), status, input_tokens,
                                    count_tokens(text) if status == 200 else 0, params, endpoint="batch"), answer)
            if status == 200:
                counts["succeeded"] += 1
                results.append({"custom_id": cid, "result": {"type": "succeeded", "message": message(
                    params.get("model", srv.model), text, input_tokens, max_tokens, srv.new_id("msg_"),
                    srv.faults.omit_usage, asked[1] if asked else None, answer)}})
            else:
                counts["errored"] += 1
                kind = "api_error" if status == 500 else "invalid_request_error"
                results.append({"custom_id": cid, "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": kind, "message": f"injected {status}"}}}})
        with srv.lock:
            b["results"], b["counts"], b["status"], b["ended_at"] = results, counts, "ended", time.time()


class AnthropicCompatServer(LoopbackServer):
    handler = _AnthropicHandler

    @property
    def root_url(self) -> str:
        """The SDK's base_url: Anthropic paths carry their own /v1."""
        return f"http://127.0.0.1:{self.port}"

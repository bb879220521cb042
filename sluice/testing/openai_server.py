"""A small OpenAI-compatible HTTP server for tests and benchmarks, on loopback only.

It speaks `POST /v1/chat/completions` (and `GET /v1/models`, `GET /health`) like a provider: answers carry
`usage` token counts and `x-ratelimit-*` headers. Faults can be injected per request: 429 with `Retry-After`,
500/503, slow answers, and answers that never come (client timeouts). It records every request it receives
(time, model, tokens, status) so tests can check what a provider would have seen and billed.

The answer is deterministic: "answer to: <first words of the last user message>", so tests can check that each
row got its own answer.

    with OpenAICompatServer(faults=Faults(rate_429=0.1)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="test")
"""

from __future__ import annotations

import json
import random
import threading
import time
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


@dataclass
class Received:
    at: float
    model: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    body: dict = field(repr=False)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet: tests read `received`, not stderr
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", ""):
            self._send(200, {"status": "ok"})
        elif self.path.startswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith("/v1/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        srv = self.server
        prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        prompt_tokens = count_tokens(prompt_text)
        with srv.lock:
            roll = srv.rng.random()
            f = srv.faults
        status = 200
        if roll < f.rate_429:
            status = 429
        elif roll < f.rate_429 + f.rate_500:
            status = 500
        elif roll < f.rate_429 + f.rate_500 + f.rate_timeout:
            time.sleep(f.timeout_hold_s)
        user = [m for m in body.get("messages", []) if m.get("role") == "user"]
        words = str(user[-1]["content"]).split()[:8] if user else []
        max_tokens = int(body.get("max_tokens") or 64)
        text = " ".join(["answer", "to:", *words])
        text = " ".join(text.split()[:max_tokens])
        completion_tokens = count_tokens(text) if status == 200 else 0
        with srv.lock:
            srv.received.append(Received(time.time(), body.get("model", ""), status, prompt_tokens,
                                         completion_tokens, body))
        if status == 429:
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                       {"Retry-After": f"{f.retry_after_s:g}"})
            return
        if status == 500:
            self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
            return
        if f.delay_s:
            time.sleep(f.delay_s)
        self._send(
            200,
            {
                "id": f"chatcmpl-{len(srv.received)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", srv.model),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "length" if len(text.split()) >= max_tokens else "stop"}
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, faults: Faults, model: str) -> None:
        super().__init__(addr, _Handler)
        self.faults = faults
        self.model = model
        self.rng = random.Random(faults.seed)
        self.lock = threading.Lock()
        self.received: list[Received] = []


class OpenAICompatServer:
    """Run the server on 127.0.0.1 in a background thread (a real socket, a real HTTP exchange)."""

    def __init__(self, faults: Faults | None = None, model: str = "test-model", port: int = 0) -> None:
        self._srv = _Server(("127.0.0.1", port), faults or Faults(), model)
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

    def set_faults(self, faults: Faults) -> None:
        with self._srv.lock:
            self._srv.faults = faults
            self._srv.rng = random.Random(faults.seed)

    def __enter__(self) -> "OpenAICompatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()

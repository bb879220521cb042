"""The sent log: every real-time request of a shard, written down before it is sent and when its answer arrives.

A provider bills a request once it has it, whether or not the process that sent it lives to read the answer. A
shard's answers are checkpointed only when the whole shard is done (sluice/stages/infer/answer.py), so a run killed
mid-shard loses the answers it had and the requests still in flight, and its resume sends them again: paid twice.
The log is how the bill keeps the first payment: the resumed shard turns the log it finds into `interrupted`
attempts (sluice/stages/infer/interrupted.py) before it sends anything again.

One JSON object per line, appended; a `sent` line is fsynced before the request leaves (a kill, or a machine that
loses power, can lose an answer but never the record that a request went out; a torn last line is skipped):

    {"event": "sent", "row": row_id, "input_tokens": estimate, "max_tokens": n}
    {"event": "answered", "row": row_id, "input_tokens": n, "output_tokens": n, "cached_input_tokens": n,
     "usage_estimated": bool}
    {"event": "failed", "row": row_id, "status": HTTP status or null}

`input_tokens` of a `sent` line is the rate limiter's estimate of the request (it over-counts on purpose). A row's
last line says where it stood: `sent` (in flight: usage unknown), `answered` (the provider's usage), `failed`
(refused with an HTTP status: nothing billed; without one, a timeout or a dropped connection, which the provider
may have answered in full). Rows, token counts and statuses only: never a prompt, an answer or a key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SentRequest:
    """A row's last state in a sent log."""

    row_id: str
    state: str  # "sent" | "answered" | "failed"
    input_tokens: int  # the provider's count when answered, else the estimate made when it was sent
    max_tokens: int
    output_tokens: int = 0
    cached_input_tokens: int = 0
    usage_estimated: bool = True
    status: int | None = None  # a failed request's HTTP status (None: no response)


class SentLog:
    """Appends to one shard's log; `record_*` are called from the event loop that sends (one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the shard, closed by close()

    def _write(self, record: dict, sync: bool) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def record_sent(self, row_id: str, input_tokens: int, max_tokens: int) -> None:
        self._write({"event": "sent", "row": row_id, "input_tokens": input_tokens, "max_tokens": max_tokens}, True)

    def record_answered(self, row_id: str, input_tokens: int, output_tokens: int, cached_input_tokens: int,
                        usage_estimated: bool) -> None:
        self._write({"event": "answered", "row": row_id, "input_tokens": input_tokens,
                     "output_tokens": output_tokens, "cached_input_tokens": cached_input_tokens,
                     "usage_estimated": usage_estimated}, False)

    def record_failed(self, row_id: str, status: int | None) -> None:
        self._write({"event": "failed", "row": row_id, "status": status}, False)

    def close(self) -> None:
        self._file.close()


def read_sent_log(path: Path) -> dict[str, SentRequest]:
    """Each row's last state in the log at `path` (rows in the order they were first sent)."""
    out: dict[str, SentRequest] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
            row = e["row"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line
        sent = out.get(row)
        if e.get("event") == "sent":
            out[row] = SentRequest(row, "sent", int(e["input_tokens"]), int(e["max_tokens"]))
        elif sent is not None and e.get("event") == "answered":
            out[row] = SentRequest(row, "answered", int(e["input_tokens"]), sent.max_tokens,
                                   int(e["output_tokens"]), int(e.get("cached_input_tokens") or 0),
                                   bool(e.get("usage_estimated")))
        elif sent is not None and e.get("event") == "failed":
            out[row] = SentRequest(row, "failed", sent.input_tokens, sent.max_tokens, status=e.get("status"))
    return out

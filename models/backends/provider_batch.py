"""What the provider batch APIs (OpenAI Batch, Anthropic Message Batches) share.

Both take a file (OpenAI) or a list (Anthropic) of requests keyed by a `custom_id`, answer them within a 24 h
window at half the list price, and hand back one result per request: an answer, an error, or "expired" /
"cancelled" for requests they did not get to. Sluice uses them when the run can wait:

    - `batch_api = "always"`, or "auto" when the run's deadline (a run option, else the tier's `deadline_h`)
      leaves at least the whole completion window (`batch_window_h`): the provider promises nothing sooner;
    - the requests are split so that no batch exceeds the provider's per-batch request count or bytes;
    - each batch is journaled in the run folder the moment the provider accepts it (batch_journal.py): a resumed
      run polls it and never submits its rows again; a tier with `batch_wait = false` does not poll at all, the
      run ends waiting on the provider and `collect-batches` resumes it;
    - polling stops at the deadline (fixed by the first submission; else the window plus a margin); unfinished
      batches are cancelled;
    - rows answered in a batch are billed at batch prices; rows it did not answer for a transient reason
      (expired, cancelled, 429, 5xx) go in a new batch (journaled, at most two more) while the deadline still
      leaves the whole window, else through the real-time path at list prices; rows with a permanent error (a
      400: the same request would fail again) land as failed with the provider's reason.
"""

from __future__ import annotations

from typing import Iterable

from models.catalogue import Tier


def use_batch_api(tier: Tier, deadline_s: float | None) -> bool:
    if tier.batch_api == "always":
        return True
    if tier.batch_api == "off":
        return False
    deadline = deadline_s if deadline_s is not None else (tier.deadline_h * 3600 if tier.deadline_h else None)
    return deadline is not None and deadline >= tier.batch_window_h * 3600


def polling_deadline_s(tier: Tier, deadline_s: float | None) -> float:
    """How long to wait for batches: the run's deadline, else the tier's, else the window plus an hour."""
    if deadline_s is not None:
        return deadline_s
    if tier.deadline_h is not None:
        return tier.deadline_h * 3600
    return (tier.batch_window_h + 1) * 3600


def split_by_limits(sized: Iterable[tuple[object, int]], max_requests: int, max_bytes: int) -> tuple[
        list[list[object]], list[object]]:
    """Group (item, size in bytes) pairs, in order, into chunks of at most `max_requests` items and `max_bytes`
    bytes. Items larger than `max_bytes` on their own cannot go in any batch: they are returned apart."""
    chunks: list[list[object]] = []
    too_big: list[object] = []
    current: list[object] = []
    current_bytes = 0
    for item, size in sized:
        if size > max_bytes:
            too_big.append(item)
            continue
        if current and (len(current) >= max_requests or current_bytes + size > max_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks, too_big


def is_transient_batch_failure(status: int | None, code: str | None) -> bool:
    """Worth sending again in real time: not answered for reasons of the batch, not of the request."""
    if code in ("batch_expired", "batch_cancelled", "expired", "canceled", "cancelled"):
        return True
    return status is not None and (status in (408, 409, 429) or status >= 500)


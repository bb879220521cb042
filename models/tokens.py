"""Token counts without the provider's tokenizer: one estimate for every place that needs one before an answer
exists (context-window checks at ingest, rate-limit reservations, budget routing, the cost forecast, trimming).

BPE tokenizers run at about 4 bytes of English per token; short words and CJK text need more, so the estimate
never goes below one token per word. Callers that must not under-count (a rate-limit reservation) pass a smaller
`bytes_per_token`, which over-counts English by about a third at 3.
"""

from __future__ import annotations

import math
import re

BYTES_PER_TOKEN = 4.0
# tokens a chat message adds around its content (role markers, separators), as providers bill them
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str | None, bytes_per_token: float = BYTES_PER_TOKEN) -> int:
    """max(words, ceil(UTF-8 bytes / bytes_per_token)); 0 for empty text."""
    if not text:
        return 0
    return max(len(text.split()), math.ceil(len(text.encode("utf-8", "surrogatepass")) / bytes_per_token))


def estimate_message_tokens(messages: list[dict[str, str]], bytes_per_token: float = BYTES_PER_TOKEN) -> int:
    """A chat request's input: every message's content plus its framing."""
    return sum(estimate_tokens(str(m.get("content", "")), bytes_per_token) + MESSAGE_OVERHEAD_TOKENS
               for m in messages)


_WORD_PIECES = re.compile(r"\w+|[^\w\s]")


def count_word_pieces(text: str | None) -> int:
    """Words, punctuation marks and line breaks: how prompt trimming (`sluice.stages.route.brevity`) counts what
    it removed, where a byte estimate would hide the small edits it makes (blank lines, repeated markers)."""
    return len(_WORD_PIECES.findall(text or "")) + (text or "").count("\n")

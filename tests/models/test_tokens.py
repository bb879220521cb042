"""models.tokens: the one token estimate used before any tokenizer has counted."""

from models.backends.ratelimit import estimate_message_tokens as reserve_messages
from models.backends.ratelimit import estimate_tokens as reserve
from models.tokens import MESSAGE_OVERHEAD_TOKENS, count_word_pieces, estimate_message_tokens, estimate_tokens


def test_about_four_bytes_a_token_and_never_fewer_than_the_words():
    assert estimate_tokens("") == 0 and estimate_tokens(None) == 0
    assert estimate_tokens("x" * 400) == 100
    assert estimate_tokens("a b c d e f g h") == 8  # 15 bytes, 8 words
    assert estimate_tokens("日本語のテキスト") == 6  # 24 UTF-8 bytes


def test_rate_limit_reservations_over_count_with_three_bytes_a_token():
    text = "The quick brown fox jumps over the lazy dog. " * 10
    assert reserve(text) == estimate_tokens(text, 3.0) > estimate_tokens(text)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    assert reserve_messages(msgs) == sum(reserve(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in msgs)
    assert estimate_message_tokens(msgs) < reserve_messages(msgs)


def test_word_pieces_count_punctuation_and_line_breaks():
    assert count_word_pieces("Hello, world!\n\n") == 4 + 2

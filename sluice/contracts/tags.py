"""Chargeback tags: string keys and values that attribute what a row cost to a team, a project or a feature.

A run's tags come from `sluice run --tag team=search` (repeatable) or a drop-box manifest's `tags`; a row's own
from an input column `tags` (a struct or map of strings, or a JSON object as text). A row's tags are the run's
overlaid by its own (`overlay`: the row's value wins for a key both give); the views `cost_by_tag` and
`savings_by_tag` group by them.

    key     1-64 characters: letters, digits, '_', '-', '.', ':', '/', starting with a letter or a digit
    value   a string of 1-256 characters, no control characters (a null value in a struct: the key is absent)
    a row   at most MAX_TAGS keys

Tags are stored as JSON text with sorted keys (`tags_json`), NULL when there are none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

MAX_TAGS = 32
MAX_VALUE_CHARS = 256
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TagError(ValueError):
    """A tag that cannot be used; the message says which and why."""


def _show(v: object, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def check_tags(tags: object) -> dict[str, str]:
    """Validated tags, sorted by key; raises TagError. `tags`: a mapping, or (key, value) pairs (an Arrow map).
    A None value drops its key (a struct column's missing field)."""
    if isinstance(tags, Mapping):
        items = list(tags.items())
    elif isinstance(tags, list) and all(isinstance(p, tuple) and len(p) == 2 for p in tags):
        items = tags
    else:
        raise TagError(f"tags must be an object of string keys and values, got {type(tags).__name__}")
    out: dict[str, str] = {}
    for k, v in items:
        if v is None:
            continue
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            raise TagError(f"tag key {_show(k)} is not 1-64 letters, digits, '_', '-', '.', ':' or '/' "
                           "(starting with a letter or digit)")
        if not isinstance(v, str):
            raise TagError(f"tag {k!r} must be a string, got {type(v).__name__} {_show(v)}")
        if not v or len(v) > MAX_VALUE_CHARS or _CONTROL.search(v):
            raise TagError(f"tag {k!r}: value {_show(v)} must be 1-{MAX_VALUE_CHARS} characters without control "
                           "characters")
        if k in out:
            raise TagError(f"tag {k!r} is given twice")
        out[k] = v
    if len(out) > MAX_TAGS:
        raise TagError(f"{len(out)} tags, at most {MAX_TAGS}")
    return dict(sorted(out.items()))


def parse_tag(text: str) -> tuple[str, str]:
    """`team=search` -> ("team", "search"); raises TagError."""
    key, sep, value = text.partition("=")
    if not sep:
        raise TagError(f"tag {_show(text)} is not KEY=VALUE")
    return next(iter(check_tags({key.strip(): value.strip()}).items()))


def parse_tags(texts: Iterable[str]) -> dict[str, str]:
    """Repeated `--tag KEY=VALUE` options as tags; a key given twice is an error."""
    pairs = [parse_tag(t) for t in texts]
    return check_tags(pairs)


def tag_value(value: object) -> dict[str, str]:
    """A row's `tags` cell as tags: JSON object text, a mapping (struct) or (key, value) pairs (map)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TagError(f"tags are not valid UTF-8 (byte 0x{value[exc.start]:02x} at offset {exc.start})") from exc
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise TagError(f"tags are not a JSON object ({exc.msg} at character {exc.pos})") from exc
    return check_tags(value)


def tags_json(tags: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(sorted(tags.items())), ensure_ascii=False) if tags else None


def overlay(run_tags: Mapping[str, str] | None, row_tags: str | None) -> str | None:
    """The row's tags (JSON text): the run's, overlaid by the row's own (`row_tags`, JSON text from ingest)."""
    own = json.loads(row_tags) if row_tags else {}
    return tags_json({**(run_tags or {}), **own})

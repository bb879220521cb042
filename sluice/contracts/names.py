"""Names that travel into paths, SQL and S3 keys: dataset names and run ids."""

from __future__ import annotations

import re
from pathlib import Path

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def dataset_name_for(path: str | Path) -> str:
    """The dataset name a file lands under: its stem, restricted to characters safe in paths, SQL and S3 keys."""
    stem = Path(path).name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "dataset"
    return validate_dataset_name(name[:128])


def validate_dataset_name(name: str, what: str = "dataset name") -> str:
    """`name` if it is safe in paths, SQL and S3 keys; `what` names it in the error (run ids follow the same rule)."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 128, not starting "
            "with a symbol)"
        )
    return name

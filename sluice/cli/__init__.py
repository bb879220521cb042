"""The face: the `sluice` command (`app.py`), its `router` (`router.py`) and `answers` (`answers.py`) sub-commands,
and `sluice dedup` on a file (`dedup.py`)."""

from sluice.cli.app import app

__all__ = ["app"]

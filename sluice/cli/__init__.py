"""The face: the `sluice` command (`app.py`) and its `router` sub-commands (`router.py`)."""

from sluice.cli.app import app

__all__ = ["app"]

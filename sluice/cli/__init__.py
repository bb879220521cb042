"""The face: the `sluice` command (`app.py`), its `router` (`router.py`) and `answers` (`answers.py`) sub-commands,
`sluice dedup` on a file (`dedup.py`), and `sluice plan`, the forecast before a run (`plan.py`)."""

from sluice.cli.app import app

__all__ = ["app"]

"""The pull step of Sluice's deployments: run each flow from the checkout its worker runs from.

A process worker starts every flow run in a fresh temporary folder, and `prefect deploy` without a pull step
hard-codes the deploying machine's folder. This step instead moves the run into the checkout that holds the
installed `sluice` package (`pip install -e .` in a clone, as `make setup` does), so a worker started in any
clean clone runs that clone's code and keeps its `data/` there. SLUICE_HOME, when set, wins (a non-editable
install, or code and data kept apart).

    pull:
      - sluice.dropbox.workspace.enter_checkout: {}
"""

from __future__ import annotations

import os
from pathlib import Path

from sluice.config import load_settings


def checkout_root() -> Path:
    home = load_settings().home
    if home:
        return home.expanduser().resolve()
    # this file is <checkout>/sluice/dropbox/workspace.py (an editable install runs it from the clone)
    root = Path(__file__).resolve().parents[2]
    if not (root / "prefect.yaml").is_file():
        raise RuntimeError(
            f"{root} is not a Sluice checkout (no prefect.yaml): install with `pip install -e .` from a clone, "
            "or set SLUICE_HOME to the checkout"
        )
    return root


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step: chdir into `directory` (if given), else the checkout; returns it as `directory`."""
    root = Path(directory).expanduser().resolve() if directory else checkout_root()
    os.chdir(root)
    return {"directory": str(root)}

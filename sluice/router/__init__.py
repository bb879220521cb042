"""The learned router: score prompts by how likely the premium tier is needed, train it from labels.

    features.py   gatekeeper signals: length, intent (regexes), numbers, rigour, MiniLM embedding
    model.py      LearnedRouter (logistic regression), train_router, load_router
    shadow.py     shadow_sample: the deterministic share of rows also answered by premium, for fresh labels
    warehouse.py  the `router_training` table (DDL in one place) and reading labels from it
"""

from sluice.router.model import LearnedRouter, RouterError, load_router, train_router
from sluice.router.shadow import shadow_sample

__all__ = ["LearnedRouter", "RouterError", "load_router", "train_router", "shadow_sample"]

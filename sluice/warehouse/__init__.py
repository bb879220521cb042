"""The DuckDB warehouse: where every run lands and analysts query.

    db.py      connecting (one writer at a time, waiting on a locked file), the schema and its migrations
    views.py   the analyst views (docs/analysts.md) and per-dataset structured views
    labels.py  the `router_training` table the learned router trains from
"""

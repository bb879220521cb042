"""The DuckDB warehouse: where every run lands and analysts query.

    db.py          connecting (one writer at a time, waiting on a locked file), migrating a file in place
    migrations.py  the schema: ordered migrations and the column lists writers use
    views.py       the analyst views (docs/analysts.md) and per-dataset structured views
    labels.py      the `router_training` table the learned router trains from
    routers.py     router versions (`routers`), the promoted one, and what each run routed with
"""

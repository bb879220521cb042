"""A row's way, one package per stage, in the order a row takes them:

    ingest  -> read a Parquet file into the row schema; bad rows quarantined with a reason
    dedup   -> exact, near, semantic and cross-run (cache) duplicates answered once
    route   -> score every prompt and assign a tier (thresholds, a share or a dollar budget)
    infer   -> each tier answers its partition on its backend; every row priced
    review  -> schema retries, the batch cascade and the shadow sample decide what is sent again
    land    -> one `results` row per input row, in DuckDB

A stage talks to another only through the table it hands over (`sluice.contracts.columns`). The table stages
(ingest, dedup, route) share one entry shape, `run(table, settings, ctx) -> table` (`pipeline.py`), which one
generic Prefect task runs (`tasks/stage.py`) and the forecast reuses (`sluice.reports.forecast`).
"""

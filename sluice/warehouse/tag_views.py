"""Chargeback views: cost and savings per tag key and value, per dataset and night (UTC date of the run's start).

A row's tags (`results.tags`) are its run's tags overlaid by its own (sluice/stages/land/chargeback.py). A key is
listed for a night and dataset when any of its rows carries it, and then *every* row of that night and dataset
counts once under it, with `tag_value` NULL where the row lacks the key. So for one key the rows, cost and
baseline of a night and dataset add up exactly to that night's totals of the dataset (one run: the run's
`cost_usd`), and nothing is counted twice within a key. Summing across keys does count a row once per key.
Rows that carry no tags at all, on a night and dataset where no row does, are in no group.

    cost_by_tag     runs, rows, requests (rows sent to a tier), input_tokens, output_tokens, cost_usd,
                    baseline_cost_usd, saving_usd = baseline - cost
    savings_by_tag  rows, baseline_cost_usd, cost_usd and `savings_per_row`'s attribution summed (dedup, cache,
                    routing, trim, batch, waste), saving_usd, saving_pct
"""

from __future__ import annotations

# every (row, key) a night and dataset lists, with the row's value for the key (NULL: the row lacks it)
_TAGGED = """
    WITH r AS (
        SELECT CAST(timezone('UTC', coalesce(u.started_at, u.finished_at)) AS DATE) AS night,
               r.dataset, r.run_id, r.row_id, r.tags
        FROM results r LEFT JOIN runs u USING (run_id)
    ), pairs AS (
        SELECT r.run_id, r.row_id, e.key AS tag_key, e.value ->> '$' AS tag_value
        FROM r, json_each(r.tags) e
        WHERE r.tags IS NOT NULL
    ), keys AS (
        SELECT DISTINCT r.night, r.dataset, p.tag_key FROM pairs p JOIN r USING (run_id, row_id)
    ), tagged AS (
        SELECT r.night, r.dataset, r.run_id, r.row_id, k.tag_key, p.tag_value
        FROM r JOIN keys k ON k.night IS NOT DISTINCT FROM r.night AND k.dataset = r.dataset
        LEFT JOIN pairs p ON p.run_id = r.run_id AND p.row_id = r.row_id AND p.tag_key = k.tag_key
    )
"""

TAG_VIEWS = {
    "cost_by_tag": _TAGGED + """
        SELECT t.night, t.dataset, t.tag_key, t.tag_value,
               count(DISTINCT t.run_id) AS runs,
               count(*) AS rows,
               count(*) FILTER (x.tier IS NOT NULL) AS requests,
               sum(coalesce(x.input_tokens, 0)) AS input_tokens,
               sum(coalesce(x.output_tokens, 0)) AS output_tokens,
               sum(coalesce(x.cost_usd, 0)) AS cost_usd,
               sum(coalesce(x.baseline_cost_usd, 0)) AS baseline_cost_usd,
               sum(coalesce(x.baseline_cost_usd, 0) - coalesce(x.cost_usd, 0)) AS saving_usd
        FROM tagged t JOIN results x USING (run_id, row_id)
        GROUP BY ALL
    """,
    "savings_by_tag": _TAGGED + """
        SELECT t.night, t.dataset, t.tag_key, t.tag_value,
               count(*) AS rows,
               sum(s.baseline_cost_usd) AS baseline_cost_usd,
               sum(s.cost_usd) AS cost_usd,
               sum(s.dedup_saving_usd) AS dedup_saving_usd,
               sum(s.cache_saving_usd) AS cache_saving_usd,
               sum(s.routing_saving_usd) AS routing_saving_usd,
               sum(s.trim_saving_usd) AS trim_saving_usd,
               sum(s.batch_saving_usd) AS batch_saving_usd,
               sum(s.waste_usd) AS waste_usd,
               sum(s.saving_usd) AS saving_usd,
               CASE WHEN sum(s.baseline_cost_usd) > 0
                    THEN 100.0 * sum(s.saving_usd) / sum(s.baseline_cost_usd) END AS saving_pct
        FROM tagged t JOIN savings_per_row s USING (run_id, row_id)
        GROUP BY ALL
    """,
}

"""The analyst views: SQL over `runs` and `results` that answers the questions people ask of a bill.

Every writer recreates these views after migrating (they are derived, never data), from the columns `results`
has at that moment: a column a view reads that does not exist yet (e.g. `trim_saving_usd` before prompt trimming
lands) counts as 0. docs/analysts.md documents each view with examples.

Savings attribution, per row (`savings_per_row`), against the all-premium `baseline_cost_usd` B and the row's
actual cost C. A row is *answered* unless its status is `failed` or `quarantined`.

    dedup_saving_usd    answered and dup_kind in (exact, near, semantic):   B - C   (C is 0: nothing was sent)
    cache_saving_usd    answered and dup_kind = 'cache':                    B - C
    trim_saving_usd     answered, not a duplicate: results.trim_saving_usd        (0 while the column is absent)
    batch_saving_usd    answered, not a duplicate: results.batch_discount_usd     (0 while the column is absent)
    routing_saving_usd  answered, not a duplicate:                          B - C - trim - batch
                        (0 for a row answered on the baseline tier at list price; the cheaper tier's saving else)
    waste_usd           not answered:                                       C - B   (spend that bought no answer)

    saving_usd = B - C = dedup + cache + trim + batch + routing - waste      (exactly, row by row)

B prices the untrimmed request at list price, so a stage that trims prompts or uses a batch discount reports the
part of B - C it is owed in its column and routing keeps the rest.
"""

from __future__ import annotations

import duckdb

from sluice.warehouse.tag_views import TAG_VIEWS

# optional `results` columns read by the views -> the value used while the column does not exist
OPTIONAL_RESULT_COLUMNS = {"trim_saving_usd": "CAST(0 AS DOUBLE)", "batch_discount_usd": "CAST(0 AS DOUBLE)"}

DEDUP_KINDS = ("exact", "near", "semantic")


def _views(optional: dict[str, str]) -> dict[str, str]:
    trim = optional["trim_saving_usd"]
    batch = optional["batch_discount_usd"]
    dedup_kinds = ", ".join(f"'{k}'" for k in DEDUP_KINDS)
    return {
        # cost of 1,000 requests, by UTC day of the run's start, dataset, tier and model. tier is NULL for rows
        # never sent (duplicates, cache hits, quarantined): they count as requests that cost nothing.
        "cost_per_1k_requests": """
            SELECT CAST(timezone('UTC', coalesce(u.started_at, u.finished_at)) AS DATE) AS day,
                   r.dataset, r.tier, r.model,
                   count(*) AS requests,
                   sum(r.cost_usd) AS cost_usd,
                   sum(r.baseline_cost_usd) AS baseline_cost_usd,
                   1000.0 * sum(r.cost_usd) / count(*) AS cost_per_1k_usd,
                   1000.0 * sum(r.baseline_cost_usd) / count(*) AS baseline_per_1k_usd
            FROM results r LEFT JOIN runs u USING (run_id)
            GROUP BY ALL
        """,
        # tokens of the requests actually sent (a tier was assigned and the row was answered or failed)
        "tokens_per_request": """
            SELECT run_id, dataset, tier, model,
                   count(*) AS requests,
                   sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens,
                   avg(input_tokens) AS avg_input_tokens,
                   avg(output_tokens) AS avg_output_tokens,
                   avg(input_tokens + output_tokens) AS avg_total_tokens,
                   max(input_tokens + output_tokens) AS max_total_tokens
            FROM results
            WHERE tier IS NOT NULL AND status IN ('ok', 'failed')
            GROUP BY ALL
        """,
        # latency of answered requests, over every run (filter results first for one run)
        "latency_percentiles": """
            SELECT tier, model,
                   count(*) AS requests,
                   quantile_cont(latency_ms, 0.5) AS p50_ms,
                   quantile_cont(latency_ms, 0.9) AS p90_ms,
                   quantile_cont(latency_ms, 0.99) AS p99_ms,
                   max(latency_ms) AS max_ms
            FROM results
            WHERE tier IS NOT NULL AND status = 'ok' AND latency_ms IS NOT NULL
            GROUP BY ALL
        """,
        # fates of rows by run and tier (tier NULL: rows never sent)
        "error_rates": """
            SELECT run_id, dataset, tier,
                   count(*) AS rows,
                   count(*) FILTER (status = 'failed') AS failed,
                   count(*) FILTER (status = 'quarantined') AS quarantined,
                   count(*) FILTER (status = 'failed') / count(*) AS failure_rate,
                   (count(*) FILTER (status IN ('failed', 'quarantined'))) / count(*) AS error_rate
            FROM results
            GROUP BY ALL
        """,
        # self-hosted workers: billed time, of which engine start (idle for the batch) and generation (busy)
        "utilisation": """
            WITH t AS (
                SELECT run_id, dataset, started_at, unnest(json_keys(billing)) AS k, billing
                FROM runs WHERE billing IS NOT NULL
            ), b AS (
                -- a tier's passes ("mid", "mid/escalation", "mid/retry", ...) add up to its billing
                SELECT run_id, dataset, started_at, split_part(k, '/', 1) AS tier,
                       sum(coalesce(CAST(billing->k->>'billed_seconds' AS DOUBLE), 0)) AS billed_seconds,
                       sum(coalesce(CAST(billing->k->>'engine_start_s' AS DOUBLE), 0)) AS engine_start_s,
                       sum(coalesce(CAST(billing->k->>'generate_s' AS DOUBLE), 0)) AS generate_s,
                       sum(coalesce(CAST(billing->k->>'cost_usd' AS DOUBLE), 0)) AS cost_usd,
                       sum(coalesce(CAST(billing->k->>'rows' AS DOUBLE), 0)) AS rows
                FROM t GROUP BY ALL
            ), o AS (
                -- tokens each tier generated: from `attempts` (every request), or `results` for older runs
                SELECT run_id, tier, sum(output_tokens) AS output_tokens, sum(input_tokens) AS input_tokens
                FROM attempts WHERE tier IS NOT NULL GROUP BY ALL
                UNION ALL
                SELECT run_id, tier, sum(output_tokens), sum(input_tokens)
                FROM results r WHERE tier IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.run_id = r.run_id) GROUP BY ALL
            )
            SELECT b.run_id, b.dataset, b.started_at, b.tier, b.rows, b.billed_seconds, b.engine_start_s,
                   b.generate_s, b.cost_usd,
                   b.generate_s / b.billed_seconds AS busy_fraction,
                   b.cost_usd * 3600 / b.billed_seconds AS usd_per_billed_hour,
                   b.rows * 3600 / b.billed_seconds AS rows_per_billed_hour,
                   coalesce(o.input_tokens, 0) AS input_tokens,
                   coalesce(o.output_tokens, 0) AS output_tokens,
                   CASE WHEN b.generate_s > 0 THEN o.output_tokens / b.generate_s END AS output_tokens_per_s
            FROM b LEFT JOIN o USING (run_id, tier)
            WHERE b.billed_seconds > 0
        """,
        "savings_per_row": f"""
            WITH x AS (
                SELECT run_id, dataset, row_id, status, tier, model, dup_kind,
                       coalesce(cost_usd, 0) AS cost_usd,
                       coalesce(baseline_cost_usd, 0) AS baseline_cost_usd,
                       status NOT IN ('failed', 'quarantined') AS answered,
                       coalesce({trim}, 0) AS trim_col,
                       coalesce({batch}, 0) AS batch_col
                FROM results
            )
            SELECT run_id, dataset, row_id, status, tier, model, dup_kind, baseline_cost_usd, cost_usd,
                   CASE WHEN answered AND dup_kind IN ({dedup_kinds})
                        THEN baseline_cost_usd - cost_usd ELSE 0 END AS dedup_saving_usd,
                   CASE WHEN answered AND dup_kind = 'cache'
                        THEN baseline_cost_usd - cost_usd ELSE 0 END AS cache_saving_usd,
                   CASE WHEN answered AND dup_kind IS NULL
                        THEN baseline_cost_usd - cost_usd - trim_col - batch_col ELSE 0 END AS routing_saving_usd,
                   CASE WHEN answered AND dup_kind IS NULL THEN trim_col ELSE 0 END AS trim_saving_usd,
                   CASE WHEN answered AND dup_kind IS NULL THEN batch_col ELSE 0 END AS batch_saving_usd,
                   CASE WHEN NOT answered THEN cost_usd - baseline_cost_usd ELSE 0 END AS waste_usd,
                   baseline_cost_usd - cost_usd AS saving_usd
            FROM x
        """,
        "savings_per_run": """
            SELECT s.run_id, s.dataset, min(u.started_at) AS started_at,
                   count(*) AS rows,
                   sum(s.baseline_cost_usd) AS baseline_cost_usd,
                   sum(s.dedup_saving_usd) AS dedup_saving_usd,
                   sum(s.cache_saving_usd) AS cache_saving_usd,
                   sum(s.routing_saving_usd) AS routing_saving_usd,
                   sum(s.trim_saving_usd) AS trim_saving_usd,
                   sum(s.batch_saving_usd) AS batch_saving_usd,
                   sum(s.waste_usd) AS waste_usd,
                   sum(s.cost_usd) AS cost_usd,
                   sum(s.saving_usd) AS saving_usd,
                   CASE WHEN sum(s.baseline_cost_usd) > 0
                        THEN 100.0 * sum(s.saving_usd) / sum(s.baseline_cost_usd) END AS saving_pct
            FROM savings_per_row s LEFT JOIN runs u USING (run_id)
            GROUP BY s.run_id, s.dataset
        """,
        # accuracy next to cost, per run and tier (rows never sent: '(not sent)'), plus the whole run ('(all)').
        # graded: rows with a verdict (`results.correct` not NULL); accuracy = correct / graded, NULL if none
        "quality_per_run": """
            WITH r AS (
                SELECT run_id, dataset, coalesce(tier, '(not sent)') AS tier, correct AS is_correct,
                       coalesce(cost_usd, 0) AS cost, coalesce(baseline_cost_usd, 0) AS baseline
                FROM results
            ), g AS (
                SELECT run_id, dataset, tier, is_correct, cost, baseline FROM r
                UNION ALL
                SELECT run_id, dataset, '(all)' AS tier, is_correct, cost, baseline FROM r
            )
            SELECT run_id, dataset, tier,
                   count(*) AS rows,
                   count(is_correct) AS graded,
                   count(*) FILTER (is_correct) AS correct,
                   CASE WHEN count(is_correct) > 0
                        THEN count(*) FILTER (is_correct) / count(is_correct) END AS accuracy,
                   sum(cost) AS cost_usd,
                   sum(baseline) AS baseline_cost_usd
            FROM g
            GROUP BY run_id, dataset, tier
        """,
        # self-hosting against sending the same rows to the baseline API, per run:
        #   api_usd       what the self-hosted tiers' answered rows would have cost on the baseline tier
        #   start_usd     billed engine start (a fixed cost per run), gen_usd: billed generation (grows with rows)
        #   breakeven_rows = start_usd / ((api_usd - gen_usd) / rows): the batch size from which self-hosting is
        #   cheaper at this run's measured throughput (NULL: generation alone costs more than the API, never)
        "breakeven": """
            WITH u AS (
                SELECT run_id, dataset, tier, rows, billed_seconds, cost_usd,
                       engine_start_s * cost_usd / billed_seconds AS start_usd,
                       generate_s * cost_usd / billed_seconds AS gen_usd
                FROM utilisation
            ), a AS (
                SELECT r.run_id, r.tier, sum(r.baseline_cost_usd) AS api_usd
                FROM results r WHERE r.status = 'ok' GROUP BY ALL
            ), t AS (
                SELECT u.run_id, u.dataset,
                       sum(u.rows) AS self_hosted_rows,
                       sum(u.billed_seconds) AS billed_seconds,
                       sum(u.cost_usd) AS self_hosted_usd,
                       sum(u.start_usd) AS start_usd,
                       sum(u.gen_usd) AS gen_usd,
                       sum(coalesce(a.api_usd, 0)) AS api_usd
                FROM u LEFT JOIN a USING (run_id, tier)
                GROUP BY ALL
            )
            SELECT *,
                   api_usd - self_hosted_usd AS self_hosting_saves_usd,
                   self_hosted_usd < api_usd AS self_hosting_cheaper,
                   CASE WHEN api_usd > gen_usd AND self_hosted_rows > 0
                        THEN start_usd / ((api_usd - gen_usd) / self_hosted_rows) END AS breakeven_rows
            FROM t
        """,
        # one row per request sent (`attempts`; a run landed before attempts existed: its sent `results` rows),
        # under OpenTelemetry GenAI semantic-convention names. The backend kind is not stored: a tier whose run
        # billing shows worker time (or whose final answer was priced 'worker') is self-hosted vLLM, one with
        # replay counts is a replay tier, a model named claude* is Anthropic, any other API tier OpenAI(-compatible).
        # cache reads, finish reason and price basis are recorded for the row's final answer only (NULL otherwise).
        "genai_usage": """
            WITH a AS (
                SELECT run_id, row_id, attempt, kind, tier, model, status, input_tokens, output_tokens,
                       latency_ms, cost_usd FROM attempts
                UNION ALL
                SELECT run_id, row_id, 1, 'first', tier, model, status, input_tokens, output_tokens,
                       latency_ms, cost_usd
                FROM results r WHERE tier IS NOT NULL AND status IN ('ok', 'failed')
                  AND NOT EXISTS (SELECT 1 FROM attempts x WHERE x.run_id = r.run_id)
            ), f AS (
                -- the row's answer: its last attempt that is neither a shadow answer nor the judge's verdict
                SELECT *, kind NOT IN ('shadow', 'judge')
                          AND attempt = max(attempt) FILTER (kind NOT IN ('shadow', 'judge'))
                          OVER (PARTITION BY run_id, row_id) AS final
                FROM a
            ), bk AS (
                SELECT run_id, unnest(json_keys(billing)) AS k, billing FROM runs WHERE billing IS NOT NULL
            ), t AS (
                SELECT run_id, split_part(k, '/', 1) AS tier,
                       bool_or(coalesce(CAST(billing->k->>'billed_seconds' AS DOUBLE), 0) > 0
                               OR (billing->k->>'engine_start_s') IS NOT NULL) AS self_hosted,
                       bool_or((billing->k->>'replay_hits') IS NOT NULL) AS replay
                FROM bk GROUP BY ALL
            ), p AS (
                SELECT f.*, r.dataset, r.cached_input_tokens, r.finish_reason, r.price_basis,
                       u.started_at, u.finished_at,
                       coalesce(t.self_hosted, false) OR (f.final AND r.price_basis = 'worker') AS self_hosted,
                       coalesce(t.replay, false) AS replay
                FROM f
                LEFT JOIN results r ON r.run_id = f.run_id AND r.row_id = f.row_id
                LEFT JOIN runs u ON u.run_id = f.run_id
                LEFT JOIN t ON t.run_id = f.run_id AND t.tier = f.tier
            )
            SELECT run_id, dataset, row_id, attempt, kind AS attempt_kind, tier, status, final AS final_answer,
                   'chat' AS "gen_ai.operation.name",
                   CASE WHEN self_hosted THEN 'vllm' WHEN replay THEN 'replay'
                        WHEN model ILIKE '%claude%' THEN 'anthropic' ELSE 'openai' END AS "gen_ai.provider.name",
                   model AS "gen_ai.request.model",
                   model AS "gen_ai.response.model",
                   input_tokens AS "gen_ai.usage.input_tokens",
                   output_tokens AS "gen_ai.usage.output_tokens",
                   CASE WHEN final THEN cached_input_tokens END AS "gen_ai.usage.cache_read.input_tokens",
                   CASE WHEN final AND finish_reason IS NOT NULL THEN [finish_reason] END
                       AS "gen_ai.response.finish_reasons",
                   cost_usd AS cost,
                   'USD' AS cost_currency,
                   CASE WHEN self_hosted THEN 'local GPU/CPU time'
                        WHEN final AND price_basis = 'batch' THEN 'provider batch price'
                        ELSE 'provider list price' END AS cost_source,
                   latency_ms,
                   started_at AS run_started_at,
                   finished_at AS run_finished_at
            FROM p
        """,
        # chargeback: per tag key and value, per dataset and night (sluice/warehouse/tag_views.py)
        **TAG_VIEWS,
    }


VIEW_NAMES = list(_views(OPTIONAL_RESULT_COLUMNS))


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every view in one transaction, reading the optional columns `results` has now."""
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'"
    ).fetchall()}
    optional = {c: (c if c in cols else default) for c, default in OPTIONAL_RESULT_COLUMNS.items()}
    con.execute("BEGIN TRANSACTION")
    try:
        for name, sql in _views(optional).items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


_FIELD = __import__("re").compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def create_structured_view(con: duckdb.DuckDBPyConnection, dataset: str, schema_text: str) -> str:
    """`structured_<dataset>`: one row per result of the dataset whose answer passed `schema_text`, with the
    schema's top-level fields as typed columns (sluice/contracts/answers.py `top_level_fields`) beside run_id, row_id,
    tier, status and `parsed`. Recreated by each landing with the dataset's current schema.

    The dataset name is validated at ingest (letters, digits, '.', '_', '-'); field names that are not plain
    identifiers are left out of the columns (they stay readable in `parsed`); the schema text is matched as an
    escaped string literal (a view cannot take bound parameters)."""
    from sluice.contracts.answers import top_level_fields
    from sluice.contracts.names import validate_dataset_name

    validate_dataset_name(dataset)
    fields = {k: t for k, t in top_level_fields(schema_text).items() if _FIELD.fullmatch(k)}
    if list(fields) == ["label"] and "properties" not in schema_text:  # a choice list: the label itself
        cols = ["CAST(parsed ->> '$' AS VARCHAR) AS label"]
    else:
        cols = [f"TRY_CAST(parsed -> '$.{k}' AS JSON) AS \"{k}\"" if t == "JSON"
                else f"TRY_CAST(parsed ->> '$.{k}' AS {t}) AS \"{k}\"" for k, t in fields.items()]
    view = f'"structured_{dataset}"'
    literal = schema_text.replace("'", "''")
    con.execute(f"""
        CREATE OR REPLACE VIEW {view} AS
        SELECT run_id, row_id, tier, status, {', '.join(cols + ['parsed'])}
        FROM results
        WHERE dataset = '{dataset}' AND response_schema = '{literal}' AND parsed IS NOT NULL
    """)
    return view.strip('"')

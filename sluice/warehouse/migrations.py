"""The warehouse's schema as ordered migrations: each applied once, in its own transaction, by
`sluice.warehouse.db.migrate`, and recorded in `schema_version`.

Append new migrations at the end with the next version; never edit one that has shipped (files in the field have
recorded it as applied). The column lists every writer uses (`RESULT_COLUMNS`, `ATTEMPT_COLUMNS`) live here too,
beside the statements that create them.
"""

from __future__ import annotations

# (version, what it does, statements). Append new migrations at the end with the next version; never edit one
# that has shipped (files in the field have recorded it as applied). Adding a column to `results` is a migration
# (`ALTER TABLE results ADD COLUMN IF NOT EXISTS ...`) plus its name in RESULT_COLUMNS.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "runs and results",
        [
            """
            CREATE TABLE IF NOT EXISTS runs (
                run_id VARCHAR PRIMARY KEY,
                dataset VARCHAR NOT NULL,
                source VARCHAR,
                started_at TIMESTAMPTZ,
                finished_at TIMESTAMPTZ,
                rows BIGINT,
                duplicates BIGINT,
                quarantined BIGINT,
                failed BIGINT,
                cost_usd DOUBLE,
                baseline_cost_usd DOUBLE,
                billing JSON
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS results (
                run_id VARCHAR NOT NULL,
                dataset VARCHAR NOT NULL,
                row_id VARCHAR NOT NULL,
                prompt VARCHAR,
                response VARCHAR,
                tier VARCHAR,
                model VARCHAR,
                status VARCHAR NOT NULL,
                dup_of VARCHAR,
                input_tokens BIGINT,
                output_tokens BIGINT,
                latency_ms DOUBLE,
                cost_usd DOUBLE,
                baseline_cost_usd DOUBLE,
                system VARCHAR,
                max_tokens INTEGER,
                dup_kind VARCHAR,
                dup_score DOUBLE,
                route_score DOUBLE,
                route_reason VARCHAR,
                error VARCHAR,
                finish_reason VARCHAR,
                row_index BIGINT,
                PRIMARY KEY (run_id, row_id)
            )
            """,
        ],
    ),
    (
        2,
        "errors, cache, router_training, validations, forecasts",
        [
            # one row per problem met by any stage (a row's failure, a retried shard, a stage that gave up)
            """
            CREATE TABLE IF NOT EXISTS errors (
                run_id VARCHAR NOT NULL,
                stage VARCHAR NOT NULL,          -- ingest, dedup, route, infer, land, ...
                tier VARCHAR,
                row_id VARCHAR,                  -- NULL when the error is not about one row
                error VARCHAR NOT NULL,
                attempt INTEGER DEFAULT 1,
                created_at TIMESTAMPTZ DEFAULT now()
            )
            """,
            # answers kept for reuse across runs; a later row with the same request_key is answered from here
            """
            CREATE TABLE IF NOT EXISTS cache (
                request_key VARCHAR PRIMARY KEY, -- fingerprint of system prompt, prompt, max_tokens (and model)
                prompt VARCHAR,
                system VARCHAR,
                max_tokens INTEGER,
                response VARCHAR NOT NULL,
                tier VARCHAR,
                model VARCHAR,
                input_tokens BIGINT,
                output_tokens BIGINT,
                baseline_cost_usd DOUBLE,        -- what answering it on the baseline tier costs: the saving per hit
                source_run_id VARCHAR,
                source_row_id VARCHAR,
                created_at TIMESTAMPTZ DEFAULT now(),
                hits BIGINT DEFAULT 0,
                last_hit_at TIMESTAMPTZ
            )
            """,
            # what the learned router trains on: a verdict on the cheap tier's answer per (run, row), from the
            # shadow sample ('shadow'), a review ('review') or a labelled file ('import'); premium_ok NULL when only
            # the cheap answer was judged. The schema of sluice/warehouse/labels.py (ROUTER_TRAINING_DDL), adopted.
            """
            CREATE TABLE IF NOT EXISTS router_training (
                run_id VARCHAR NOT NULL,
                row_id VARCHAR NOT NULL,
                prompt VARCHAR NOT NULL,
                cheap_ok BOOLEAN NOT NULL,
                premium_ok BOOLEAN,
                source VARCHAR NOT NULL,
                labelled_at TIMESTAMPTZ DEFAULT now(),
                PRIMARY KEY (run_id, row_id)
            )
            """,
            # checks run on answers (format, schema, judge): one row per row per validator
            """
            CREATE TABLE IF NOT EXISTS validations (
                run_id VARCHAR NOT NULL,
                row_id VARCHAR NOT NULL,
                validator VARCHAR NOT NULL,
                passed BOOLEAN,
                score DOUBLE,
                detail VARCHAR,
                created_at TIMESTAMPTZ DEFAULT now(),
                PRIMARY KEY (run_id, row_id, validator)
            )
            """,
            # `sluice plan`: what a run was expected to cost before it ran (sluice/reports/forecast.py)
            """
            CREATE TABLE IF NOT EXISTS forecasts (
                forecast_id VARCHAR PRIMARY KEY,
                run_id VARCHAR,                  -- set when planned for a given run id; else matched by dataset
                dataset VARCHAR NOT NULL,
                source VARCHAR,
                created_at TIMESTAMPTZ DEFAULT now(),
                rows BIGINT,
                duplicates BIGINT,
                quarantined BIGINT,
                cache_hits BIGINT,
                input_tokens BIGINT,
                output_tokens BIGINT,
                cost_usd DOUBLE,
                baseline_cost_usd DOUBLE,
                dedup_saving_usd DOUBLE,
                cache_saving_usd DOUBLE,
                routing_saving_usd DOUBLE,
                tiers JSON,                      -- per tier: rows, input_tokens, output_tokens, cost_usd, seconds
                assumptions JSON                 -- fill ratios, throughputs, engine start: learned or default
            )
            """,
        ],
    ),
    (
        3,
        "request shapes, structured answers, retries, escalations and shadow answers",
        [
            *(f"ALTER TABLE results ADD COLUMN IF NOT EXISTS {c}" for c in (
                # the request's shape (sluice/contracts/shapes.py): part of its fingerprint, so the cache can match on it
                "history VARCHAR", "temperature DOUBLE", "stop VARCHAR", "response_schema VARCHAR",
                # the answer's schema check: `parsed` is the validated JSON value, NULL for free-text rows
                "parsed JSON", "schema_valid BOOLEAN",
                # every attempt at the row (first answer, retry, escalation, shadow): their sum is the row's cost
                "attempts INTEGER", "escalated BOOLEAN", "escalated_from VARCHAR", "cascade_reason VARCHAR",
                "shadow BOOLEAN", "shadow_agrees BOOLEAN", "shadow_cost_usd DOUBLE",
                # pricing facts of the final answer (sluice/stages/infer/answer.py)
                "price_basis VARCHAR", "cached_input_tokens BIGINT", "usage_estimated BOOLEAN",
                "mean_logprob DOUBLE",
            )),
            # one row per request sent for a row: what each attempt cost and why it was made
            """
            CREATE TABLE IF NOT EXISTS attempts (
                run_id VARCHAR NOT NULL,
                row_id VARCHAR NOT NULL,
                attempt INTEGER NOT NULL,        -- 1 = first answer, then in the order they were made
                kind VARCHAR NOT NULL,           -- first | retry | escalation | shadow
                tier VARCHAR,
                model VARCHAR,
                status VARCHAR,
                error VARCHAR,
                schema_valid BOOLEAN,
                input_tokens BIGINT,
                output_tokens BIGINT,
                latency_ms DOUBLE,
                cost_usd DOUBLE,
                mean_logprob DOUBLE,
                response VARCHAR,
                PRIMARY KEY (run_id, row_id, attempt)
            )
            """,
        ],
    ),
    (
        4,
        "reference grading: results.reference, grader, correct, grade_reason; runs.accuracy per run and per tier",
        [
            *(f"ALTER TABLE results ADD COLUMN IF NOT EXISTS {c}" for c in (
                # the row's correct answer and how it was compared (sluice/contracts/grading.py)
                "reference VARCHAR", "grader VARCHAR",
                # the verdict on the final answer: NULL without a reference or for quarantined rows
                "correct BOOLEAN", "grade_reason VARCHAR",
            )),
            *(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {c}" for c in (
                "accuracy DOUBLE", "graded_rows BIGINT",
                # {tier: {graded, correct, accuracy}}; rows never sent under "(not sent)"
                "accuracy_per_tier JSON",
            )),
        ],
    ),
    (
        5,
        "runs.baseline_accuracy: what the all-premium baseline scores on the same graded rows, where its answers "
        "are known (a replay baseline's recorded answers)",
        [f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {c}" for c in ("baseline_accuracy DOUBLE",
                                                                    "baseline_graded_rows BIGINT")],
    ),
    (
        6,
        "quality without references: runs.quality_* (the shadow sample judged by shape, with a Wilson interval) "
        "and the run's quality floor",
        [f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {c}" for c in (
            # the share of answers judged acceptable, weighted across tiers, its 95% interval and judged pairs
            "quality_estimate DOUBLE", "quality_low DOUBLE", "quality_high DOUBLE", "quality_n BIGINT",
            # shadow pairs that could not be judged by shape (free text: a judge is needed)
            "quality_unjudged BIGINT",
            # {tier: {rows, ok_rows, estimate, low, high, n, ...}}; the premium tier `assumed`, others "not estimated"
            "quality_per_tier JSON",
            # `sluice run --min-quality`: the floor, and what the run said when its lower bound fell under it
            "min_quality DOUBLE", "quality_alert VARCHAR",
        )],
    ),
    (
        7,
        "routers: every trained router version, its cross-validated score and which one is promoted",
        [
            """
            CREATE TABLE IF NOT EXISTS routers (
                version INTEGER PRIMARY KEY,
                trained_at TIMESTAMP,
                labels BIGINT,                -- router_training rows it learned from
                target VARCHAR,               -- what it predicts (premium needed)
                cv_auroc DOUBLE,              -- 5-fold out-of-fold AUROC on its own labels
                previous_auroc DOUBLE,        -- the promoted version's AUROC on the same labels
                replaces INTEGER,             -- the version promoted when it was trained
                promoted BOOLEAN,             -- exactly one version is promoted (the one runs use by default)
                promoted_at TIMESTAMP,
                reason VARCHAR,               -- why it was (or was not) promoted
                files JSON                    -- the saved router: {file name: text or base64}
            )
            """,
        ],
    ),
    (
        8,
        "chargeback and per-submission options: results.meta (the input's own columns) and results.tags, runs.tags "
        "and runs.submission; the cache table is dropped (nothing ever wrote it: answers are reused from results)",
        [
            # every input column Sluice does not read, as one JSON object per row (sluice/stages/land/chargeback.py)
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS meta JSON",
            # the row's tags: the run's tags overlaid by the row's own `tags` column ({key: value}, strings)
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS tags JSON",
            # `sluice run --tag k=v` / a drop-box manifest's tags
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS tags JSON",
            # the options a drop-box submission's manifest gave the run (budget_usd, deadline_h, priority, ...)
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS submission JSON",
            # created by migration 2 for a cross-run answer cache that reads answered rows of `results` instead
            # (sluice/stages/dedup/cache.py): an empty table that looked like the cache's store misled readers
            "DROP TABLE IF EXISTS cache",
        ],
    ),
    (
        9,
        "the judge of free-text shadow pairs: its spend as the run's own line, and the pairs it left unjudged",
        [f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {c}" for c in (
            # the catalogue's judge tier, and what it cost (quality assurance: part of cost_usd, no row's cost)
            "judge_tier VARCHAR", "judge_cost_usd DOUBLE",
            # free-text pairs left unjudged (within quality_unjudged) because the judge's verdict did not parse,
            # or because its requests failed
            "quality_unparseable BIGINT", "quality_judge_failed BIGINT",
        )],
    ),
    (
        10,
        "the router that learns every night and the quality floor's loop: what each run routed with and why "
        "(runs.router_version, routing, quality_loop), and the newest label each router version learned from",
        [
            # the promoted router version the run routed with (NULL: a router given by hand, or the heuristic)
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS router_version INTEGER",
            # {router, router_version, mode, premium_share, budget_usd, routed_premium_share, retrain: {trained,
            # new_labels, version, promoted, reason}}: how it routed, and the retraining after it landed
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS routing JSON",
            # the quality floor's decision for this run after the dataset's last run (sluice/stages/route/loop.py):
            # {setting, from, to, configured, why, after_run}; NULL when nothing was decided
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS quality_loop JSON",
            # the newest router_training.labelled_at a version learned from: labels after it are new to it
            "ALTER TABLE routers ADD COLUMN IF NOT EXISTS labels_through TIMESTAMPTZ",
        ],
    ),
    (
        11,
        "batch jobs that survive: every provider batch a run submitted (provider_batches), and each row's batch "
        "discount as its own saving (results.batch_discount_usd)",
        [
            # list price less the batch price of a row answered through a provider batch API (sum over its
            # attempts); 0 for other rows, NULL for rows landed before it was recorded (savings_per_row: 0)
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS batch_discount_usd DOUBLE",
            # one row per provider batch (OpenAI Batch, Anthropic Message Batches), from the run folder's journals
            # (models/backends/batch_journal.py): what was submitted and when, and how it ended
            """
            CREATE TABLE IF NOT EXISTS provider_batches (
                run_id VARCHAR NOT NULL,
                tier VARCHAR NOT NULL,
                kind VARCHAR,                 -- first | escalation | retry | shadow: the pass it answered
                shard INTEGER,
                batch_id VARCHAR NOT NULL,    -- the provider's id
                provider VARCHAR,             -- openai | anthropic
                round INTEGER,                -- 0: first submission; 1, 2: rows an earlier batch left unanswered
                rows BIGINT,
                submitted_at TIMESTAMPTZ,
                status VARCHAR,               -- the provider's final status (completed, expired, ended, ...)
                ended_at TIMESTAMPTZ,
                collected_at TIMESTAMPTZ,     -- its results were read
                PRIMARY KEY (run_id, batch_id)
            )
            """,
        ],
    ),
    (
        12,
        "the hard budget: rows a run deferred point back from the run that answers them (results.deferred_from), "
        "and each run's ledger (runs.budget)",
        [
            # '<run_id>/<row_id>' of the deferred row this row answers (sluice/stages/budget/carry.py); NULL else
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS deferred_from VARCHAR",
            # {budget_usd, spent_usd, reserved_usd, released_usd, held_usd, overrun_usd, passes, moved_rows,
            # deferred_rows, skipped_rows, reached}: the run's ledger (sluice/stages/budget/ledger.py); NULL: no budget
            "ALTER TABLE runs ADD COLUMN IF NOT EXISTS budget JSON",
        ],
    ),
    (
        13,
        "an honest bill and trimming: requests a kill cut off are attempts (status 'interrupted', "
        "attempts.usage_estimated), and what prompt trimming saved per row (results.trim_tokens_saved, "
        "trim_saving_usd)",
        [
            # the request's usage came from the client's estimate, not the provider (an interrupted request that
            # never got its answer, a response without usage); NULL for attempts landed before it was recorded
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS usage_estimated BOOLEAN",
            # `trim` (sluice run --trim): input tokens trimming took off the row's prompt (word pieces), and what
            # they would have cost on each attempt's tier (summed); the baseline prices the untrimmed prompt.
            # 0 for rows not trimmed, NULL for rows landed before trimming was recorded (savings_per_row: 0)
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS trim_tokens_saved BIGINT",
            "ALTER TABLE results ADD COLUMN IF NOT EXISTS trim_saving_usd DOUBLE",
        ],
    ),
    (
        14,
        "the cache index: earlier answers looked up by key instead of loaded (sluice/stages/dedup/cache_index.py)",
        [
            # one row per answered row of an indexed run: its exact request key and its word count (the semantic
            # stage only compares short prompts); entry_id numbers entries in landing order (the ANN file's keys)
            "CREATE SEQUENCE IF NOT EXISTS cache_entry_ids",  # never reused: the ANN file keys vectors by entry_id
            "CREATE TABLE IF NOT EXISTS cache_entries (entry_id BIGINT, run_id VARCHAR, row_id VARCHAR, "
            "request_key UBIGINT, words INTEGER)",
            # the entry's MinHash LSH bucket keys (band, key over block and band values), as the near stage forms them
            "CREATE TABLE IF NOT EXISTS cache_bands (entry_id BIGINT, band UTINYINT, band_key UBIGINT)",
            # which runs are indexed, under which scheme (hash and shingle settings); others are read whole
            "CREATE TABLE IF NOT EXISTS cache_index_runs (run_id VARCHAR PRIMARY KEY, scheme VARCHAR, "
            "entries BIGINT, indexed_at TIMESTAMPTZ)",
        ],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

RESULT_COLUMNS = [
    "run_id", "dataset", "row_id", "prompt", "response", "tier", "model", "status", "dup_of", "input_tokens",
    "output_tokens", "latency_ms", "cost_usd", "baseline_cost_usd", "system", "max_tokens", "dup_kind",
    "dup_score", "route_score", "route_reason", "error", "finish_reason", "row_index",
    "history", "temperature", "stop", "response_schema", "parsed", "schema_valid", "attempts", "escalated",
    "escalated_from", "cascade_reason", "shadow", "shadow_agrees", "shadow_cost_usd", "price_basis",
    "cached_input_tokens", "usage_estimated", "mean_logprob",
    "reference", "grader", "correct", "grade_reason", "meta", "tags", "batch_discount_usd",
    "deferred_from", "trim_tokens_saved", "trim_saving_usd",
]
ATTEMPT_COLUMNS = ["run_id", "row_id", "attempt", "kind", "tier", "model", "status", "error", "schema_valid",
                   "input_tokens", "output_tokens", "latency_ms", "cost_usd", "mean_logprob", "response",
                   "usage_estimated"]

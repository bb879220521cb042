"""The tables the stages hand each other: their columns, in one place.

    ROW_SCHEMA      ingest's output, carried through dedup and route (which add DUP_COLUMNS, tier, route_*)
    ANSWER_SCHEMA   one answer shard of one tier (infer's output), read by review and land
    ATTEMPT_KINDS   why a row was sent: its routed answer, an escalation, a schema retry, a shadow answer
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

# a row's answer budget (max_tokens) when neither the row nor the run sets one (Settings.default_max_tokens)
DEFAULT_MAX_TOKENS = 256
# the largest answer budget a row may ask for (ingest checks it; a retry of a cut-short answer doubles up to it)
MAX_TOKENS_LIMIT = 32_768
# Characters of prompt + system per row. 200k characters is ~50k tokens of English, beyond every self-hosted
# tier's window and most APIs'; a longer row is almost always a mistake (a whole document pasted in), and
# stopping it here keeps megabyte strings away from tokenizers, the router and the API.
MAX_PROMPT_CHARS = 200_000

ROW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_index", pa.int64()),
        ("prompt", pa.string()),
        ("system", pa.string()),
        ("max_tokens", pa.int32()),
        # request shape (sluice.contracts.shapes): earlier chat turns, sampling parameters, structured-output schema
        ("history", pa.string()),
        ("temperature", pa.float64()),
        ("stop", pa.string()),
        ("response_schema", pa.string()),
        # reference grading (sluice.contracts.grading): the correct answer as text, and how to compare (null: the
        # run's --grader, else auto). Carried to land, never sent to a model, never part of the request fingerprint
        ("reference", pa.string()),
        ("grader", pa.string()),
        # chargeback (sluice.contracts.tags): the row's own tags as JSON text; carried to land, never sent to a model
        ("tags", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

# The input columns ingest reads (the request, reference grading, chargeback tags). Every other column of an input
# file passes through untouched and lands with its row (sluice.stages.land.chargeback: results.meta, results file).
READ_INPUT_COLUMNS = ("prompt", "id", "system", "max_tokens", "messages", "temperature", "stop", "response_schema",
                      "reference", "grader", "tags")

DUP_COLUMNS = {"dup_of": pl.String, "dup_kind": pl.String, "dup_score": pl.Float64}
# the request shape (sluice.contracts.shapes): earlier turns of a conversation, sampling parameters, the schema
SHAPE_COLUMNS = {"history": pl.String, "temperature": pl.Float64, "stop": pl.String, "response_schema": pl.String}


# reference grading: carried from ingest to land (sluice.stages.land.grading), which adds correct and grade_reason
GRADE_COLUMNS = {"reference": pl.String, "grader": pl.String}


def with_grade_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Tables written before reference grading existed (or built by hand) have no reference: all null."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in GRADE_COLUMNS.items() if c not in df.columns]
    return df.with_columns(missing) if missing else df


def with_shape_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Tables written before request shapes existed (or built by hand) have none of their columns: all null."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in SHAPE_COLUMNS.items() if c not in df.columns]
    return df.with_columns(missing) if missing else df


ANSWER_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("tier", pa.string()),
        ("model", pa.string()),
        ("response", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("finish_reason", pa.string()),
        ("cost_usd", pa.float64()),
        # provider batch answers: list price less cost_usd (the batch discount, its own saving); else 0
        ("batch_discount_usd", pa.float64()),
        # rows whose prompt was trimmed (`trim`): the trimmed tokens at this attempt's input price; else 0
        ("trim_saving_usd", pa.float64()),
        # what the row would have cost on the baseline tier: these tokens, the trimmed ones put back, at its prices
        ("baseline_cost_usd", pa.float64()),
        # how cost_usd was priced: "list", "batch" (provider batch API) or "worker" (self-hosted time)
        ("price_basis", pa.string()),
        ("cached_input_tokens", pa.int64()),
        ("usage_estimated", pa.bool_()),
        ("mean_logprob", pa.float64()),
        # rows with a response_schema: the validated answer as JSON text, and whether it passed (null: free text).
        # An answer that fails its schema has status "invalid" and the reason in `error` (sluice.stages.review)
        ("parsed", pa.string()),
        ("schema_valid", pa.bool_()),
    ]
)

ATTEMPT_KINDS = ("first", "escalation", "retry", "shadow")
# an attempt's status when a kill cut it off: sent, never checkpointed, sent again (sluice.stages.infer.interrupted)
INTERRUPTED = "interrupted"

# a landed row's status (results.status): answered, reused, refused by ingest, failed, or deferred by the run's
# budget to the dataset's next run (sluice.stages.budget); "pending" and "invalid" exist only between stages
DEFERRED = "deferred"
ROW_STATUSES = ("ok", "duplicate", "quarantined", "failed", DEFERRED)

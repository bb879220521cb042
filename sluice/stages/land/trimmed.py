"""Trimmed prompts on landing: `results.prompt` is the request as it came, with what trimming took off beside it.

With `trim` on (sluice run --trim, the catalogue's `trim`, a drop-box manifest's), the route stage trims each
pending row's prompt (sluice/stages/route/brevity.py) and keeps the original in `untrimmed_prompt`, with the input
tokens it saved in `trim_tokens_saved`. The landed `prompt` is the original: the answer cache matches tonight's
prompts against it, results join back to the input on it, and the trimmed text is `trim_prompt(prompt)` again. The
dollars are priced per attempt by the infer stage (`trim_saving_usd`, summed over the row's attempts).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def restore_prompts(routed: pa.Table) -> pa.Table:
    """`routed` with each trimmed row's original prompt back in `prompt`, and `trim_tokens_saved` (0 for rows
    nothing was trimmed from, and for every row of a run without trimming)."""
    if "untrimmed_prompt" in routed.column_names:
        prompt = pc.coalesce(routed["untrimmed_prompt"], routed["prompt"])
        routed = routed.set_column(routed.schema.get_field_index("prompt"), "prompt", prompt)
        routed = routed.drop_columns(["untrimmed_prompt"])
    saved = (pc.fill_null(routed["trim_tokens_saved"].cast(pa.int64()), 0)
             if "trim_tokens_saved" in routed.column_names else pa.array([0] * routed.num_rows, pa.int64()))
    if "trim_tokens_saved" in routed.column_names:
        return routed.set_column(routed.schema.get_field_index("trim_tokens_saved"), "trim_tokens_saved", saved)
    return routed.append_column("trim_tokens_saved", saved)


def trim_summary(results) -> dict:
    """The run's trimming line: rows trimmed, input tokens saved, dollars saved (nothing when none was)."""
    saved = results.filter(results["trim_tokens_saved"] > 0)
    if not saved.height:
        return {}
    return {"trimmed_rows": saved.height, "trim_tokens_saved": int(saved["trim_tokens_saved"].sum()),
            "trim_saving_usd": float(results["trim_saving_usd"].fill_null(0.0).sum())}

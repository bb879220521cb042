"""The premium-tier guarantees hold inside a whole flow run: under injected 429 / 500 / timeouts every row lands
once, as answered or failed with a reason, and no model ever sees more than its configured requests or tokens
per window (1 s windows here, so the test is quick; bench/api_throughput.py measures real 60 s windows)."""

from collections import defaultdict

import duckdb
import pyarrow.parquet as pq

from flows.batch_run import sluice_run
from tests.support.openai_server import Faults, OpenAICompatServer

SAMPLE = "data/samples/prompts.parquet"
RPM, TPM, WINDOW = 12, 3000, 1.0


def peak_per_model(received, window):
    by_model = defaultdict(list)
    for r in received:
        by_model[r.model].append(r)
    peaks = {}
    for model, rs in by_model.items():
        rs.sort(key=lambda r: r.at)
        best_r = best_t = 0
        for i, first in enumerate(rs):
            inside = [r for r in rs[i:] if r.at < first.at + window]
            best_r = max(best_r, len(inside))
            best_t = max(best_t, sum(r.prompt_tokens + r.completion_tokens for r in inside))
        peaks[model] = (best_r, best_t)
    return peaks


def test_a_fault_storm_inside_a_flow_run(tmp_path):
    faults = Faults(rate_429=0.1, rate_500=0.1, rate_timeout=0.1, timeout_hold_s=2.0, retry_after_s=0.2, seed=11)
    with OpenAICompatServer(faults=faults) as server:
        tiers = [("small", 0.10, 0.40), ("mid", 0.20, 0.60), ("premium", 2.50, 10.00)]
        cat = tmp_path / "cat.toml"
        cat.write_text('baseline = "premium"\n' + "".join(
            f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{server.base_url}"\n'
            f"input_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nrpm = {RPM}\ntpm = {TPM}\n"
            f"rate_limit_period_s = {WINDOW}\nrequest_timeout_s = 1.0\nmax_retries = 3\n"
            for n, i, o in tiers))
        summary = sluice_run(SAMPLE, warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat),
                             data_dir=str(tmp_path / "data"))
        received = server.received

    faulted = [r for r in received if r.status != 200 or r.held]
    assert len(faulted) >= 10  # the storm happened
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rows = con.execute("select row_id, status, error from results").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == pq.read_metadata(SAMPLE).num_rows  # every row, once
    assert {r[1] for r in rows} <= {"ok", "failed", "duplicate"}
    assert all(r[2] for r in rows if r[1] == "failed")  # every failure carries its reason
    assert sum(r[1] == "ok" for r in rows) >= 0.8 * summary["rows"] - summary["duplicates"]
    for model, (requests, tokens) in peak_per_model(received, WINDOW).items():
        assert requests <= RPM, (model, requests)
        assert tokens <= TPM, (model, tokens)

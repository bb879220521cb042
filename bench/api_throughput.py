"""API tier under rate limits: what a provider sees per 60 s window, the throughput reached, and a fault storm.

Runs the OpenAI backend (models/backends/openai_http.py) against the loopback server
(tests/support/openai_server.py) with the tier's client-side limits over REAL 60-second windows:

    1. throughput: faults off, RPM-bound; rows answered per minute vs the configured RPM;
    2. tpm-bound: the same rows under a TPM limit that binds first; tokens billed per minute vs the TPM;
    3. fault storm: 30% of requests fault (10% 429 with Retry-After, 10% 500, 10% held past the client timeout);
       every row must land once, answered or failed with a reason.
For each: the most requests and tokens the server received in any 60 s window (from its own arrival records),
against the configured limits. Results: bench/results/api_throughput.json and .md.

    .venv/bin/python bench/api_throughput.py            # ~5 min: real 60 s windows
    .venv/bin/python bench/api_throughput.py --period 6 # quick check: limits per 6 s instead of per minute
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the loopback server lives with the tests (tests/support), not in the package

from models.backends import Request  # noqa: E402
from models.backends.openai_http import OpenAIBackend  # noqa: E402
from models.catalogue import Tier  # noqa: E402
from tests.support.openai_server import Faults, OpenAICompatServer  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def tier(base_url: str, **kw) -> Tier:
    return Tier(name="premium", backend="openai", model="bench-model", base_url=base_url,
                input_usd_per_1m=2.5, output_usd_per_1m=10.0, max_concurrency=32, **kw)


def rows(n: int) -> list[Request]:
    return [Request(f"r{i}", f"summarise ticket {i}: the customer reports that the export button fails", "Be brief.",
                    24) for i in range(n)]


def scenario(name: str, n_rows: int, limits: dict, faults: Faults, period: float, **tier_kw) -> dict:
    with OpenAICompatServer(faults=faults, model="bench-model") as srv:
        t = tier(srv.base_url, rate_limit_period_s=period, **limits, **tier_kw)
        t0 = time.time()
        result = OpenAIBackend(t).complete(rows(n_rows))
        t1 = time.time()
        got = srv.received
        peak = srv.max_in_window(period)
    comps = result.completions
    ok = [c for c in comps if c.ok]
    answered_at = sorted(r.at for r in got if r.status == 200)
    first_sent = min(r.at for r in got)
    elapsed = max(answered_at[-1] - first_sent, 1e-9) if answered_at else t1 - t0
    counts = Counter(c.row_id for c in comps)
    out = {
        "scenario": name,
        "rows": n_rows,
        "window_s": period,
        "configured_rpm": t.rpm,
        "configured_tpm": t.tpm,
        "requests_sent": len(got),
        "statuses": dict(Counter(r.status for r in got)),
        "timeouts_injected": sum(1 for r in got if r.held),
        "rows_ok": len(ok),
        "rows_failed_with_reason": sum(1 for c in comps if not c.ok and c.error),
        "rows_lost": n_rows - len(counts),
        "rows_landed_twice": sum(1 for v in counts.values() if v > 1),
        "max_requests_in_any_window": peak.requests,
        "max_tokens_in_any_window": peak.tokens,
        "wall_s": round(t1 - t0, 1),
        "rows_per_window": round(len(ok) / elapsed * period, 1),
        "tokens_per_window": round(sum(c.input_tokens + c.output_tokens for c in ok) / elapsed * period, 1),
    }
    if t.rpm:
        out["throughput_vs_rpm"] = round(out["rows_per_window"] / t.rpm, 3)
        out["peak_window_vs_rpm"] = round(peak.requests / t.rpm, 3)
    if t.tpm:
        out["peak_tokens_vs_tpm"] = round(peak.tokens / t.tpm, 3)
        out["throughput_vs_tpm"] = round(out["tokens_per_window"] / t.tpm, 3)
    failures = Counter((c.error or "").split(":")[0] for c in comps if not c.ok)
    out["failure_reasons"] = dict(failures)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--period", type=float, default=60.0, help="the limit window in seconds (providers: 60)")
    ap.add_argument("--out", default=str(RESULTS / "api_throughput"))
    args = ap.parse_args()
    p = args.period
    scale = p / 60.0
    rpm = max(int(600 * scale), 10)  # 10 requests/s at 60 s windows
    quiet = dict(backoff_initial_s=0.05, backoff_max_s=2.0)
    results = [
        scenario("throughput (RPM-bound, faults off)", int(rpm * 2), {"rpm": rpm, "tpm": rpm * 40}, Faults(), p,
                 **quiet),
        scenario("TPM-bound, faults off", rpm, {"rpm": rpm, "tpm": rpm * 15}, Faults(), p, **quiet),
        scenario("fault storm (30% faults)", max(500, int(rpm * 0.9)), {"rpm": rpm, "tpm": rpm * 40},
                 Faults(rate_429=0.1, rate_500=0.1, rate_timeout=0.1, retry_after_s=1.0, timeout_hold_s=5.0, seed=7),
                 p, max_retries=4, request_timeout_s=2.0, **quiet),
    ]
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
            "cpus": __import__("os").cpu_count(), "window_s": p,
            "note": "server in the same process, loopback; the machine is shared with other jobs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "scenarios": results}, indent=2) + "\n")
    lines = [
        "# API throughput under client-side rate limits",
        "",
        f"{meta['when']}, {meta['cpus']} CPUs, limit window {p:g} s (`bench/api_throughput.py`). The server counts "
        "what it receives, at arrival; 'max in any window' is over every sliding window of that length.",
        "",
        "| scenario | rows | RPM / TPM configured | max requests in any window | max tokens in any window | "
        "rows per window (vs RPM) | tokens per window (vs TPM) | ok / failed with reason / lost / twice | "
        "requests sent (statuses) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['rows']} | {r['configured_rpm']} / {r['configured_tpm']} | "
            f"{r['max_requests_in_any_window']} | {r['max_tokens_in_any_window']} | "
            f"{r['rows_per_window']} ({r.get('throughput_vs_rpm', '-')}) | "
            f"{r['tokens_per_window']} ({r.get('throughput_vs_tpm', '-')}) | "
            f"{r['rows_ok']} / {r['rows_failed_with_reason']} / {r['rows_lost']} / {r['rows_landed_twice']} | "
            f"{r['requests_sent']} ({', '.join(f'{k}: {v}' for k, v in sorted(r['statuses'].items()))}; "
            f"held past the client timeout: {r['timeouts_injected']}) |"
        )
    lines += ["", "Failure reasons (fault storm): " + json.dumps(results[-1]["failure_reasons"]), "",
              "Throughput is rows (or tokens) answered per window, averaged from the first request to the last "
              "answer. Request starts are paced (one every window/RPM), so the RPM-bound figure has no head start. "
              "Tokens are not paced: the first window of the TPM-bound run fills at once, so its average over a "
              "run of little more than one window exceeds the TPM; its steady-state figure is the busiest window "
              "(max tokens in any window / TPM). In the fault storm every 429's Retry-After pauses the whole tier "
              "(as a provider's account-wide limit asks), so it runs well below the RPM by design; the limits "
              "still hold in every window.", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

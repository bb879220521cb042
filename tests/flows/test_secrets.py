"""The API key never leaves the process: not in a log line, a warehouse table, a Prefect artifact or log, or a file.

One whole run against a loopback provider that answers 401 (premium), 429 and 500 (randomly), and that, like a
careless gateway, echoes the bearer key it received in every error message. Each place the run writes to is then
searched for the key and for fragments of it (a key cut in half is still a leak).
"""

from __future__ import annotations

import asyncio
import logging

import duckdb
import pyarrow.parquet as pq

from flows.batch_run import sluice_run
from models.backends.api_rows import error_text
from tests.support.openai_server import Faults, OpenAICompatServer, _OpenAIHandler

KEY = "sk-test-SECRET-abc123"
FRAGMENTS = (KEY, KEY[:12], KEY[-10:], "SECRET-abc")
KEY_ENV = "SLUICE_TEST_LEAKY_KEY"


class _EchoingHandler(_OpenAIHandler):
    """Rejects the premium model with 401 and puts the caller's key into every error it sends."""

    rejected: list[str] = []  # the keys it was sent with the requests it answered 401

    def _chat(self, body: dict) -> None:
        if body.get("model") == "premium-test":
            self.rejected.append(self.headers.get("Authorization", ""))
            return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error",
                                              "code": "invalid_api_key"}})
        return super()._chat(body)

    def _send(self, status, payload, headers=None, content_type="application/json"):
        if status >= 400 and isinstance(payload, dict) and "error" in payload:
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            payload["error"]["message"] += f" (Incorrect API key provided: {key})"
        return super()._send(status, payload, headers, content_type)


class _EchoingServer(OpenAICompatServer):
    handler = _EchoingHandler


def _catalogue(path, base_url: str):
    tiers = [("small", 0.10, 0.40), ("mid", 0.20, 0.60), ("premium", 2.50, 10.00)]
    path.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f'api_key_env = "{KEY_ENV}"\ninput_usd_per_1m = {i}\noutput_usd_per_1m = {o}\n'
        "backoff_initial_s = 0.01\nbackoff_max_s = 0.05\nmax_retries = 2\n" for n, i, o in tiers))
    return path


def _leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def test_error_text_redacts_a_key_that_straddles_the_cut():
    for n in range(260, 320):
        assert not _leaks(error_text(Exception("x" * n + KEY), 1, KEY))


def _prefect_records() -> str:
    """Everything the Prefect API holds that a user could read: logs, artifacts, flow and task runs."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs still queued for the API

    async def read() -> str:
        out = []
        async with get_client() as client:
            for reader in (client.read_logs, client.read_artifacts, client.read_flow_runs, client.read_task_runs):
                offset = 0
                while True:
                    page = await reader(limit=200, offset=offset)
                    out += [p.model_dump_json() for p in page]
                    if len(page) < 200:
                        break
                    offset += 200
        return "\n".join(out)

    return asyncio.run(read())


def _files_text(root) -> str:
    """Every file under root as text: Parquet decoded (its pages may be compressed), DuckDB dumped table by
    table, anything else as raw bytes."""
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            out.append(str(pq.read_table(p).to_pylist()))
        elif p.suffix == ".duckdb":
            with duckdb.connect(str(p), read_only=True) as con:
                for (t,) in con.execute("select table_name from information_schema.tables").fetchall():
                    out.append(str(con.execute(f'select * from "{t}"').fetchall()))
        else:
            out.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def test_the_api_key_appears_nowhere(tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs included
    src = tmp_path / "batch.parquet"
    pq.write_table(pq.read_table("data/samples/prompts.parquet").slice(0, 24), src)
    faults = Faults(rate_429=0.15, rate_500=0.15, retry_after_s=0.02, seed=3)
    with _EchoingServer(faults=faults, model="premium-test") as srv:
        cat = _catalogue(tmp_path / "cat.toml", srv.base_url)
        summary = sluice_run(str(src), warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat),
                             data_dir=str(tmp_path / "data"), premium_share=0.25)
        statuses = {r.status for r in srv.received}
    # the faults happened: the key was sent, echoed back in 401/429/500 errors, and rows failed with a reason
    assert {429, 500} <= statuses and _EchoingHandler.rejected, statuses
    assert set(_EchoingHandler.rejected) == {f"Bearer {KEY}"}
    assert summary["failed"] >= 1
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        errors = [e for (e,) in con.execute("select error from results where status = 'failed'").fetchall()]
    # the premium rows' reasons say 401 and show where the echoed key was: redacted
    assert any("HTTP 401" in e and "Incorrect API key provided: ***" in e for e in errors), errors

    out, err = capfd.readouterr()
    places = {
        "python logs": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "stdout": out,
        "stderr": err,
        "prefect api": _prefect_records(),
        "files (run folder, warehouse)": _files_text(tmp_path),
    }
    assert all(places[k] for k in ("python logs", "prefect api", "files (run folder, warehouse)")), \
        {k: len(v) for k, v in places.items()}  # every place was actually read
    leaked = {where: _leaks(text) for where, text in places.items() if _leaks(text)}
    assert not leaked, leaked


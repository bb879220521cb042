"""A vLLM engine killed mid-generate fails the batch promptly instead of hanging it, and the next batch gets a fresh
engine (issue #9). The kill is a real SIGKILL of the real EngineCore process (tiny random Llama)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from models.backends import Request, vllm_offline
from models.backends.vllm_offline import EngineDiedError, VLLMBackend, acquire_engine, shutdown_engine
from models.catalogue import Tier

pytestmark = pytest.mark.engine

# Far above a detection (about a second) and below any CI timeout: a regression to the old hang FAILS here.
HANG_LIMIT_S = 120


@pytest.fixture(scope="module")
def tier(tiny_model_dir):
    return Tier(name="small", backend="vllm", model=str(tiny_model_dir), dtype="float32", worker="cpu",
                max_model_len=1024)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def engine_core_pid(llm) -> int:
    (proc,) = vllm_offline._engine_processes(llm)
    return proc.pid


def kill_when_generating(llm, after_s: float = 0.5) -> dict:
    """SIGKILL the EngineCore once the engine holds requests (generate has started), from a thread."""
    pid = engine_core_pid(llm)
    family = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    seen: dict = {"pid": pid, "family": family}

    def kill() -> None:
        deadline = time.monotonic() + HANG_LIMIT_S
        while llm.llm_engine.get_num_unfinished_requests() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(after_s)
        seen["unfinished_at_kill"] = llm.llm_engine.get_num_unfinished_requests()
        seen["killed_at"] = time.perf_counter()
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    return seen


def run_with_limit(fn, limit_s: float) -> dict:
    """Run fn in a thread; the outcome (result or exception, and when) or {"hung": True} after limit_s."""
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc
        out["ended_at"] = time.perf_counter()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit_s)
    return out if not t.is_alive() else {"hung": True}


def long_batch(n: int = 128) -> list[Request]:
    # a random model rarely stops on its own: ~n*600 tokens, tens of seconds here, killed after ~0.5 s
    return [Request(row_id=f"r{i}", prompt=f"Tell story number {i}.", system=None, max_tokens=600) for i in range(n)]


def test_an_engine_killed_mid_generate_raises_and_the_next_batch_gets_a_fresh_engine(tier):
    shutdown_engine()
    llm, _ = acquire_engine(tier)
    seen = kill_when_generating(llm)
    out = run_with_limit(lambda: VLLMBackend(tier).complete(long_batch()), HANG_LIMIT_S)

    assert not out.get("hung"), f"generate still blocked {HANG_LIMIT_S} s after the EngineCore was killed"
    assert "result" not in out, "the batch finished before the kill: make it longer"
    err = out["error"]
    assert isinstance(err, EngineDiedError) and isinstance(err, RuntimeError)
    assert "vLLM engine died" in str(err) and "-9" in str(err)  # the exit code of a SIGKILL
    assert seen["unfinished_at_kill"] > 0  # it died mid-generate, not before or after
    print(f"\nengine death detected {out['ended_at'] - seen['killed_at']:.2f} s after the SIGKILL")

    # the backend released the dead engine: nothing of it is left running (its worker child exits too)
    assert vllm_offline._engine is None
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in seen["family"]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in seen["family"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes of the dead engine still running: {alive}"

    # what infer_tier does on failure before its retry; then the next batch starts a fresh engine and answers
    shutdown_engine()
    reqs = [Request(row_id=f"n{i}", prompt=f"Question {i}?", system=None, max_tokens=8) for i in range(20)]
    again = run_with_limit(lambda: VLLMBackend(tier).complete(reqs), HANG_LIMIT_S * 2)
    assert "result" in again, again
    result = again["result"]
    assert result.details["engine_start_s"] > 0
    assert [c.row_id for c in result.completions] == [r.row_id for r in reqs]
    assert all(c.ok and c.output_tokens > 0 for c in result.completions)
    assert engine_core_pid(vllm_offline._engine) != seen["pid"]


def test_an_engine_that_died_between_batches_is_replaced_not_reused(tier):
    llm, _ = acquire_engine(tier)
    (proc,) = vllm_offline._engine_processes(llm)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)  # dead while idle, between two batches
    # vLLM's own engine monitor may reap the process first, which leaves this handle's exit code unset (its
    # waitpid then finds no child): the engine is dead either way, and that is what the test needs
    assert proc.exitcode == -signal.SIGKILL or not _running(proc.pid)
    reqs = [Request(row_id=f"n{i}", prompt=f"Question {i}?", system=None, max_tokens=8) for i in range(5)]
    out = run_with_limit(lambda: VLLMBackend(tier).complete(reqs), HANG_LIMIT_S * 2)
    assert "result" in out, out
    assert out["result"].details["engine_start_s"] > 0
    assert all(c.ok and c.output_tokens == 8 for c in out["result"].completions)
    shutdown_engine()


def _sleep_forever() -> None:
    time.sleep(600)


def test_the_exit_code_is_read_even_when_another_thread_reaps_the_process_first():
    """vLLM's liveness monitor reaps the dead EngineCore on the same handle; the loser of that race sees ECHILD and a
    None exit code until the winner stores it. This replays the interleaving with a real killed child: the 'monitor'
    reaps it, then stores the code 0.3 s later (a thread preempted between waitpid and the store)."""
    import multiprocessing
    from types import SimpleNamespace

    proc = multiprocessing.get_context("spawn").Process(target=_sleep_forever, daemon=True)
    proc.start()
    os.kill(proc.pid, signal.SIGKILL)
    _, status = os.waitpid(proc.pid, 0)  # the other reaper wins
    assert proc.exitcode is None  # what the loser reads at first

    def store_later() -> None:
        time.sleep(0.3)
        proc._popen.returncode = os.waitstatus_to_exitcode(status)

    threading.Thread(target=store_later, daemon=True).start()
    manager = SimpleNamespace(processes=[proc])
    llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(
        resources=SimpleNamespace(engine_manager=manager))))
    assert vllm_offline._exit_codes(llm, wait_s=2.0) == [-signal.SIGKILL]

"""The warm-engine scope of a drop-box pass (models/backends/vllm_offline.py engines_kept_warm); no engine."""

from __future__ import annotations

from models.backends import vllm_offline as vo


class _FakeEngine:
    """Stands in for vLLM's LLM: alive until shut down."""

    def __init__(self) -> None:
        self.shut = False
        self.llm_engine = self
        self.engine_core = self
        self.resources = self
        self.engine_dead = False

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut = True


def test_a_pass_keeps_the_engine_warm_until_it_ends(monkeypatch):
    engine = _FakeEngine()
    monkeypatch.setattr(vo, "_engine", engine)
    monkeypatch.setattr(vo, "_engine_key", ("k",))
    with vo.engines_kept_warm():
        vo.shutdown_engine()  # a run's release after its last self-hosted tier: kept for the next run
        assert vo._engine is engine and not engine.shut
        with vo.engines_kept_warm():  # nested scopes release only at the outermost end
            pass
        assert vo._engine is engine
    assert vo._engine is None and engine.shut  # released when the pass ends
    dead = _FakeEngine()
    dead.engine_dead = True
    monkeypatch.setattr(vo, "_engine", dead)
    with vo.engines_kept_warm():
        vo.shutdown_engine()  # a dead engine is never kept
        assert vo._engine is None

"""The loopback server's own bookkeeping: what it counts per window and per minute."""

from tests.support.openai_server import OpenAICompatServer, Received


def record(at, tokens, endpoint="chat"):
    return Received(at, "m", 200, tokens, 0, {}, endpoint=endpoint)


def test_window_peaks_count_arrivals_in_half_open_sliding_windows():
    srv = OpenAICompatServer()
    srv._srv.received.extend([record(0.0, 5), record(0.5, 5), record(1.0, 7), record(1.2, 1), record(9.0, 100, "batch")])
    srv._srv.server_close()
    # [0, 1) holds 2 requests; [0.5, 1.5) holds 3 (13 tokens); batch rows are counted apart
    assert srv.max_in_window(1.0).requests == 3 and srv.max_in_window(1.0).tokens == 13
    assert srv.max_in_window(0.5).requests == 2
    assert srv.max_in_window(60, endpoint="batch").tokens == 100
    assert {k: v.requests for k, v in srv.per_minute().items()} == {0: 4}


def test_chat_and_model_routes_still_answer(openai_server):
    import httpx

    r = httpx.post(f"{openai_server.base_url}/chat/completions",
                   json={"model": "premium-test", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "answer to: hello there"
    assert httpx.get(f"{openai_server.base_url}/models").json()["data"][0]["id"] == "premium-test"
    assert [x.endpoint for x in openai_server.received] == ["chat"]


def test_a_responder_scripts_free_text_answers_and_failures():
    import httpx

    def respond(messages, model):
        text = messages[-1]["content"]
        return 503 if "fail" in text else "ACCEPTABLE" if "judge" in text else None

    with OpenAICompatServer(model="judge-test", responder=respond) as srv:
        def ask(text):
            return httpx.post(f"{srv.base_url}/chat/completions", json={
                "model": "judge-test", "max_tokens": 4, "messages": [{"role": "user", "content": text}]})
        judged, failed, plain = ask("judge this"), ask("fail this"), ask("hello there")
        assert judged.json()["choices"][0]["message"]["content"] == "ACCEPTABLE"
        assert failed.status_code == 503
        assert plain.json()["choices"][0]["message"]["content"] == "answer to: hello there"  # the default
        assert [r.status for r in srv.received] == [200, 503, 200]

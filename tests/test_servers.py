"""The servers people really run differ from OpenAI; kvchat gets an answer
(and its facts) from each of them."""

from __future__ import annotations

import json

import pytest


def facts(kvchat) -> dict[str, str]:
    return {f["key"]: f["value"] for f in json.loads(kvchat("facts", "--json").stdout)}


@pytest.mark.parametrize("status", [400, 500])
def test_a_server_that_refuses_json_schema_still_yields_facts(model, kvchat, status):
    model.reject_json_schema = True
    model.json_schema_status = status
    model.queue_json_reply('{"facts": [{"key": "user.shell", "value": "zsh"}], "forget": []}')
    assert kvchat("ask", "I work in zsh").exit_code == 0
    assert facts(kvchat) == {"user.shell": "zsh"}


def test_a_server_without_any_json_mode_gets_plain_text_extraction(model, kvchat):
    model.reject_response_format = True
    model.queue_answer("Sure.")
    model.queue_answer('Here you go: {"facts": [{"key": "user.os", "value": "Arch"}], "forget": []}')
    assert kvchat("ask", "I run Arch, by the way").exit_code == 0
    assert facts(kvchat) == {"user.os": "Arch"}


def test_a_server_that_refuses_max_completion_tokens_for_openai_urls_is_retried(model, kvchat):
    model.reject_max_tokens = True
    done = kvchat("ask", "hi", "--no-extract")
    assert done.exit_code == 0 and done.stdout == "echo: hi\n"
    sent = [("max_tokens" in b, "max_completion_tokens" in b) for b in model.chat_requests]
    assert sent == [(True, False), (False, True)]


def test_a_server_that_refuses_stream_options_is_retried_without(model, kvchat):
    model.reject_stream_options = True
    done = kvchat("ask", "hi", "--no-extract", "--json")
    assert json.loads(done.stdout)["answer"] == "echo: hi"


def test_a_slow_one_at_a_time_server_is_waited_for(model, kvchat, monkeypatch):
    model.serial = True
    model.delay = 1.0
    monkeypatch.setenv("KVCHAT_TIMEOUT", "10")
    done = kvchat("ask", "take your time", "--no-extract")
    assert done.exit_code == 0 and done.stdout == "echo: take your time\n"


def test_a_timeout_is_one_clear_line_and_keeps_the_question(model, kvchat, monkeypatch, store):
    model.delay = 3.0
    monkeypatch.setenv("KVCHAT_TIMEOUT", "0.5")
    done = kvchat("ask", "too slow", "--no-extract")
    assert done.exit_code == 1
    assert "timed out" in done.stderr or "timeout" in done.stderr
    assert done.stderr.count("\n") == 1
    assert store.history(store.session("default").id)[0].status == "unanswered"


def test_a_bad_timeout_setting_is_refused(model, kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_TIMEOUT", "soon")
    done = kvchat("ask", "hi")
    assert done.exit_code == 1 and "KVCHAT_TIMEOUT" in done.stderr


def test_a_wrong_key_is_reported_without_printing_it(model, kvchat):
    model.require_api_key = "sk-the-right-key-000000000000"
    done = kvchat("ask", "hi", "--no-extract")
    assert done.exit_code == 1
    assert "API key" in done.stderr
    from conftest import TEST_KEY

    assert TEST_KEY not in done.stderr


def test_an_unknown_model_names_the_model(model, kvchat):
    model.reject_unknown_models = True
    done = kvchat("ask", "hi", "-m", "no-such-model", "--no-extract")
    assert done.exit_code == 1 and "no-such-model" in done.stderr


def test_a_refused_connection_names_the_server(kvchat, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    done = kvchat("ask", "anyone there?", "--no-extract")
    assert done.exit_code == 1 and f"127.0.0.1:{port}" in done.stderr

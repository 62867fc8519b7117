"""`kvchat models`: what the configured server offers."""

from __future__ import annotations

import json

from conftest import TEST_KEY


def test_models_lists_what_the_server_offers_sorted(kvchat, model):
    model.models = ["zeta-coder", "alpha-chat", "gpt-4o-mini"]
    done = kvchat("models")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.splitlines() == ["alpha-chat", "gpt-4o-mini", "zeta-coder"]
    listed = json.loads(kvchat("models", "--json").stdout)
    assert listed == [
        {"id": "alpha-chat", "default": False},
        {"id": "gpt-4o-mini", "default": True},
        {"id": "zeta-coder", "default": False},
    ]


def test_a_server_without_a_model_list_or_with_a_bad_key_says_so_in_one_line(kvchat, model, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", model.base_url.removesuffix("/v1"))  # a common mistake
    done = kvchat("models")
    assert done.exit_code == 1 and "does not list its models" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("OPENAI_BASE_URL", model.base_url)
    model.require_api_key = "another-key-0123456789abcdef"
    done = kvchat("models")
    assert done.exit_code == 1 and "rejected the API key" in done.stderr
    assert TEST_KEY not in done.stderr


def test_models_known_shows_the_table_without_a_server(kvchat):
    from kvchat.tokens import KNOWN_MODELS

    done = kvchat("models", "--known")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(KNOWN_MODELS)
    assert lines[0].split("\t") == ["gpt-5", "400000", "o200k_base"]  # piped: tab-separated
    assert ["gpt-4", "8192", "cl100k_base"] in [line.split("\t") for line in lines]
    # The same shape as `kvchat models --json`: a list of objects named by `id`.
    listed = json.loads(kvchat("models", "--known", "--json").stdout)
    assert [entry["id"] for entry in listed] == list(KNOWN_MODELS)
    assert {"id": "gpt-4o", "context_tokens": 128000, "encoding": "o200k_base"} in listed


UNKNOWN_CONTEXT = (
    "kvchat: warning: kvchat does not know the context window of 'llama3' and assumes 8192 tokens; "
    "give it with --context-tokens (or KVCHAT_CONTEXT_TOKENS, or context_tokens in the config file)\n"
)


def test_an_unknown_model_warns_that_the_default_window_applies(kvchat, model, monkeypatch):
    monkeypatch.setenv("KVCHAT_MODEL", "llama3")
    done = kvchat("ask", "hello")
    assert done.exit_code == 0 and done.stderr == UNKNOWN_CONTEXT
    # Said once per run: a chat of several questions says it once.
    done = kvchat("chat", input="one\ntwo\n")
    assert done.exit_code == 0 and done.stderr.count("does not know the context window") == 1
    # Not when the user gave the window, nor for a model kvchat knows.
    assert "warning" not in kvchat("ask", "hello", "--context-tokens", "32768").stderr
    monkeypatch.setenv("KVCHAT_CONTEXT_TOKENS", "32768")
    assert "warning" not in kvchat("ask", "hello").stderr
    monkeypatch.delenv("KVCHAT_CONTEXT_TOKENS")
    assert "warning" not in kvchat("ask", "hello", "--model", "gpt-4o-mini").stderr

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

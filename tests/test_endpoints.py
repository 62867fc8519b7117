"""Named endpoints: `kvchat endpoints add local --base-url URL`, then
`--endpoint local` (or KVCHAT_ENDPOINT, the session, the config file) sends
kvchat there, with that endpoint's model and key. OPENAI_BASE_URL still wins;
a key goes only to the server it was given for."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_KEY
from kvchat.config import ConfigError, resolve

ENDPOINT_KEY = "sk-endpoint-" + "Pq7rSt" * 5
REMOTE = "https://llm.example.com/v1"  # never reached: the tests fail before any request


def add(kvchat, *args: str):
    done = kvchat("endpoints", "add", *args)
    assert done.exit_code == 0, done.stderr
    return done


@pytest.fixture
def local(kvchat, model, monkeypatch):
    """An endpoint "local" at the fake server, which kvchat reaches through it alone."""
    add(kvchat, "local", "--base-url", model.base_url, "--model", "fake-mini")
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("KVCHAT_MODEL")
    return model


def test_add_list_and_remove(kvchat, home):
    done = add(kvchat, "local", "--base-url", "http://localhost:11434/v1", "--model", "llama3")
    assert done.stderr == "Endpoint 'local': http://localhost:11434/v1; use it with --endpoint local.\n"
    add(kvchat, "groq", "--base-url", "https://api.groq.com/openai/v1", "--key-env", "GROQ_API_KEY")
    assert kvchat("endpoints", "list").stdout == (
        "groq\thttps://api.groq.com/openai/v1\t-\tkey: env GROQ_API_KEY\n"
        "local\thttp://localhost:11434/v1\tllama3\tkey: none needed\n"
    )
    assert json.loads(kvchat("endpoints", "list", "--json").stdout) == [
        {"name": "groq", "base_url": "https://api.groq.com/openai/v1", "model": None,
         "key_env": "GROQ_API_KEY", "key_stored": False},
        {"name": "local", "base_url": "http://localhost:11434/v1", "model": "llama3",
         "key_env": None, "key_stored": False},
    ]
    # Kept in the config directory, as JSON kvchat writes.
    assert json.loads((home / "endpoints.json").read_text())["local"] == {
        "base_url": "http://localhost:11434/v1", "model": "llama3",
    }
    removed = kvchat("endpoints", "remove", "groq")
    assert removed.exit_code == 0 and removed.stderr == "Removed endpoint 'groq'.\n"
    assert [e["name"] for e in json.loads(kvchat("endpoints", "list", "--json").stdout)] == ["local"]


def test_removing_an_endpoint_removes_its_key(kvchat, home):
    add(kvchat, "work", "--base-url", REMOTE)
    kvchat("keys", "set", "--endpoint", "work", input=ENDPOINT_KEY)
    assert kvchat("endpoints", "list").stdout == f"work\t{REMOTE}\t-\tkey: stored\n"
    assert kvchat("endpoints", "remove", "work").stderr == "Removed endpoint 'work' and its stored key.\n"
    assert not (home / "keys" / "work").exists()


def test_nothing_listed_yet(kvchat):
    done = kvchat("endpoints", "list")
    assert done.stdout == "" and "kvchat endpoints add NAME --base-url URL" in done.stderr
    assert kvchat("endpoints", "list", "--json").stdout == "[]\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["default", "--base-url", REMOTE], "'default' is not an endpoint name: it means no endpoint"),
        (["../x", "--base-url", REMOTE], "bad endpoint name '../x'"),
        (["x", "--base-url", "localhost:11434"], "the base URL must be an http:// or https:// URL with a host"),
        (["x", "--base-url", "http://:80/v1"], "the base URL must be an http:// or https:// URL with a host"),
        (["x", "--base-url", "http://host:port/v1"], "the base URL must be an http:// or https:// URL with a host"),
        (["x", "--base-url", "https://me:hunter2@llm.example.com/v1"], "the base URL holds a password"),
        (["x", "--base-url", "https://me:hunter2@llm.example.com:99x/v1"], "the base URL must be an http:// or"),
        (["x", "--base-url", "llm.example.com/v1?key=hunter2"], "the base URL must be an http:// or https://"),
        (["none", "--base-url", REMOTE], "'none' is not an endpoint name: it means no endpoint"),
        (["x", "--base-url", REMOTE, "--key-env", "MY KEY"], "--key-env must name an environment variable"),
        (["x", "--base-url", REMOTE, "--model", " "], "model must be a non-empty string"),
    ],
)
def test_a_bad_endpoint_is_refused_in_one_line(kvchat, home, args, message):
    done = kvchat("endpoints", "add", *args)
    assert done.exit_code == 1 and done.stderr.startswith(f"kvchat: error: {message}")
    assert done.stderr.count("\n") == 1 and "hunter2" not in done.stderr
    assert not (home / "endpoints.json").exists()


def test_an_existing_name_is_replaced_only_when_asked(kvchat):
    add(kvchat, "local", "--base-url", "http://localhost:11434/v1")
    again = kvchat("endpoints", "add", "local", "--base-url", "http://localhost:8080/v1")
    assert again.exit_code == 1 and "there is already an endpoint 'local' (--replace replaces it)" in again.stderr
    add(kvchat, "local", "--base-url", "http://localhost:8080/v1", "--replace")
    assert kvchat("endpoints", "list").stdout.startswith("local\thttp://localhost:8080/v1\t")


def test_an_unknown_endpoint_is_one_line_listing_the_known_ones(kvchat, model, monkeypatch):
    add(kvchat, "local", "--base-url", model.base_url)
    known = "(the endpoints are: default, local; `kvchat endpoints add NAME --base-url URL` adds one)"
    done = kvchat("models", "--endpoint", "lcoal")
    assert done.exit_code == 1 and done.stderr == f"kvchat: error: flag --endpoint: unknown endpoint 'lcoal' {known}\n"
    monkeypatch.setenv("KVCHAT_ENDPOINT", "gone")
    done = kvchat("ask", "hello")
    assert done.exit_code == 1 and done.stderr == f"kvchat: error: env KVCHAT_ENDPOINT: unknown endpoint 'gone' {known}\n"
    assert kvchat("endpoints", "remove", "gone").stderr == f"kvchat: error: unknown endpoint 'gone' {known}\n"
    assert model.chat_requests == []


def test_a_broken_endpoints_file_is_one_line(kvchat, home, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "endpoints.json").write_text('{"local": {"base_url": 11434}}')
    monkeypatch.setenv("KVCHAT_ENDPOINT", "local")
    done = kvchat("config")
    assert done.exit_code == 1 and done.stderr.startswith(
        f"kvchat: error: env KVCHAT_ENDPOINT: {home / 'endpoints.json'}: endpoint 'local' must be an object"
    )
    (home / "endpoints.json").write_text("{not json")
    done = kvchat("endpoints", "list")
    assert done.exit_code == 1 and "endpoints.json is not valid JSON" in done.stderr


def test_models_endpoint_asks_that_server(kvchat, local):
    local.models = ["qwen-coder", "fake-mini"]
    done = kvchat("models", "--endpoint", "local", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) == [{"id": "fake-mini", "default": True}, {"id": "qwen-coder", "default": False}]
    assert local.requests[-1].path == "/v1/models"


def test_kvchat_endpoint_sends_ask_there_with_its_model(kvchat, local, monkeypatch):
    monkeypatch.setenv("KVCHAT_ENDPOINT", "local")
    done = kvchat("ask", "hello there")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == "echo: hello there\n"
    assert local.chat_requests[-1]["model"] == "fake-mini"
    # A model named on the command line (or by the session, or KVCHAT_MODEL) wins over the endpoint's.
    assert kvchat("ask", "again", "--model", "gpt-4o-mini").exit_code == 0
    assert local.chat_requests[-1]["model"] == "gpt-4o-mini"


def test_an_endpoint_chosen_as_specifically_as_openai_base_url_or_more_wins_over_it(kvchat, local, home, monkeypatch):
    # OPENAI_BASE_URL is often exported for other tools: a kvchat endpoint
    # chosen by flag, session or KVCHAT_ENDPOINT is the more deliberate choice.
    monkeypatch.setenv("OPENAI_BASE_URL", REMOTE)
    monkeypatch.delenv("OPENAI_API_KEY")
    for how in (["--endpoint", "local"], ["-s", "pinned"]):
        kvchat("sessions", "set", "pinned", "--endpoint", "local")
        done = kvchat("ask", "hello", *how)
        assert done.exit_code == 0 and done.stdout == "echo: hello\n", done.stderr
    monkeypatch.setenv("KVCHAT_ENDPOINT", "local")
    assert kvchat("ask", "and again").exit_code == 0
    assert local.chat_requests[-1]["model"] == "fake-mini"
    assert len(local.chat_requests) == 3


def test_an_endpoint_in_the_config_file_gives_way_to_openai_base_url_and_says_so(kvchat, local, home, monkeypatch):
    (home / "config.toml").write_text('endpoint = "local"\n')
    monkeypatch.setenv("OPENAI_BASE_URL", REMOTE)
    monkeypatch.delenv("OPENAI_API_KEY")
    done = kvchat("ask", "hello")
    # The remote server, with no key for it; nor is the endpoint's model asked of it.
    assert done.exit_code == 1 and done.stderr.splitlines() == [
        "kvchat: warning: OPENAI_BASE_URL is set and wins over endpoint 'local'",
        "kvchat: error: no API key: run `kvchat keys set` (or set OPENAI_API_KEY, and OPENAI_BASE_URL "
        "for a server other than OpenAI)",
    ]
    settings = json.loads(kvchat("config", "--json").stdout)
    assert settings["model"] == {"value": "gpt-4o-mini", "source": "default"}
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("KVCHAT_ENDPOINT", "default")  # "default": no endpoint, OpenAI itself
    settings = json.loads(kvchat("config", "--json").stdout)
    assert settings["base_url"] == {"value": None, "source": "default"}
    assert settings["model"] == {"value": "gpt-4o-mini", "source": "default"}
    assert local.chat_requests == []


def test_a_session_can_keep_an_endpoint(kvchat, local, store, monkeypatch):
    # A name, not an address: a session (which an import can bring) picks
    # among the user's own endpoints only.
    store.update_settings("ollama", {"endpoint": "local"})
    done = kvchat("ask", "hello", "--session", "ollama")
    assert done.exit_code == 0, done.stderr
    assert local.chat_requests[-1]["model"] == "fake-mini"
    # Other sessions still go to the default server (OpenAI, for which there is no key here).
    monkeypatch.delenv("OPENAI_API_KEY")
    done = kvchat("ask", "hello")
    assert done.exit_code == 1 and done.stderr.startswith("kvchat: error: no API key: run `kvchat keys set`")


def test_the_endpoint_and_its_model_beat_the_config_file_but_not_the_environment(kvchat, home, monkeypatch):
    add(kvchat, "local", "--base-url", "http://localhost:11434/v1", "--model", "llama3")
    (home / "config.toml").write_text('endpoint = "local"\nmodel = "gpt-4o"\nbase_url = "http://localhost:8080/v1"\n')
    settings = resolve({}, None)
    assert (settings.base_url, settings.source("base_url")) == ("http://localhost:11434/v1", "endpoint 'local'")
    assert (settings.model, settings.source("model")) == ("llama3", "endpoint 'local'")
    assert settings.source("endpoint") == f"config {home / 'config.toml'}"

    monkeypatch.setenv("KVCHAT_MODEL", "qwen")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    settings = resolve({}, None)
    assert (settings.model, settings.source("model")) == ("qwen", "env KVCHAT_MODEL")
    assert (settings.base_url, settings.source("base_url")) == ("http://127.0.0.1:9999/v1", "env OPENAI_BASE_URL")
    assert resolve({"model": "m"}, {"model": "s"}).model == "m"
    assert resolve({}, {"model": "s"}).model == "s"


def test_a_session_naming_a_removed_endpoint_says_where(kvchat, home):
    with pytest.raises(ConfigError, match=r"^session 'work': unknown endpoint 'gone' \(the endpoints are: default;"):
        resolve({}, {"endpoint": "gone"}, "work")


# ---------------------------------------------------------------- keys


def test_the_endpoints_stored_key_is_sent_there_never_openai_api_key(kvchat, local, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("KVCHAT_ENDPOINT", "local")
    # A server on this machine needs no key: it gets a stand-in, not the OpenAI key.
    assert kvchat("ask", "hello").exit_code == 0
    assert local.requests[-1].headers["authorization"] == "Bearer kvchat-local"
    kvchat("keys", "set", "--endpoint", "local", input=ENDPOINT_KEY)
    local.require_api_key = ENDPOINT_KEY
    assert kvchat("ask", "hello").exit_code == 0
    assert local.requests[-1].headers["authorization"] == f"Bearer {ENDPOINT_KEY}"
    assert all(TEST_KEY not in r.headers.get("authorization", "") for r in local.requests)


def test_key_env_names_the_variable_that_holds_the_endpoints_key(kvchat, local, monkeypatch):
    add(kvchat, "local", "--base-url", local.base_url, "--key-env", "LOCAL_LLM_KEY", "--replace")
    kvchat("keys", "set", "--endpoint", "local", input=ENDPOINT_KEY)
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-from-env-" + "Mn4" * 8)
    local.require_api_key = "sk-from-env-" + "Mn4" * 8
    # The variable wins over the stored key, as OPENAI_API_KEY does for the default server.
    assert kvchat("models", "--endpoint", "local").exit_code == 0
    monkeypatch.delenv("LOCAL_LLM_KEY")
    local.require_api_key = ENDPOINT_KEY
    assert kvchat("models", "--endpoint", "local").exit_code == 0


def test_a_remote_endpoint_without_a_key_says_how_to_give_one(kvchat, monkeypatch):
    add(kvchat, "groq", "--base-url", REMOTE, "--key-env", "GROQ_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)  # never sent to another server
    monkeypatch.delenv("GROQ_API_KEY", raising=False)  # the developer's own must not count
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    done = kvchat("models", "--endpoint", "groq")
    assert done.exit_code == 1
    assert done.stderr == (
        "kvchat: error: no API key for endpoint 'groq': run `kvchat keys set --endpoint groq`, or set GROQ_API_KEY\n"
    )


def test_the_endpoint_flag_of_ask_chat_and_recall_sends_them_there(kvchat, local, monkeypatch):
    # KVCHAT_ENDPOINT names no server here: the flag alone decides.
    done = kvchat("ask", "hello there", "--endpoint", "local")
    assert done.exit_code == 0, done.stderr
    assert local.chat_requests[-1]["model"] == "fake-mini"
    done = kvchat("chat", "--endpoint", "local", "--no-extract", input="and again\n")
    assert done.exit_code == 0, done.stderr
    assert local.chat_requests[-1]["messages"][-1]["content"] == "and again"
    done = kvchat("recall", "hello", "--endpoint", "nowhere")
    assert done.exit_code == 1 and done.stderr.startswith("kvchat: error: flag --endpoint: unknown endpoint 'nowhere'")


def test_sessions_set_keeps_an_endpoint_and_refuses_an_unknown_one(kvchat, local, store):
    done = kvchat("sessions", "set", "work", "--endpoint", "local")
    assert done.exit_code == 0, done.stderr
    assert store.session("work").settings == {"endpoint": "local"}
    assert kvchat("ask", "hello", "-s", "work").exit_code == 0
    assert local.chat_requests[-1]["model"] == "fake-mini"
    done = kvchat("sessions", "set", "work", "--endpoint", "nowhere")
    assert done.exit_code == 1 and "unknown endpoint 'nowhere'" in done.stderr
    assert store.session("work").settings == {"endpoint": "local"}

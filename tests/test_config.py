"""Settings: each layer (flag, session, environment, config file, default)
beats the ones below it, every value is checked wherever it was written, and
`kvchat config` shows the values and where they came from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kvchat import budgets, config
from kvchat.config import ConfigError, parse_value, resolve


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch):
    # The developer's own KVCHAT_* variables must not leak into these tests.
    for spec in config.SETTINGS.values():
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)


@pytest.fixture
def config_file(home) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return home / "config.toml"


def test_defaults_with_nothing_set(config_file):
    settings = resolve({}, None)
    assert settings.model == "gpt-4o-mini"
    assert settings.base_url is None
    assert settings.timeout == 600.0
    assert settings.session == "default"
    assert settings.memory == "token"
    assert settings.window == 10
    assert settings.memory_tokens == budgets.MEMORY_TOKENS
    assert settings.summary_tokens == 400
    assert settings.recall_tokens == budgets.RECALL_TOKENS
    assert settings.answer_tokens == budgets.ANSWER_TOKENS
    assert settings.context_tokens is None
    assert settings.facts is True and settings.vector is False
    assert settings.embedding_model == "text-embedding-3-small"
    assert settings.role == "code" and settings.extract == "model"
    assert {item.source for item in settings} == {"default"}
    assert [item.name for item in settings] == list(config.SETTINGS)


def test_session_settings_are_all_but_the_connection_and_the_session_name():
    assert config.SESSION_SETTINGS == set(config.SETTINGS) - {"base_url", "timeout", "session", "user"}
    # An endpoint is only a name for one of the user's own servers, so a
    # session may keep one (its models live there), where it may not keep an address.
    assert "endpoint" in config.SESSION_SETTINGS


def test_each_layer_beats_the_one_below(config_file, monkeypatch):
    config_file.write_text('memory_tokens = 100\nwindow = 3\nrole = "shell"\nmodel = "from-file"\n')
    monkeypatch.setenv("KVCHAT_MEMORY_TOKENS", "200")
    monkeypatch.setenv("KVCHAT_WINDOW", "4")
    monkeypatch.setenv("KVCHAT_ROLE", "reviewer")
    session = {"memory_tokens": 300, "window": 5}
    settings = resolve({"memory_tokens": 400, "model": None}, session, "work")

    assert (settings.memory_tokens, settings.source("memory_tokens")) == (400, "flag --memory-tokens")
    assert (settings.window, settings.source("window")) == (5, "session 'work'")
    assert (settings.role, settings.source("role")) == ("reviewer", "env KVCHAT_ROLE")
    # A flag given as None is a flag not given.
    assert (settings.model, settings.source("model")) == ("from-file", f"config {config_file}")
    assert (settings.recall_tokens, settings.source("recall_tokens")) == (budgets.RECALL_TOKENS, "default")


def test_the_session_cannot_set_the_connection_or_its_own_name(config_file):
    settings = resolve({}, {"base_url": "http://evil.example/v1", "timeout": 1, "session": "x"}, "work")
    assert settings.base_url is None and settings.timeout == 600.0 and settings.session == "default"


def test_unknown_session_keys_are_ignored():
    # A newer kvchat may store settings this one does not know.
    assert resolve({}, {"someday": 1}, "work").source("model") == "default"


def test_a_bad_stored_session_value_names_the_session(config_file):
    with pytest.raises(ConfigError, match=r"^session 'work': window must be an integer >= 1, not 0$"):
        resolve({}, {"window": 0}, "work")


def test_kvchat_config_picks_the_file(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('model = "llama"\ntimeout = 30\n')
    monkeypatch.setenv("KVCHAT_CONFIG", str(elsewhere))
    settings = resolve({}, None)
    assert settings.model == "llama" and settings.source("model") == f"config {elsewhere}"
    assert settings.timeout == 30.0 and isinstance(settings.timeout, float)
    assert config.default_path() == elsewhere


def test_the_default_file_is_in_the_config_directory(home):
    assert config.default_path() == home / "config.toml"


def test_a_missing_file_is_fine(tmp_path):
    assert resolve({}, None, config_path=tmp_path / "none.toml").model == "gpt-4o-mini"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model = ", r"config\.toml is not valid TOML: .*line 1"),
        ("modle = 'x'", r"config\.toml: unknown setting 'modle' \(the settings are: model, base_url"),
        ("window = '3'", r"config\.toml: window must be an integer >= 1, not '3'"),
        ("window = 0", r"config\.toml: window must be an integer >= 1, not 0"),
        ("window = 2.5", r"config\.toml: window must be an integer >= 1, not 2\.5"),
        ("facts = 1", r"config\.toml: facts must be true or false, not 1"),
        ("memory_tokens = true", r"config\.toml: memory_tokens must be an integer >= 0, not True"),
        ("memory = 'vector'", r"config\.toml: memory must be one of token, window, summary, not 'vector'"),
        ("timeout = 0", r"config\.toml: timeout must be a number > 0, not 0\.0"),
        ("timeout = inf", r"config\.toml: timeout must be a number > 0, not inf"),
        ("context_tokens = 100", r"config\.toml: context_tokens must be an integer >= 256 or none, not 100"),
        ("model = ''", r"config\.toml: model must be a non-empty string, not ''"),
        ("[model]\nname = 'x'", r"config\.toml: model must be a non-empty string, not \{'name': 'x'\}"),
    ],
)
def test_file_errors_name_the_file_and_the_key(config_file, text, message):
    config_file.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        resolve({}, None)
    assert str(config_file) in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_is_not_utf8_or_not_a_file(config_file, tmp_path):
    config_file.write_bytes(b'model = "\xff"\n')
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        resolve({}, None)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        resolve({}, None, config_path=tmp_path)


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("KVCHAT_WINDOW", "abc", "KVCHAT_WINDOW must be an integer >= 1, not 'abc'"),
        ("KVCHAT_WINDOW", "1.5", "KVCHAT_WINDOW must be an integer >= 1, not '1.5'"),
        ("KVCHAT_FACTS", "maybe", "KVCHAT_FACTS must be true or false (or yes/no, on/off, 1/0), not 'maybe'"),
        ("KVCHAT_MEMORY", "vector", "KVCHAT_MEMORY must be one of token, window, summary, not 'vector'"),
        ("KVCHAT_TIMEOUT", "soon", "KVCHAT_TIMEOUT must be a number > 0, not 'soon'"),
        ("KVCHAT_TIMEOUT", "nan", "KVCHAT_TIMEOUT must be a number > 0, not nan"),
        ("KVCHAT_ANSWER_TOKENS", "8", "KVCHAT_ANSWER_TOKENS must be an integer >= 16, not 8"),
        ("KVCHAT_CONTEXT_TOKENS", "lots", "KVCHAT_CONTEXT_TOKENS must be an integer >= 256 or none, not 'lots'"),
        ("KVCHAT_EXTRACT", "all", "KVCHAT_EXTRACT must be one of model, rules, off, not 'all'"),
    ],
)
def test_environment_errors_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        resolve({}, None)
    assert str(caught.value) == message


def test_none_in_the_config_file_unsets_an_optional_setting_as_in_the_environment(config_file):
    config_file.write_text('context_tokens = "none"\nbase_url = "None"\n')
    settings = resolve({}, None)
    assert settings.context_tokens is None and settings.base_url is None


def test_environment_values_are_parsed(monkeypatch):
    monkeypatch.setenv("KVCHAT_FACTS", "off")
    monkeypatch.setenv("KVCHAT_VECTOR", "Yes")
    monkeypatch.setenv("KVCHAT_CONTEXT_TOKENS", "none")
    monkeypatch.setenv("KVCHAT_TIMEOUT", " 2.5 ")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("KVCHAT_MODEL", "")  # empty: unset, as Click treats it
    settings = resolve({}, None)
    assert settings.facts is False and settings.vector is True
    assert settings.context_tokens is None and settings.source("context_tokens") == "env KVCHAT_CONTEXT_TOKENS"
    assert settings.timeout == 2.5
    assert settings.base_url == "http://localhost:11434/v1" and settings.source("base_url") == "env OPENAI_BASE_URL"
    assert settings.source("model") == "default"


@pytest.mark.parametrize("text", ["true", "TRUE", "yes", "1", "on", " On "])
def test_parse_true(text):
    assert parse_value("facts", text) is True


@pytest.mark.parametrize("text", ["false", "no", "0", "off", "OFF"])
def test_parse_false(text):
    assert parse_value("vector", text) is False


def test_parse_values():
    assert parse_value("window", "7") == 7
    assert parse_value("context_tokens", "none") is None
    assert parse_value("context_tokens", "8192") == 8192
    assert parse_value("timeout", "10") == 10.0
    assert parse_value("memory", "summary") == "summary"
    assert parse_value("role", " reviewer ") == "reviewer"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("window", "none", "window must be an integer >= 1, not 'none'"),
        ("memory_tokens", "-1", "memory_tokens must be an integer >= 0, not -1"),
        ("facts", "2", "facts must be true or false (or yes/no, on/off, 1/0), not '2'"),
        ("model", "  ", "model must be a non-empty string, not ''"),
        ("colour", "red", "unknown setting 'colour' (the settings are: model, base_url, timeout, "),
    ],
)
def test_parse_errors(name, text, message):
    with pytest.raises(ConfigError) as caught:
        parse_value(name, text)
    assert str(caught.value).startswith(message)


def test_check():
    assert config.check("timeout", 5) == 5.0
    assert config.check("model", " m ") == "m"
    assert config.check("context_tokens", None) is None
    for name, value in [("window", True), ("facts", 1), ("model", None), ("memory", "Token")]:
        with pytest.raises(ConfigError):
            config.check(name, value)


def test_a_bad_flag_names_the_flag():
    with pytest.raises(ConfigError, match=r"^--memory-tokens must be an integer >= 0, not -5$"):
        resolve({"memory_tokens": -5}, None)
    with pytest.raises(ConfigError, match="unknown setting 'memory_size'"):
        resolve({"memory_size": 5}, None)


# -- kvchat config -------------------------------------------------------------


def test_kvchat_config_lists_every_setting_and_its_source(kvchat, config_file, monkeypatch):
    config_file.write_text('model = "qwen2.5-coder"\n')
    monkeypatch.setenv("KVCHAT_FACTS", "no")
    done = kvchat("config")
    assert done.exit_code == 0
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    # Every setting, then the API key the calls would use (masked; here there is none).
    assert [row[0] for row in rows] == [*config.SETTINGS, "api_key"]
    table = {name: (value, source) for name, value, source in rows}
    assert table["model"] == ("qwen2.5-coder", f"config {config_file}")
    assert table["facts"] == ("false", "env KVCHAT_FACTS")
    assert table["context_tokens"] == ("none", "default")
    assert table["timeout"] == ("600", "default")


def test_kvchat_config_json(kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_WINDOW", "4")
    data = json.loads(kvchat("config", "--json").stdout)
    assert list(data) == [*config.SETTINGS, "api_key"]
    assert data["window"] == {"value": 4, "source": "env KVCHAT_WINDOW"}
    assert data["base_url"] == {"value": None, "source": "default"}


def test_kvchat_config_with_a_session(kvchat, store, monkeypatch):
    store.update_settings("work", {"memory": "summary", "window": 20})
    monkeypatch.setenv("KVCHAT_MEMORY", "window")
    data = json.loads(kvchat("config", "--session", "work", "--json").stdout)
    assert data["memory"] == {"value": "summary", "source": "session 'work'"}
    assert data["window"] == {"value": 20, "source": "session 'work'"}
    assert data["session"] == {"value": "work", "source": "flag --session"}
    # Without --session, the session's own settings are not in play.
    assert json.loads(kvchat("config", "--json").stdout)["memory"]["source"] == "env KVCHAT_MEMORY"


def test_kvchat_config_for_a_missing_session(kvchat):
    done = kvchat("config", "--session", "nope")
    assert done.exit_code == 1
    assert done.stderr == "kvchat: error: no session named 'nope' or starting with it (see `kvchat sessions`)\n"


def test_kvchat_config_with_a_broken_file_is_one_line(kvchat, config_file):
    config_file.write_text("window = -1\n")
    done = kvchat("config")
    assert done.exit_code == 1
    assert done.stderr == f"kvchat: error: {config_file}: window must be an integer >= 1, not -1\n"


def test_kvchat_config_path(kvchat, home, tmp_path, monkeypatch, config_file):
    config_file.write_text("broken = \n")  # the path is shown even when the file is broken
    assert kvchat("config", "path").stdout == f"{home / 'config.toml'}\n"
    monkeypatch.setenv("KVCHAT_CONFIG", str(tmp_path / "my.toml"))
    assert kvchat("config", "path").stdout == f"{tmp_path / 'my.toml'}\n"


def test_kvchat_config_on_a_terminal(kvchat_terminal, monkeypatch, tmp_path):
    # A short path, so that the table fits the terminal's 120 columns unwrapped.
    path = tmp_path / "c.toml"
    path.write_text('role = "[b]x"\n')  # a value is text, never Rich markup
    monkeypatch.setenv("KVCHAT_CONFIG", str(path))
    done = kvchat_terminal("config")
    assert done.exit_code == 0
    screen = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert re.search(rf"^ *role +\[b\]x +config {re.escape(str(path))} *\r?$", screen, re.M), screen
    assert f"config file: {path}" in screen


def test_ask_uses_the_server_and_timeout_from_the_config_file(model, kvchat, config_file, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL")
    config_file.write_text(f'base_url = "{model.base_url}"\ntimeout = 30\n')
    done = kvchat("ask", "hello", "--no-extract")
    assert done.exit_code == 0 and done.stdout == "echo: hello\n"


def test_the_user_comes_from_the_flag_the_environment_the_file_or_the_login_name(config_file, monkeypatch):
    from kvchat.users import default_user

    assert config.resolve_one("user", None) == config.Setting("user", default_user(), "default")
    config_file.write_text('user = "dana"\n')
    assert config.resolve_one("user", None) == config.Setting("user", "dana", f"config {config_file}")
    monkeypatch.setenv("KVCHAT_USER", "erin")
    assert config.resolve_one("user", None) == config.Setting("user", "erin", "env KVCHAT_USER")
    assert config.resolve_one("user", "fay") == config.Setting("user", "fay", "flag --user")


def test_opening_the_store_is_not_stopped_by_an_unknown_endpoint(kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_ENDPOINT", "nowhere")
    assert kvchat("facts", "set", "user.editor", "helix").exit_code == 0
    assert "helix" in kvchat("facts").stdout

"""`kvchat keys`: API keys live in owner-only files in the config directory,
never in the database, in `--json` output or in an error message; the
environment wins over the file, and a key file others may read is refused,
as ssh refuses such a private key."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import TEST_KEY, Terminal

# Assembled at run time, so no literal here looks like a real key to scanners.
STORED_KEY = "sk-stored-" + "Qw3rTy" * 5
OTHER_KEY = "sk-other-" + "Zx9cVb" * 5


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def database_bytes(home) -> bytes:
    """The database file and its write-ahead log, as stored on disk."""
    return b"".join(path.read_bytes() for path in home.glob("kvchat.db*"))


def store_key(kvchat, key: str = STORED_KEY, *args: str):
    done = kvchat("keys", "set", *args, input=key + "\n")
    assert done.exit_code == 0, done.stderr
    return done


def test_a_piped_key_is_stored_owner_only_in_the_config_directory(kvchat, home):
    done = store_key(kvchat)
    path = home / "keys" / "default"
    assert path.read_text() == STORED_KEY + "\n"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert STORED_KEY not in done.stderr and STORED_KEY[-4:] in done.stderr
    assert kvchat("keys", "path").stdout == f"{path}\n"
    # Nothing but the key file: no database, no temporary file left behind.
    assert sorted(p.name for p in home.iterdir()) == ["cache", "keys"]
    assert os.listdir(path.parent) == ["default"]


def test_the_key_file_is_owner_only_whatever_the_umask(kvchat, home):
    previous = os.umask(0)
    try:
        store_key(kvchat)
    finally:
        os.umask(previous)
    assert mode(home / "keys" / "default") == 0o600 and mode(home / "keys") == 0o700


def test_a_new_key_replaces_the_file_rather_than_rewriting_it(kvchat, home):
    # A replaced file is a new one, written aside and renamed: a reader never
    # sees half a key, and the loose mode of the old file is not inherited.
    store_key(kvchat, OTHER_KEY)
    path = home / "keys" / "default"
    path.chmod(0o644)
    (home / "keys").chmod(0o755)
    before = os.stat(path).st_ino
    store_key(kvchat)
    assert path.read_text() == STORED_KEY + "\n" and os.stat(path).st_ino != before
    assert mode(path) == 0o600 and mode(home / "keys") == 0o700


def test_list_shows_whose_keys_are_stored_masked(kvchat, home):
    kvchat("endpoints", "add", "work", "--base-url", "https://llm.example.com/v1")
    assert kvchat("keys", "list").stdout == ""
    store_key(kvchat)
    store_key(kvchat, OTHER_KEY, "--endpoint", "work")
    listed = kvchat("keys", "list")
    assert listed.stdout == f"default\t****{STORED_KEY[-4:]}\nwork\t****{OTHER_KEY[-4:]}\n"
    as_json = kvchat("keys", "list", "--json").stdout
    assert json.loads(as_json) == [
        {"endpoint": "default", "key": f"****{STORED_KEY[-4:]}", "path": str(home / "keys" / "default"), "problem": None},
        {"endpoint": "work", "key": f"****{OTHER_KEY[-4:]}", "path": str(home / "keys" / "work"), "problem": None},
    ]
    assert STORED_KEY not in as_json + listed.stdout and OTHER_KEY not in as_json + listed.stdout
    assert kvchat("keys", "path", "--endpoint", "work").stdout == f"{home / 'keys' / 'work'}\n"


def test_a_short_key_is_masked_entirely(kvchat):
    store_key(kvchat, "ollama")
    assert kvchat("keys", "list").stdout == "default\t****\n"


def test_remove_deletes_the_file(kvchat, home):
    store_key(kvchat)
    assert kvchat("keys", "remove").exit_code == 0
    assert not (home / "keys" / "default").exists()
    again = kvchat("keys", "remove")
    assert again.exit_code == 1 and again.stderr.startswith("kvchat: error: no key is stored for the default server")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the API key is empty"),
        ("  \n", "the API key is empty"),
        (f"{STORED_KEY} {OTHER_KEY}", "the API key holds spaces, line breaks or control characters: give the key alone"),
        (f"{STORED_KEY}\n{OTHER_KEY}\n", "the API key holds spaces, line breaks or control characters: give the key alone"),
        ("k" * 5000, "the API key is longer than 4096 characters: is that the right text?"),
    ],
)
def test_a_bad_key_is_refused_in_one_line_without_showing_it(kvchat, home, text, message):
    done = kvchat("keys", "set", input=text)
    assert done.exit_code == 1 and done.stderr == f"kvchat: error: {message}\n"
    assert STORED_KEY not in done.stderr and not (home / "keys" / "default").exists()


def test_an_endless_input_is_refused_after_reading_only_as_much_as_a_key_can_be(home):
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run([sys.executable, "-m", "kvchat", "keys", "set"], stdin=endless,
                              capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == b"kvchat: error: the API key is longer than 4096 characters: is that the right text?\n"


def test_a_key_for_an_unknown_endpoint_is_refused_before_it_is_read(kvchat, home):
    done = kvchat("keys", "set", "--endpoint", "nope", input=STORED_KEY)
    assert done.exit_code == 1
    assert done.stderr == (
        "kvchat: error: unknown endpoint 'nope' (the endpoints are: default; "
        "`kvchat endpoints add NAME --base-url URL` adds one)\n"
    )
    assert not (home / "keys").exists()


def test_a_key_name_cannot_leave_the_keys_directory(kvchat, home):
    done = kvchat("keys", "remove", "--endpoint", "../config.toml")
    assert done.exit_code == 1 and done.stderr.startswith("kvchat: error: bad endpoint name '../config.toml'")


def test_the_stored_key_is_sent_and_the_environment_wins(kvchat, model, monkeypatch):
    store_key(kvchat)
    monkeypatch.delenv("OPENAI_API_KEY")
    model.require_api_key = STORED_KEY
    assert kvchat("ask", "hello").exit_code == 0
    assert model.requests[-1].headers["authorization"] == f"Bearer {STORED_KEY}"

    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    model.require_api_key = TEST_KEY
    assert kvchat("ask", "hello again").exit_code == 0
    assert model.requests[-1].headers["authorization"] == f"Bearer {TEST_KEY}"
    # Setting a key the environment overrides says so.
    note = store_key(kvchat).stderr
    assert "kvchat: note: OPENAI_API_KEY is set, and wins over" in note


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused_like_ssh_does(kvchat, model, monkeypatch, home, loose):
    store_key(kvchat)
    path = home / "keys" / "default"
    path.chmod(loose)
    monkeypatch.delenv("OPENAI_API_KEY")
    done = kvchat("ask", "hello")
    assert done.exit_code == 1
    assert done.stderr == (
        f"kvchat: error: the key file {path} may be read by others (mode {loose:04o}); run `chmod 600 {path}`\n"
    )
    assert model.chat_requests == [] and STORED_KEY not in done.stderr
    listed = kvchat("keys", "list", "--json").stdout
    assert json.loads(listed)[0]["problem"].endswith(f"run `chmod 600 {path}`") and STORED_KEY not in listed
    path.chmod(0o600)
    assert kvchat("ask", "hello").exit_code == 0
    # The environment's key wins, so the loose file is not even read.
    path.chmod(loose)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    assert kvchat("ask", "hello").exit_code == 0


def test_no_key_anywhere_for_a_remote_server_says_how_to_store_one(kvchat, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example.com/v1")
    done = kvchat("ask", "hello")
    assert done.exit_code == 1
    assert done.stderr == (
        "kvchat: error: no API key: run `kvchat keys set` (or set OPENAI_API_KEY, and OPENAI_BASE_URL "
        "for a server other than OpenAI)\n"
    )


def test_stored_keys_never_reach_the_database_or_the_output(kvchat, model, monkeypatch, home):
    kvchat("endpoints", "add", "work", "--base-url", "https://llm.example.com/v1")
    store_key(kvchat)
    store_key(kvchat, OTHER_KEY, "--endpoint", "work")
    monkeypatch.delenv("OPENAI_API_KEY")
    # Both keys, the one in use and the other endpoint's, are blanked from
    # what is stored and sent, whatever their format.
    done = kvchat("ask", f"why is {STORED_KEY} refused, and {OTHER_KEY}?", "--json", "--extract", "rules")
    assert done.exit_code == 0, done.stderr
    sent = json.dumps(model.chat_requests)
    assert STORED_KEY not in sent and OTHER_KEY not in sent
    printed = done.stdout + done.stderr + kvchat("history", "--json").stdout + kvchat("config", "--json").stdout
    assert STORED_KEY not in printed and OTHER_KEY not in printed
    data = database_bytes(home)
    assert STORED_KEY.encode() not in data and OTHER_KEY.encode() not in data


def test_at_a_terminal_the_key_is_typed_hidden(home):
    with Terminal("keys", "set") as term:
        # Click shows the prompt, then getpass turns echo off (dropping what
        # was typed so far) and writes the final space: type after that.
        term.expect(b"(input hidden): ")
        term.keys(STORED_KEY + "\r")
        status = term.wait()
    assert status == 0, term.text
    assert "API key (input hidden)" in term.text and STORED_KEY not in term.text
    assert (home / "keys" / "default").read_text() == STORED_KEY + "\n"


def test_a_rejected_stored_key_is_not_repeated_in_the_error(kvchat, model, monkeypatch, home):
    store_key(kvchat)
    monkeypatch.delenv("OPENAI_API_KEY")
    model.require_api_key = OTHER_KEY  # the server echoes the key it was sent, as OpenAI's does
    done = kvchat("ask", "hello")
    assert done.exit_code == 1 and "rejected the API key" in done.stderr
    assert STORED_KEY not in done.stderr
    assert STORED_KEY.encode() not in database_bytes(home)


def test_config_says_which_key_calls_use_and_from_where_never_showing_it(kvchat, home, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = json.loads(kvchat("config", "--json").stdout)
    assert config["api_key"] == {"value": None, "source": "none: `kvchat keys set` stores one"}
    assert kvchat("keys", "set", input=STORED_KEY + "\n").exit_code == 0
    config = json.loads(kvchat("config", "--json").stdout)
    assert config["api_key"] == {"value": "****" + STORED_KEY[-4:], "source": f"key file {home / 'keys' / 'default'}"}
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_KEY)
    shown = kvchat("config").stdout
    assert f"api_key\t****{OTHER_KEY[-4:]}\tenv OPENAI_API_KEY" in shown
    assert STORED_KEY not in shown and OTHER_KEY not in shown

"""The command line itself: usage errors, version, one-line failures."""

from __future__ import annotations

import json

import pytest


def test_a_usage_error_shows_usage_not_an_internal_error(kvchat):
    done = kvchat("recall", "--bogus")
    assert done.exit_code == 2
    assert "No such option: --bogus" in done.stderr and "internal error" not in done.stderr


def test_an_out_of_range_option_is_a_usage_error(kvchat):
    done = kvchat("recall", "x", "--limit", "0")
    assert done.exit_code == 2 and "--limit" in done.stderr


def test_version(kvchat):
    from kvchat import __version__

    done = kvchat("--version")
    assert done.exit_code == 0 and done.stdout == f"kvchat {__version__}\n"


def test_an_empty_question_is_refused(model, kvchat):
    done = kvchat("ask", "   ", "--no-extract")
    assert done.exit_code == 1 and done.stderr == "kvchat: error: the question is empty\n"
    assert model.chat_requests == []


def test_invalid_utf8_on_stdin_is_refused(model, kvchat):
    done = kvchat("ask", "-", input=b"\xff\xfe broken")
    assert done.exit_code == 1 and "UTF-8" in done.stderr


def test_a_missing_import_file_is_one_line(kvchat, tmp_path):
    done = kvchat("import", str(tmp_path / "nope.jsonl"))
    assert done.exit_code == 1 and done.stderr.count("\n") == 1 and "nope.jsonl" in done.stderr


def test_stored_text_is_shown_as_text_not_markup_on_a_terminal(kvchat, kvchat_terminal):
    kvchat("facts", "set", "project.snippet", "use arr[i] and a[/b] freely")
    kvchat("import", "-", input='{"session": "proj[/x]", "role": "user", "content": "[bold]hi[/bold]"}\n')
    for args in (("facts",), ("sessions",), ("history", "-s", "proj[/x]"), ("recall", "snippet")):
        shown = kvchat_terminal(*args)
        assert shown.exit_code == 0, shown.stdout
        assert "internal error" not in shown.stdout
    assert "arr[i] and a[/b]" in kvchat_terminal("facts").stdout
    assert "[bold]hi[/bold]" in kvchat_terminal("history", "-s", "proj[/x]").stdout


def test_escape_sequences_in_stored_text_are_shown_not_obeyed_on_a_terminal(kvchat, kvchat_terminal):
    hostile = "x \x1b]0;PWNED\x07 \x1b[2J \u202egnp.exe"
    kvchat("facts", "set", "project.note", hostile)
    kvchat("import", "-", input=json.dumps({"session": "logs", "role": "user", "content": hostile}) + "\n")
    kvchat("sessions", "title", "logs", hostile)
    for args in (("facts",), ("sessions",), ("history", "-s", "logs"), ("recall", "pwned"), ("history", "--search", "pwned")):
        screen = kvchat_terminal(*args).stdout
        assert "PWNED" in screen, args
        assert "\x1b]0;" not in screen and "\x1b[2J" not in screen and "\u202e" not in screen, args
    # Piped, the text is as stored.
    assert hostile in kvchat("facts").stdout


def test_a_reader_that_goes_away_is_not_an_error(kvchat):
    import subprocess
    import sys

    kvchat("import", "-", input="".join(
        f'{{"session": "s", "role": "user", "content": "line {i}"}}\n' for i in range(3000)
    ))
    export = subprocess.Popen([sys.executable, "-m", "kvchat", "export"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    export.stdout.close()  # like `| head -0`
    _, err = export.communicate(timeout=60)
    assert b"error" not in err and b"Traceback" not in err


def test_sqlite_urls_in_any_spelling_get_the_same_care(kvchat, tmp_path, monkeypatch):
    import stat

    path = tmp_path / "spelled" / "memory.db"
    monkeypatch.setenv("KVCHAT_DB", f"sqlite+pysqlite:///{path}")
    assert kvchat("facts", "set", "user.editor", "vim").exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "vim" in kvchat("facts", "vim").stdout


def test_facts_json_before_the_query_still_means_json(kvchat):
    import json

    kvchat("facts", "set", "user.editor", "vim")
    assert json.loads(kvchat("facts", "--json", "vim").stdout)[0]["key"] == "user.editor"


@pytest.mark.parametrize("args", [
    ("code", "99999999999999999999999"),
    ("history", "-n", "99999999999999999999999"),
    ("history", "--since", "99999999999d"),
    ("history", "--until", "0001-01-01"),
    ("history", "--since", "9999-12-31T23:59:59-12:00"),
    ("sessions", "prune", "--older-than", "99999999999999d", "--dry-run"),
])
def test_a_number_too_large_to_use_is_one_line_not_an_internal_error(model, kvchat, args):
    assert kvchat("ask", "hello", "--no-extract").exit_code == 0
    done = kvchat(*args)
    assert done.exit_code == 1, done.stderr
    assert done.stderr.startswith("kvchat: error: ") and "\n" == done.stderr[-1] and done.stderr.count("\n") == 1

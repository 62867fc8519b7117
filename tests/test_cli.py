"""The command line itself: usage errors, version, one-line failures."""

from __future__ import annotations


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

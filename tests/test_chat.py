"""`kvchat chat` end to end: the dialog, what the model server received, what
was stored, and what the user saw."""

from __future__ import annotations


def test_chat_holds_a_dialog_and_says_where_it_is_stored(model, kvchat, home):
    done = kvchat("chat", "-s", "pairing", "--no-extract", input="first line\nsecond line\nexit\n")
    assert done.exit_code == 0
    assert "echo: first line" in done.stdout and "echo: second line" in done.stdout
    assert "pairing" in done.stderr and str(home / "kvchat.db") in done.stderr
    assert [m["content"] for m in model.chat_requests[1]["messages"][1:]] == [
        "first line", "echo: first line", "second line",
    ]


def test_chat_ends_at_end_of_input_and_survives_a_failed_answer(model, kvchat, store):
    for _ in range(3):
        model.queue_error(500)
    done = kvchat("chat", "--no-extract", input="this one fails\nthis one works\n")
    assert done.exit_code == 0
    assert "kvchat: error:" in done.stderr
    assert "echo: this one works" in done.stdout


def test_a_chat_with_nothing_asked_creates_no_session(model, kvchat, store):
    done = kvchat("chat", "--new", input="exit\n")
    assert done.exit_code == 0 and "no session was created" in done.stderr
    assert store.sessions() == []

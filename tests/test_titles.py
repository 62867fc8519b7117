"""Session titles (issue 7): made from the first question without a model
call, or set by the user; shown by `kvchat sessions` and `sessions show`."""

from __future__ import annotations

import json

import pytest
from conftest import TEST_KEY

from kvchat.titles import TITLE_COLUMNS, title_from_question


def listed(kvchat) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(kvchat("sessions", "--json").stdout)}


def test_the_first_question_titles_a_session_without_asking_the_model(kvchat, model):
    assert kvchat("ask", "-s", "work", "How do I **stream** a file in Rust?", "--no-extract").exit_code == 0
    assert kvchat("ask", "-s", "work", "And in Go?", "--no-extract").exit_code == 0
    assert len(model.chat_requests) == 2, "one request per question: none for the title"
    session = listed(kvchat)["work"]
    assert session["title"] == "How do I stream a file in Rust?"
    assert json.loads(kvchat("sessions", "show", "work", "--json").stdout)["title"] == session["title"]
    assert "title\tHow do I stream a file in Rust?" in kvchat("sessions", "show", "work").stdout
    [line] = kvchat("sessions").stdout.splitlines()
    assert line.split("\t")[4:] == [f"#{session['id']}", "How do I stream a file in Rust?"]


def test_a_title_never_holds_the_api_key(kvchat, model):
    assert kvchat("ask", "-s", "k", f"is {TEST_KEY} my key?", "--no-extract").exit_code == 0
    title = listed(kvchat)["k"]["title"]
    assert TEST_KEY not in title and TEST_KEY[:12] not in title


@pytest.mark.parametrize("question, title", [
    ("Fix this:\n```python\nprint(1\n```\nplease", "Fix this: please"),
    ("```sh\nls -la | wc -l\n```", "ls -la | wc -l"),
    ("# Why\n- does [the docs page](https://x.example) say so?", "Why does the docs page say so?"),
    ("   \n\t  ", None),
])
def test_titles_are_cleaned_of_markdown_and_code(question, title):
    assert title_from_question(question) == title


def test_long_titles_are_cut_at_a_word_or_a_wide_character():
    english = title_from_question("Please explain how the borrow checker decides when a mutable reference ends "
                                  "in a loop that pushes to a vector")
    assert english.endswith("…") and len(english) <= TITLE_COLUMNS and not english[:-1].endswith(" ")
    assert "Please explain how the borrow checker decides when a".startswith(english[:-1])
    chinese = title_from_question("我想用Rust写一个命令行工具，它需要读取配置文件并且支持子命令，应该用哪个库比较好呢？")
    assert chinese.startswith("我想用Rust写一个命令行工具") and chinese.endswith("…")
    assert sum(2 if ord(c) > 0x2e80 else 1 for c in chinese) <= TITLE_COLUMNS


def test_a_user_title_is_kept_and_reset_goes_back_to_the_question(kvchat, model):
    kvchat("ask", "-s", "work", "first question here", "--no-extract")
    done = kvchat("sessions", "title", "wo", "Parser rewrite", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["title"] == "Parser rewrite"
    kvchat("ask", "-s", "work", "another question", "--no-extract")
    assert listed(kvchat)["work"]["title"] == "Parser rewrite"
    done = kvchat("sessions", "title", "work", "--reset")
    assert done.exit_code == 0 and "titled 'first question here'" in done.stderr
    assert listed(kvchat)["work"]["title"] == "first question here"


@pytest.mark.parametrize("args, message", [
    (("work",), "give a title, or --reset"),
    (("work", "x", "--reset"), "give either a title or --reset, not both"),
    (("work", "x" * 201), "a title is longer than 200 characters"),
    (("work", "a\x07b"), "a title must not contain control characters"),
    (("nope", "x"), "no session named 'nope' or starting with it"),
])
def test_bad_titles_are_one_line_errors(kvchat, model, args, message):
    kvchat("ask", "-s", "work", "q", "--no-extract")
    done = kvchat("sessions", "title", *args)
    assert done.exit_code == 1
    assert done.stderr.startswith(f"kvchat: error: {message}") and done.stderr.count("\n") == 1
    assert listed(kvchat)["work"]["title"] == "q"


def test_imported_sessions_are_titled_by_their_first_question(kvchat, tmp_path):
    path = tmp_path / "turns.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in [
        {"session": "imp", "role": "assistant", "content": "Welcome!"},
        {"session": "imp", "role": "user", "content": "what is a monad"},
    ]) + "\n")
    assert kvchat("import", str(path)).exit_code == 0
    assert listed(kvchat)["imp"]["title"] == "what is a monad"


def test_at_a_terminal_each_session_is_one_line_with_its_id_and_title(kvchat_terminal, store):
    from kvchat.store import NewTurn

    question = "How do I parse JSON in Rust without serde when the input is large and arrives in pieces?"
    store.add_turns("rust", [NewTurn(role="user", content=question, tokens=20)])
    screen = kvchat_terminal("sessions").stdout
    [row] = [line for line in screen.splitlines() if "rust" in line]
    assert row.split()[0].endswith("#1") and "How do I parse JSON in Rust" in row and row.rstrip().endswith(
        tuple("0123456789")), "id, name, title, counts and time on one line"

"""`kvchat chat` end to end: the dialog, its slash commands, what the model
server received, what was stored, and what the user saw.

Most tests pipe lines in (slash commands and \"\"\" blocks work there too); the
ones at the end type at a real pseudo-terminal, where prompt_toolkit reads the
keys."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading

import pytest

from conftest import TEST_KEY, Terminal
from kvchat import database, pricing
from kvchat.roles import BUILTIN_ROLES
from kvchat.tokens import messages_tokens


def test_chat_holds_a_dialog_and_says_where_it_is_stored(model, kvchat, home, engine):
    done = kvchat("chat", "-s", "pairing", "--no-extract", input="first line\nsecond line\nexit\n")
    assert done.exit_code == 0
    assert "echo: first line" in done.stdout and "echo: second line" in done.stdout
    stored_in = str(home / "kvchat.db") if engine == "sqlite" else database.where(os.environ["KVCHAT_DB"])
    assert "pairing" in done.stderr and stored_in in done.stderr
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


def test_show_prompt_and_verbose_report_each_question(model, kvchat):
    done = kvchat("chat", "--show-prompt", "--verbose", "--no-extract", input="one\ntwo\n")
    assert done.exit_code == 0, done.stderr
    assert len(re.findall(r"^total \d+ tokens", done.stderr, re.MULTILINE)) == 2
    assert done.stderr.count("kvchat: usage: ") == 2
    assert "kvchat: prompt recent turns: " in done.stderr  # the second question follows the first exchange


def questions(model) -> list[str]:
    """The last user message of each chat request the server received."""
    return [request["messages"][-1]["content"] for request in model.chat_requests]


# -- multi-line messages and what counts as a command -----------------------------------


def test_lines_between_triple_quotes_are_one_question(model, kvchat, store):
    done = kvchat("chat", "--no-extract", input='"""\ndef f():\n\n    return 1\n/facts\n"""\nexit\n')
    assert done.exit_code == 0, done.stderr
    assert questions(model) == ["def f():\n\n    return 1\n/facts"]  # a slash line inside a block is text
    assert [t.content for t in store.history(store.session("default").id)][0] == "def f():\n\n    return 1\n/facts"


def test_a_block_cut_off_by_the_end_of_input_is_still_asked(model, kvchat):
    done = kvchat("chat", "--no-extract", input='"""\nonly line\n')
    assert done.exit_code == 0
    assert questions(model) == ["only line"]


def test_paths_and_double_slashes_are_questions_not_commands(model, kvchat):
    done = kvchat("chat", "--no-extract", input="/etc/hosts is empty, why?\n//help me\nexit\n")
    assert done.exit_code == 0, done.stderr
    assert questions(model) == ["/etc/hosts is empty, why?", "/help me"]
    assert "kvchat: error" not in done.stderr


def test_help_lists_every_command(model, kvchat):
    done = kvchat("chat", input="/help\n")
    assert done.exit_code == 0
    for command in ("/help", "/new", "/session", "/model", "/role", "/facts", "/forget", "/remember",
                    "/recall", "/history", "/tokens", "/exit"):
        assert re.search(rf"^  {command}\b", done.stdout, re.MULTILINE), command
    assert model.chat_requests == []


def test_exit_command_ends_the_chat_and_later_lines_are_not_asked(model, kvchat, store):
    done = kvchat("chat", "--no-extract", input="hello\n/exit\nnever asked\n")
    assert done.exit_code == 0
    assert questions(model) == ["hello"]
    assert "Conversation saved: session 'default'" in done.stderr
    assert kvchat("chat", input="/QUIT\nnever asked\n").exit_code == 0
    assert questions(model) == ["hello"]


@pytest.mark.parametrize(
    "line, error",
    [
        ("/frobnicate", "unknown command /frobnicate (/help lists them"),
        ("/help me", "/help takes no arguments"),
        ("/new now", "/new takes no arguments"),
        ("/model two words", "usage: /model NAME"),
        ("/role nobody", "no role named 'nobody' (the roles are: assistant, code"),
        ("/remember user.editor", "usage: /remember KEY VALUE"),
        ("/remember !!! vim", "'!!!' is not a usable fact key"),
        ("/forget", "usage: /forget KEY"),
        ("/forget user.nothing", "no fact with the key 'user.nothing'"),
        ("/recall", "usage: /recall QUERY"),
        ("/history zero", "usage: /history [N], N a number of turns"),
        ("/history 0", "usage: /history [N]"),
        ("/session \x01", "a session name must not contain control characters"),
    ],
)
def test_a_bad_command_is_one_error_line_and_the_chat_goes_on(model, kvchat, store, line, error):
    done = kvchat("chat", "-s", "work", "--no-extract", input=f"{line}\nstill here?\n")
    assert done.exit_code == 0
    errors = [text for text in done.stderr.splitlines() if text.startswith("kvchat: error: ")]
    assert len(errors) == 1 and error in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "echo: still here?" in done.stdout
    assert [m["role"] for m in model.chat_requests[0]["messages"]] == ["system", "user"]
    assert store.session("work").settings == {}


# -- facts -------------------------------------------------------------------------------


def test_remember_and_forget_change_the_facts_the_next_question_gets(model, kvchat, store):
    done = kvchat("chat", "--no-extract", input=(
        "/remember user.editor neovim with lazy.nvim\n"
        "which editor do I use?\n"
        "/facts\n"
        "/forget user.editor\n"
        "which editor do I use?\n"
    ))
    assert done.exit_code == 0, done.stderr
    first, second = (request["messages"][0]["content"] for request in model.chat_requests)
    assert "user.editor: neovim with lazy.nvim" in first
    assert "neovim" not in second
    assert "user.editor\tneovim with lazy.nvim\n" in done.stdout  # /facts, rendered as `kvchat facts` does
    assert "user.editor: created" in done.stderr and "user.editor: forgotten" in done.stderr
    assert store.fact("user.editor") is None
    assert [(v.action, v.source) for v in store.fact_history("user.editor")] == [("set", "user"), ("forget", "user")]


def test_remember_refuses_a_secret_as_kvchat_facts_set_does(model, kvchat, store):
    secret = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2
    done = kvchat("chat", input=f"/remember deploy.key {secret}\n")
    direct = kvchat("facts", "set", "deploy.key", secret)
    assert direct.exit_code == 1
    refusal = direct.stderr.strip()
    assert refusal.startswith("kvchat: error: that looks like a secret")
    assert refusal in done.stderr.splitlines()
    assert store.facts() == [] and secret not in done.stderr


def test_facts_with_words_searches_them(model, kvchat, store):
    store.set_fact("user.editor", "neovim", source="user")
    store.set_fact("user.shell", "fish", source="user")
    done = kvchat("chat", input="/facts shell\n")
    assert done.stdout.splitlines() == ["user.shell\tfish"]


def test_recall_shows_what_a_question_would_bring_without_asking_the_model(model, kvchat, store):
    store.set_fact("user.database", "PostgreSQL 16 on the staging box", source="user")
    store.set_fact("user.pet", "a cat called Miso", source="user")
    done = kvchat("chat", input="/recall which database do we run?\n")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fact\t") and "PostgreSQL 16" in lines[0]
    assert model.chat_requests == [] and store.sessions() == []
    # Recall is for the chat's own session, even before it is stored: never
    # another whose name starts the same.
    from kvchat.store import NewTurn

    store.add_turns("workshop", [NewTurn(role="user", content="the deploy key rotates monthly", tokens=6)])
    done = kvchat("chat", "--new", "-s", "work", "--memory-tokens", "0",
                  input="/recall when does the deploy key rotate?\n")
    assert done.exit_code == 0, done.stderr
    assert "rotates monthly" not in done.stdout and "no session is named" not in done.stderr


# -- sessions, model and role ------------------------------------------------------------


def test_new_moves_the_chat_to_a_fresh_session_named_after_the_time(model, kvchat, store):
    done = kvchat("chat", "-s", "old", "--no-extract", input="in the old one\n/new\nin the new one\n")
    assert done.exit_code == 0, done.stderr
    fresh = next(s.name for s in store.sessions() if s.name != "old")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d{6}", fresh)
    assert f"New session {fresh!r}" in done.stderr
    assert f"Conversation saved: sessions 'old', {fresh!r}" in done.stderr
    assert model.chat_requests[1]["messages"][1:] == [{"role": "user", "content": "in the new one"}]
    assert [t.content for t in store.history(store.session(fresh).id)] == ["in the new one", "echo: in the new one"]


def test_a_chat_that_asked_then_moved_to_an_empty_session_says_what_it_saved(model, kvchat, store):
    done = kvchat("chat", "-s", "first", "--no-extract", input="a question\n/new\n")
    assert done.exit_code == 0, done.stderr
    assert "Nothing was asked" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("Conversation saved: session 'first' in ")


def test_switching_to_a_session_with_its_own_endpoint_sends_questions_there(model, kvchat, store, monkeypatch):
    assert kvchat("endpoints", "add", "here", "--base-url", model.base_url).exit_code == 0
    assert kvchat("endpoints", "add", "nowhere", "--base-url", "http://127.0.0.1:9/v1").exit_code == 0
    store.update_settings("pinned", {"endpoint": "nowhere"})
    monkeypatch.delenv("OPENAI_BASE_URL")
    done = kvchat("chat", "-s", "open", "--endpoint", "here", "--no-extract",
                  input="to here\n/session pinned\nnot to here\n")
    # The chat's own --endpoint is a flag: it wins over the session's, as for ask.
    assert done.exit_code == 0, done.stderr
    assert questions(model) == ["to here", "not to here"]
    done = kvchat("chat", "-s", "open", "--no-extract", input="to the default\n/session pinned\nnot to here\n")
    assert done.exit_code == 0
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in done.stderr
    assert questions(model)[-1] == "to the default"


def test_session_switches_by_name_or_unique_start_and_a_new_name_starts_one(model, kvchat, store):
    assert kvchat("ask", "-s", "project-alpha", "--no-extract", "alpha question").exit_code == 0
    done = kvchat("chat", "--no-extract", input=(
        "/session project\n"  # the start of exactly one session
        "follow up\n"
        "/session scratch\n"
        "scratch question\n"
        "/session\n"
    ))
    assert done.exit_code == 0, done.stderr
    assert [m["content"] for m in model.chat_requests[1]["messages"][1:]] == [
        "alpha question", "echo: alpha question", "follow up",
    ]
    assert model.chat_requests[2]["messages"][1:] == [{"role": "user", "content": "scratch question"}]
    assert "Session 'project-alpha': 2 turns" in done.stderr
    assert "New session 'scratch'" in done.stderr and "Session 'scratch' (`/session NAME` switches)" in done.stderr
    assert store.session("project") is None and store.session("scratch").turn_count == 2


def test_session_refuses_the_start_of_several_names(model, kvchat, store):
    store.open_session("proj-a")
    store.open_session("proj-b")
    done = kvchat("chat", "-s", "proj-a", "--no-extract", input="/session proj\nstill in a\n")
    assert "'proj' is the start of several sessions ('proj-a', 'proj-b')" in done.stderr
    assert [s.name for s in store.sessions() if s.turn_count] == ["proj-a"]


def test_model_applies_to_the_rest_of_the_chat_but_an_existing_session_keeps_its_own(model, kvchat, store):
    store.update_settings("work", {"model": "gpt-4o"})
    done = kvchat("chat", "-s", "work", "--no-extract", input="one\n/model fake-mini\ntwo\n/model\n")
    assert done.exit_code == 0, done.stderr
    assert [r["model"] for r in model.chat_requests] == ["gpt-4o", "fake-mini"]
    assert "`kvchat sessions set work --model fake-mini` keeps it" in done.stderr
    assert "Model fake-mini (from flag --model)" in done.stderr
    assert store.session("work").settings == {"model": "gpt-4o"}


def test_a_new_session_keeps_the_model_and_role_chosen_before_its_first_answer(model, kvchat, store):
    done = kvchat("chat", "-s", "fresh", "--no-extract", input="/model fake-mini\n/role reviewer\nfirst\n")
    assert done.exit_code == 0, done.stderr
    assert "session 'fresh' keeps it once it has its first answer" in done.stderr
    assert store.session("fresh").settings == {"model": "fake-mini", "role": "reviewer"}
    again = kvchat("chat", "-s", "fresh", "--no-extract", input="second\n")
    assert again.exit_code == 0
    assert model.chat_requests[-1]["model"] == "fake-mini"


def test_role_changes_the_system_text_and_an_unknown_role_changes_nothing(model, kvchat, store):
    store.set_role("pirate", "Answer like a pirate.")
    done = kvchat("chat", "--system", "Be terse.", "--no-extract",
                  input="one\n/role pirate\ntwo\n/role nobody\nthree\n/role reviewer\nfour\n/role\n")
    assert done.exit_code == 0, done.stderr
    systems = [r["messages"][0]["content"] for r in model.chat_requests]
    assert systems[0].startswith("Be terse.")
    assert systems[1].startswith("Answer like a pirate.") and systems[2].startswith("Answer like a pirate.")
    assert systems[3].startswith(BUILTIN_ROLES["reviewer"])
    assert "kvchat: error: no role named 'nobody'" in done.stderr
    assert "Role reviewer (from flag --role)" in done.stderr


# -- history and tokens ------------------------------------------------------------------


def test_history_shows_this_sessions_last_turns(model, kvchat, store):
    done = kvchat("chat", "-s", "h", "--no-extract", input="first\nsecond\n/history\n/history 1\n/new\n/history\n")
    assert done.exit_code == 0, done.stderr
    shown = [line.split("\t")[1] for line in done.stdout.splitlines() if line.count("\t") == 2]
    assert shown == ["user", "assistant", "user", "assistant", "assistant"]
    assert "Nothing asked in session" in done.stderr


def test_tokens_counts_exactly_the_prompt_the_next_question_sends(model, kvchat, store):
    store.set_fact("user.database", "PostgreSQL 16 on the staging box", source="user")
    question = "which database version do we run on staging?"
    done = kvchat("chat", "--no-extract", input=f"a first question\n/tokens {question}\n{question}\n/tokens\n")
    assert done.exit_code == 0, done.stderr
    reports = re.findall(r"Next prompt: (\d+) tokens of gpt-4o-mini's 128000-token context", done.stdout)
    assert len(model.chat_requests) == 2  # /tokens itself asks the model nothing
    assert int(reports[0]) == messages_tokens(model.chat_requests[1]["messages"], "gpt-4o-mini")
    assert re.search(r"^  facts +\d+  \(1 item\)$", done.stdout, re.MULTILINE)
    assert re.search(r"^  recent turns +\d+  \(4 turns\)$", done.stdout, re.MULTILINE)  # after the second answer
    assert "`/tokens QUESTION` counts those too" in done.stdout
    price = pricing.PRICES["gpt-4o-mini"]
    assert f"Estimated cost: ${int(reports[0]) * price.input / 1e6:.6f} for the prompt, " \
           f"at most ${(int(reports[0]) * price.input + 2048 * price.output) / 1e6:.6f} with a whole 2048-token answer" \
           in done.stdout


def test_tokens_gives_no_price_for_a_model_without_one(model, kvchat):
    done = kvchat("chat", "-m", "fake-model", input="/tokens\n")
    assert "Next prompt: " in done.stdout and "Estimated cost" not in done.stdout


# -- at a real terminal ------------------------------------------------------------------


class TerminalChat(Terminal):
    """`kvchat chat` on a pseudo-terminal (conftest.Terminal), typed at key
    by key, answering the terminal's cursor-position requests.

    prompt_toolkit asks the terminal where the cursor is (ESC [ 6 n) to know
    the room below the prompt. Terminal emulators answer; this one does too
    (row 1, column 1), so kvchat runs as it does for a user: nothing in kvchat
    turns the request off, and no prompt waits for an answer that never comes."""

    def __init__(self, *args: str):
        super().__init__("chat", *args)
        self.answered = 0

    def _read(self, until: float) -> bool:
        alive = super()._read(until)
        for _ in range(self.screen.count(b"\x1b[6n") - self.answered):
            self.keys(b"\x1b[1;1R")
            self.answered += 1
        return alive


ENTER, ALT_ENTER, UP, LEFT, HOME, END = "\r", "\x1b\r", "\x1b[A", "\x1b[D", "\x01", "\x05"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def test_at_a_terminal_lines_can_be_edited_and_history_outlives_the_chat(model, store, home):
    with TerminalChat("--no-extract") as term:
        term.prompt()
        term.keys("wrld" + HOME + "hello " + END + LEFT * 3 + "o" + ENTER)  # fix the typo mid-line
        term.expect(b"echo: hello world")
        term.prompt()
        term.keys(f"my key is {TEST_KEY}" + ENTER)
        term.expect(b"echo: my key is [redacted")
        term.prompt()
        term.keys("/tok\t")  # Tab completes the command
        term.expect(b"ens")
        term.keys(ENTER)
        term.expect(b"Next prompt: ")
        term.prompt()
        term.keys("/exit" + ENTER)
        assert term.wait() == 0
    assert questions(model) == ["hello world", "my key is [redacted: api key]"]

    history = (home / "chat_history").read_text()
    assert "+hello world\n" in history and "+/tokens\n" in history
    assert TEST_KEY not in history and "[redacted: api key]" in history
    assert (home / "chat_history").stat().st_mode & 0o777 == 0o600

    with TerminalChat("--no-extract") as term:  # a new chat: the up arrow reaches the last one's lines
        term.prompt()
        term.keys(UP * 4 + ENTER)  # /exit, /tokens, my key is ..., hello world
        term.expect(b"echo: hello world")
        term.prompt()
        term.keys("\x04")  # Ctrl-D
        assert term.wait() == 0
    assert questions(model)[-1] == "hello world"


def type_a_question_every_way(term: TerminalChat) -> None:
    """Three questions of several lines: with Alt-Enter, pasted (and typed
    on), and as a \"\"\" block."""
    term.prompt()
    term.keys("first line" + ALT_ENTER + "second line" + ENTER)
    term.expect(b"echo: first line")
    term.prompt()
    term.keys(PASTE_START + "pasted one\npasted two\n" + PASTE_END + "and typed" + ENTER)
    term.expect(b"echo: pasted one")
    term.prompt()
    term.keys('"""' + ENTER + "block one" + ENTER)
    term.expect(b"...> ")
    term.keys("block two" + ENTER + '"""' + ENTER)
    term.expect(b"echo: block one")


def test_at_a_terminal_alt_enter_and_a_pasted_block_make_one_question_each(model, store):
    with TerminalChat("--no-extract", "-s", "multi") as term:
        type_a_question_every_way(term)
        term.prompt()
        term.keys("/exit" + ENTER)
        assert term.wait() == 0
    assert questions(model) == [
        "first line\nsecond line", "pasted one\npasted two\nand typed", "block one\nblock two",
    ]
    assert store.session("multi").turn_count == 6


PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"


def test_deleting_a_session_takes_what_was_typed_into_it_out_of_the_history(model, store, home, kvchat):
    """However a question was typed (a line, Alt-Enter, a paste, a \"\"\"
    block, blocks in a row), `sessions delete` finds it in prompt_toolkit's
    history file: a block is written there whole, and redacted whole. What
    was typed into other sessions stays, and so do the commands."""
    from prompt_toolkit.history import FileHistory

    with TerminalChat("--no-extract", "-s", "kept") as term:
        term.prompt()
        term.keys("a kept question" + ENTER)
        term.expect(b"echo: a kept question")
        term.prompt()
        term.keys("/tokens" + ENTER)
        term.expect(b"Next prompt: ")
        term.prompt()
        term.keys("/exit" + ENTER)
        assert term.wait() == 0
    with TerminalChat("--no-extract", "-s", "gone") as term:
        type_a_question_every_way(term)
        term.prompt()
        term.keys('"""' + ENTER + "para one" + ENTER + ENTER + "para one" + ENTER + "para two" + ENTER + '"""' + ENTER)
        term.expect(b"echo: para one")
        term.prompt()
        term.keys('"""' + ENTER + "-----BEGIN PRIVATE KEY-----" + ENTER + PEM_BODY + ENTER
                  + "-----END PRIVATE KEY-----" + ENTER + '"""' + ENTER)
        term.expect(b"echo: [redacted: private key]")
        term.prompt()
        term.keys("//tokens" + ENTER)  # asks "/tokens"
        term.expect(b"echo: /tokens")
        term.prompt()
        term.keys("/exit" + ENTER)
        assert term.wait() == 0
    assert questions(model)[-3:] == ["para one\n\npara one\npara two", "[redacted: private key]", "/tokens"]
    assert PEM_BODY.encode() not in (home / "chat_history").read_bytes()
    deleted = kvchat("sessions", "delete", "gone", "--yes")
    assert deleted.stderr == "Deleted session 'gone': 12 turns and 6 entries of the chat history.\n"
    assert list(FileHistory(str(home / "chat_history")).load_history_strings()) == [
        "/exit", "/exit", "/tokens", "a kept question",  # a block's opening """ is no entry of its own
    ]


def extraction_requests(model, wait: float = 5.0) -> int:
    """How many fact extraction requests the server has received, once it
    has received one (at most `wait` seconds): the chat sends it from a
    thread that may still be starting when the next prompt shows."""
    import time

    deadline = time.monotonic() + wait
    while True:
        sent = len(model.json_requests)
        if sent or time.monotonic() > deadline:
            return sent
        time.sleep(0.05)


@contextlib.contextmanager
def held_extraction(model):
    """An answer, then a fact extraction whose reply the server holds until
    the test sets the event it yields (or the block ends)."""
    held = threading.Event()
    model.queue_answer("Try a dark theme.")
    model.queue_json_reply(json.dumps({"facts": [{"key": "user.editor", "value": "helix"}], "forget": []}), hold=held)
    try:
        yield held
    finally:
        held.set()


def ask_for_tips(term: TerminalChat, model) -> None:
    """The question of `held_extraction`, up to the next prompt, which comes
    while the extraction's reply is held."""
    term.prompt()
    term.keys("any tips for my helix setup?" + ENTER)
    term.expect(b"Try a dark theme.")
    term.prompt()
    assert extraction_requests(model) == 1, "the extraction was sent, not put off"


def test_leaving_while_the_facts_are_learned_waits_for_them_or_ctrl_c(model, store):
    """Ctrl-D waits for the last answer's facts, saying so; Ctrl-C then
    leaves without them, as a double Ctrl-C does, and nothing is lost."""
    with held_extraction(model), TerminalChat("-s", "leaving") as term:
        ask_for_tips(term, model)
        term.keys("\x04")  # Ctrl-D
        term.expect(b"still learning facts from the last answer")
        term.keys("\x03")  # Ctrl-C
        term.expect(b"interrupted; session 'leaving' is saved in")
        assert term.wait() == 130
    assert [(t.role, t.status) for t in store.history(store.session("leaving").id)] == [
        ("user", "complete"), ("assistant", "complete"),
    ]
    assert store.fact("user.editor") is None


def test_the_next_prompt_comes_while_the_answer_s_facts_are_still_being_learned(model, store):
    """Fact extraction is a second request to the model (a second or more
    with a real one): chat asks for the next message at once, and waits for
    the extraction only before it sends that message, whose prompt then
    holds what was learned."""
    with held_extraction(model) as held, TerminalChat("-s", "learning") as term:
        ask_for_tips(term, model)
        assert store.fact("user.editor") is None
        term.keys("which editor do I use?" + ENTER)
        held.set()
        term.expect(b"echo: which editor do I use?")
        term.prompt()
        term.keys("/exit" + ENTER)
        assert term.wait() == 0
    assert store.fact("user.editor").value == "helix"
    assert "user.editor: helix" in model.chat_requests[-1]["messages"][0]["content"]


def test_at_a_terminal_answers_render_as_markdown_unless_plain(model, store):
    for plain in ((), ("--plain",)):
        model.queue_answer("Use **bold** here.")
        with TerminalChat("--no-extract", *plain) as term:
            term.prompt()
            term.keys("how?" + ENTER)
            term.expect(b"here.")
            term.prompt()
            term.keys("/exit" + ENTER)
            assert term.wait() == 0
        assert ("Use **bold** here." in term.screen.decode()) == bool(plain)


def test_chat_and_session_take_a_session_by_id_too(model, kvchat, store):
    first = store.open_session("first-project")
    store.open_session("second-project")
    done = kvchat("chat", "-s", "sec", "--no-extract", input=f"in second\n/session #{first.id}\nin first\n")
    assert done.exit_code == 0, done.stderr
    assert "using session 'second-project', the only one whose name starts with 'sec'" in done.stderr
    assert [(s.name, s.turn_count) for s in sorted(store.sessions(), key=lambda s: s.name)] == [
        ("first-project", 2), ("second-project", 2),
    ]


def test_a_line_that_is_not_utf8_is_refused_and_the_chat_reads_on(model, kvchat_process, store):
    done = kvchat_process("chat", "--no-extract", input=b"caf\xe9 au lait\nsecond line\n")
    assert done.exit_code == 0, done.stderr
    assert "kvchat: error: that line of standard input is not valid UTF-8; it was not asked" in done.stderr
    assert questions(model) == ["second line"]
    assert [t.content for t in store.history(store.session("default").id)] == ["second line", "echo: second line"]
    # In a """ block, the block goes whole: its other lines are no questions of their own.
    done = kvchat_process("chat", "--no-extract", input=b'"""\nline one\ncaf\xe9\nline three\n"""\nlast\n')
    assert done.exit_code == 0, done.stderr
    assert ("kvchat: error: that line of standard input is not valid UTF-8; it was not asked "
            "(the whole \"\"\" block was left out)") in done.stderr
    assert questions(model)[-1:] == ["last"] and "line one" not in questions(model)


def test_a_nul_is_refused_as_ask_refuses_it_and_crlf_ends_a_line(model, kvchat_process, store):
    """Lines from a Windows file end in CR LF: the CR is no part of the question."""
    done = kvchat_process("chat", "--no-extract", input=b"a\x00b\r\nhi\r\n\"\"\"\r\nblock\r\n\"\"\"\r\nexit\r\n")
    assert done.exit_code == 0, done.stderr
    assert "kvchat: error: the question contains a NUL character; it was not asked" in done.stderr
    assert questions(model) == ["hi", "block"]
    assert [t.content for t in store.history(store.session("default").id)] == ["hi", "echo: hi", "block", "echo: block"]

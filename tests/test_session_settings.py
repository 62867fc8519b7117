"""Memory settings kept per session, overridden per call, and the prompt
shown section by section: from the command line, judged by what the model
server received."""

from __future__ import annotations

import json

from kvchat import tokens
from kvchat.roles import BUILTIN_ROLES
from kvchat.store import NewTurn

MODEL = "gpt-4o-mini"


def fill(store, session: str, count: int) -> None:
    store.add_turns(session, [
        NewTurn(role="user" if i % 2 == 0 else "assistant", content=f"turn {i}: some words here",
                tokens=tokens.count_tokens(f"turn {i}: some words here", MODEL))
        for i in range(count)
    ])


def sent_recent(model) -> list[str]:
    return [m["content"] for m in model.chat_requests[-1]["messages"][1:-1]]


def test_settings_set_once_apply_to_every_later_ask_and_a_flag_wins_for_one_call(kvchat, model, store):
    fill(store, "work", 20)
    done = kvchat("sessions", "set", "work", "--memory", "window", "--window", "3")
    assert done.exit_code == 0, done.stderr

    assert kvchat("ask", "-s", "work", "first", "--no-extract").exit_code == 0
    assert [c.split(":")[0] for c in sent_recent(model)] == ["turn 17", "turn 18", "turn 19"]

    assert kvchat("ask", "-s", "work", "second", "--window", "5", "--no-extract").exit_code == 0
    assert len(sent_recent(model)) == 5

    assert kvchat("ask", "-s", "work", "third", "--no-extract").exit_code == 0
    assert len(sent_recent(model)) == 3, "the flag applied to one call only"
    assert store.session("work").settings == {"memory": "window", "window": 3}
    # Shown as the config file writes them.
    assert kvchat("sessions", "set", "work", "--no-facts").stderr == (
        "Session 'work' settings: facts=false, memory=window, window=3\n"
    )
    assert "setting facts\tfalse\n" in kvchat("sessions", "show", "work").stdout


def test_a_session_setting_beats_the_environment_and_a_flag_beats_both(kvchat, model, store, monkeypatch):
    fill(store, "s", 20)
    monkeypatch.setenv("KVCHAT_MEMORY", "window")
    monkeypatch.setenv("KVCHAT_WINDOW", "2")
    kvchat("ask", "-s", "s", "q", "--no-extract")
    assert len(sent_recent(model)) == 2
    kvchat("sessions", "set", "s", "--window", "4")
    kvchat("ask", "-s", "s", "q", "--no-extract")
    assert len(sent_recent(model)) == 4
    kvchat("ask", "-s", "s", "q", "--no-extract", "--memory", "token", "--memory-tokens", "0")
    assert sent_recent(model) == []


def test_a_new_session_remembers_the_settings_it_was_started_with(kvchat, model, store):
    done = kvchat("ask", "-s", "review", "--role", "reviewer", "--memory", "summary", "look at this", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert store.session("review").settings == {"memory": "summary", "role": "reviewer"}
    kvchat("ask", "-s", "review", "and this?", "--no-extract")
    assert model.chat_requests[-1]["messages"][0]["content"].startswith(BUILTIN_ROLES["reviewer"])


def test_a_user_role_set_on_a_session_reaches_the_system_message(kvchat, model, store):
    assert kvchat("roles", "add", "pirate", "Answer like a pirate.").exit_code == 0
    assert kvchat("sessions", "set", "s", "--role", "pirate").exit_code == 0
    kvchat("ask", "-s", "s", "hello", "--no-extract")
    assert model.chat_requests[-1]["messages"][0]["content"].startswith("Answer like a pirate.")


def test_unknown_roles_and_bad_values_are_refused_in_one_line(kvchat, store):
    for args in (("--role", "nosuch"), ("--memory", "everything"), ("--unset", "colour")):
        done = kvchat("sessions", "set", "s", *args)
        assert done.exit_code == 1, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("kvchat: error: ")
    done = kvchat("sessions", "set", "s", "--window", "0")
    assert done.exit_code == 2 and "Traceback" not in done.stderr, "a usage error, as Click reports them"
    assert kvchat("sessions", "set", "s").exit_code == 1
    assert store.session("s") is None or store.session("s").settings == {}


def test_unset_forgets_a_setting(kvchat, store):
    kvchat("sessions", "set", "s", "--memory", "window", "--window", "4")
    assert kvchat("sessions", "set", "s", "--unset", "window").exit_code == 0
    assert store.session("s").settings == {"memory": "window"}


def test_show_prompt_prints_each_section_with_its_tokens_and_the_answer_stays_on_stdout(kvchat, model, store):
    store.set_fact("user.editor", "neovim", source="user")
    fill(store, "s", 4)
    done = kvchat("ask", "-s", "s", "which editor do I use?", "--show-prompt", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == "echo: which editor do I use?"
    for section in ("role (", "facts (", "recent turns (", "question (", "total "):
        assert section in done.stderr, section
    assert "user.editor: neovim" in done.stderr
    # Piped, the text is as it is: no line wrapped or padded to a terminal's width.
    long_line = "a " * 70 + "end"
    kvchat("facts", "set", "user.notes", long_line)
    shown = kvchat("recall", "-s", "s", "what notes?", "--show-prompt").stdout
    assert f"- user.notes: {long_line}\n" in shown
    assert not any(line.endswith(" ") for line in shown.splitlines())


def test_recall_shows_the_whole_prompt_with_sections_that_add_up(kvchat, model, store):
    store.set_fact("user.editor", "neovim", source="user")
    fill(store, "s", 6)
    done = kvchat("recall", "-s", "s", "which editor do I use?", "--show-prompt", "--json")
    shown = json.loads(done.stdout)
    names = [s["name"] for s in shown["sections"]]
    assert names == ["role", "memory frame", "facts", "summary", "older turns", "recent turns", "question"]
    assert sum(s["tokens"] for s in shown["sections"]) + tokens.REPLY_PRIMER == shown["tokens"]
    assert tokens.messages_tokens(shown["messages"], MODEL) == shown["tokens"]
    assert model.requests == [], "recall never calls the model"


def test_sessions_show_reports_settings_and_the_summary(kvchat, model, store):
    store.add_turns("s", [
        NewTurn(role="user" if i % 2 == 0 else "assistant", content="word " * 60, tokens=60) for i in range(12)
    ])
    kvchat("sessions", "set", "s", "--memory", "summary", "--memory-tokens", "200")
    model.queue_answer("They talked about words.")
    model.queue_answer("ok")
    assert kvchat("ask", "-s", "s", "and?", "--no-extract").exit_code == 0
    shown = json.loads(kvchat("sessions", "show", "s", "--json").stdout)
    assert shown["settings"] == {"memory": "summary", "memory_tokens": 200}
    assert shown["summary"]["content"] == "They talked about words."
    assert shown["summary"]["turns"] > 0


def test_vector_recall_from_the_command_line_puts_a_paraphrase_into_the_prompt(kvchat, model, store):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    kvchat("ask", "what car do I own?", "--no-extract")
    assert "automobile" not in model.chat_requests[-1]["messages"][0]["content"], "keywords alone miss it"
    done = kvchat("ask", "what car do I own?", "--vector", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert "user.vehicle: drives an old automobile" in model.chat_requests[-1]["messages"][0]["content"]
    assert model.embedding_requests, "through the server's embeddings endpoint"


def test_a_failing_embeddings_endpoint_falls_back_to_keywords_and_says_so_once(kvchat, model, store):
    store.set_fact("user.editor", "helix", source="user")
    for _ in range(3):
        model.queue_error(500, "embeddings are down", embeddings=True)
    done = kvchat("chat", "--vector", "--no-extract",
                  input="/recall editor\nwhich editor do I use?\n/recall editor\n/tokens editor\nand again?\nexit\n")
    assert done.exit_code == 0, done.stderr
    assert done.stderr.count("vector recall is off") == 1, "once for the whole chat, /recall and /tokens included"
    assert "user.editor: helix" in model.chat_requests[0]["messages"][0]["content"]
    assert len(model.chat_requests) == 2, "both questions were answered"


def test_a_mistyped_role_on_a_new_session_is_refused_and_not_kept(kvchat, model, store):
    done = kvchat("ask", "-s", "s1", "--role", "nosuch", "hi")
    assert done.exit_code == 1 and done.stderr.startswith("kvchat: error: no role named 'nosuch'")
    assert store.session("s1") is None
    assert kvchat("ask", "-s", "s1", "hi again", "--no-extract").exit_code == 0
    assert store.session("s1").settings == {}


def test_settings_of_a_failed_first_question_are_not_kept(kvchat, model, store):
    model.queue_error(404, "model 'gpt4o' not found", code="model_not_found")
    assert kvchat("ask", "-s", "s1", "--model", "gpt4o", "hi", "--no-extract").exit_code == 1
    assert store.session("s1").settings == {}


def test_a_removed_role_still_named_by_a_session_says_how_to_mend_it(kvchat, model, store):
    kvchat("roles", "add", "mine", "My own role.")
    kvchat("sessions", "set", "s2", "--role", "mine")
    kvchat("roles", "remove", "mine")
    done = kvchat("ask", "-s", "s2", "hi")
    assert done.exit_code == 1
    assert "kvchat sessions set s2 --role NAME" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_unreadable_session_settings_are_reported_and_reset_clears_them(kvchat, model, store):
    store.open_session("broken")
    store.open_session("fine")
    with store.engine.begin() as db:
        db.exec_driver_sql("UPDATE sessions SET settings = 'not json' WHERE name = 'broken'")
    assert kvchat("sessions").exit_code == 0, "one damaged session does not hide the others"
    done = kvchat("ask", "-s", "broken", "hi")
    assert done.exit_code == 1 and "--reset" in done.stderr
    assert kvchat("sessions", "set", "broken", "--reset").exit_code == 0
    assert kvchat("ask", "-s", "broken", "hi", "--no-extract").exit_code == 0


def test_a_chat_that_asks_nothing_creates_no_session(kvchat, model, store):
    done = kvchat("chat", "--new", "--memory", "window", input="exit\n")
    assert done.exit_code == 0
    assert store.sessions() == []


def test_vector_recall_without_facts_neither_embeds_nor_sends_them(kvchat, model, store):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    done = kvchat("ask", "what car do I own?", "--vector", "--no-facts", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert "automobile" not in model.chat_requests[-1]["messages"][0]["content"]
    assert not any("automobile" in text for text in model.embedded_texts)

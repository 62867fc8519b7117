"""`kvchat ask` end to end: what the model server received,
what was stored, and what the user saw."""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import TEST_KEY, Terminal


def sent_system(request_body) -> str:
    return request_body["messages"][0]["content"]


def test_ask_streams_the_answer_and_stores_both_turns(model, kvchat, store):
    model.queue_answer("Use reversed(xs) or xs[::-1].")
    done = kvchat("ask", "How do I reverse a list in Python?", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == "Use reversed(xs) or xs[::-1].\n"
    [request] = model.chat_requests
    assert request["stream"] is True
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"][-1] == {"role": "user", "content": "How do I reverse a list in Python?"}
    turns = store.history(store.session("default").id)
    assert [(t.role, t.status) for t in turns] == [("user", "complete"), ("assistant", "complete")]
    assert turns[1].content == "Use reversed(xs) or xs[::-1]."


def test_a_stored_fact_reaches_the_prompt_only_when_relevant(model, kvchat):
    assert kvchat("facts", "set", "user.editor", "neovim").exit_code == 0
    kvchat("ask", "Which editor plugin helps with Rust?", "--no-extract")
    kvchat("ask", "What is the capital of Peru?", "--no-extract", "--new")
    relevant, unrelated = model.chat_requests
    assert "user.editor: neovim" in sent_system(relevant)
    assert "neovim" not in json.dumps(unrelated)


def test_the_previous_exchange_is_sent_back_in_order(model, kvchat):
    model.queue_answer("Hello Ada!")
    kvchat("ask", "Hi, I am Ada", "--no-extract")
    kvchat("ask", "What did I just say?", "--no-extract")
    messages = model.chat_requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == ["Hi, I am Ada", "Hello Ada!", "What did I just say?"]


def test_the_recent_turn_budget_holds(model, kvchat):
    for i in range(12):
        kvchat("ask", f"question {i} " + "padding words " * 20, "--no-extract")
    kvchat("ask", "last one", "--memory-tokens", "150", "--no-extract")
    recent = model.chat_requests[-1]["messages"][1:-1]
    from kvchat import tokens

    used = sum(tokens.message_tokens(tokens.count_tokens(m["content"], "gpt-4o-mini")) for m in recent)
    assert 0 < used <= 150


def test_the_recent_turn_budget_holds_after_a_switch_to_a_model_that_counts_more(model, kvchat):
    """gpt-4 (cl100k_base) counts this Hindi at over three times what gpt-4o
    (o200k_base) does: the turns stored under gpt-4o are counted again."""
    from kvchat import tokens

    hindi = "मैं आज डेटाबेस माइग्रेशन की योजना पर चर्चा कर रहा हूँ। "
    assert tokens.count_tokens(hindi, "gpt-4") > 3 * tokens.count_tokens(hindi, "gpt-4o")
    for i in range(12):
        model.queue_answer(f"{i}: " + hindi * 2)
        kvchat("ask", f"{i}: " + hindi * 2, "-m", "gpt-4o", "--no-extract")
    kvchat("ask", "आगे?", "-m", "gpt-4", "--memory-tokens", "400", "--no-extract")
    recent = model.chat_requests[-1]["messages"][1:-1]
    used = sum(tokens.message_tokens(tokens.count_tokens(m["content"], "gpt-4")) for m in recent)
    assert 0 < used <= 400


def test_history_survives_a_new_process(model, kvchat_process):
    first = kvchat_process("ask", "remember the number 4711", "--no-extract")
    assert first.exit_code == 0, first.stderr
    shown = kvchat_process("history", "--json")
    turns = json.loads(shown.stdout)
    assert [t["content"] for t in turns] == ["remember the number 4711", "echo: remember the number 4711"]
    second = kvchat_process("ask", "what number?", "--no-extract")
    assert second.exit_code == 0
    assert "remember the number 4711" in json.dumps(model.chat_requests[-1]["messages"])


def test_question_from_stdin(model, kvchat):
    done = kvchat("ask", "-", "--no-extract", input="piped question\n")
    assert done.exit_code == 0
    assert model.chat_requests[0]["messages"][-1]["content"] == "piped question\n"


def test_json_output_has_answer_session_usage_and_memories(model, kvchat):
    kvchat("facts", "set", "user.language", "Python 3.12")
    model.queue_answer("Use a dataclass.")
    done = kvchat("ask", "Which Python language features suit records?", "--json", "--no-extract", "-s", "work")
    result = json.loads(done.stdout)
    assert result["answer"] == "Use a dataclass."
    assert result["session"] == "work"
    assert result["status"] == "complete"
    assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0
    assert [m["kind"] for m in result["memories"]] == ["fact"]


def test_new_starts_a_fresh_session(model, kvchat, store):
    kvchat("ask", "one", "--no-extract")
    kvchat("ask", "two", "--new", "--no-extract")
    assert len(store.sessions()) == 2
    assert model.chat_requests[1]["messages"][1:] == [{"role": "user", "content": "two"}]


def test_new_with_a_session_name_starts_that_session_and_never_an_existing_one(model, kvchat, store):
    assert kvchat("ask", "hi", "--new", "-s", "review", "--no-extract").exit_code == 0
    assert [s.name for s in store.sessions()] == ["review"]
    again = kvchat("ask", "hi again", "--new", "-s", "review", "--no-extract")
    assert again.exit_code == 1
    assert again.stderr == ("kvchat: error: there is already a session 'review': --new starts another one; "
                            "leave out --new to go on with it, or give a new name\n")
    assert store.session("review").turn_count == 2
    padded = kvchat("ask", "hi", "--new", "-s", " review ", "--no-extract")
    assert padded.exit_code == 1 and "there is already a session 'review'" in padded.stderr


def test_model_and_system_role_are_sent_as_given(model, kvchat):
    kvchat("ask", "hi", "-m", "fake-model", "--system", "You are a pirate.", "--no-extract")
    [request] = model.chat_requests
    assert request["model"] == "fake-model"
    assert sent_system(request) == "You are a pirate."


def test_no_stream_asks_for_the_whole_answer(model, kvchat):
    done = kvchat("ask", "hi", "--no-stream", "--no-extract")
    assert done.exit_code == 0 and done.stdout == "echo: hi\n"
    assert not model.chat_requests[0].get("stream")


def test_a_local_server_gets_max_tokens(model, kvchat):
    kvchat("ask", "hi", "--answer-tokens", "300", "--no-extract")
    body = model.chat_requests[0]
    assert body["max_tokens"] == 300 and "max_completion_tokens" not in body


def test_a_failed_call_keeps_the_question_as_unanswered(model, kvchat, store):
    model.queue_error(500, "boom")
    model.queue_error(500, "boom")
    model.queue_error(500, "boom")
    done = kvchat("ask", "will this survive?", "--no-extract")
    assert done.exit_code == 1
    assert done.stderr.startswith("kvchat: error:") and done.stderr.count("\n") == 1
    [question] = store.history(store.session("default").id)
    assert (question.content, question.status) == ("will this survive?", "unanswered")
    kvchat("ask", "and now?", "--no-extract")
    assert "will this survive?" not in json.dumps(model.chat_requests[-1]["messages"])


def test_json_says_what_was_stored_when_the_call_fails(model, kvchat, store):
    """A script still gets the question's id. (An answer cut off midway is
    stored and reported as any answer is, with its status.)"""
    model.queue_error(401, "bad key")
    done = kvchat("ask", "will this survive?", "--no-extract", "--json")
    assert done.exit_code == 1 and done.stderr.startswith("kvchat: error: the server rejected the API key")
    failed = json.loads(done.stdout)
    [question] = store.history(store.session("default").id)
    assert failed == {
        "session": "default", "question_id": question.id, "answer_id": None, "answer": None, "status": "unanswered",
        "model": None, "usage": None, "memories": None, "facts": None,
        "error": done.stderr.removeprefix("kvchat: error: ").rstrip("\n"),
    }


def test_a_cut_stream_keeps_the_partial_answer_marked_incomplete(model, kvchat, store):
    model.queue_cut_stream("The first half of")
    done = kvchat("ask", "explain monads", "--no-extract")
    assert done.exit_code == 1
    assert "incomplete" in done.stderr
    answer = store.history(store.session("default").id)[-1]
    assert (answer.content, answer.status) == ("The first half of", "interrupted")
    kvchat("ask", "go on", "--no-extract")
    sent = model.chat_requests[-1]["messages"][2]
    assert sent["role"] == "assistant" and "incomplete" in sent["content"]


def test_ask_json_says_why_an_answer_broke_off(model, kvchat):
    model.queue_cut_stream("The first half of")
    done = kvchat("ask", "explain monads", "--no-extract", "--json")
    result = json.loads(done.stdout)
    assert done.exit_code == 1 and result["status"] == "interrupted" and result["error"]
    model.queue_answer("Whole.")
    assert json.loads(kvchat("ask", "again", "--no-extract", "--json").stdout)["error"] is None


def test_an_answer_cut_by_the_length_limit_is_marked(model, kvchat, store):
    model.queue_answer("a long answ", finish_reason="length")
    done = kvchat("ask", "write a novel", "--no-extract")
    assert done.exit_code == 0
    assert "token limit" in done.stderr
    assert store.history(store.session("default").id)[-1].status == "length"


def test_usage_is_counted_with_tiktoken_when_the_server_sends_none(model, kvchat):
    model.no_stream_usage = True
    done = kvchat("ask", "count me", "--json", "--no-extract")
    usage = json.loads(done.stdout)["usage"]
    assert usage["reported_by_server"] is False
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_without_a_key_and_without_a_terminal_it_says_which_variable_to_set(kvchat, monkeypatch):
    done = kvchat("ask", "hi")
    assert done.exit_code == 1
    assert "OPENAI_API_KEY" in done.stderr


def test_the_api_key_never_lands_in_the_database(model, kvchat, home):
    kvchat("ask", f"my key is {TEST_KEY}, keep it safe")
    kvchat("facts", "set", "user.editor", "vim")
    for path in home.glob("kvchat.db*"):
        assert TEST_KEY.encode() not in path.read_bytes()


def test_a_question_too_large_for_the_model_is_refused_clearly(model, kvchat, store):
    done = kvchat("ask", "word " * 20000, "--context-tokens", "4096", "--no-extract")
    assert done.exit_code == 1
    assert "does not fit" in done.stderr
    assert model.chat_requests == []


def test_at_a_terminal_a_missing_key_is_asked_for_with_hidden_input(model, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    # 127.0.0.1 written as one number: the same server, but not a name kvchat
    # recognises as local (local servers are exempt from needing a key).
    monkeypatch.setenv("OPENAI_BASE_URL", model.base_url.replace("127.0.0.1", str(0x7F000001)))
    typed = "sk-typed-at-the-terminal-1234567890"
    with Terminal("ask", "hello there", "--no-extract") as term:
        # Click shows the prompt, then getpass turns echo off (dropping what
        # was typed so far) and writes the final space: type after that.
        term.expect(b"stores one): ", timeout=60)
        term.keys(typed + "\r")
        status = term.wait(60)
    assert status == 0, term.text
    assert "echo: hello there" in term.text
    assert typed not in term.text
    assert model.requests[-1].headers["authorization"] == f"Bearer {typed}"


def test_ctrl_c_while_streaming_keeps_the_partial_answer(model, store):
    import subprocess
    import sys
    import time

    model.chunk_chars = 4
    model.stream_delay = 0.05
    model.queue_answer("word " * 400)
    child = subprocess.Popen(
        [sys.executable, "-m", "kvchat", "ask", "tell me a long story", "--no-extract"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    assert child.stdout.read(20)  # the answer has started to arrive
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert "Traceback" not in err.decode()
    question, answer = store.history(store.session("default").id)
    assert (question.status, answer.status) == ("complete", "interrupted")
    assert answer.content.startswith("word word") and len(answer.content) < len("word " * 400)


def test_a_short_key_is_not_taken_for_a_secret_in_what_the_user_typed(model, kvchat, store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "password")
    kvchat("ask", "how do I hash a password in python?", "--no-extract")
    assert model.chat_requests[0]["messages"][-1]["content"] == "how do I hash a password in python?"
    assert store.history(store.session("default").id)[0].content == "how do I hash a password in python?"


def test_the_key_is_redacted_from_a_partial_answer_too(model, kvchat, home):
    model.queue_cut_stream(f"your key {TEST_KEY} is")
    kvchat("ask", "echo my key", "--no-extract")
    for path in home.glob("kvchat.db*"):
        assert TEST_KEY.encode() not in path.read_bytes()


def test_a_ctrl_c_while_the_partial_answer_is_saved_waits_until_it_is_saved():
    from kvchat.conversation import ctrl_c_deferred

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("the save went on")
    assert finished == ["the save went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_session_is_named_by_its_start_or_id_and_a_new_name_starts_one(model, kvchat, store):
    assert kvchat("ask", "first", "-s", "refactoring-parser", "--no-extract").exit_code == 0
    done = kvchat("ask", "second", "-s", "refac", "--no-extract")
    assert done.exit_code == 0 and "using session 'refactoring-parser'" in done.stderr
    session_id = store.session("refactoring-parser").id
    assert kvchat("ask", "third", "-s", f"#{session_id}", "--no-extract").exit_code == 0
    assert store.session("refactoring-parser").turn_count == 6
    assert store.session("refac") is None
    # Once two names start the same way, the start names neither.
    assert kvchat("ask", "elsewhere", "-s", "refactoring-tests", "--no-extract").exit_code == 0
    done = kvchat("ask", "which?", "-s", "refac", "--no-extract")
    assert done.exit_code == 1
    assert done.stderr.startswith("kvchat: error: 'refac' is the start of several sessions")
    assert model.chat_requests[-1]["messages"][-1]["content"] == "elsewhere"


def test_an_answer_piped_into_a_reader_that_stops_early_is_still_stored_whole(model, home):
    import subprocess
    import sys

    answer = "".join(f"line {n} of a long answer\n" for n in range(20_000))  # far more than a pipe holds
    model.queue_answer(answer)
    reader = subprocess.Popen(
        [sys.executable, "-m", "kvchat", "ask", "a long one", "--no-extract"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    assert reader.stdout.read(50).startswith(b"line 0 of a long answer")
    reader.stdout.close()  # as `| head -c 50` does
    assert reader.wait(timeout=60) == 0
    assert reader.stderr.read() == b""
    from kvchat.store import Store

    with Store() as store:
        stored = store.history(store.session("default").id)
    assert [(t.role, t.status) for t in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1].content == answer

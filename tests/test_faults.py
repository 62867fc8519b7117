"""Failures of the model server (issue 5), one table, every fault through both
`kvchat ask` and `kvchat chat`.

For each fault: `ask` prints one line and exits non-zero (a cut answer only
warns), `chat` says so in one line and answers the next question, and the
database holds the question once, marked unanswered, or the part of the answer
that arrived, marked interrupted or length, and nothing else. The next prompt
never carries the unanswered question, and carries a partial answer only with
the incomplete mark. Then: retries and their pauses as the fake server saw
them, Ctrl-C at a real terminal, and failed extraction and summary requests.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fake_openai import FakeOpenAIServer

from conftest import TEST_KEY, Terminal
from kvchat.prompt import INCOMPLETE_NOTE

QUESTION = "why does my build fail?"
FOLLOW_UP = "and what now?"
PARTIAL = "The first half of the"


def _closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@dataclass(frozen=True)
class Fault:
    name: str
    arrange: Callable  # (server, monkeypatch): the next question meets the fault
    says: str  # in the one line the user sees
    stored: str = "unanswered"  # or the status of the partial answer kept
    partial: str | None = None  # the answer text kept
    requests: int = 1  # chat requests the server sees for the failed question (retries too)
    exit_code: int = 1
    line: str = "kvchat: error:"  # how the one line starts
    once: bool = True  # only the next question fails, so chat's second one is answered
    args: tuple[str, ...] = ()


def _refused(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", _closed_port_url())


def _dns(server, monkeypatch):
    # RFC 2606 reserves .invalid: it never resolves, on any network.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://kvchat-fault.invalid/v1")
    monkeypatch.setenv("KVCHAT_TIMEOUT", "3")


def _slow(server, monkeypatch):
    monkeypatch.setenv("KVCHAT_TIMEOUT", "0.5")
    server.queue_answer("too late", delay=3)


def _errors(status, message, **options):
    def arrange(server, monkeypatch):
        for _ in range(3):  # the first try and both retries
            server.queue_error(status, message, **options)

    return arrange


FAULTS = [
    Fault("connection-refused", _refused, "cannot reach the model server at http://127.0.0.1:", requests=0,
          once=False),
    Fault("dns-failure", _dns, "cannot reach the model server at http://kvchat-fault.invalid/v1", requests=0,
          once=False),
    Fault("timeout", _slow, "timed out waiting for the model server at http://127.0.0.1:"),
    Fault("http-401", lambda s, m: s.queue_error(401, f"Incorrect API key provided: {TEST_KEY}.",
                                                 code="invalid_api_key"),
          "the server rejected the API key (check OPENAI_API_KEY"),
    Fault("http-404", lambda s, m: s.queue_error(404, "The model `gpt-4o-mini` does not exist.",
                                                 code="model_not_found", param="model"),
          "model 'gpt-4o-mini' not found at http://127.0.0.1:"),
    Fault("http-429", _errors(429, "Rate limit reached", retry_after="0.01"),
          "is rate-limiting requests (HTTP 429): Rate limit reached", requests=3),
    Fault("http-500", _errors(500, "internal error"), "failed (HTTP 500): internal error", requests=3),
    Fault("http-503", _errors(503, "overloaded", retry_after="0.01"), "failed (HTTP 503): overloaded", requests=3),
    Fault("malformed-stream", lambda s, m: s.queue_malformed(), "sent a malformed response"),
    Fault("malformed-body", lambda s, m: s.queue_malformed(), "sent a malformed response", args=("--no-stream",)),
    Fault("stream-ends-without-finish", lambda s, m: s.queue_cut_stream(PARTIAL, graceful=True),
          "the answer is incomplete: the answer ended early", stored="interrupted", partial=PARTIAL),
    Fault("stream-breaks-mid-answer", lambda s, m: s.queue_cut_stream(PARTIAL),
          "broke off mid-answer", stored="interrupted", partial=PARTIAL),
    Fault("length-limit", lambda s, m: s.queue_answer(PARTIAL, finish_reason="length"),
          "the answer was cut off at the token limit", stored="length", partial=PARTIAL,
          exit_code=0, line="kvchat: warning:"),
]


def _turns(kvchat) -> list[dict]:
    """The default session as `kvchat history --json` shows it."""
    shown = kvchat("history", "--json")
    assert shown.exit_code == 0, shown.stderr
    return json.loads(shown.stdout)


def _check_stored(kvchat, store, fault: Fault, question: str, after: list[tuple[str, str, str]] = ()) -> None:
    """The failed question is stored once, as the fault says, and then only `after`."""
    turns = _turns(kvchat)
    if fault.partial is None:
        expected = [("user", question, "unanswered")]
    else:
        expected = [("user", question, "complete"), ("assistant", fault.partial, fault.stored)]
    assert [(t["role"], t["content"], t["status"]) for t in turns] == expected + list(after)
    failed = turns[len(expected) - 1]
    if fault.stored != "complete":
        assert failed["error"], "the reason is stored with the turn"
        assert TEST_KEY not in failed["error"]
    # The same, read through the store; nothing else was written.
    [session] = store.sessions()
    assert session.name == "default" and session.turn_count == len(turns)
    assert [t.id for t in store.history(session.id)] == [t["id"] for t in turns]
    assert store.facts() == [] and store.summary(session.id) is None


def _check_next_prompt(body: dict, fault: Fault, question: str) -> None:
    """What the next answer request carried of the failed exchange."""
    sent = body["messages"][1:-1]
    if fault.partial is None:
        assert question not in json.dumps(body["messages"][:-1]), "an unanswered question is not sent back"
        assert sent == []
    else:
        assert sent == [{"role": "user", "content": question},
                        {"role": "assistant", "content": fault.partial + INCOMPLETE_NOTE}]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_ask_reports_the_fault_in_one_line_and_keeps_the_question(fault, model, kvchat, store, monkeypatch):
    fault.arrange(model, monkeypatch)
    done = kvchat("ask", QUESTION, "--no-extract", *fault.args)

    assert done.exit_code == fault.exit_code, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(fault.line) and fault.says in line, line
    assert "Traceback" not in done.stderr
    assert TEST_KEY not in done.stderr + done.stdout
    assert done.stdout == (f"{fault.partial}\n" if fault.partial else "")
    assert len(model.chat_requests) == fault.requests
    _check_stored(kvchat, store, fault, QUESTION)

    monkeypatch.setenv("OPENAI_BASE_URL", model.base_url)
    assert kvchat("ask", FOLLOW_UP, "--no-extract").exit_code == 0
    _check_next_prompt(model.chat_requests[-1], fault, QUESTION)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_chat_reports_the_fault_in_one_line_and_goes_on(fault, model, kvchat, store, monkeypatch):
    fault.arrange(model, monkeypatch)
    done = kvchat("chat", "--no-extract", *fault.args, input=f"{QUESTION}\n{FOLLOW_UP}\nexit\n")

    assert done.exit_code == 0, done.stderr
    assert "Traceback" not in done.stderr and TEST_KEY not in done.stderr + done.stdout
    reports = [line for line in done.stderr.splitlines() if line.startswith("kvchat: ")]
    assert "Conversation saved" in done.stderr.splitlines()[-1]
    if not fault.once:  # the server stays unreachable: the second question fails the same way
        assert len(reports) == 2 and all(fault.says in r and r.startswith(fault.line) for r in reports)
        assert [(t["content"], t["status"]) for t in _turns(kvchat)] == [
            (QUESTION, "unanswered"), (FOLLOW_UP, "unanswered")]
        return
    [report] = reports
    assert report.startswith(fault.line) and fault.says in report, report
    assert f"echo: {FOLLOW_UP}" in done.stdout
    _check_stored(kvchat, store, fault, QUESTION,
                  after=[("user", FOLLOW_UP, "complete"), ("assistant", f"echo: {FOLLOW_UP}", "complete")])
    assert len(model.chat_requests) == fault.requests + 1
    _check_next_prompt(model.chat_requests[-1], fault, QUESTION)


# -- retries ---------------------------------------------------------------------


def _arrivals(server) -> list[float]:
    return [r.at for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(model, kvchat, status):
    model.queue_error(status, "wait a second", retry_after="1")
    done = kvchat("ask", QUESTION, "--no-extract")
    assert done.exit_code == 0, done.stderr
    first, second = _arrivals(model)
    assert 1.0 <= second - first < 2.5


def test_without_retry_after_the_pause_doubles_and_the_tries_are_bounded(model, kvchat):
    for _ in range(5):
        model.queue_error(502, "bad gateway")
    done = kvchat("ask", QUESTION, "--no-extract")
    assert done.exit_code == 1 and "failed (HTTP 502)" in done.stderr
    first, second, third = _arrivals(model)  # one try and two retries, no more
    # 0.5 s and then 1 s, each less up to a quarter (jitter).
    assert 0.375 <= second - first < 1.0
    assert 0.75 <= third - second < 1.6


def test_a_retry_after_longer_than_kvchat_waits_is_reported_at_once(model, kvchat):
    model.queue_error(429, "Rate limit reached", retry_after="600")
    started = time.monotonic()
    done = kvchat("ask", QUESTION, "--no-extract")
    assert time.monotonic() - started < 5
    assert done.exit_code == 1
    assert "(HTTP 429, try again in 600 s)" in done.stderr
    assert len(model.chat_requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(model, kvchat, status):
    model.queue_error(status, "no")
    assert kvchat("ask", QUESTION, "--no-extract").exit_code == 1
    assert len(model.chat_requests) == 1


def test_a_server_that_was_down_answers_in_the_same_chat_once_it_is_up(model, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    with Terminal("chat", "--no-extract") as term:
        term.prompt()
        term.send(QUESTION)
        term.expect(b"kvchat: error: cannot reach the model server")
        term.prompt()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with FakeOpenAIServer(port=port) as revived:
            term.send(FOLLOW_UP)
            term.expect(f"echo: {FOLLOW_UP}".encode())
            term.prompt()
            term.send("exit")
            assert term.wait() == 0
    assert revived.chat_requests[0]["messages"][1:] == [{"role": "user", "content": FOLLOW_UP}]


# -- Ctrl-C at a terminal -------------------------------------------------------------


LONG_ANSWER = "word " * 400


def test_chat_ctrl_c_stops_the_answer_and_a_second_one_leaves(model, store):
    model.chunk_chars = 4
    model.stream_delay = 0.05
    model.queue_answer(LONG_ANSWER)
    model.queue_answer("a short answer")
    model.queue_answer(LONG_ANSWER)
    with Terminal("chat", "--no-extract") as term:
        term.prompt()
        term.ctrl_c()  # at the empty prompt: a fresh line, and a hint
        term.expect(b"Ctrl-C again to leave")
        term.prompt()

        term.send("tell me a long story")
        term.expect(b"word word word")
        term.ctrl_c()  # one Ctrl-C: the answer stops, the dialog goes on
        term.expect(b"answer interrupted (the partial answer is kept")
        term.prompt()
        term.send("thanks")
        term.expect(b"a short answer")
        term.prompt()

        term.send("another long story")
        term.expect(b"word word word")
        term.ctrl_c()
        time.sleep(0.3)
        started = time.monotonic()
        term.ctrl_c()  # the second within 1.5 s: out at once
        assert term.wait() == 130
        assert time.monotonic() - started < 3
    screen = term.screen.decode(errors="replace")
    assert "Traceback" not in screen and "kvchat: interrupted; session 'default' is saved in" in screen

    turns = store.history(store.session("default").id)
    assert [(t.role, t.status) for t in turns] == [
        ("user", "complete"), ("assistant", "interrupted"),
        ("user", "complete"), ("assistant", "complete"),
        ("user", "complete"), ("assistant", "interrupted"),
    ]
    for partial in (turns[1], turns[5]):
        assert partial.content.startswith("word word") and len(partial.content) < len(LONG_ANSWER)
    # The interrupted answer went back to the model marked as incomplete.
    assert model.chat_requests[1]["messages"][2] == {
        "role": "assistant", "content": turns[1].content + INCOMPLETE_NOTE}


def test_chat_two_ctrl_c_at_the_prompt_leave_and_two_far_apart_do_not(model, store):
    with Terminal("chat", "--no-extract") as term:
        term.prompt()
        term.ctrl_c()
        term.prompt()
        time.sleep(1.7)  # longer than the double-Ctrl-C window: this one is a first one again
        term.ctrl_c()
        term.expect(b"Ctrl-C again to leave")
        term.prompt()
        term.ctrl_c()
        assert term.wait() == 130
    screen = term.screen.decode(errors="replace")
    assert "Traceback" not in screen and "kvchat: interrupted" in screen
    assert store.sessions() == []


# -- extraction and summary failures never cost the answer ----------------------------


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(lambda s: s.queue_malformed(json_mode=True), id="malformed-body"),
        pytest.param(lambda s: s.queue_cut_stream('{"facts": [{"key": "user.os"', json_mode=True), id="cut-body"),
        pytest.param(lambda s: s.queue_error(401, "bad key", json_mode=True), id="http-401"),
    ],
)
def test_a_failed_extraction_in_chat_keeps_the_answer_and_the_dialog(fail, model, kvchat, store):
    model.queue_answer("Debian is a fine choice.")
    fail(model)
    done = kvchat("chat", "-v", input="I run Debian on my laptop\nthanks\n")
    assert done.exit_code == 0, done.stderr
    assert "Debian is a fine choice." in done.stdout and "echo: thanks" in done.stdout
    assert "kvchat: fact extraction stored nothing" in done.stderr
    assert "kvchat: error" not in done.stderr and "Traceback" not in done.stderr
    turns = store.history(store.session("default").id)
    assert [(t.content, t.status) for t in turns] == [
        ("I run Debian on my laptop", "complete"), ("Debian is a fine choice.", "complete"),
        ("thanks", "complete"), ("echo: thanks", "complete"),
    ]


def test_a_failed_summary_at_the_command_line_warns_once_and_keeps_the_answer(model, kvchat, store):
    for n in range(6):
        assert kvchat("ask", f"question {n}: " + "words " * 40, "--no-extract").exit_code == 0
    for _ in range(3):  # the summary request, tried three times
        model.queue_error(500, "summariser is down")
    model.queue_answer("still answered")
    done = kvchat("ask", "one more", "--no-extract", "--memory", "summary", "--memory-tokens", "100")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == "still answered\n"
    [line] = done.stderr.splitlines()
    assert line.startswith("kvchat: warning: the summary of older turns was not updated") and "HTTP 500" in line
    session = store.session("default")
    assert store.summary(session.id) is None
    assert [(t.content, t.status) for t in store.history(session.id)[-2:]] == [
        ("one more", "complete"), ("still answered", "complete")]


def test_a_password_in_the_base_url_never_reaches_an_error_message(kvchat, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://ada:S3cretPw@127.0.0.1:9/v1")
    monkeypatch.setenv("KVCHAT_TIMEOUT", "3")
    done = kvchat("ask", "hi", "--no-extract")
    assert done.exit_code == 1
    assert "S3cretPw" not in done.stderr
    assert "http://ada:[redacted: password]@127.0.0.1:9/v1" in done.stderr
    shown = kvchat("config", "--json")
    assert "S3cretPw" not in shown.stdout
    assert json.loads(shown.stdout)["base_url"]["value"] == "http://ada:[redacted: password]@127.0.0.1:9/v1"


def test_a_base_url_with_a_query_string_is_refused_without_repeating_it(kvchat, monkeypatch):
    """The client adds its paths after the base URL, so a query string there
    never worked, and it is where some proxies take a key."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1?api_key=sk-abcdefghijklmnopqrstuvwxyz012345")
    for args in (("ask", "hi", "--no-extract"), ("config",), ("models",)):
        done = kvchat(*args)
        assert done.exit_code == 1, args
        assert done.stderr.startswith("kvchat: error: OPENAI_BASE_URL cannot hold a query string or a fragment")
        assert "sk-abc" not in done.stderr + done.stdout and done.stderr.count("\n") == 1
    done = kvchat("endpoints", "add", "proxy", "--base-url", "http://127.0.0.1:9/v1?key=sk-abcdefghijklmnopqrstuvwxyz0")
    assert done.exit_code == 1 and "sk-abc" not in done.stderr
    assert done.stderr.startswith("kvchat: error: the base URL holds a query string or a fragment")


def test_a_shown_url_leaves_out_the_password_and_the_query_values():
    from kvchat.config import shown_url

    assert shown_url("https://me:pw@host.example/v1?api_key=sk-1&api-version=2") == (
        "https://me:[redacted: password]@host.example/v1?api_key=[redacted]&api-version=[redacted]"
    )
    assert shown_url("http://localhost:11434/v1") == "http://localhost:11434/v1"
    # One urllib cannot read (a broken [IPv6] host) still shows no secret.
    assert shown_url("http://ada:S3cret@[::1/v1?key=sk-1") == "http://[redacted]@[::1/v1?[redacted]"

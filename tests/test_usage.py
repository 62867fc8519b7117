"""Every model call's tokens are recorded (answers, fact extraction, summaries,
embeddings), and `kvchat usage` sums them per model, session, day and kind
with an estimated cost where the model's price is known (issue 7)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from fake_openai import DEFAULT_JSON_REPLY, rough_tokens

from kvchat import database, pricing, tokens
from kvchat.store import NewTurn, Store

MODEL = "gpt-4o-mini"


def calls(home) -> list[tuple]:
    """(kind, session name, model, tokens in, tokens out, reported) of every recorded call, in order."""
    from sqlalchemy import text

    with Store() as store, store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            "SELECT kind, sessions.name, model, prompt_tokens, completion_tokens, reported FROM model_calls "
            "LEFT JOIN sessions ON sessions.id = model_calls.session_id ORDER BY model_calls.id"
        ))]


def usage(kvchat, *args) -> dict:
    done = kvchat("usage", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def test_an_answer_and_its_fact_extraction_are_recorded_as_the_server_reported_them(kvchat, model, home):
    done = kvchat("ask", "-s", "work", "How do I read a file in Rust?")
    assert done.exit_code == 0, done.stderr
    answer_request, extraction_request = model.chat_requests[0], model.json_requests[0]
    # The fake server reports a token per 4 characters, which tiktoken never matches exactly.
    sent = sum(rough_tokens(m["content"]) for m in answer_request["messages"])
    sent_to_extract = sum(rough_tokens(m["content"]) for m in extraction_request["messages"])
    assert calls(home) == [
        ("answer", "work", MODEL, sent, rough_tokens("echo: How do I read a file in Rust?"), 1),
        ("extract", "work", MODEL, sent_to_extract, rough_tokens(DEFAULT_JSON_REPLY), 1),
    ]


def test_without_the_servers_report_the_tokens_are_counted_and_marked_so(kvchat, model, home):
    model.no_usage = True
    done = kvchat("ask", "-s", "work", "How do I read a file in Rust?")
    assert done.exit_code == 0, done.stderr
    answer_request, extraction_request = model.chat_requests[0], model.json_requests[0]
    [answer, extract] = calls(home)
    assert answer == ("answer", "work", MODEL, tokens.messages_tokens(answer_request["messages"], MODEL),
                      tokens.count_tokens("echo: How do I read a file in Rust?", MODEL), 0)
    assert extract == ("extract", "work", MODEL, tokens.messages_tokens(extraction_request["messages"], MODEL),
                       tokens.count_tokens(DEFAULT_JSON_REPLY, MODEL), 0)
    assert usage(kvchat)["total"]["counted_calls"] == 2


def test_summary_and_embedding_calls_are_recorded_for_their_session(kvchat, model, store, home):
    store.add_turns("s", [
        NewTurn(role="user" if i % 2 == 0 else "assistant", content="word " * 60, tokens=60) for i in range(12)
    ])
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    kvchat("sessions", "set", "s", "--memory", "summary", "--memory-tokens", "200")
    model.queue_answer("They talked about words.")
    model.queue_answer("ok")
    done = kvchat("ask", "-s", "s", "what car do I own?", "--no-extract", "--vector")
    assert done.exit_code == 0, done.stderr
    recorded = calls(home)
    assert [call[0] for call in recorded] == ["summary", "embed", "answer"]
    summary, embed, _ = recorded
    assert summary[1:3] == ("s", MODEL) and summary[5] == 1, "chat replies carry the server's usage"
    assert summary[4] == rough_tokens("They talked about words.")
    texts = [text for request in model.embedding_requests for text in request["input"]]
    assert embed == ("embed", "s", "text-embedding-3-small", sum(rough_tokens(text) for text in texts), 0, 1)


def test_embeddings_without_the_servers_report_are_counted(kvchat, model, store, home):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    model.no_usage = True
    done = kvchat("ask", "-s", "s", "what car do I own?", "--no-extract", "--vector")
    assert done.exit_code == 0, done.stderr
    texts = [text for request in model.embedding_requests for text in request["input"]]
    assert calls(home)[0] == ("embed", "s", "text-embedding-3-small",
                              sum(tokens.count_tokens(text, "text-embedding-3-small") for text in texts), 0, 0)


def test_usage_sums_per_model_session_day_and_kind_with_a_cost_for_known_models(kvchat, model, home):
    assert kvchat("ask", "-s", "one", "first question", "--no-extract").exit_code == 0
    assert kvchat("ask", "-s", "one", "second question").exit_code == 0
    assert kvchat("ask", "-s", "two", "third question", "--no-extract", "-m", "llama3.1:8b").exit_code == 0
    recorded = calls(home)
    mini = [c for c in recorded if c[2] == MODEL]
    by_model = usage(kvchat)
    assert by_model["by"] == "model" and by_model["prices_checked"] == pricing.PRICES_CHECKED
    rows = {row["model"]: row for row in by_model["rows"]}
    assert set(rows) == {MODEL, "llama3.1:8b"}
    tokens_in, tokens_out = sum(c[3] for c in mini), sum(c[4] for c in mini)
    assert (rows[MODEL]["calls"], rows[MODEL]["prompt_tokens"], rows[MODEL]["completion_tokens"]) == (
        len(mini), tokens_in, tokens_out)
    assert rows[MODEL]["cost_usd"] == pytest.approx((tokens_in * 0.15 + tokens_out * 0.60) / 1e6, abs=1e-6)
    assert rows[MODEL]["kinds"]["extract"]["calls"] == 1 and rows[MODEL]["counted_calls"] == 0
    # A local model has no price: no cost, never a guessed one.
    assert rows["llama3.1:8b"]["cost_usd"] is None and rows["llama3.1:8b"]["unpriced_calls"] == 1
    total = by_model["total"]
    assert total["calls"] == len(recorded) and total["unpriced_calls"] == 1
    assert total["cost_usd"] == rows[MODEL]["cost_usd"]

    by_session = {row["session"]: row for row in usage(kvchat, "--by", "session")["rows"]}
    assert by_session["one"]["calls"] == 3 and by_session["two"]["calls"] == 1
    assert by_session["one"]["title"] == "first question" and by_session["one"]["session_id"]
    assert by_session["one"]["cost_usd"] == rows[MODEL]["cost_usd"] and by_session["one"]["unpriced_calls"] == 0
    assert by_session["two"]["cost_usd"] is None and by_session["two"]["unpriced_calls"] == 1

    [today] = usage(kvchat, "--by", "day")["rows"]
    assert today["calls"] == len(recorded)
    kinds = {row["kind"]: row["calls"] for row in usage(kvchat, "--by", "kind")["rows"]}
    assert kinds == {"answer": 3, "extract": 1}
    assert usage(kvchat, "--since", "1h")["total"]["calls"] == len(recorded)
    assert usage(kvchat, "--since", "2999-01-01")["rows"] == []
    assert usage(kvchat, "--until", "2000-01-01")["rows"] == []
    assert usage(kvchat, "--since", "1h", "--until", "2999-01-01")["total"]["calls"] == len(recorded)

    plain = kvchat("usage").stdout.splitlines()
    assert f"{MODEL}\t{len(mini)}\t{tokens_in}\t{tokens_out}\t${rows[MODEL]['cost_usd']:.4f}" in plain
    assert "llama3.1:8b\t1\t" in kvchat("usage").stdout and kvchat("usage").stdout.count("$") == 1


def test_bad_usage_options_are_one_line_errors(kvchat):
    for args, message in ((("--by", "week"), "kvchat: error: --by: 'week' is not one of session, model, day, kind"),
                          (("--since", "last tuesday"), "kvchat: error: --since: 'last tuesday' is neither")):
        done = kvchat("usage", *args)
        assert done.exit_code == 1 and done.stderr.startswith(message) and done.stderr.count("\n") == 1


def test_a_deleted_sessions_calls_stay_counted_without_it(kvchat, model, home):
    kvchat("ask", "-s", "secret", "Zorblaxified question", "--no-extract")
    kvchat("ask", "-s", "kept", "another question", "--no-extract")
    before = usage(kvchat)["total"]
    assert kvchat("sessions", "delete", "secret", "--yes").exit_code == 0
    after = usage(kvchat, "--by", "session")
    assert after["total"] == before, "the tokens were spent: deleting the conversation does not unspend them"
    assert {row["session"] for row in after["rows"]} == {None, "kept"}
    assert [row["title"] for row in after["rows"] if row["session"] is None] == [None]


def test_prices_are_only_for_exact_names_and_listed_snapshots():
    assert pricing.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert pricing.cost("openai/GPT-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert pricing.cost("gpt-4o-2024-05-13", 0, 1_000_000) == pytest.approx(15.0), "an older snapshot, its own price"
    for unknown in ("gpt-4o-mini-2099-01-01", "gpt-4.5-preview", "llama3.1:8b", "", None):
        assert pricing.cost(unknown, 1000, 1000) is None


@pytest.mark.blank_database
def test_answers_stored_before_calls_were_recorded_are_counted_after_the_upgrade(home):
    from alembic import command

    home.mkdir(parents=True, exist_ok=True)
    engine = database.create_engine(database.resolve_url(None))
    config, _ = database.migration_scripts()
    with engine.connect() as connection:
        connection = connection.execution_options(kvchat_write=True)
        with connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            connection.exec_driver_sql(
                "INSERT INTO sessions (id, name, created_at, last_active_at, turn_count, token_count) "
                "VALUES (1, 'old', '2024-01-01', '2024-01-01', 3, 30)"
            )
            connection.exec_driver_sql(
                "INSERT INTO turns (session_id, role, content, tokens, status, model, prompt_tokens, "
                "completion_tokens, created_at) VALUES "
                "(1, 'user', '## How do I **vacuum** an SQLite database?', 10, 'complete', NULL, NULL, NULL, "
                "'2024-01-01 10:00:00'), "
                "(1, 'assistant', 'Run VACUUM.', 10, 'complete', 'gpt-4o', 120, 7, '2024-01-01 10:00:01'), "
                "(1, 'assistant', 'imported, no usage', 10, 'complete', NULL, NULL, NULL, '2024-01-01 10:00:02')"
            )
    engine.dispose()
    with Store() as store:
        assert store.session("old").title == "How do I vacuum an SQLite database?"
        [row] = store.usage("model")
        assert (row.key, row.calls, row.prompt_tokens, row.completion_tokens) == ("gpt-4o", 1, 120, 7)
        assert row.counted_calls == 1, "whether the server reported it was not kept: not claimed"
        [day] = store.usage("day")
        assert day.key == datetime(2024, 1, 1, 10, 0, 1, tzinfo=timezone.utc).astimezone().date().isoformat()
    assert calls(home) == [("answer", "old", "gpt-4o", 120, 7, None)]


@pytest.mark.parametrize("zone, days", [
    ("UTC", {"2026-03-09": 2, "2026-03-10": 2}),
    ("Asia/Kathmandu", {"2026-03-10": 4}),  # UTC+5:45: 18:20 UTC is 00:05 the next day
    ("America/St_Johns", {"2026-03-09": 4}),  # UTC-2:30 in March (summer time)
])
def test_days_are_local_days_whatever_the_zone_offset(store, monkeypatch, zone, days):
    import time

    from kvchat.schema import model_calls

    with store.engine.begin() as db:
        for at in ("2026-03-09 18:20:00", "2026-03-09 23:59:00", "2026-03-10 00:14:00", "2026-03-10 00:16:00"):
            db.execute(model_calls.insert().values(
                user_name=store.user, kind="answer", model=MODEL, prompt_tokens=1, completion_tokens=1, reported=True,
                created_at=datetime.fromisoformat(at)))
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert {row.key: row.calls for row in store.usage("day")} == days
    finally:
        monkeypatch.undo()
        time.tzset()


def test_at_a_terminal_usage_is_a_table_with_a_total_and_says_what_the_costs_are(kvchat, kvchat_terminal, model):
    kvchat("ask", "-s", "one", "first question")
    screen = kvchat_terminal("usage", "--by", "kind").stdout
    assert "est. cost" in screen and "total" in screen
    assert "Tokens by kind of call: answers" in screen and "fact extraction" in screen
    assert f"list prices checked {pricing.PRICES_CHECKED}" in " ".join(screen.split())


def test_a_cut_answer_is_recorded_as_counted_and_a_failed_call_not_at_all(kvchat, model, home):
    model.queue_cut_stream("The first half of an ans")
    done = kvchat("ask", "-s", "cut", "Tell me everything", "--no-extract")
    assert done.exit_code == 1
    [cut] = calls(home)
    question_turns = json.loads(kvchat("history", "-s", "cut", "--json").stdout)
    assert question_turns[1]["status"] == "interrupted"
    # The server's usage report never came: kvchat's own counts of the prompt and the part that arrived.
    assert cut == ("answer", "cut", MODEL, question_turns[1]["prompt_tokens"],
                   tokens.count_tokens("The first half of an ans", MODEL), 0)
    model.queue_error(400, "no such thing")
    assert kvchat("ask", "-s", "cut", "again?", "--no-extract").exit_code == 1
    assert len(calls(home)) == 1, "a refused request cost nothing"


def test_an_extraction_reply_that_is_not_json_still_cost_its_tokens(kvchat, model, home):
    model.queue_json_reply("Sure! Here are the facts you asked for")
    assert kvchat("ask", "-s", "x", "I use neovim", "--extract", "model").exit_code == 0
    kinds = [call[0] for call in calls(home)]
    assert kinds == ["answer", "extract"]
    assert calls(home)[1][4] == rough_tokens("Sure! Here are the facts you asked for")

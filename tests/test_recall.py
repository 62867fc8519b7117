"""`kvchat recall`: the memories `ask` would use, with scores and reasons,
for one question or a file of them."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone


def test_recall_shows_what_ask_then_sends(model, kvchat):
    kvchat("facts", "set", "project.api.port", "8080")
    kvchat("facts", "set", "user.pet", "a cat")
    items = json.loads(kvchat("recall", "which port does the api use?", "--json").stdout)
    assert [(i["kind"], i["key"]) for i in items] == [("fact", "project.api.port")]
    assert items[0]["matched"] and items[0]["tokens"] > 0 and items[0]["score"] > 0
    kvchat("ask", "which port does the api use?", "--no-extract")
    assert items[0]["text"] in model.chat_requests[0]["messages"][0]["content"]


def import_deploy_key_exchange(kvchat, tmp_path, session: str) -> None:
    """A question (ref a) and its answer (ref b) about a deploy key, in `session`."""
    path = tmp_path / "t.jsonl"
    path.write_text(
        f'{{"session": "{session}", "role": "user", "content": "The deploy key rotates every Tuesday", "ref": "a"}}\n'
        f'{{"session": "{session}", "role": "assistant", "content": "Noted: Tuesday rotation.", "ref": "b"}}\n'
    )
    assert kvchat("import", str(path)).exit_code == 0


def test_recall_finds_older_turns_with_memory_tokens_zero(kvchat, tmp_path):
    import_deploy_key_exchange(kvchat, tmp_path, "s")
    items = json.loads(kvchat("recall", "when does the deploy key rotate?", "-s", "s", "--memory-tokens", "0", "--json").stdout)
    [item] = items
    assert item["kind"] == "turn" and item["ref"] == "a"
    assert [t["ref"] for t in item["turns"]] == ["a", "b"]
    # With the default window the same turns are recent, so nothing is "recalled".
    assert json.loads(kvchat("recall", "when does the deploy key rotate?", "-s", "s", "--json").stdout) == []


def test_on_a_terminal_recall_says_facts_and_turns_are_ranked_apart(kvchat, kvchat_terminal, tmp_path):
    import_deploy_key_exchange(kvchat, tmp_path, "s")
    kvchat("facts", "set", "project.deploy.key", "rotates monthly")
    screen = kvchat_terminal("recall", "when does the deploy key rotate?", "-s", "s", "--memory-tokens", "0").stdout
    assert "fact" in screen and "turn" in screen
    assert "each is ranked by its score against the best of its kind" in screen.replace("\r\n", " ")


def test_recall_names_a_session_by_its_start_or_id(kvchat, tmp_path):
    import_deploy_key_exchange(kvchat, tmp_path, "sprint-notes")
    for ref in ("sprint", "#1"):
        done = kvchat("recall", "deploy key rotate", "-s", ref, "--memory-tokens", "0", "--json")
        assert [item["ref"] for item in json.loads(done.stdout)] == ["a"], ref
    # A name no session has, nor starts, recalls facts only, and says so.
    other = kvchat("recall", "deploy key rotate", "-s", "other", "--json")
    assert json.loads(other.stdout) == []
    assert other.stderr == ("kvchat: warning: no session is named 'other': this is what a new session would "
                            "recall (facts only)\n")


def test_recall_many_queries_in_one_process(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "helix")
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "query": "editor?"}\n{"id": "two", "query": "nothing matches zebra"}\n')
    lines = [json.loads(line) for line in kvchat("recall", "--queries", str(queries), "--json").stdout.splitlines()]
    assert [line["id"] for line in lines] == [1, "two"]
    assert lines[0]["items"][0]["key"] == "user.editor" and lines[1]["items"] == []
    both = kvchat("recall", "--queries", str(queries), "--show-prompt")
    assert both.exit_code == 1
    assert both.stderr == "kvchat: error: --show-prompt shows one question's prompt: give a question, not --queries\n"


def test_recall_queries_are_all_checked_first_and_each_result_carries_its_notes(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "helix")
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "query": "editor?", "session": "nosuch"}\n')
    [line] = [json.loads(line) for line in kvchat("recall", "--queries", str(queries)).stdout.splitlines()]
    assert line["items"][0]["key"] == "user.editor"
    assert line["notes"] == ["no session is named 'nosuch': this is what a new session would recall (facts only)"]
    for bad, error in [('{"id": 2, "query": " "}', 'line 2: expected an object with a non-empty "query" string'),
                       ('{"id": 2, "query": "a\\u0000b"}', "line 2: the query contains a NUL character"),
                       ('{"id": 2, "query": "x", "session": 7}', 'line 2: "session" must be a string')]:
        queries.write_text('{"id": 1, "query": "editor?"}\n' + bad + "\n")
        done = kvchat("recall", "--queries", str(queries))
        assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"kvchat: error: {error}\n")


def test_recall_of_chinese_facts(kvchat):
    kvchat("facts", "set", "user.hobby", "周末喜欢爬山和摄影")
    items = json.loads(kvchat("recall", "你周末一般去爬山吗", "--json").stdout)
    assert items and items[0]["key"] == "user.hobby"


def test_recall_says_why_an_item_was_chosen(kvchat, tmp_path):
    kvchat("facts", "set", "project.database", "we run PostgreSQL 16 in staging")
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"session": "s", "role": "user", "content": "Our staging servers keep failing health checks"}\n'
        '{"session": "s", "role": "assistant", "content": "Check the load balancer timeouts."}\n'
    )
    kvchat("import", str(path))
    [item] = json.loads(kvchat("recall", "which database version?", "-s", "s", "--json").stdout)
    assert item["key"] == "project.database"
    assert set(item["matched"]) == {"databas", "stage"}
    parts = item["parts"]
    assert parts["question"] > 0 and parts["context"] > 0 and parts["key"] > 0
    assert abs(parts["question"] + parts["context"] - item["score"]) < 1e-3


def test_the_conversation_before_the_question_steers_recall(kvchat, tmp_path):
    kvchat("facts", "set", "project.backend.framework", "FastAPI")
    kvchat("facts", "set", "project.frontend.framework", "Svelte")  # newer: wins a tie
    path = tmp_path / "t.jsonl"
    path.write_text('{"session": "s", "role": "user", "content": "Let us talk about the backend service"}\n')
    kvchat("import", str(path))
    items = json.loads(kvchat("recall", "which framework do we use?", "-s", "s", "--json").stdout)
    assert [i["key"] for i in items] == ["project.backend.framework", "project.frontend.framework"]
    without_context = json.loads(kvchat("recall", "which framework do we use?", "--json").stdout)
    assert [i["key"] for i in without_context] == ["project.frontend.framework", "project.backend.framework"]


def test_a_key_namespace_alone_does_not_recall_a_fact(kvchat):
    kvchat("facts", "set", "user.name", "Ada")
    kvchat("facts", "set", "user.editor", "helix")
    assert json.loads(kvchat("recall", "add a user to the users table", "--json").stdout) == []
    assert json.loads(kvchat("recall", "what is my name?", "--json").stdout)[0]["key"] == "user.name"


def test_a_long_conversation_adds_only_its_heaviest_terms_to_the_query():
    from kvchat.recall import CONTEXT_MAX_TERMS, build_query
    from kvchat.store import Turn

    def turn(i, text):
        return Turn(id=i, session_id=1, role="user", content=text, tokens=1, status="complete",
                    created_at=datetime.now(timezone.utc))

    many = " ".join(f"word{n}" for n in range(400))
    context = [turn(1, many), turn(2, "kubernetes deployment " + "部署脚本出错了 " * 3)]
    query = build_query("which kubernetes namespace?", context)
    assert len(query.context) == CONTEXT_MAX_TERMS
    assert "kubernet" in query.question and "namespac" in query.question
    # The newest turn weighs most, so its terms are the ones kept.
    assert {"deploy", "部署", "脚本"} <= set(query.context)


def _household(store, now):
    """Bart, Lisa and the assistant over three days, the same words each day."""
    from kvchat.store import NewTurn

    def turn(role, name, content, days_back, minute):
        at = (now - timedelta(days=days_back)).replace(hour=10, minute=minute)
        return NewTurn(role=role, name=name, content=content, tokens=12, created_at=at)

    store.add_turns("home", [
        turn("user", "Bart", "We should plan the camping trip to the lake", 9, 0),
        turn("assistant", "Assistant", "Pack a tent and a warm sleeping bag for the lake trip", 9, 1),
        turn("user", "Lisa", "I want the camping trip to have a campfire", 1, 0),
        turn("assistant", "Assistant", "A campfire by the lake sounds lovely", 1, 1),
        turn("user", "Bart", "Remind me what I need for the lake", 1, 2),
        turn("assistant", "Assistant", "The tent and the sleeping bag", 1, 3),
        *[turn("user", "Bart", f"Unrelated chat number {n}", 0, 10 + n) for n in range(8)],
    ])
    return store.session("home")


def _recall(store, session, question, now):
    from kvchat.recall import recall

    return recall(store, question, model="gpt-4o-mini", session_id=session.id, before_id=None,
                  facts=False, now=now, budget_tokens=10_000, limit=10)


NOW = datetime(2026, 11, 26, 18, 0, tzinfo=timezone.utc)


def matching(item):
    """The turn that matched, of the exchange the item brings."""
    return next(turn for turn in item.turns if turn.id == item.id)


def test_a_named_day_brings_that_day_s_turns_first(store):
    session = _household(store, NOW)
    [first, *_] = _recall(store, session, "what did we say about the lake trip nine days ago?", NOW)
    assert matching(first).created_at.date() == date(2026, 11, 17)
    assert first.parts["time"] > 0 and first.parts["speaker"] == 0
    assert abs(sum(first.parts.values()) - first.score) < 1e-3
    # The words that named the day are not searched for.
    assert not {"nine", "day", "ago"} & set(first.matched)
    [first, *_] = _recall(store, session, "what did we say about the lake trip yesterday?", NOW)
    assert matching(first).created_at.date() == date(2026, 11, 25)


def test_a_named_day_recalls_its_turns_without_a_matching_word(store):
    session = _household(store, NOW)
    items = _recall(store, session, "what did we talk about on 2026-11-17?", NOW)
    assert {turn.content for item in items for turn in item.turns} == {
        "We should plan the camping trip to the lake", "Pack a tent and a warm sleeping bag for the lake trip",
    }
    assert all(item.parts["question"] == 0 and item.parts["time"] > 0 for item in items)


def test_a_named_speaker_brings_their_turns_first(store):
    session = _household(store, NOW)
    [first, *_] = _recall(store, session, "what did Lisa say about the camping trip?", NOW)
    assert matching(first).name == "Lisa" and first.parts["speaker"] > 0
    [first, *_] = _recall(store, session, "what did you tell me about the sleeping bag?", NOW)
    assert matching(first).role == "assistant" and first.parts["speaker"] > 0
    [first, *_] = _recall(store, session, "你昨天说过关于lake的什么？", NOW)
    assert matching(first).role == "assistant" and matching(first).created_at.date() == date(2026, 11, 25)


def test_a_question_naming_no_one_and_no_time_ranks_by_its_words(store):
    session = _household(store, NOW)
    items = _recall(store, session, "sleeping bag", NOW)
    assert items and all(item.parts["speaker"] == item.parts["time"] == 0 for item in items)
    assert "sleeping bag" in matching(items[0]).content


def test_recall_json_says_which_speaker_and_time_matched(kvchat, tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [
        {"session": "s", "role": "user", "name": "Ada", "content": "The deploy key rotates on Tuesdays",
         "created_at": "2025-03-03T10:00:00+00:00", "ref": "march"},
        {"session": "s", "role": "user", "name": "Bob", "content": "The deploy key rotates on Fridays",
         "created_at": "2025-06-10T10:00:00+00:00", "ref": "june"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    kvchat("import", str(path))
    asked = "what did Ada say about the deploy key in March 2025?"
    items = json.loads(kvchat("recall", asked, "-s", "s", "--memory-tokens", "0", "--json").stdout)
    assert [item["ref"] for item in items] == ["march", "june"]
    assert items[0]["parts"]["speaker"] > 0 and items[0]["parts"]["time"] > 0
    assert items[1]["parts"]["speaker"] == items[1]["parts"]["time"] == 0
    assert items[0]["turns"][0]["name"] == "Ada" and items[0]["turns"][0]["created_at"].startswith("2025-03-03")


def test_a_long_context_turn_weighs_less_than_a_short_one():
    from kvchat.recall import CONTEXT_DECAY, build_query
    from kvchat.store import Turn

    def turn(i, text):
        return Turn(id=i, session_id=1, role="user", content=text, tokens=1, status="complete", created_at=NOW)

    ramble = "kubernetes " + " ".join(f"filler{n}" for n in range(39))  # 40 terms
    query = build_query("which namespace?", [turn(1, "kubernetes helm"), turn(2, ramble)])
    # The short turn, one step further back, keeps its whole weight ...
    assert query.context["helm"] == CONTEXT_DECAY**2
    # ... while each term of the long newest turn counts less than a whole turn would.
    assert query.context["filler0"] < CONTEXT_DECAY**2
    assert query.context["kubernet"] == CONTEXT_DECAY**2 + query.context["filler0"]


def test_an_older_exchange_too_long_for_the_room_left_is_passed_over(store):
    """The budget is filled by the best exchanges that fit: a long one is
    passed over by the counts stored with its turns, and a shorter one further
    down the ranking still comes in. A stored count is trusted as it stands
    (it may come from a model of another encoding), as the recent window
    trusts it."""
    from kvchat.recall import recall
    from kvchat.store import NewTurn
    from kvchat.tokens import count_tokens

    def turn(role, content, tokens=None):
        return NewTurn(role=role, content=content, tokens=count_tokens(content, "gpt-4o-mini") if tokens is None else tokens)

    long_answer = "For the lake trip pack: " + "tent, stove, rope, lantern, " * 60
    store.add_turns("trip", [
        turn("user", "What do I pack for the lake trip?"),
        turn("assistant", long_answer),
        turn("user", "Is the lake cold for the trip in May?"),
        turn("assistant", "The lake is cold in May: pack a wetsuit for the trip."),
        turn("user", "Which lake trip snacks keep?"),
        turn("assistant", "Nuts keep on a lake trip.", tokens=500),
    ])
    session = store.session("trip")
    items = recall(store, "what to pack for the lake trip", model="gpt-4o-mini", session_id=session.id,
                   before_id=None, facts=False, budget_tokens=100, limit=10)
    assert [turn.content for item in items for turn in item.turns] == [
        "Is the lake cold for the trip in May?", "The lake is cold in May: pack a wetsuit for the trip.",
    ]
    assert sum(item.tokens for item in items) <= 100
    assert all(item.tokens == count_tokens(item.text, "gpt-4o-mini") for item in items)

"""`kvchat recall`: the memories `ask` would use, with scores and reasons,
for one question or a file of them."""

from __future__ import annotations

import json


def test_recall_shows_what_ask_then_sends(model, kvchat):
    kvchat("facts", "set", "project.api.port", "8080")
    kvchat("facts", "set", "user.pet", "a cat")
    items = json.loads(kvchat("recall", "which port does the api use?", "--json").stdout)
    assert [(i["kind"], i["key"]) for i in items] == [("fact", "project.api.port")]
    assert items[0]["matched"] and items[0]["tokens"] > 0 and items[0]["score"] > 0
    kvchat("ask", "which port does the api use?", "--no-extract")
    assert items[0]["text"] in model.chat_requests[0]["messages"][0]["content"]


def test_recall_finds_older_turns_with_memory_tokens_zero(kvchat, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"session": "s", "role": "user", "content": "The deploy key rotates every Tuesday", "ref": "a"}\n'
        '{"session": "s", "role": "assistant", "content": "Noted: Tuesday rotation.", "ref": "b"}\n'
    )
    kvchat("import", str(path))
    items = json.loads(kvchat("recall", "when does the deploy key rotate?", "-s", "s", "--memory-tokens", "0", "--json").stdout)
    [item] = items
    assert item["kind"] == "turn" and item["ref"] == "a"
    assert [t["ref"] for t in item["turns"]] == ["a", "b"]
    # With the default window the same turns are recent, so nothing is "recalled".
    assert json.loads(kvchat("recall", "when does the deploy key rotate?", "-s", "s", "--json").stdout) == []


def test_recall_many_queries_in_one_process(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "helix")
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "query": "editor?"}\n{"id": "two", "query": "nothing matches zebra"}\n')
    lines = [json.loads(line) for line in kvchat("recall", "--queries", str(queries), "--json").stdout.splitlines()]
    assert [line["id"] for line in lines] == [1, "two"]
    assert lines[0]["items"][0]["key"] == "user.editor" and lines[1]["items"] == []


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
    from datetime import datetime, timezone

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

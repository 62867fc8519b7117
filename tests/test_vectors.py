"""Vector recall (kvchat.vectors) against the fake server's embeddings, whose
vectors are a bag of concepts: "car", "automobile" and "vehicle" are one
concept, so a paraphrase lands near its original (see fake_openai.CONCEPTS)."""

from __future__ import annotations

import copy

import pytest
from conftest import TEST_KEY

from kvchat import recall as recall_module
from kvchat.model_client import ModelClient, ModelError
from kvchat.store import NewTurn
from kvchat.vectors import SemanticRecall

CHAT_MODEL = "gpt-4o-mini"
EMBEDDER = "fake-embed"


@pytest.fixture
def client(model):
    with ModelClient(api_key=TEST_KEY, base_url=model.base_url, max_retries=0, timeout=10) as opened:
        yield opened


@pytest.fixture
def semantic(store, client):
    return SemanticRecall(store, client, EMBEDDER)


def keyword_recall(store, question, *, session_id=None, before_id=None, context=()):
    return recall_module.recall(
        store, question, model=CHAT_MODEL, session_id=session_id, before_id=before_id, context=context,
        budget_tokens=1000, limit=8,
    )


def both(semantic, question, *, session_id=None, before_id=None, context=(), limit=8, budget_tokens=1000):
    """(keyword recall's items, vector recall's items) for `question`."""
    keyword = keyword_recall(semantic.store, question, session_id=session_id, before_id=before_id, context=context)
    fused = semantic.recall(
        question, context=context, session_id=session_id, before_id=before_id, keyword=keyword,
        budget_tokens=budget_tokens, limit=limit, model=CHAT_MODEL,
    )
    return keyword, fused


def keys(items):
    return [item.key for item in items]


def add_turns(store, session_name, *pairs):
    session = store.open_session(session_name)
    turns = []
    for role, content in pairs:
        turns.append(store.add_turn(session.id, NewTurn(role=role, content=content, tokens=len(content) // 4 + 1)))
    return session, turns


def stored_vectors(store):
    from sqlalchemy import select

    from kvchat.schema import embeddings

    with store.engine.connect() as db:
        return db.execute(
            select(embeddings.c.kind, embeddings.c.item_id, embeddings.c.model, embeddings.c.dimensions)
            .order_by(embeddings.c.model, embeddings.c.kind, embeddings.c.item_id)
        ).all()


def test_vector_recall_finds_a_paraphrase_keyword_recall_misses(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    store.set_fact("project.database", "PostgreSQL 16 in staging", source="user")
    keyword, fused = both(semantic, "what car do I own?")
    assert keyword == []
    [item] = fused
    assert (item.kind, item.key, item.text) == ("fact", "user.vehicle", "- user.vehicle: drives an old automobile")
    assert item.matched == [] and item.parts["vector"] > 0.6 and item.tokens > 0
    assert item.score == round(1 / 61, 6)  # first in the vector ranking, absent from the keyword one


def test_vector_recall_finds_a_chinese_paraphrase(store, model, semantic):
    store.set_fact("user.commute", "每天开车去公司", source="user")  # drives to the office every day
    store.set_fact("user.pet", "一只橘猫", source="user")
    keyword, fused = both(semantic, "你平时怎么通勤？")  # how do you usually commute?
    assert keyword == [] and keys(fused) == ["user.commute"]


def test_an_unrelated_question_recalls_nothing_more(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    keyword, fused = both(semantic, "tell me a joke about zebras")
    assert keyword == [] and fused == []
    assert len(model.embedding_requests) == 1  # it did look


def test_keyword_and_vector_results_are_fused_and_say_why(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    store.set_fact("user.shell", "fish with starship prompt", source="user")
    keyword, fused = both(semantic, "which editor and which car?")
    assert keys(keyword) == ["user.editor"]
    assert keys(fused) == ["user.editor", "user.vehicle"]
    editor, vehicle = fused
    # Found by both: its keyword reasons stay, the similarity is added, and
    # the fused score is the sum of two reciprocal ranks.
    assert editor.matched == keyword[0].matched == ["editor"]
    assert editor.parts["question"] == keyword[0].parts["question"] and editor.parts["vector"] > 0.3
    assert editor.score > vehicle.score > 0
    assert vehicle.matched == [] and set(vehicle.parts) == {"vector"}
    assert "vector" not in keyword[0].parts  # the caller's items are not changed


def test_limit_and_token_budget_are_kept(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.second_vehicle", "a red sedan for weekends", source="user")
    store.set_fact("user.editor", "helix", source="user")
    _, fused = both(semantic, "which editor and which car?", limit=2)
    assert len(fused) == 2
    _, fused = both(semantic, "which editor and which car?", budget_tokens=12)
    assert fused and sum(item.tokens for item in fused) <= 12
    _, fused = both(semantic, "which editor and which car?", budget_tokens=0)
    assert fused == []


def test_stored_vectors_are_reused_and_only_new_text_is_embedded(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    session, turns = add_turns(
        store, "s", ("user", "We deploy on Tuesdays"), ("assistant", "Noted, Tuesday releases."),
    )
    both(semantic, "what car do I own?", session_id=session.id, before_id=None)
    assert model.embedded_texts == [
        "what car do I own?", "user.vehicle: drives an old automobile", "user.editor: helix",
        "We deploy on Tuesdays", "Noted, Tuesday releases.",
    ]
    assert len(model.embedding_requests) == 1  # the question rides with the new texts

    model.reset()
    keyword, fused = both(semantic, "which sedan?", session_id=session.id, before_id=None)
    assert model.embedded_texts == ["which sedan?"]
    assert keyword == [] and keys(fused) == ["user.vehicle"]

    model.reset()
    store.set_fact("user.pet", "a kitten called Tom", source="user")
    _, more = add_turns(store, "s", ("user", "Ship it weekly"), ("assistant", "Weekly it is."))
    both(semantic, "do I have a cat?", session_id=session.id, before_id=more[1].id)
    # The new fact and the turn now outside the window; not the newest turn.
    assert model.embedded_texts == ["do I have a cat?", "user.pet: a kitten called Tom", "Ship it weekly"]
    assert [(kind, item_id) for kind, item_id, *_ in stored_vectors(store)] == [
        ("fact", 1), ("fact", 2), ("fact", 3), ("turn", turns[0].id), ("turn", turns[1].id), ("turn", more[0].id),
    ]


def test_an_older_turn_is_recalled_with_its_answer_and_recent_turns_are_not(store, model, semantic):
    session, turns = add_turns(
        store, "s",
        ("user", "We deploy on Tuesdays"), ("assistant", "Noted: the rotation is fixed."),
        ("user", "Unrelated: format this JSON"), ("assistant", "Here it is."),
        ("user", "When is the next release?"),
    )
    other, _ = add_turns(store, "other", ("user", "Our release train leaves every week"))
    question = "when do we ship?"
    keyword, fused = both(semantic, question, session_id=session.id, before_id=turns[2].id)
    assert keyword == []
    [item] = fused
    assert item.kind == "turn" and item.id == turns[0].id
    assert [turn.id for turn in item.turns] == [turns[0].id, turns[1].id]
    assert item.text.count("\n") == 1 and "Noted: the rotation is fixed." in item.text
    # Turns at or after before_id are the recent window: never embedded, never recalled.
    assert "When is the next release?" not in model.embedded_texts
    assert "Our release train leaves every week" not in model.embedded_texts


def test_a_vector_hit_on_an_exchange_keyword_recall_found_is_one_item(store, model, semantic):
    session, turns = add_turns(
        store, "s", ("user", "The deploy key rotates every Tuesday"), ("assistant", "Weekly release then."),
    )
    keyword, fused = both(semantic, "when does the deploy key rotate?", session_id=session.id, before_id=None)
    [found] = keyword
    assert found.id == turns[0].id
    [item] = fused
    assert [turn.id for turn in item.turns] == [turns[0].id, turns[1].id]
    assert item.matched == found.matched and "vector" in item.parts


def test_the_conversation_before_a_follow_up_steers_the_query(store, model, semantic):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    session, turns = add_turns(store, "s", ("user", "My car makes a noise"), ("assistant", "Which noise?"))
    _, fused = both(semantic, "how old is it?", session_id=session.id, before_id=turns[0].id, context=turns)
    assert keys(fused) == ["user.vehicle"]
    assert model.embedding_requests[0]["input"][:2] == ["how old is it?", "My car makes a noise\nhow old is it?"]


def test_a_changed_fact_is_embedded_again(store, model, semantic):
    store.set_fact("user.pet", "a kitten called Tom", source="user")
    store.set_fact("user.editor", "helix", source="user")
    assert keys(both(semantic, "do I have a cat?")[1]) == ["user.pet"]
    store.set_fact("user.pet", "a puppy called Rex", source="user")
    model.reset()
    assert both(semantic, "do I have a cat?")[1] == []
    assert model.embedded_texts == ["do I have a cat?", "user.pet: a puppy called Rex"]
    model.reset()
    assert keys(both(semantic, "do I have a dog?")[1]) == ["user.pet"]
    assert model.embedded_texts == ["do I have a dog?"]


def test_a_forgotten_fact_is_never_returned_and_its_vector_goes(store, model, semantic):
    store.set_fact("user.editor", "helix", source="user")
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    assert keys(both(semantic, "what car do I own?")[1]) == ["user.vehicle"]
    store.forget_fact("user.vehicle", source="user")
    assert both(semantic, "what car do I own?")[1] == []
    # The id SQLite hands out next may be the forgotten fact's own: its old
    # vector must not stand for the new text.
    store.set_fact("user.pet", "a kitten called Tom", source="user")
    model.reset()
    assert both(semantic, "what car do I own?")[1] == []
    assert keys(both(semantic, "do I have a cat?")[1]) == ["user.pet"]
    assert model.embedded_texts[:2] == ["what car do I own?", "user.pet: a kitten called Tom"]
    live = {fact.id for fact in store.facts()}
    assert {item_id for kind, item_id, *_ in stored_vectors(store) if kind == "fact"} == live


def test_prune_embeddings_removes_only_the_vectors_of_forgotten_facts(store, model, semantic):
    store.set_fact("user.editor", "helix", source="user")
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    session, _ = add_turns(store, "s", ("user", "hello there"))
    both(semantic, "what car?", session_id=session.id)
    store.forget_fact("user.editor", source="user")
    assert store.prune_embeddings() == 1
    assert store.prune_embeddings() == 0
    assert [kind for kind, *_ in stored_vectors(store)] == ["fact", "turn"]


@pytest.mark.parametrize(
    ("status", "kind"), [(500, "server"), (404, "not_found"), (401, "auth")]
)
def test_an_embeddings_failure_raises_model_error_and_leaves_the_keyword_list(store, model, semantic, status, kind):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    session, turns = add_turns(
        store, "s", ("user", "The deploy key rotates every Tuesday"), ("assistant", "Weekly release then."),
    )
    keyword = keyword_recall(store, "when does the deploy key rotate?", session_id=session.id)
    assert keyword
    before = copy.deepcopy(keyword)
    model.queue_error(status, "embeddings are down", embeddings=True)
    with pytest.raises(ModelError) as info:
        semantic.recall(
            "when does the deploy key rotate?", session_id=session.id, before_id=None, keyword=keyword,
            budget_tokens=1000, limit=8, model=CHAT_MODEL,
        )
    assert info.value.kind == kind
    assert keyword == before
    assert stored_vectors(store) == []  # nothing half-stored
    # The next recall, with the server back, works.
    assert keys(both(semantic, "what car do I own?")[1]) == ["user.vehicle"]


def test_a_failure_in_a_later_request_keeps_the_vectors_of_the_earlier_ones(store, model, semantic):
    for n in range(70):
        store.set_fact(f"note.{n}", f"reminder number {n}", source="user")
    model.queue_embeddings()  # the first request (the question and 63 facts) goes through...
    model.queue_error(500, "out of memory", embeddings=True)  # ...the second fails
    with pytest.raises(ModelError):
        both(semantic, "reminder")
    assert [len(body["input"]) for body in model.embedding_requests] == [64, 7]
    assert len(stored_vectors(store)) == 63
    model.reset()
    both(semantic, "reminder")
    assert model.embedded_texts == ["reminder"] + [f"note.{n}: reminder number {n}" for n in range(63, 70)]
    assert len(stored_vectors(store)) == 70


def test_vectors_are_kept_per_embedding_model(store, model, client):
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    assert keys(both(SemanticRecall(store, client, "embed-a"), "what car do I own?")[1]) == ["user.vehicle"]
    # Another model, with vectors of another length: everything is embedded
    # for it, and the first model's vectors stay for when it comes back.
    model.embedding_dimensions = 64
    model.requests.clear()
    assert keys(both(SemanticRecall(store, client, "embed-b"), "which automobile?")[1]) == ["user.vehicle"]
    assert model.embedded_texts == ["which automobile?", "user.vehicle: drives an old automobile", "user.editor: helix"]
    assert [(m, d) for _, _, m, d in stored_vectors(store)] == [("embed-a", 256)] * 2 + [("embed-b", 64)] * 2


def test_vectors_of_another_length_under_the_same_model_name_are_made_again(store, model, semantic):
    # llama.cpp answers with whatever model it loaded, whatever the name asked.
    store.set_fact("user.vehicle", "drives an old automobile", source="user")
    store.set_fact("user.editor", "helix", source="user")
    both(semantic, "what car do I own?")
    model.reset()
    model.embedding_dimensions = 128
    assert keys(both(semantic, "which automobile?")[1]) == ["user.vehicle"]
    assert model.embedded_texts == ["which automobile?", "user.vehicle: drives an old automobile", "user.editor: helix"]
    assert {d for *_, d in stored_vectors(store)} == {128}
    model.requests.clear()
    both(semantic, "which automobile?")
    assert model.embedded_texts == ["which automobile?"]


def test_long_texts_are_embedded_by_their_opening_only(store, model, semantic):
    session, turns = add_turns(store, "s", ("user", "My automobile broke down again. " * 300))
    _, fused = both(semantic, "my car?", session_id=session.id, budget_tokens=5000)
    [sent] = model.embedded_texts[1:]
    assert turns[0].content.startswith(sent) and 1000 < len(sent) < 2500
    [item] = fused
    assert item.id == turns[0].id and item.turns[0].content == turns[0].content  # the prompt gets it whole


def test_no_request_when_there_is_nothing_to_search(store, model, semantic):
    assert both(semantic, "what car do I own?")[1] == []
    assert model.embedding_requests == []


def test_importing_the_module_imports_neither_numpy_nor_openai():
    import subprocess
    import sys

    code = "import sys, kvchat.vectors; print('numpy' in sys.modules, 'openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

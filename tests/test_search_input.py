"""No text can break a search: whatever a user types becomes quoted terms,
and the index gives an answer (perhaps empty), never a syntax error."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvchat.store import NewTurn
from kvchat.textsearch import analyze, match_query

FTS_SYNTAX = st.sampled_from(['"', "*", "NEAR(", "AND", "OR", "NOT", "-", ":", "(", ")", "^", "{", "}", "+"])
TEXT = st.lists(st.one_of(st.text(max_size=20), FTS_SYNTAX), max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_any_text_searches_facts_and_turns_without_error(store, text):
    session = store.open_session("s")
    if not store.facts():
        store.set_fact("user.editor", "vim", source="user")
        store.add_turn(session.id, NewTurn(role="user", content="I edit with vim", tokens=4))
    query = match_query("vim " + text)  # first: a long text may exceed the term cap
    assert query is not None
    assert [h.record.value for h in store.search_facts(query, limit=5)] == ["vim"]
    assert len(store.search_turns(session.id, query, before_id=None, limit=5)) == 1


@given(text=st.text(max_size=200))
def test_the_analyzer_takes_any_text(text):
    for term in analyze(text):
        assert term and not term.isspace()

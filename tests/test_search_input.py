"""No text can break a search: whatever a user types becomes quoted terms,
and the index gives an answer (perhaps empty), never a syntax error."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvchat.store import NewTurn, Store
from kvchat.textsearch import QueryCounts, analyze, key_term_counts, match_query, term_counts

FTS_SYNTAX = st.sampled_from([
    '"', "*", "NEAR(", "AND", "OR", "NOT", "-", ":", "(", ")", "^", "{", "}", "+",
    "&", "|", "!", "<->", ":*", "'", "\\",  # PostgreSQL's tsquery syntax and string escapes
])
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


@given(text=st.text(max_size=200), extra=st.lists(st.text(max_size=8), max_size=6))
def test_counting_a_query_s_terms_agrees_with_the_analyzer(text, extra):
    """recall counts only the query's terms in a candidate (QueryCounts): the
    counts must be the analyzer's."""
    full = term_counts(text)
    asked = list(full)[::2] + [term for word in extra for term in analyze(word)]
    assert QueryCounts(asked)(text) == {term: n for term, n in full.items() if term in set(asked)}
    assert QueryCounts(list(key_term_counts(text))).key(text) == key_term_counts(text)


@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_english_text_takes_a_shorter_way_to_the_same_terms(text):
    """analyze reads ASCII text without looking for CJK runs; the terms must
    be those the general way finds."""
    from kvchat.textsearch import _mixed_terms

    assert analyze(text) == _mixed_terms(text.lower())


def test_a_query_s_chinese_terms_are_counted_in_the_query_s_order():
    """Scores are sums over the counted terms and `recall --json` lists them
    as matched: both must come out the same in every process."""
    asked = analyze("我们明天去长城看日出然后回北京吃烤鸭") + ["数据", "库"]
    text = "烤鸭和长城：北京的日出，数据库"
    counted = QueryCounts(asked)(text)
    assert list(counted) == [term for term in dict.fromkeys(asked) if term in counted]
    assert len(counted) > 10


def test_a_new_store_counts_the_terms_of_its_first_write(store):
    """The kept counts must not outlive the first write either (a new
    store's generation on PostgreSQL reads the same before it and after)."""
    assert store.term_stats("facts", ("zebra",)).containing == {}
    store.set_fact("note.animal", "zebra stripes", source="user")
    assert store.term_stats("facts", ("zebra",)).containing == {"zebra": 1}
    assert [hit.record.key for hit in store.search_facts(match_query("zebra"), limit=5)] == ["note.animal"]


def test_accents_on_latin_letters_do_not_keep_words_apart(store):
    """SQLite's tokenizer drops them (remove_diacritics); PostgreSQL's index
    is given the same terms without them."""
    store.set_fact("note.cafe", "Café crème in Zürich", source="user")
    for asked in ("creme", "zurich", "CAFÉ", "crème"):
        assert [hit.record.key for hit in store.search_facts(match_query(asked), limit=5)] == ["note.cafe"], asked


def test_term_counts_follow_writes_from_any_connection(store, tmp_path):
    """The counts of terms are kept between questions, but never outlive a
    change to the index, whoever makes it."""
    store.set_fact("user.editor", "vim", source="user")
    assert store.term_stats("facts", ("vim", "helix")).containing == {"vim": 1}
    store.set_fact("user.other", "helix and vim", source="user")
    assert store.term_stats("facts", ("vim", "helix")).containing == {"vim": 2, "helix": 1}
    other = Store(store.url)  # another process, as far as the first Store knows
    other.forget_fact("user.editor", source="user")
    other.close()
    assert store.term_stats("facts", ("vim", "helix")).containing == {"vim": 1, "helix": 1}

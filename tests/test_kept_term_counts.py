"""On SQLite, how many facts or turns hold a common term is kept between
processes (migration 0008): counting it from the index walks the term's whole
list of rows, which at a million turns was most of a fresh `kvchat ask`. The
counts are written with a command's next write, used again while the store
has not grown or shrunk by more than Store.TERM_COUNT_DRIFT, and forgotten
when a turn or fact is deleted."""

from __future__ import annotations

import sqlite3

import pytest

from kvchat import database
from kvchat.store import Store

pytestmark = pytest.mark.sqlite_only  # PostgreSQL counts from its GIN index


def kept(store: Store) -> dict[tuple[str, str], int]:
    with sqlite3.connect(database.sqlite_path(store.url)) as raw:
        rows = raw.execute("SELECT kind, term, documents FROM search_term_counts WHERE term <> ''").fetchall()
    return {(kind, term): documents for kind, term, documents in rows}


def tamper(store: Store, term: str, documents: int) -> None:
    with sqlite3.connect(database.sqlite_path(store.url)) as raw:
        raw.execute("UPDATE search_term_counts SET documents = ? WHERE term = ?", (documents, term))


@pytest.fixture
def common_from_three(monkeypatch):
    """A term held by three rows counts as common."""
    monkeypatch.setattr(Store, "KEPT_TERM_MIN_ROWS", 3)


def test_a_new_process_uses_the_counts_an_earlier_one_kept(store, common_from_three, monkeypatch):
    monkeypatch.setattr(Store, "TERM_COUNT_DRIFT", 0.25)
    store.import_facts([(f"note.n{i}", "vim keybindings" if i < 3 else "helix", None, None) for i in range(8)])
    assert store.term_stats("facts", ("vim", "helix")).containing == {"vim": 3, "helix": 5}
    assert kept(store) == {}, "counts are written with a write, never by themselves"
    store.set_fact("note.more", "emacs", source="user")
    assert kept(store) == {("facts", "vim"): 3, ("facts", "helix"): 5}

    tamper(store, "vim", 4)  # the count a fresh process finds is the one it uses
    with Store() as fresh:
        assert fresh.term_stats("facts", ("vim", "helix")).containing == {"vim": 4, "helix": 5}
    # Two more facts make 11 against the 8 counted among: more than 25 % more.
    store.set_fact("note.a", "vim", source="user")
    store.set_fact("note.b", "vim", source="user")
    with Store() as fresh:
        assert fresh.term_stats("facts", ("vim", "helix")).containing == {"vim": 5, "helix": 5}


def test_a_rare_term_is_counted_afresh_every_time(store, common_from_three):
    store.import_facts([("note.a", "zebra", None, None), ("note.b", "zebra and lion", None, None)])
    assert store.term_stats("facts", ("zebra",)).containing == {"zebra": 2}
    store.set_fact("note.c", "lion", source="user")
    assert kept(store) == {}
    with Store() as fresh:
        fresh.set_fact("note.d", "a third zebra", source="user")
        assert fresh.term_stats("facts", ("zebra",)).containing == {"zebra": 3}


def test_deleting_forgets_the_kept_counts_and_those_made_before_it(store, common_from_three):
    store.import_facts([(f"note.n{i}", f"secret project orca {i}", None, None) for i in range(4)])
    store.term_stats("facts", ("orca",))
    store.set_fact("note.other", "lunch", source="user")
    assert ("facts", "orca") in kept(store)

    with Store() as other:  # counts made in one process while another deletes
        other.term_stats("facts", ("secret",))
        for i in range(4):
            store.forget_fact(f"note.n{i}", source="user")
        assert kept(store) == {}
        other.set_fact("note.later", "dinner", source="user")
    assert kept(store) == {}, "the terms of deleted facts are not kept"


def test_deleting_a_session_forgets_the_kept_turn_counts(store, common_from_three):
    from kvchat.store import NewTurn

    store.add_turns("work", [NewTurn(role="user", content="the orca deploy", tokens=3) for _ in range(4)])
    store.term_stats("turns", ("orca",))
    store.set_fact("note.other", "lunch", source="user")
    assert kept(store) == {("turns", "orca"): 4}
    store.delete_session("work")
    assert kept(store) == {}


def test_rewriting_a_turn_forgets_the_kept_turn_counts(store, common_from_three):
    from kvchat.store import NewTurn

    store.add_turns("work", [NewTurn(role="user", content="the orca deploy", tokens=3) for _ in range(4)])
    store.term_stats("turns", ("orca",))
    store.set_fact("note.other", "lunch", source="user")
    assert kept(store) == {("turns", "orca"): 4}
    first = store.history(store.session("work").id)[0]
    store.update_turn(first.id, content="[redacted]")
    assert kept(store) == {}


def test_only_commands_that_write_keep_counts(home, model, kvchat):
    with Store() as store:
        store.import_facts([(f"note.n{i}", f"deploy step {i}", None, None) for i in range(Store.KEPT_TERM_MIN_ROWS)])
    kvchat("recall", "how do I deploy?")
    with Store() as store:
        assert kept(store) == {}
    model.queue_answer("Run the steps in order.")
    assert kvchat("ask", "how do I deploy?").exit_code == 0
    with Store() as store:
        assert kept(store)[("facts", "deploy")] == Store.KEPT_TERM_MIN_ROWS

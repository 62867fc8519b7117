"""How many facts or turns hold a common term is kept between processes
(migrations 0008 on SQLite, 0010 on PostgreSQL): counting it from the index
walks the term's whole list of rows, which at a million turns was most of a
fresh `kvchat ask`. The counts are written with a command's next write, used
again while the store has not grown or shrunk by more than
Store.TERM_COUNT_DRIFT, and forgotten when a turn or fact is deleted."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from kvchat.store import Store


def kept(store: Store) -> dict[tuple[str, str], int]:
    with store.engine.connect() as db:
        rows = db.execute(text("SELECT kind, term, documents FROM search_term_counts WHERE term <> ''")).all()
    return {(kind, term): documents for kind, term, documents in rows}


def tamper(store: Store, term: str, documents: int) -> None:
    with store.engine.begin() as db:
        db.execute(text("UPDATE search_term_counts SET documents = :n WHERE term = :term"), dict(n=documents, term=term))


def forget_kept_counts(store: Store) -> None:
    with store.engine.begin() as db:
        db.execute(text("DELETE FROM search_term_counts WHERE term <> ''"))


@pytest.fixture
def common_from_three(monkeypatch):
    """A term held by three rows counts as common."""
    monkeypatch.setattr(Store, "KEPT_TERM_MIN_ROWS", 3)


def test_a_new_process_uses_the_counts_an_earlier_one_kept(store, common_from_three, monkeypatch):
    monkeypatch.setattr(Store, "TERM_COUNT_DRIFT", 0.25)
    for i in range(8):
        store.set_fact(f"note.n{i}", "vim keybindings" if i < 3 else "helix", source="user")
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


def four_facts_with_orca_kept(store: Store, words: str = "orca") -> None:
    """Four facts holding `words`, and the count of "orca" kept by a write."""
    for i in range(4):
        store.set_fact(f"note.n{i}", f"{words} {i}", source="user")
    store.term_stats("facts", ("orca",))
    store.set_fact("note.other", "lunch", source="user")
    assert ("facts", "orca") in kept(store)


def test_deleting_forgets_the_kept_counts_and_those_made_before_it(store, common_from_three):
    four_facts_with_orca_kept(store, "secret project orca")

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
        forget_kept_counts(store)  # as they are after writes that kept none
    kvchat("recall", "how do I deploy?")
    with Store() as store:
        assert kept(store) == {}
    model.queue_answer("Run the steps in order.")
    assert kvchat("ask", "how do I deploy?").exit_code == 0
    with Store() as store:
        assert kept(store)[("facts", "deploy")] == Store.KEPT_TERM_MIN_ROWS


def test_an_import_that_grows_the_store_keeps_the_counts_of_its_common_terms(store, common_from_three):
    from kvchat import transfer

    lines = [json.dumps({"session": f"s{i % 3}", "role": "user", "content": f"the orca deploy {i}"}) for i in range(6)]
    lines.append(json.dumps({"session": "s0", "role": "user", "content": "a rare walrus"}))
    transfer.import_turns(store, lines, model="gpt-4o-mini")
    # Kept without a question asked: the first questions after a large import
    # need not count them one by one.
    turns = {term: held for (kind, term), held in kept(store).items() if kind == "turns"}
    assert (turns["orca"], turns["deploy"]) == (6, 6)
    assert "walrus" not in turns, "a rare term is counted afresh every time"
    store.import_facts([(f"note.n{i}", f"helix keybindings {i}", None, None) for i in range(4)])
    assert kept(store)[("facts", "helix")] == 4

    tamper(store, "orca", 5)  # a fresh process uses the kept count
    with Store() as fresh:
        assert fresh.term_stats("turns", ("orca", "walrus")).containing == {"orca": 5, "walrus": 1}


def test_ctrl_c_while_an_import_counts_its_terms_stops_only_the_count(store, common_from_three):
    """The import has committed by then: it reports what it stored, and a
    user who pressed Ctrl-C is not left to wonder whether it did."""
    from kvchat import transfer

    def progress(stage, done, total):
        if stage == "counting terms":
            raise KeyboardInterrupt

    lines = [json.dumps({"session": "s0", "role": "user", "content": f"the orca deploy {i}"}) for i in range(6)]
    try:
        added = transfer.import_turns(store, lines, model="gpt-4o-mini", progress=progress)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C during the count ended the import as interrupted")
    assert added.added == {"s0": 6}
    assert store.session("s0").turn_count == 6
    assert kept(store) == {}


def test_an_import_too_small_to_move_the_counts_does_not_recount(store, common_from_three):
    from kvchat import transfer
    from kvchat.store import NewTurn

    store.add_turns("work", [NewTurn(role="user", content=f"the orca deploy {i}", tokens=4) for i in range(40)])
    assert kept(store) == {}
    small = [json.dumps({"session": "work", "role": "user", "content": "the orca deploy again"})]
    transfer.import_turns(store, small, model="gpt-4o-mini")  # 1 turn on 40: under Store.TERM_COUNT_DRIFT
    assert kept(store) == {}
    assert not store.recount_common_terms("turns", added=1)
    assert store.recount_common_terms("turns", added=2)  # 2 of 41: more than 5% of the 39 before them
    assert kept(store)[("turns", "orca")] == 41


def test_counts_made_before_a_deletion_are_not_kept_after_it(store, common_from_three):
    """A recount that a deletion overtakes keeps nothing: the deleted text's
    terms would otherwise be kept with it."""
    for i in range(4):
        store.set_fact(f"note.n{i}", f"orca {i}", source="user")
    assert store.recount_common_terms("facts", added=4, starting=lambda: store.forget_fact("note.n0", source="user"))
    assert kept(store) == {}


def test_a_deletion_that_removes_nothing_keeps_the_counts(store, common_from_three):
    four_facts_with_orca_kept(store)
    with store.engine.begin() as db:  # PostgreSQL's triggers fire once a statement, rows or not
        db.execute(text("DELETE FROM facts WHERE key = 'no such key'"))
    assert ("facts", "orca") in kept(store)

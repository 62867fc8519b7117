"""`kvchat db copy --to URL`: a whole store moved to the other engine (SQLite
to PostgreSQL, or back) and checked, so a user who outgrows the file keeps
everything. Each test copies from the engine under test to the other one,
so a run on either engine covers both directions."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def other_engine(engine, tmp_path, request) -> str:
    """An empty database on the engine the store is not on."""
    if engine == "sqlite":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "copied.db")


def _everything(kvchat, *users: str) -> dict:
    """What each user sees of their store, through the commands."""
    seen = {}
    for user in users:
        as_user = ("--user", user)
        seen[user] = {
            command: kvchat(*as_user, *command.split(), "--json").stdout
            for command in ("sessions", "facts", "roles list", "usage --by session")
        }
        seen[user]["history"] = [
            kvchat(*as_user, "history", "--session", session["name"], "--json").stdout
            for session in json.loads(seen[user]["sessions"])
        ]
        seen[user]["recall"] = kvchat(*as_user, "recall", "which editor and 数据库 do I use", "--json").stdout
    return seen


def test_a_store_copied_to_the_other_engine_is_the_same_store_and_goes_on(
    kvchat, model, monkeypatch, other_engine
):
    for user, editor in (("ada", "neovim"), ("bob", "helix")):
        model.queue_answer("Noted.")
        assert kvchat("--user", user, "ask", f"I use {editor} and the 数据库 is PostgreSQL", "--session", "work").exit_code == 0
        kvchat("--user", user, "facts", "set", "user.editor", editor)
        kvchat("--user", user, "roles", "add", "terse", "Answer in one line.")
    kvchat("--user", "ada", "facts", "set", "user.editor", "vim")  # a second version in the fact's history
    before = _everything(kvchat, "ada", "bob")

    copied = kvchat("db", "copy", "--to", other_engine, "--json")
    assert copied.exit_code == 0, copied.stderr
    tables = json.loads(copied.stdout)["tables"]
    assert tables["turns"]["rows"] == 4 and tables["facts"]["rows"] >= 2 and tables["fact_history"]["rows"] >= 3

    monkeypatch.setenv("KVCHAT_DB", other_engine)
    after = _everything(kvchat, "ada", "bob")
    for user in before:
        for command in before[user]:
            assert after[user][command] == before[user][command], (user, command)
    # The copy is a store like any other: new turns get new ids after the copied ones.
    model.queue_answer("Still noted.")
    assert kvchat("--user", "ada", "ask", "and what do I use?", "--session", "work").exit_code == 0
    history = json.loads(kvchat("--user", "ada", "history", "--session", "work", "--json").stdout)
    assert len(history) == 4 and len({turn["id"] for turn in history}) == 4


def test_a_target_that_holds_kvchat_data_is_refused_and_left_as_it_was(kvchat, model, store, monkeypatch, other_engine):
    own = os.environ.get("KVCHAT_DB")
    monkeypatch.setenv("KVCHAT_DB", other_engine)
    kvchat("facts", "set", "user.editor", "emacs")
    if own is None:  # back to the test's own (empty) store
        monkeypatch.delenv("KVCHAT_DB")
    else:
        monkeypatch.setenv("KVCHAT_DB", own)
    done = kvchat("db", "copy", "--to", other_engine)
    assert done.exit_code == 1
    assert "already holds kvchat data" in done.stderr and done.stderr.count("\n") == 1
    monkeypatch.setenv("KVCHAT_DB", other_engine)
    assert json.loads(kvchat("facts", "--json").stdout)[0]["value"] == "emacs"


def test_copying_a_store_onto_itself_is_refused(kvchat, store):
    done = kvchat("db", "copy", "--to", store.url)
    assert done.exit_code == 1 and "the store itself" in done.stderr


def test_an_engine_kvchat_does_not_store_in_is_a_one_line_error(kvchat, store):
    done = kvchat("db", "copy", "--to", "mysql://root@127.0.0.1/test")
    assert done.exit_code == 1
    assert done.stderr.strip() == "kvchat: error: kvchat stores its data in SQLite or PostgreSQL, not mysql (mysql://root@127.0.0.1/test)"


def test_an_in_memory_target_is_refused(kvchat, store):
    done = kvchat("db", "copy", "--to", "sqlite:///")
    assert done.exit_code == 1 and "in-memory database is gone" in done.stderr


def test_a_postgresql_driver_other_than_psycopg_is_named_in_one_line(kvchat, store):
    done = kvchat("db", "copy", "--to", "postgresql+psycopg2://kvchat@127.0.0.1/kvchat")
    assert done.exit_code == 1 and "through psycopg 3" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.sqlite_only
def test_a_turn_holding_nul_is_named_and_nothing_is_copied_to_postgresql(kvchat, store, postgres_url, monkeypatch):
    from kvchat.store import NewTurn

    store.add_turns("c", [NewTurn(role="user", content="fine", tokens=1), NewTurn(role="user", content="a\x00b", tokens=1)])
    done = kvchat("db", "copy", "--to", postgres_url)
    assert done.exit_code == 1
    assert "turns id 2 holds a NUL (0x00) character in content" in done.stderr
    monkeypatch.setenv("KVCHAT_DB", postgres_url)
    assert json.loads(kvchat("sessions", "--json").stdout) == []


def test_the_copy_keeps_the_counts_of_its_common_terms(kvchat, store, monkeypatch, other_engine):
    """Every row is new to the target's index: its common terms are counted
    once, as after an import, not by its first questions one by one."""
    from sqlalchemy import text

    from kvchat.store import NewTurn, Store

    monkeypatch.setattr(Store, "KEPT_TERM_MIN_ROWS", 3)
    store.add_turns("work", [NewTurn(role="user", content=f"the orca deploy {i}", tokens=4) for i in range(4)])
    store.set_fact("note.pod", "orca", source="user")
    assert kvchat("db", "copy", "--to", other_engine).exit_code == 0
    with Store(other_engine) as copy, copy.engine.connect() as db:
        kept = dict(db.execute(text(
            "SELECT kind || ' ' || term, documents FROM search_term_counts WHERE term IN ('orca', 'deploy')"
        )).all())
    assert kept == {"turns orca": 4, "turns deploy": 4}, "a term in fewer than 3 facts is not kept"


def test_ctrl_c_while_the_copy_counts_its_terms_ends_the_counting_not_the_copy(store, monkeypatch, other_engine):
    """The copy has committed by then: Ctrl-C skips what is left of the
    counting (the facts after the turns), and the copy reports as done."""
    import os

    from kvchat import database
    from kvchat.store import NewTurn, Store
    from kvchat.store_copy import copy_store

    monkeypatch.setattr(Store, "KEPT_TERM_MIN_ROWS", 3)
    store.add_turns("work", [NewTurn(role="user", content=f"the orca deploy {i}", tokens=4) for i in range(4)])
    for i in range(4):
        store.set_fact(f"note.n{i}", "orca", source="user")
    stages = []

    def progress(stage, done, total):
        stages.append(stage)
        if stage == "counting terms":
            raise KeyboardInterrupt

    try:
        copy_store(database.resolve_url(os.environ.get("KVCHAT_DB")), database.resolve_url(other_engine),
                   progress=progress)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C during the count ended the copy as interrupted")
    assert stages.count("counting terms") == 1, "the facts were counted after Ctrl-C"
    with Store(other_engine) as copy:
        assert copy.session("work").turn_count == 4 and len(copy.facts()) == 4


def test_a_source_store_that_does_not_exist_is_refused_not_made(kvchat, tmp_path, monkeypatch):
    typo = tmp_path / "typo.db"
    monkeypatch.setenv("KVCHAT_DB", str(typo))
    done = kvchat("db", "copy", "--to", str(tmp_path / "copy.db"))
    assert (done.exit_code, done.stderr) == (1, f"kvchat: error: there is no store at {typo} to copy (see KVCHAT_DB)\n")
    assert not typo.exists() and not (tmp_path / "copy.db").exists()

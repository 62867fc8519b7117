"""What is particular to a store on PostgreSQL: reaching the server, sharing
a database with other programs, and several processes setting up one
database at once. (Everything else is the whole suite run with
`--engine postgresql`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kvchat import database


def _conninfo(url: str) -> str:
    """The test's SQLAlchemy URL as libpq takes it, for psycopg itself."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_a_server_that_does_not_answer_is_one_line_naming_it(kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_DB", "postgresql+psycopg://kvchat:hunter2@127.0.0.1:1/kvchat")
    done = kvchat("facts")
    assert done.exit_code == 1
    assert done.stderr == "kvchat: error: cannot connect to postgresql+psycopg://kvchat:***@127.0.0.1:1/kvchat: Connection refused\n"
    # libpq takes the password in the query too.
    monkeypatch.setenv("KVCHAT_DB", "postgresql+psycopg://kvchat@127.0.0.1:1/kvchat?password=hunter2&sslmode=disable")
    done = kvchat("facts")
    assert done.stderr == ("kvchat: error: cannot connect to postgresql+psycopg://kvchat@127.0.0.1:1/kvchat"
                           "?password=***&sslmode=disable: Connection refused\n")


def test_a_plain_postgresql_url_is_served_by_psycopg(kvchat, monkeypatch, postgres_url):
    monkeypatch.setenv("KVCHAT_DB", _conninfo(postgres_url))
    assert kvchat("facts", "set", "user.editor", "helix").exit_code == 0
    assert kvchat("facts").stdout == "user.editor\thelix\n"


def test_a_postgres_url_as_hosts_write_database_url_is_served_too(kvchat, monkeypatch, postgres_url):
    monkeypatch.setenv("KVCHAT_DB", postgres_url.replace("postgresql+psycopg://", "postgres://"))
    assert kvchat("facts", "set", "user.editor", "helix").exit_code == 0
    assert kvchat("facts").stdout == "user.editor\thelix\n"


@pytest.mark.blank_database
def test_kvchat_keeps_its_schema_revision_apart_from_another_programs(kvchat, monkeypatch, postgres_url):
    import psycopg

    conninfo = _conninfo(postgres_url)
    with psycopg.connect(conninfo, autocommit=True) as other:
        other.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        other.execute("INSERT INTO alembic_version VALUES ('3b1e2f9a7c4d')")
    monkeypatch.setenv("KVCHAT_DB", postgres_url)
    assert kvchat("facts", "set", "user.editor", "helix").exit_code == 0
    with psycopg.connect(conninfo) as other:
        assert other.execute("SELECT version_num FROM alembic_version").fetchall() == [("3b1e2f9a7c4d",)]
        assert other.execute("SELECT version_num FROM kvchat_alembic_version").fetchone()[0] == database.SCHEMA_HEAD


@pytest.mark.blank_database
def test_processes_that_set_up_a_new_database_at_once_all_succeed(postgres_url):
    """The first command on a new database creates the schema; four at once
    take turns (an advisory lock) instead of failing on each other's tables."""
    env = dict(os.environ, KVCHAT_DB=postgres_url)
    children = [
        subprocess.Popen([sys.executable, "-m", "kvchat", "facts", "set", f"note.n{n}", f"value {n}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for n in range(4)
    ]
    outcomes = [(child.wait(timeout=120), child.stderr.read().decode()) for child in children]
    assert [code for code, _ in outcomes] == [0] * 4, outcomes
    listed = subprocess.run([sys.executable, "-m", "kvchat", "facts"], env=env, capture_output=True, text=True)
    assert listed.stdout.splitlines() == [f"note.n{n}\tvalue {n}" for n in range(4)]


def test_one_users_writes_take_turns_while_another_users_go_ahead(postgres_url):
    """On SQLite one writer holds the file; on PostgreSQL one writer per user
    holds that user's lock, so a check-then-write (a new fact key, a new
    session) never interleaves with another of the same user's."""
    import threading

    from kvchat.store import Store

    with Store(postgres_url, user="ada") as holder, Store(postgres_url, user="ada") as ada, \
            Store(postgres_url, user="bob") as bob:
        finished = {}

        def write(store, name):
            store.set_fact("user.editor", name, source="user")
            finished[name] = True

        with holder._write():
            waiting = threading.Thread(target=write, args=(ada, "ada"))
            waiting.start()
            write(bob, "bob")  # returns while ada's lock is held
            waiting.join(timeout=1)
            assert finished == {"bob": True}
        waiting.join(timeout=30)
        assert finished == {"bob": True, "ada": True}


def _end_other_connections(url: str) -> None:
    """What a server restart does to kvchat's connections to the database at `url`."""
    import psycopg

    with psycopg.connect(_conninfo(url), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_an_answer_is_stored_though_the_server_dropped_the_connection_meanwhile(kvchat, model, monkeypatch, postgres_url):
    import threading

    monkeypatch.setenv("KVCHAT_DB", postgres_url)
    model.queue_answer("Use a read replica.", delay=2.0)
    threading.Timer(1.0, _end_other_connections, args=(postgres_url,)).start()
    done = kvchat("ask", "how do I scale the reads?", "--extract", "rules")
    assert done.exit_code == 0, done.stderr
    shown = kvchat("history", "--json")
    assert [(turn["role"], turn["content"], turn["status"]) for turn in json.loads(shown.stdout)] == [
        ("user", "how do I scale the reads?", "complete"), ("assistant", "Use a read replica.", "complete")]


def test_a_store_goes_on_after_its_connections_were_dropped(postgres_url):
    from kvchat.store import Store

    with Store(postgres_url) as store:
        store.set_fact("note.a", "first", source="user")
        _end_other_connections(postgres_url)
        assert store.set_fact("note.b", "second", source="user") == "created"
        _end_other_connections(postgres_url)
        assert [(fact.key, fact.value) for fact in store.facts()] == [("note.a", "first"), ("note.b", "second")]


def test_an_answer_holding_nul_is_kept_with_a_replacement_character(kvchat, model, monkeypatch, postgres_url):
    monkeypatch.setenv("KVCHAT_DB", postgres_url)
    model.queue_answer("before\x00after")
    assert kvchat("ask", "print a C string", "--extract", "rules").exit_code == 0
    answer = json.loads(kvchat("history", "--json").stdout)[-1]
    assert (answer["content"], answer["status"]) == ("before\ufffdafter", "complete")
    refused = kvchat("ask", "what is \x00?", "--extract", "rules")
    assert refused.exit_code == 1 and "NUL" in refused.stderr and refused.stderr.count("\n") == 1


def test_a_text_with_more_terms_than_a_tsvector_holds_is_stored_whole(postgres_url):
    import random

    from kvchat.store import NewTurn, Store
    from kvchat.textsearch import match_query

    rng = random.Random(5)
    words = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9)) for _ in range(160_000)]
    content = "deploywindow " + " ".join(words)  # 1.6 MB, over 1 MB of distinct terms
    with Store(postgres_url) as store:
        store.add_turns("logs", [NewTurn(role="user", content=content, tokens=100)])
        session = store.session("logs")
        assert [turn.content for turn in store.history(session.id)] == [content]
        hits = store.search_turns(session.id, match_query("deploywindow"), before_id=None, limit=5)
        assert len(hits) == 1


@pytest.mark.blank_database
def test_a_store_that_kept_its_revision_in_alembic_version_is_upgraded(postgres_url):
    """kvchat wrote its revision into `alembic_version` on PostgreSQL before
    it had a table of its own for it."""
    import psycopg
    from alembic import command

    from kvchat.store import Store

    engine = database.create_engine(postgres_url)
    config, _ = database.migration_scripts()
    with engine.connect() as connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
    engine.dispose()
    conninfo = _conninfo(postgres_url)
    with psycopg.connect(conninfo, autocommit=True) as old:
        old.execute("ALTER TABLE kvchat_alembic_version RENAME TO alembic_version")
        old.execute("INSERT INTO facts (key, value, source, created_at, updated_at) "
                    "VALUES ('user.editor', 'neovim', 'user', now(), now())")
    with Store(postgres_url, user="ada") as store:
        assert [(fact.key, fact.value) for fact in store.facts()] == [("user.editor", "neovim")]
    with psycopg.connect(conninfo) as upgraded:
        assert upgraded.execute("SELECT version_num FROM kvchat_alembic_version").fetchone()[0] == database.SCHEMA_HEAD
        assert upgraded.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None


def test_a_write_that_waits_too_long_for_its_users_lock_is_one_line(postgres_url, monkeypatch):
    from kvchat.store import Store

    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 1000)  # SQLite's 30 s, shortened for the test
    with Store(postgres_url, user="ada") as holder, Store(postgres_url, user="ada") as ada:
        with holder._write():
            with pytest.raises(database.DatabaseError, match=r"is locked: another program has held it"):
                ada.set_fact("user.editor", "helix", source="user")


def test_a_database_that_is_not_utf8_is_refused_in_one_line(kvchat, monkeypatch, postgres_server):
    url, connection, *_ = postgres_server
    name = f"kvtest_latin1_{os.getpid()}"
    connection.execute(f'CREATE DATABASE "{name}" ENCODING \'LATIN1\' LC_COLLATE \'C\' LC_CTYPE \'C\' TEMPLATE template0')
    try:
        from sqlalchemy.engine import make_url

        monkeypatch.setenv("KVCHAT_DB", make_url(url).set(database=name).render_as_string(hide_password=False))
        done = kvchat("facts", "set", "user.city", "北京")
        assert done.exit_code == 1
        assert "stores text as LATIN1" in done.stderr and done.stderr.count("\n") == 1
    finally:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

"""What is particular to a store on PostgreSQL: reaching the server, sharing
a database with other programs, and several processes setting up one
database at once. (Everything else is the whole suite run with
`--engine postgresql`.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kvchat import database


def test_a_server_that_does_not_answer_is_one_line_naming_it(kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_DB", "postgresql+psycopg://kvchat:hunter2@127.0.0.1:1/kvchat")
    done = kvchat("facts")
    assert done.exit_code == 1
    assert done.stderr == "kvchat: error: cannot connect to postgresql+psycopg://kvchat:***@127.0.0.1:1/kvchat: Connection refused\n"


def test_a_plain_postgresql_url_is_served_by_psycopg(kvchat, monkeypatch, postgres_url):
    monkeypatch.setenv("KVCHAT_DB", postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert kvchat("facts", "set", "user.editor", "helix").exit_code == 0
    assert kvchat("facts").stdout == "user.editor\thelix\n"


@pytest.mark.blank_database
def test_kvchat_keeps_its_schema_revision_apart_from_another_programs(kvchat, monkeypatch, postgres_url):
    import psycopg

    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
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

"""Upgrading a store with data from every older schema, on either engine
(test_store.py has the oldest schema, and the way down and up again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvchat import database
from kvchat.store import Store
from kvchat.textsearch import match_query


def database_at(revision: str, path: Path | None = None) -> None:
    """The database at `path` (default: the test's KVCHAT_DB or file) at an
    older schema, filled with rows written with only the columns that
    schema has (through kvchat's engine, whose functions SQLite's full-text
    triggers call)."""
    from alembic import command
    from sqlalchemy import text

    engine = database.create_engine(database.resolve_url(str(path) if path else None))
    owner = ", user_name" if revision >= "0006" else ""
    mine = ", 'ada'" if revision >= "0006" else ""
    config, _ = database.migration_scripts()
    with engine.connect() as connection:
        connection = connection.execution_options(kvchat_write=True)
        with connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.execute(text(
                f"INSERT INTO sessions (id, name, created_at, last_active_at, turn_count, token_count{owner}) "
                f"VALUES (1, 'old', '2024-01-01', '2024-01-02', 4, 40{mine}), (2, '旧的', '2024-01-01', '2024-01-02', 0, 0{mine})"
            ))
            for i, (role, content) in enumerate([
                ("user", "How do I run the migrations of 数据库 safely?"),
                ("assistant", "Back up the file, then run alembic upgrade head."),
                ("user", "我喜欢用Rust写命令行工具"),
                ("assistant", "Rust is a good fit for command-line tools."),
            ]):
                connection.execute(text(
                    "INSERT INTO turns (session_id, role, content, tokens, status, created_at) "
                    "VALUES (1, :role, :content, 10, 'complete', :at)"
                ), {"role": role, "content": content, "at": f"2024-01-01 10:00:0{i}"})
            for key, values in {"user.editor": ["vim", "neovim"], "project.kvchat.language": ["Python 3.11"]}.items():
                for value in values:
                    connection.execute(text(
                        f"INSERT INTO fact_history (key, value, action, source, created_at{owner}) "
                        f"VALUES (:key, :value, 'set', 'user', '2024-01-01'{mine})"
                    ), {"key": key, "value": value})
                connection.execute(text(
                    f"INSERT INTO facts (key, value, source, created_at, updated_at{owner}) "
                    f"VALUES (:key, :value, 'user', '2024-01-01', '2024-01-01'{mine})"
                ), {"key": key, "value": values[-1]})
            if revision >= "0007" and connection.dialect.name == "postgresql":
                # From 0007 kvchat writes PostgreSQL's search rows with the text.
                from kvchat import postgres_search

                postgres_search.index_turns(connection, connection.execute(text(
                    "SELECT id, session_id, content FROM turns")).all())
                postgres_search.index_facts(connection, connection.execute(text(
                    "SELECT id, user_name, key, value FROM facts")).all())
    engine.dispose()


def _revisions_before_head() -> list[str]:
    _, script = database.migration_scripts()
    # Oldest first, from 0002: 0001's upgrade is tested in test_store.py.
    return [rev.revision for rev in reversed(list(script.walk_revisions()))][1:-1]


@pytest.mark.blank_database
@pytest.mark.parametrize("revision", _revisions_before_head())
def test_an_older_database_with_data_is_upgraded_keeping_every_row(home, revision):
    home.mkdir(parents=True, exist_ok=True)
    database_at(revision)
    with Store(user="ada" if revision >= "0006" else None) as store:
        assert database.current_revision(store.engine) == database.SCHEMA_HEAD
        assert [(s.name, s.turn_count) for s in sorted(store.sessions(), key=lambda s: s.id)] == [("old", 4), ("旧的", 0)]
        old = store.session("old")
        assert [t.content for t in store.history(old.id)][0] == "How do I run the migrations of 数据库 safely?"
        if revision < "0005":  # titled by its first question on the way (schema 0005)
            assert old.title == "How do I run the migrations of 数据库 safely?"
        assert store.session("旧的").title is None  # a session without turns has none yet
        assert len(store.history(old.id)) == 4
        assert {f.key: f.value for f in store.facts()} == {
            "user.editor": "neovim", "project.kvchat.language": "Python 3.11",
        }
        assert [v.value for v in store.fact_history("user.editor")] == ["vim", "neovim"]
        hits = store.search_turns(old.id, match_query("命令行"), before_id=None, limit=5)
        assert [h.record.content for h in hits] == ["我喜欢用Rust写命令行工具"]
        hits = store.search_turns(old.id, match_query("migration"), before_id=None, limit=5)
        assert [h.record.content for h in hits] == ["How do I run the migrations of 数据库 safely?"]
        assert [h.record.value for h in store.search_facts(match_query("editor"), limit=5)] == ["neovim"]
        # And the upgraded database takes new data like a new one.
        store.set_fact("user.editor", "helix", source="user")
        assert [v.value for v in store.fact_history("user.editor")] == ["vim", "neovim", "helix"]
    # Every old row went to the user who ran the upgrade (the OS user here), none to anyone else.
    with Store(user="someone.else") as other:
        assert other.sessions() == [] and other.facts() == [] and other.fact_history("user.editor") == []
        assert other.search_facts(match_query("editor"), limit=5) == []


def database_at_with(home, revision: str, insert: str) -> None:
    """`database_at(revision)`, and then the rows of one INSERT statement."""
    from sqlalchemy import text

    home.mkdir(parents=True, exist_ok=True)
    database_at(revision)
    engine = database.create_engine(database.resolve_url(None))
    with engine.begin() as connection:
        connection.execute(text(insert))
    engine.dispose()


@pytest.mark.blank_database
def test_history_values_deleted_with_their_session_become_blank(home):
    database_at_with(
        home, "0011",
        "INSERT INTO fact_history (key, value, action, turn_id, source, created_at, user_name) VALUES "
        "('pet.name', '(deleted with its session)', 'set', NULL, 'model', '2024-01-03', 'ada'), "
        "('pet.name', NULL, 'forget', NULL, 'user', '2024-01-04', 'ada'), "
        "('user.motto', '(deleted with its session)', 'set', NULL, 'user', '2024-01-05', 'ada'), "
        "('user.quip', '(deleted with its session)', 'set', 1, 'model', '2024-01-05', 'ada')",
    )
    with Store(user="ada") as store:
        assert [(v.value, v.deleted_with_session) for v in store.fact_history("pet.name")] == [
            (None, True), (None, False),
        ]
        # Set by the user, or from a turn that still exists: a value someone chose, however odd.
        assert [v.value for v in store.fact_history("user.motto")] == ["(deleted with its session)"]
        assert [v.value for v in store.fact_history("user.quip")] == ["(deleted with its session)"]


@pytest.mark.blank_database
def test_session_names_are_composed_unless_another_session_has_that_name(home):
    database_at_with(
        home, "0012",
        "INSERT INTO sessions (id, name, created_at, last_active_at, turn_count, token_count, user_name) VALUES "
        "(3, 'cafe\u0301', '2024-01-01', '2024-01-02', 0, 0, 'ada'), "
        "(4, 'ma\u0308rz', '2024-01-01', '2024-01-02', 0, 0, 'ada'), "
        "(5, 'm\u00e4rz', '2024-01-01', '2024-01-02', 0, 0, 'ada')",
    )
    with Store(user="ada") as store:
        names = {s.id: s.name for s in store.sessions()}
        assert (names[3], names[4], names[5]) == ("caf\u00e9", "ma\u0308rz", "m\u00e4rz")  # two März: left apart
        assert store.open_session("cafe\u0301").id == 3
        assert store.session("ma\u0308rz").id == 5  # the composed one; the other is '#4'

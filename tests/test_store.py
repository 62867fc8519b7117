"""The database: schema and migrations, durability settings, sessions, turns,
facts with history, and full-text indexes kept in sync by the database."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from kvchat import database
from kvchat.store import NewTurn, Store, StoreError
from kvchat.textsearch import match_query, terms


@pytest.mark.sqlite_only
def test_fresh_database_is_created_private_and_at_the_newest_schema(home):
    with Store() as store:
        path = database.sqlite_path(store.url)
        assert path == home / "kvchat.db"
        assert database.current_revision(store.engine) == database.SCHEMA_HEAD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_head_constant_matches_the_migrations():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from kvchat import migrations

    config = Config()
    config.set_main_option("script_location", migrations.__path__[0])
    assert ScriptDirectory.from_config(config).get_current_head() == database.SCHEMA_HEAD


def test_the_migrations_create_exactly_the_tables_the_code_uses(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from kvchat.schema import metadata

    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": database.version_table(store.engine)})
        differences = compare_metadata(context, metadata)
    # The full-text tables (SQLite's virtual tables, PostgreSQL's search
    # tables) belong to kvchat's search code, not to the models.
    virtual = ("turns_fts", "facts_fts", "turns_terms", "facts_terms", "turns_search", "facts_search",
               "search_term_counts")
    differences = [d for d in differences if not any(name in str(d) for name in virtual)]
    assert differences == []


def _upgrade_to(revision: str, *, down: bool = False):
    """The database brought to `revision` (or down to it), and an engine open on it."""
    from alembic import command

    engine = database.create_engine(database.resolve_url(None))
    config, _ = database.migration_scripts()
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":  # tables are rebuilt, as ensure_schema has it
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
        connection = connection.execution_options(kvchat_write=True)
        with connection.begin():
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
    return engine


@pytest.mark.blank_database
def test_the_migrations_go_down_to_the_first_schema_and_up_again_keeping_the_rows(engine):
    with Store() as store:
        store.add_turns("work", [NewTurn(role="user", content="the 数据库 migration ran at noon", tokens=9)])
        store.set_fact("user.editor", "neovim", source="user")
    _, script = database.migration_scripts()
    revisions = [rev.revision for rev in script.walk_revisions()]  # newest first
    for revision in revisions[1:]:
        _upgrade_to(revision, down=True).dispose()
    with Store() as store:
        assert database.current_revision(store.engine) == database.SCHEMA_HEAD
        session = store.session("work")
        hits = store.search_turns(session.id, match_query("数据 migrations"), before_id=None, limit=5)
        assert [hit.record.content for hit in hits] == ["the 数据库 migration ran at noon"]
        assert [hit.record.value for hit in store.search_facts(match_query("editors"), limit=5)] == ["neovim"]


@pytest.mark.blank_database
def test_an_oldest_schema_database_with_data_is_upgraded_and_searchable(engine):
    from sqlalchemy import text

    at_first = _upgrade_to("0001")
    with at_first.begin() as connection:
        connection.execute(text("INSERT INTO sessions VALUES (1, 'old', '2024-01-01', '2024-01-01', 1, 9)"))
        connection.execute(text(
            "INSERT INTO turns (session_id, role, content, tokens, status, created_at) "
            "VALUES (1, 'user', 'We were running the migrations of 数据库 yesterday', 9, 'complete', '2024-01-01')"
        ))
        connection.execute(text(
            "INSERT INTO facts (key, value, source, created_at, updated_at) "
            "VALUES ('user.editor', 'neovim', 'user', '2024-01-01', '2024-01-01')"
        ))
    at_first.dispose()
    with Store() as store:
        assert database.current_revision(store.engine) == database.SCHEMA_HEAD
        session = store.session("old")
        assert session.turn_count == 1 and session.title == "We were running the migrations of 数据库 yesterday"
        hits = store.search_turns(session.id, match_query("run a migration on the 数据"), before_id=None, limit=5)
        assert [h.record.content for h in hits] == ["We were running the migrations of 数据库 yesterday"]
        assert [h.record.value for h in store.search_facts(match_query("editor"), limit=5)] == ["neovim"]
        if engine == "sqlite":
            # Migrations run with foreign keys off (a table rebuild must not
            # cascade); every connection afterwards has them on again.
            with store.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # Its rows went to the user who upgraded it (here the login name), and
    # another user sharing the file now starts with nothing of theirs.
    with Store(user="someone.else") as other:
        assert other.session("old") is None and other.facts() == []
        assert other.search_facts(match_query("editor"), limit=5) == []
        assert other.search_history(terms("migrations")) == []
    with Store() as store:
        assert [turn.content for _, turn in store.search_history(terms("migrations"))] == [
            "We were running the migrations of 数据库 yesterday"]


def test_a_database_from_a_newer_kvchat_is_refused_untouched(home):
    from sqlalchemy import text

    with Store() as store:
        store.set_fact("user.editor", "neovim", source="user")
        versions = database.version_table(store.engine)
        with store.engine.begin() as connection:
            connection.execute(text(f"UPDATE {versions} SET version_num = '9999'"))
    with pytest.raises(database.DatabaseError, match="newer kvchat"):
        Store()
    engine = database.create_engine(database.resolve_url(None))
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version_num FROM {versions}")).scalar() == "9999"
        assert connection.execute(text("SELECT key, value FROM facts")).all() == [("user.editor", "neovim")]
    engine.dispose()


@pytest.mark.sqlite_only
def test_a_newer_sqlite_file_is_left_byte_for_byte(home):
    Store().close()
    path = home / "kvchat.db"
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    before = path.read_bytes()
    with pytest.raises(database.DatabaseError, match="newer kvchat"):
        Store()
    assert path.read_bytes() == before


@pytest.mark.sqlite_only
def test_a_file_that_is_not_a_database_is_reported_and_left_alone(home):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "kvchat.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(database.DatabaseError, match="not a kvchat database"):
        Store()
    assert path.read_bytes() == before


def test_session_counters_follow_the_turns(store):
    session = store.open_session("work")
    store.add_turn(session.id, NewTurn(role="user", content="hi", tokens=1))
    store.add_turns("work", [NewTurn(role="assistant", content="hello there", tokens=2)] * 3)
    [listed] = store.sessions()
    assert (listed.name, listed.turn_count, listed.token_count) == ("work", 4, 7)


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "x" * 201, "tab\there", "zero\u200bwidth", "ab\u202ecd"])
def test_bad_session_names_are_refused(store, name):
    with pytest.raises(StoreError):
        store.open_session(name)


def test_a_session_name_may_hold_emoji_joined_into_one(store):
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert store.open_session(f"trip {family}").name == f"trip {family}"


COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"  # "café" typed, and as a macOS file name spells it


def test_a_session_name_is_the_same_whether_its_accents_are_composed_or_not(store):
    started = store.open_session(DECOMPOSED)
    assert started.name == COMPOSED
    assert store.open_session(COMPOSED).id == started.id
    assert store.session(DECOMPOSED).id == started.id
    assert store.find_session(DECOMPOSED) == (started, "name")
    store.add_turns(DECOMPOSED, [NewTurn(role="user", content="hi", tokens=1)])
    assert [(s.name, s.turn_count) for s in store.sessions()] == [(COMPOSED, 1)]
    notes = store.open_session(COMPOSED + " notes")
    store.delete_session(COMPOSED)
    assert store.find_session(DECOMPOSED) == (notes, "prefix")


def stored_as_before(store, name: str) -> None:
    """A session named `name` as an older kvchat could have named it."""
    from sqlalchemy import text

    with store.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO sessions (user_name, name, created_at, last_active_at, turn_count, token_count) "
                 "VALUES (:user, :name, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0)"),
            dict(user=store.user, name=name),
        )


def test_a_session_named_with_an_invisible_character_before_is_still_used(store):
    old = "work\u200bnotes"
    stored_as_before(store, old)
    assert store.open_session(old).name == old
    store.update_settings(old, {"window": 4})
    store.add_turns(old, [NewTurn(role="user", content="hi", tokens=1)])
    assert [(s.name, s.turn_count, s.settings) for s in store.sessions()] == [(old, 1, {"window": 4})]
    with pytest.raises(StoreError, match="invisible"):
        store.rename_session(old, "work\u200bnotes2")


def test_a_new_value_updates_a_fact_and_keeps_the_old_one_in_history(store):
    assert store.set_fact("user.editor", "vim", source="user") == "created"
    assert store.set_fact("user.editor", "vim", source="user") == "unchanged"
    assert store.set_fact("user.editor", "helix", source="model") == "updated"
    assert store.forget_fact("user.editor", source="user") is True
    assert store.fact("user.editor") is None
    versions = store.fact_history("user.editor")
    assert [(v.action, v.value, v.source) for v in versions] == [
        ("set", "vim", "user"), ("set", "helix", "model"), ("forget", None, "user"),
    ]


def test_fact_index_follows_updates_and_deletes(store):
    store.set_fact("user.editor", "vim", source="user")
    assert [h.record.value for h in store.search_facts(match_query("vim"), limit=5)] == ["vim"]
    store.set_fact("user.editor", "emacs", source="user")
    assert store.search_facts(match_query("vim"), limit=5) == []
    assert len(store.search_facts(match_query("emacs"), limit=5)) == 1
    store.forget_fact("user.editor", source="user")
    assert store.search_facts(match_query("emacs editor"), limit=5) == []


def test_a_key_match_outranks_a_value_match(store):
    store.set_fact("project.kvchat.language", "python", source="user")
    store.set_fact("user.note", "the language of the letters is french", source="user")
    hits = store.search_facts(match_query("language"), limit=5)
    assert hits[0].record.key == "project.kvchat.language"


def test_turn_search_stems_english_and_segments_chinese(store):
    session = store.open_session("s")
    store.add_turns("s", [
        NewTurn(role="user", content="I was running the migrations yesterday", tokens=7),
        NewTurn(role="user", content="我喜欢用Rust写命令行工具", tokens=12),
        NewTurn(role="user", content="nothing relevant here", tokens=3),
    ])
    english = store.search_turns(session.id, match_query("run a migration"), before_id=None, limit=5)
    assert [h.record.content for h in english] == ["I was running the migrations yesterday"]
    chinese = store.search_turns(session.id, match_query("命令行"), before_id=None, limit=5)
    assert [h.record.content for h in chinese] == ["我喜欢用Rust写命令行工具"]


@pytest.mark.parametrize(
    "hostile",
    ['"', "*", "NEAR(a b)", "a AND", "-x", "col:val", "(((", "' OR 1=1 --", "\"unbalanced", "^start",
     # PostgreSQL's tsquery syntax, and its string escapes
     "a & b", "a | b", "!a", "a <-> b", "a:*", "a:AB", "\\", "\\'", "''", "E'\\x00'"],
)
def test_search_text_cannot_change_the_query(store, hostile):
    store.set_fact("user.editor", "vim", source="user")
    query = match_query(hostile + " vim")
    assert [h.record.value for h in store.search_facts(query, limit=5)] == ["vim"]


def test_turns_before_a_point_are_read_newest_first_in_batches(store):
    session = store.open_session("long")
    store.add_turns("long", [NewTurn(role="user", content=f"turn {i}", tokens=2) for i in range(150)])
    newest = list(store.turns_newest_first(session.id, batch=64))
    assert [t.content for t in newest[:2]] == ["turn 149", "turn 148"]
    assert len(newest) == 150
    older = list(store.turns_newest_first(session.id, before_id=newest[10].id, batch=64))
    assert older[0].content == "turn 138"


def test_the_analyzer_stems_drops_stopwords_and_segments_cjk():
    from kvchat.textsearch import analyze

    assert analyze("The runners were running happily") == ["runner", "run", "happili"]
    assert analyze("我喜欢用Rust") == ["我喜", "喜欢", "欢用", "喜", "欢", "用", "rust"]
    assert analyze("Café ＡＢＣ") == ["café", "abc"]


def test_turn_search_reads_only_the_asked_session(store):
    mine = store.open_session("mine")
    store.open_session("theirs")
    store.add_turns("theirs", [NewTurn(role="user", content="the deploy password rotates weekly", tokens=6)] * 5)
    store.add_turns("mine", [NewTurn(role="user", content="deploy on fridays is risky", tokens=6)])
    hits = store.search_turns(mine.id, match_query("deploy"), before_id=None, limit=10)
    assert [h.record.content for h in hits] == ["deploy on fridays is risky"]


@pytest.mark.sqlite_only
def test_only_a_kvchat_sqlite_file_at_the_current_schema_is_opened_without_sqlalchemy(store, home, tmp_path):
    """The read commands' connection, set up as the engine's are; anything
    else is left to the engine and the migrations (None), untouched."""
    path = home / "kvchat.db"
    store.close()
    opened = database.connect_if_current(database.resolve_url(str(path)))
    try:
        assert opened.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert opened.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert opened.execute("PRAGMA busy_timeout").fetchone() == (database.BUSY_TIMEOUT_MS,)
        assert opened.execute("PRAGMA secure_delete").fetchone() == (1,)
        assert opened.execute("SELECT kvchat_index_text('Running')").fetchone() == ("run",)
    finally:
        opened.close()

    missing = tmp_path / "missing.db"
    assert database.connect_if_current(database.resolve_url(str(missing))) is None
    assert not missing.exists()
    # Other spellings of the same file are SQLAlchemy's to read.
    assert database.connect_if_current(f"sqlite:///{path}?timeout=5") is None
    assert database.connect_if_current("postgresql://ada@localhost/kvchat") is None
    for revision in ("0005", "9999"):
        with sqlite3.connect(path, isolation_level=None) as raw:
            raw.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        assert database.connect_if_current(database.resolve_url(str(path))) is None
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign, isolation_level=None) as raw:
        raw.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        raw.execute("INSERT INTO alembic_version VALUES (?)", (database.SCHEMA_HEAD,))
    assert database.connect_if_current(database.resolve_url(str(foreign))) is None


@pytest.mark.parametrize("url", [
    "sqlite:////tmp/kv chat/kvchat.db", "sqlite:////tmp/a%20b.db", "sqlite:///relative/kvchat.db",
    "sqlite:////tmp/x.db?mode=ro", "sqlite+pysqlite:////tmp/x.db", "sqlite:////tmp/a#b@c:d.db",
])
def test_a_database_file_is_found_in_a_url_as_sqlalchemy_reads_it(url):
    from sqlalchemy.engine import make_url

    assert database.sqlite_path(url) == Path(make_url(url).database)
    assert database.is_sqlite(url)


def test_a_store_read_without_an_engine_sees_its_own_writes_and_only_its_users_rows(store, home):
    store.open_session("work")
    store.close()
    with Store() as reader, Store(user="someone.else") as other:
        assert [s.name for s in reader.sessions()] == ["work"] and other.sessions() == []
        session = reader.open_session("notes")
        reader.add_turns("notes", [NewTurn(role="user", content="the staging port is 5433", tokens=6)])
        reader.set_fact("project.staging.port", "5433", source="user")
        other.set_fact("project.staging.port", "6543", source="user")
        assert [s.name for s in reader.sessions()] == ["notes", "work"]
        assert reader.find_session("no") == (reader.session("notes"), "prefix")
        assert reader.find_session(f"#{session.id}") == (reader.session("notes"), "id")
        assert [t.content for t in reader.history(session.id)] == ["the staging port is 5433"]
        assert [(f.key, f.value) for f in reader.facts()] == [("project.staging.port", "5433")]
        assert [(f.key, f.value) for f in other.facts()] == [("project.staging.port", "6543")]
        with pytest.raises(StoreError, match=f"no session has the id #{session.id}"):
            other.find_session(f"#{session.id}")


@pytest.mark.parametrize("first_open", [True, False], ids=["creating the database", "database already there"])
def test_a_write_that_fails_part_way_stores_nothing_and_the_store_still_writes(home, first_open):
    """Both ways a Store writes roll back as a whole: through the engine (the
    first open, which creates the database) and through its own connection."""
    if not first_open:
        Store().close()
    with Store() as store:
        with pytest.raises(StoreError, match="control characters"):
            store.apply_facts([("user.name", "Ada"), ("user.bad\x07key", "x")], source="user")
        assert store.facts() == [] and store.fact_history("user.name") == []
        assert store.apply_facts([("user.name", "Ada")], source="user") == {"user.name": "created"}
    with Store() as reopened:
        assert [(f.key, f.value) for f in reopened.facts()] == [("user.name", "Ada")]


@pytest.mark.sqlite_only  # a time written as text by another program
def test_times_stored_with_or_without_a_zone_read_as_utc(store):
    from datetime import datetime, timezone

    store.set_fact("note.a", "one", source="user")
    store.set_fact("note.b", "two", source="user")
    with sqlite3.connect(database.sqlite_path(store.url)) as raw:
        raw.execute("UPDATE facts SET updated_at = '2026-01-02 03:04:05.250000' WHERE key = 'note.a'")
        raw.execute("UPDATE facts SET updated_at = '2026-01-02 03:04:05+02:00' WHERE key = 'note.b'")
    times = {fact.key: fact.updated_at for fact in store.facts()}
    assert times == {
        "note.a": datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc),
        "note.b": datetime(2026, 1, 2, 1, 4, 5, tzinfo=timezone.utc),
    }


@pytest.mark.sqlite_only  # the Store's own connection is SQLite's
def test_ctrl_c_while_a_write_waits_for_the_lock_leaves_nothing_held(store):
    """SIGINT arrives while BEGIN IMMEDIATE waits for another writer; Python
    raises it once BEGIN has the lock. The write must give the lock back, so
    other processes and the next write of this one go ahead (`kvchat chat`
    carries on after a Ctrl-C)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    path = str(database.sqlite_path(store.url))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({path!r}, isolation_level=None); c.execute('BEGIN IMMEDIATE')\n"
        "print('held', flush=True); time.sleep(1.5); c.execute('COMMIT')\n"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    interrupt = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    interrupt.start()
    with pytest.raises(KeyboardInterrupt):
        store.set_fact("user.color", "blue", source="user")
    interrupt.join()
    holder.wait(timeout=10)

    assert not store._connection.in_transaction
    with sqlite3.connect(path, timeout=2, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    assert store.set_fact("user.color", "red", source="user") == "created"
    assert store.fact("user.color").value == "red"


def test_another_thread_never_reads_a_write_before_it_commits(store):
    """One Store shared by two threads (a library user's): a write under way
    in one is not seen by the other, and once it fails, never is."""
    import threading
    import time

    inside = threading.Event()
    seen = []

    def fail_midway(done: int) -> None:
        inside.set()
        time.sleep(0.3)  # the other thread reads meanwhile
        raise RuntimeError("the import stops here")

    def read() -> None:
        inside.wait(5)
        seen.append(store.session("imported"))

    reader = threading.Thread(target=read)
    reader.start()
    with pytest.raises(RuntimeError):
        store.add_turns("imported", [NewTurn(role="user", content="hello", tokens=1)], progress=fail_midway)
    reader.join(5)
    assert seen == [None] and store.session("imported") is None


@pytest.mark.sqlite_only
@pytest.mark.parametrize("existing", [False, True], ids=["new database", "existing database"])
def test_an_sqlite_older_than_kvchat_needs_is_named_in_one_line(home, monkeypatch, existing):
    if existing:
        Store().close()
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(database.DatabaseError, match=r"^kvchat needs SQLite 3\.35\.0 or newer; this Python uses 3\.31\.1"):
        Store()


def test_every_link_between_rows_is_indexed(store):
    """Deleting a row makes the database find the rows linked to it (ON
    DELETE SET NULL or CASCADE); without an index on the link that reads the
    whole linking table for every row deleted: deleting a 1,000-turn session
    from a million-turn store took 76 s (migration 0009)."""
    from sqlalchemy import inspect

    inspector = inspect(store.engine)
    unindexed = []
    for table in inspector.get_table_names():
        leading = {tuple(index["column_names"][:1]) for index in inspector.get_indexes(table)}
        leading |= {tuple(c["column_names"][:1]) for c in inspector.get_unique_constraints(table)}
        leading.add(tuple(inspector.get_pk_constraint(table)["constrained_columns"][:1]))
        for link in inspector.get_foreign_keys(table):
            if tuple(link["constrained_columns"][:1]) not in leading:
                unindexed.append(f"{table}.{link['constrained_columns'][0]}")
    assert unindexed == []

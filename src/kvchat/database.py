"""Opening kvchat's database: where it is, how it is configured, its schema.

kvchat stores in SQLite (a file, the default) or PostgreSQL
(KVCHAT_DB=postgresql+psycopg://user@host/db). SQLite is run in WAL mode (readers never block the writer), with a busy
timeout (a second kvchat process waits for the lock instead of failing) and
foreign keys on. Writes take the lock up front (BEGIN IMMEDIATE): a
transaction that starts as a reader and later writes can otherwise fail with
"database is locked" however long the timeout.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths, textsearch, users

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# The newest migration this kvchat knows; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0013"

BUSY_TIMEOUT_MS = 30_000

# Where Alembic records the schema revision. A PostgreSQL database is often
# shared with other programs, whose own Alembic keeps `alembic_version`:
# there kvchat keeps its revision in a table of its own. (SQLite files have
# always used Alembic's name, and are kvchat's alone.)
VERSION_TABLES = {"sqlite": "alembic_version", "postgresql": "kvchat_alembic_version"}

# Serialises schema upgrades by processes sharing a PostgreSQL server (a
# constant key for pg_advisory_xact_lock: "kvchat" in ASCII).
UPGRADE_LOCK = 0x6B7663686174
# The first of the two keys of a user's write lock on PostgreSQL ("kvch").
WRITER_LOCKS = 0x6B766368


class DatabaseError(Exception):
    """A problem with the database file, said in one line for the user."""


# libpq's keyword/value form, "host=db.example dbname=app password='a b'":
# pairs whose values may be quoted, at least one of them a keyword of libpq's.
_CONNINFO_PAIR = r"[a-z_]+\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S*)"
_KEYWORD_CONNINFO = re.compile(rf"\s*{_CONNINFO_PAIR}(?:\s+{_CONNINFO_PAIR})*\s*")
_LIBPQ_KEYWORD = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port|service|sslmode|passfile)\s*=")


def resolve_url(value: str | None) -> str:
    """An SQLAlchemy URL from a path or URL (default: KVCHAT_DB, then the data dir)."""
    value = value or os.environ.get("KVCHAT_DB") or str(paths.default_database_path())
    if value.startswith("postgres://"):  # the DATABASE_URL spelling; SQLAlchemy knows only postgresql://
        return "postgresql://" + value.removeprefix("postgres://")
    if "://" in value:
        return value
    if _KEYWORD_CONNINFO.fullmatch(value) and _LIBPQ_KEYWORD.search(value) and not Path(value).expanduser().exists():
        # Taken as a path it would make an SQLite file named after it, password and all.
        raise DatabaseError("a PostgreSQL connection string (host=... dbname=...) is not a file: "
                            "write it as a URL, postgresql://user@host:port/dbname")
    return "sqlite:///" + str(Path(value).expanduser().resolve())


def _plain_sqlite_path(url: str) -> Path | None:
    """The file behind `url` when it is spelled as resolve_url spells a path
    (sqlite:/// and the path, with nothing SQLAlchemy would decode or take as
    options: no % or ?); None for any other URL, which SQLAlchemy parses.
    Reading it here keeps `import sqlalchemy` (about 0.2 s) off the commands
    that only read."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    database = url[len(prefix):]
    if database in ("", ":memory:") or "%" in database or "?" in database:
        return None
    return Path(database)


def is_sqlite(url: str) -> bool:
    if _plain_sqlite_path(url) is not None:
        return True
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file behind an SQLite URL (in any of its spellings), or None for
    other engines and in-memory databases."""
    plain = _plain_sqlite_path(url)
    if plain is not None:
        return plain
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only, if it is missing,
    and every missing directory above it likewise (it holds the user's
    conversations; Path.mkdir(parents=True) would give the parents the umask's
    permissions instead)."""
    missing = [parent for parent in (path.parent, *path.parent.parents) if not parent.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the directory {directory}: {exc.strerror}") from None
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseError(f"cannot create the database {path}: {exc.strerror}") from None


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
    # SQLAlchemy emits BEGIN itself (see _on_begin); pysqlite must not.
    dbapi_connection.isolation_level = None
    dbapi_connection.create_function(
        "kvchat_index_text", 1, textsearch.index_text, deterministic=True
    )
    dbapi_connection.create_function(
        "kvchat_index_key", 1, textsearch.index_key, deterministic=True
    )
    dbapi_connection.create_function("kvchat_index_user", 1, users.index_user, deterministic=True)
    dbapi_connection.create_function("kvchat_holds_word", 2, textsearch.holds_word, deterministic=True)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Switching to WAL rewrites the file's header: do it only to a new
        # database or kvchat's own, never to another program's (which
        # current_revision then refuses untouched).
        cursor.execute(
            "SELECT count(*) = 0 OR sum(name IN ('alembic_version', 'sessions', 'turns', 'facts')) = 4 "
            "FROM sqlite_master WHERE type = 'table'"
        )
        if cursor.fetchone()[0]:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros instead of lingering in
        # freed space: a deleted session's text must be gone from the file.
        cursor.execute("PRAGMA secure_delete = ON")
    finally:
        cursor.close()


def _on_begin(connection) -> None:
    write = connection.get_execution_options().get("kvchat_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _on_postgres_connect(dbapi_connection, _record) -> None:
    # kvchat writes times as naive UTC; the server reads them in the
    # session's time zone. Text goes both ways as UTF-8, whatever the
    # client's locale (ensure_schema refuses a database that is not UTF-8).
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.execute("SET client_encoding TO 'UTF8'")
    dbapi_connection.autocommit = autocommit


def _on_postgres_begin(connection) -> None:
    """A store's writes on PostgreSQL take their user's lock first, as
    SQLite's BEGIN IMMEDIATE takes the file's: one writer at a time per user,
    so that check-then-write steps (a new session or fact key, a summary that
    must not move backwards) cannot interleave, while different users, whose
    rows never meet, write side by side."""
    writer = connection.get_execution_options().get("kvchat_writer")
    if writer is not None:
        # As long as SQLite waits for its lock, then the same one-line error.
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
        connection.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(%(space)s, hashtext(%(writer)s))",
            {"space": WRITER_LOCKS, "writer": writer},
        )


# RETURNING (3.35) is the newest feature kvchat's statements use.
MIN_SQLITE = (3, 35, 0)


def check_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise DatabaseError(
            f"kvchat needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python uses "
            f"{sqlite3.sqlite_version} (install a Python built with a newer SQLite)"
        )


def create_engine(url: str) -> Engine:
    import sqlalchemy
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    if is_sqlite(url):
        check_sqlite_version()
        path = sqlite_path(url)
        import warnings

        with warnings.catch_warnings():
            # SQLAlchemy warns and goes on without an option it does not know
            # (`?mode=ro` without `uri=true`): said in one line, before any file is made.
            warnings.simplefilter("error", sqlalchemy.exc.SAWarning)
            try:
                engine = sqlalchemy.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            except sqlalchemy.exc.SAWarning as exc:
                named = re.search(r"argument\(s\) (.+?) are not accepted", str(exc))
                options = named.group(1) if named else "those"
                raise DatabaseError(f"{where(url)}: SQLite takes no {options} option in its URL "
                                    "(SQLite's own URI options also need uri=true)") from None
        if path is not None:
            _create_private_file(path)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_begin)
        return engine
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseError(
            f"kvchat stores its data in SQLite or PostgreSQL, not {parsed.get_backend_name()} "
            f"({where(url)})"
        )
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver there is psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise DatabaseError(
            f"kvchat talks to PostgreSQL through psycopg 3: write the URL as postgresql+psycopg://... "
            f"or postgresql://... ({where(url)})"
        )
    try:
        # A pooled connection is pinged before a write uses it: the server may
        # have dropped it while the model was answering, and the answer must
        # still be stored. (Reads go through the Store's own connection.)
        engine = sqlalchemy.create_engine(parsed, pool_pre_ping=True)
    except ImportError as exc:
        raise DatabaseError(
            f"{where(url)} needs a PostgreSQL driver kvchat cannot import ({exc}); "
            "install kvchat with: pip install 'kvchat[postgresql]'"
        ) from None
    event.listen(engine, "connect", _on_postgres_connect)
    event.listen(engine, "begin", _on_postgres_begin)
    return engine


def version_table(engine: Engine) -> str:
    return VERSION_TABLES[engine.dialect.name]


# Tables every kvchat database has had since its first schema.
KVCHAT_TABLES = frozenset({"alembic_version", "sessions", "turns", "facts"})


def connect_if_current(url: str) -> sqlite3.Connection | None:
    """A connection to the SQLite file at `url`, set up as the engine sets up
    its own (_on_sqlite_connect), when the file is a kvchat database at this
    kvchat's schema: the commands that only read then need neither
    SQLAlchemy nor Alembic. None for anything else (no such file, a URL of
    another engine or in another spelling, an older or newer schema, another
    program's file, a damaged one): create_engine and ensure_schema open,
    upgrade or refuse those, with their own messages."""
    path = _plain_sqlite_path(url)
    if path is None or not path.is_file():
        return None
    check_sqlite_version()
    others = sorted(KVCHAT_TABLES - {"alembic_version"})
    try:
        # check_same_thread off, as SQLAlchemy has it for a pooled SQLite file.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error:
        return None
    try:
        _on_sqlite_connect(connection, None)
        found = connection.execute(
            "SELECT version_num, (SELECT count(*) FROM sqlite_master WHERE type = 'table' "
            f"AND name IN ({', '.join('?' for _ in others)})) FROM alembic_version",
            others,
        ).fetchall()
    except sqlite3.Error:
        found = None
    if found != [(SCHEMA_HEAD, len(others))]:
        connection.close()
        return None
    return connection


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None for a new, empty database.

    An SQLite file with tables but not kvchat's (its revision and its
    sessions, turns and facts) belongs to some other program, even one that
    keeps its own Alembic revision: kvchat refuses it rather than add its
    tables or run its migrations in it. (A PostgreSQL database is often shared
    by several programs, each with its own tables, so there other tables are
    no sign of a mistake. It must be UTF-8, though, and a kvchat store that
    kept its revision in `alembic_version`, as kvchat did before, gets it
    moved to kvchat's own table.)"""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DatabaseError as SQLError

    versions = version_table(engine)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                _check_postgres_database(connection, engine.url)
            tables = inspect(connection).get_table_names()
            if engine.dialect.name == "postgresql" and versions not in tables:
                tables = _adopt_kvchat_revision(connection, tables)
            ours = KVCHAT_TABLES - {"alembic_version"} <= set(tables) or not is_sqlite(str(engine.url))
            if versions in tables and ours:
                return connection.execute(text(f"SELECT version_num FROM {versions}")).scalar()
    except SQLError as exc:
        raise DatabaseError(describe_error(exc, engine.url)) from None
    if tables and engine.dialect.name == "sqlite":
        raise DatabaseError(
            f"{where(engine.url)} is not a kvchat database (it holds other tables: "
            f"{', '.join(sorted(tables)[:3])}); kvchat left it untouched"
        )
    return None


def _check_postgres_database(connection, url) -> None:
    from sqlalchemy import text

    encoding = connection.execute(text("SHOW server_encoding")).scalar()
    if encoding != "UTF8":
        raise DatabaseError(
            f"{where(url)} stores text as {encoding}, which cannot hold every language kvchat stores; "
            "give kvchat a UTF-8 database (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
        )


def _adopt_kvchat_revision(connection, tables: list[str]) -> list[str]:
    """Rename `alembic_version` to kvchat's version table when it is
    kvchat's: kvchat's tables are there and it holds one of kvchat's
    revisions. The database's tables, as they are then."""
    from sqlalchemy import text

    if "alembic_version" not in tables or not KVCHAT_TABLES - {"alembic_version"} <= set(tables):
        return tables
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    _, script = migration_scripts()
    if revision not in {rev.revision for rev in script.walk_revisions()}:
        return tables
    connection.execute(text(f"ALTER TABLE alembic_version RENAME TO {VERSION_TABLES['postgresql']}"))
    connection.commit()
    return [VERSION_TABLES["postgresql"] if table == "alembic_version" else table for table in tables]


# Query parameters of a database URL that may hold a secret (libpq takes
# `?password=` as readily as `user:password@`).
_SECRET_PARAMETER = re.compile(r"pass|pw|secret|token|key|auth", re.IGNORECASE)


def where(url) -> str:
    """The database for people: its file, or its URL without the password,
    in its user part or its query."""
    path = sqlite_path(str(url))
    if path is not None:
        return str(path)
    from sqlalchemy.engine import make_url

    parsed = make_url(str(url))
    if parsed.get_backend_name() != "postgresql":  # kvchat cannot tell what another driver's options hold
        parsed = parsed.set(query={})
    hidden = {name: "***" for name in parsed.query if _SECRET_PARAMETER.search(name)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


# SQLite's result codes (sqlite3 exceptions carry them as `sqlite_errorname`)
# for I/O failures while writing; the others happen while reading.
_WRITE_IO_ERRORS = {
    "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_DIR_FSYNC", "SQLITE_IOERR_TRUNCATE",
    "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMMAP", "SQLITE_IOERR_DELETE",
}


def describe_error(exc: Exception, url) -> str:
    """One line about a database failure, without internals: what happened to
    which file, and what the user can do about it. Every failure it describes
    rolled back, so the line never suggests data was changed."""
    original = getattr(exc, "orig", None) or exc
    message = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    code = getattr(original, "sqlite_errorname", "") or ""
    place = where(url)
    if message.startswith("connection failed: "):  # psycopg, before the server said anything else
        reason = message.removeprefix("connection failed: ").split(" failed: ")[-1].removeprefix("FATAL:").strip()
        return f"cannot connect to {place}: {reason}"
    if code == "SQLITE_NOTADB" or "file is not a database" in message:
        return f"{place} is not a kvchat database (not an SQLite file at all); kvchat left it untouched"
    if code.startswith("SQLITE_CORRUPT") or "malformed" in message or "vtable constructor failed" in message:
        # A damaged full-text index shows as a failing virtual-table constructor.
        return (
            f"{place} is damaged ({message}); kvchat left it untouched: "
            f"`sqlite3 {place} .recover` can rescue what is readable"
        )
    if code.startswith("SQLITE_READONLY") or "readonly" in message or "read-only" in message:
        path = sqlite_path(str(url))
        if path is not None and os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
            return (
                f"cannot write to {place}: its directory is read-only "
                "(SQLite keeps its write-ahead log next to the database)"
            )
        return f"cannot write to {place}: it is read-only"
    if code == "SQLITE_FULL" or "database or disk is full" in message:
        return f"cannot write to {place}: the disk is full"
    if code in _WRITE_IO_ERRORS:
        return f"cannot write to {place}: disk I/O error (is the disk full, or the file over a size limit?)"
    if code.startswith("SQLITE_IOERR") or "disk I/O error" in message:
        return f"cannot read {place}: disk I/O error (is the disk failing?)"
    if code == "SQLITE_CANTOPEN" or "unable to open database file" in message:
        return f"cannot open {place}: check that it and its directory are readable and writable"
    if code.startswith("SQLITE_BUSY") or "database is locked" in message or "lock timeout" in message:
        return (
            f"{place} is locked: another program has held it for over "
            f"{BUSY_TIMEOUT_MS // 1000} s; try again when it is done"
        )
    return f"database error on {place}: {message}"


def migration_scripts():
    """Alembic's config for kvchat's own migrations, and their script directory."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from kvchat import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config, ScriptDirectory.from_config(config)


def ensure_schema(engine: Engine, user_name: str | None = None) -> None:
    """Bring the database up to this kvchat's schema, refusing a newer one.

    Rows from before stores had users go to `user_name` (default: the
    operating system's user). Every migration runs in one transaction
    (SQLite's DDL is transactional): an upgrade that fails part-way leaves the
    database as it was."""
    revision = current_revision(engine)
    if revision == SCHEMA_HEAD:
        return
    config, script = migration_scripts()
    if revision is not None and revision not in {rev.revision for rev in script.walk_revisions()}:
        raise DatabaseError(
            f"{where(engine.url)} was written by a newer kvchat (schema {revision}); "
            "upgrade kvchat to use it (kvchat left it untouched)"
        )
    from alembic import command
    from sqlalchemy.exc import DatabaseError as SQLError

    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Alembic rebuilds a table to alter it on SQLite (copy, drop,
                # rename): with foreign keys on, dropping `sessions` would
                # cascade-delete every turn. SQLite ignores this pragma inside
                # a transaction, so it is set before; the keys are checked
                # before the upgrade commits instead.
                raw = connection.connection.driver_connection  # outside SQLAlchemy's transaction
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                connection = connection.execution_options(kvchat_write=True)
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        # Another process may be upgrading the same database:
                        # wait for it, then upgrade from where it left it.
                        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
                    config.attributes["connection"] = connection
                    config.attributes["user_name"] = user_name
                    command.upgrade(config, "head")
                    if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise DatabaseError(
                            f"upgrading {where(engine.url)} to schema {SCHEMA_HEAD} would break links "
                            "between its rows; it is left as it was"
                        )
            finally:
                if sqlite:
                    raw.execute("PRAGMA foreign_keys = ON")
    except SQLError as exc:
        if revision is None:
            raise DatabaseError(describe_error(exc, engine.url)) from None
        raise DatabaseError(
            f"{describe_error(exc, engine.url)} (while upgrading it from schema {revision} "
            f"to {SCHEMA_HEAD}; it is left as it was)"
        ) from None

"""Opening kvchat's database: where it is, how it is configured, its schema.

SQLite is run in WAL mode (readers never block the writer), with a busy
timeout (a second kvchat process waits for the lock instead of failing) and
foreign keys on. Writes take the lock up front (BEGIN IMMEDIATE): a
transaction that starts as a reader and later writes can otherwise fail with
"database is locked" however long the timeout.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths, textsearch

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# The newest migration this kvchat knows; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0003"

BUSY_TIMEOUT_MS = 30_000


class DatabaseError(Exception):
    """A problem with the database file, said in one line for the user."""


def resolve_url(value: str | None) -> str:
    """An SQLAlchemy URL from a path or URL (default: KVCHAT_DB, then the data dir)."""
    value = value or os.environ.get("KVCHAT_DB") or str(paths.default_database_path())
    if "://" in value:
        return value
    return "sqlite:///" + str(Path(value).expanduser().resolve())


def is_sqlite(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file behind an SQLite URL (in any of its spellings), or None for
    other engines and in-memory databases."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only, if it is missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DatabaseError(f"cannot create the directory {path.parent}: {exc.strerror}") from None
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
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _on_begin(connection) -> None:
    write = connection.get_execution_options().get("kvchat_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine(url: str) -> Engine:
    import sqlalchemy
    from sqlalchemy import event

    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            _create_private_file(path)
        engine = sqlalchemy.create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_begin)
        return engine
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError as SQLError

    try:
        with engine.connect() as connection:
            has_table = engine.dialect.has_table(connection, "alembic_version")
            if not has_table:
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLError as exc:
        raise DatabaseError(describe_error(exc, engine.url)) from None


def describe_error(exc: Exception, url) -> str:
    """One line about a database failure, without internals."""
    original = getattr(exc, "orig", exc)
    message = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    where = sqlite_path(str(url)) or url.render_as_string(hide_password=True)
    if "file is not a database" in message or "malformed" in message:
        return f"{where} is not a kvchat database (or it is damaged): {message}"
    if "readonly" in message or "read-only" in message:
        return f"cannot write to {where}: it is read-only"
    if "disk is full" in message or "database or disk is full" in message:
        return f"cannot write to {where}: the disk is full"
    return f"database error on {where}: {message}"


def ensure_schema(engine: Engine) -> None:
    """Bring the database up to this kvchat's schema, refusing a newer one."""
    revision = current_revision(engine)
    if revision == SCHEMA_HEAD:
        return
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from kvchat import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    script = ScriptDirectory.from_config(config)
    if revision is not None and revision not in {rev.revision for rev in script.walk_revisions()}:
        raise DatabaseError(
            f"the database was written by a newer kvchat (schema {revision}); "
            "upgrade kvchat to use it"
        )
    from alembic import command
    from sqlalchemy.exc import DatabaseError as SQLError

    try:
        with engine.connect() as connection:
            connection = connection.execution_options(kvchat_write=True)
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
    except SQLError as exc:
        raise DatabaseError(describe_error(exc, engine.url)) from None

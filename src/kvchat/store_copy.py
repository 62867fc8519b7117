"""Copying a whole store into another database, SQLite to PostgreSQL and
back, verified by counts and checksums.

Every table of kvchat's schema is copied row for row, ids included (turns,
facts, summaries and embeddings refer to each other by id), for every user,
into a database that holds no kvchat data yet. The full-text index is made
in the target as its own engine keeps it (FTS5's triggers on SQLite,
kvchat's search tables on PostgreSQL).

The copy is one transaction in the target. Before it commits, each table
is read back from the target in the same order as from the source, and its
row count and SHA-256 over every value must equal the source's; otherwise
the transaction is rolled back and the target is left as it was. The
source is only read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from . import database, postgres_search

BATCH = 1000


class CopyError(database.DatabaseError):
    """Why a copy was refused or undone, in one line."""


@dataclass(frozen=True)
class CopiedTable:
    name: str
    rows: int
    checksum: str  # SHA-256, hex, of the rows as `_canonical` writes them


def _canonical(value) -> str:
    """One value as both engines' rows give it back: times in UTC (SQLite
    returns them without a zone), bytes in hex, booleans as 0 and 1."""
    if value is None:
        return "\x00"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _rows(connection, table):
    """Every row of `table` in order of its primary key, BATCH at a time."""
    from sqlalchemy import select

    query = select(table).order_by(*table.primary_key.columns)
    result = connection.execution_options(yield_per=BATCH).execute(query)
    yield from result.partitions()


class _Checksum:
    """The row count and SHA-256 of a table's rows, given in order."""

    def __init__(self) -> None:
        self.digest, self.rows = hashlib.sha256(), 0

    def add(self, batch) -> None:
        for row in batch:
            self.digest.update(json.dumps([_canonical(value) for value in row], ensure_ascii=False).encode())
            self.digest.update(b"\n")
            self.rows += 1

    def result(self) -> tuple[int, str]:
        return self.rows, self.digest.hexdigest()


def _summary(connection, table) -> tuple[int, str]:
    checksum = _Checksum()
    for batch in _rows(connection, table):
        checksum.add(batch)
    return checksum.result()


def _count(connection, table) -> int:
    from sqlalchemy import func, select

    return connection.execute(select(func.count()).select_from(table)).scalar()


def _index_for_search(connection, table, rows: list[dict]) -> None:
    """Index copied turns and facts, where kvchat keeps the index (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        return  # FTS5's triggers have indexed them
    if table.name == "turns":
        postgres_search.index_turns(connection, [(row["id"], row["session_id"], row["content"]) for row in rows])
    elif table.name == "facts":
        postgres_search.index_facts(
            connection, [(row["id"], row["user_name"], row["key"], row["value"]) for row in rows]
        )


def _check_no_nul(table, rows: list[dict]) -> None:
    """PostgreSQL's text cannot hold NUL, which SQLite's can: name the row
    rather than fail on it somewhere in a batch."""
    for row in rows:
        for column, value in row.items():
            if isinstance(value, str) and "\x00" in value:
                where = f"id {row['id']}" if "id" in row else ", ".join(f"{k} {row[k]}" for k in table.primary_key.columns.keys())
                raise CopyError(
                    f"{table.name} {where} holds a NUL (0x00) character in {column}, which PostgreSQL "
                    "cannot store; nothing was copied"
                )


def _continue_ids(connection, table) -> None:
    """Make PostgreSQL's next id follow the copied ones (rows were inserted
    with their ids, which leaves a serial column's sequence at its start)."""
    from sqlalchemy import text

    if connection.dialect.name != "postgresql" or "id" not in table.c or not table.c.id.primary_key:
        return
    connection.execute(text(
        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name} "
        "HAVING max(id) IS NOT NULL"
    ))


def _count_common_terms(target, user_name: str | None, copied: list[CopiedTable], progress) -> None:
    """Keep the counts of the copy's common search terms, as an import does
    (Store.recount_common_terms): every row is new to the target's index, and
    its first questions would otherwise count them one at a time (up to 7 s
    a question on PostgreSQL at a million turns)."""
    from .store import Store, ctrl_c_ends_only_this

    rows = {table.name: table.rows for table in copied}
    with Store(engine=target, user=user_name) as store, ctrl_c_ends_only_this():
        for kind in ("turns", "facts"):
            store.recount_common_terms(
                kind, added=rows[kind], starting=None if progress is None else lambda: progress("counting terms", 0, None)
            )


def copy_store(
    source_url: str, target_url: str, *, user_name: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[CopiedTable]:
    """Copy the store at `source_url` into the empty one at `target_url`
    (created and brought to this kvchat's schema first; the source too, as
    any command would, with `user_name` owning rows from before users).
    Returns each table's rows and checksum, equal in both."""
    from sqlalchemy.exc import DatabaseError as SQLError

    from .schema import metadata

    if source_url == target_url:
        raise CopyError("the target is the store itself; name another database with --to")
    if database.is_sqlite(target_url) and database.sqlite_path(target_url) is None:
        raise CopyError("an in-memory database is gone when the command ends; name a file or a server with --to")
    source_path = database.sqlite_path(source_url) if database.is_sqlite(source_url) else None
    if source_path is not None and not source_path.exists():
        # Opening it would make an empty store, and its copy would "match".
        raise CopyError(f"there is no store at {source_path} to copy (see KVCHAT_DB)")
    source = database.create_engine(source_url)
    target = database.create_engine(target_url)
    tables = metadata.sorted_tables  # a table after those it refers to
    try:
        database.ensure_schema(source, user_name)
        database.ensure_schema(target, user_name)
        with source.connect() as reading, target.connect() as writing:
            writing = writing.execution_options(kvchat_write=True)
            with writing.begin():
                held = [(table.name, n) for table in tables if (n := _count(writing, table))]
                if held:
                    name, _ = held[0]
                    raise CopyError(
                        f"{database.where(target.url)} already holds kvchat data (its {name} table is not empty); "
                        "copy into an empty database"
                    )
                expected = {}
                for table in tables:
                    total, done, checksum = _count(reading, table), 0, _Checksum()
                    for batch in _rows(reading, table):
                        checksum.add(batch)  # as it is copied: the source is read once
                        rows = [dict(row._mapping) for row in batch]
                        if writing.dialect.name == "postgresql":
                            _check_no_nul(table, rows)
                        writing.execute(table.insert(), rows)
                        _index_for_search(writing, table, rows)
                        done += len(rows)
                        if progress is not None:
                            progress(f"copying {table.name}", done, total)
                    _continue_ids(writing, table)
                    expected[table.name] = checksum.result()
                copied = []
                for number, table in enumerate(tables, 1):
                    if progress is not None:
                        progress("verifying", number, len(tables))
                    found = _summary(writing, table)
                    if found != expected[table.name]:
                        raise CopyError(
                            f"the copy of {table.name} does not match the original ({found[0]} rows against "
                            f"{expected[table.name][0]}, or different values); nothing was copied"
                        )
                    copied.append(CopiedTable(table.name, *found))
        _count_common_terms(target, user_name, copied, progress)
        return copied
    except SQLError as exc:
        raise database.DatabaseError(database.describe_error(exc, target.url)) from None
    finally:
        source.dispose()
        target.dispose()

"""kvchat's memory on disk: sessions, turns, key/value facts and their history.

`Store` is the library's front door to the database. It knows nothing of
models or terminals: callers hand it text and token counts, and get plain
records back. Every write is one short transaction that takes the write lock
up front, so concurrent kvchat processes queue instead of failing.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import database, postgres_search, users
from .textsearch import MatchQuery, holds_word, postgres_word_pattern, quote
from .titles import title_from_question

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# Turn statuses whose text can be shown to the model again (interrupted and
# cut answers are marked as such by the prompt builder).
USABLE_STATUSES = ("complete", "interrupted", "length")

MAX_NAME_LENGTH = 200
# Turns written by one statement of a long import (all in one transaction).
TURN_BATCH = 1000
# How a session is named by its id: "#12".
SESSION_ID = re.compile(r"#\d{1,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StoreError(Exception):
    """Bad input to the store (an unknown session, an invalid name), in one line."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no zone; everything kvchat writes is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def check_name(kind: str, value: str) -> str:
    """A session name or fact key as stored, or StoreError saying what is wrong."""
    cleaned = value.strip()
    if not cleaned:
        raise StoreError(f"{kind} must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise StoreError(f"{kind} is longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL.search(cleaned):
        raise StoreError(f"{kind} must not contain control characters")
    return check_unicode(kind, cleaned)


# Of the invisible formatting characters (Unicode's Cf: zero-width space,
# bidi marks and overrides, soft hyphen ...), the ones a session name may
# hold: the joiners that emoji and some scripts need to be written at all
# (and, in check_new_session_name, the tag characters of flag emoji).
_JOINERS = frozenset({"\u200c", "\u200d"})


def check_session_name(value: str) -> str:
    """A session name as stored and looked up: checked like every name, and
    in Unicode's composed form (NFC). "café" typed on a keyboard and "café"
    taken from a macOS file name (decomposed: e + a combining accent) look
    alike and are then one session (migration 0013 composed the older names)."""
    return unicodedata.normalize("NFC", check_name("a session name", value))


def check_not_an_id(name: str) -> str:
    """`name`, unless it would read as a session id: `#12` names session 12
    everywhere, so a session called "#12" would take another's place."""
    if SESSION_ID.fullmatch(name) or name == "#":
        raise StoreError(f"{name!r} cannot be a session name: #N stands for the session whose id is N")
    return name


def check_new_session_name(name: str) -> str:
    """`name` for a session about to be made (or renamed): not an id, and
    without invisible characters: "work" and "work" with a zero-width space
    in it would look alike and not be one. A session named so before keeps
    its name and is found by it."""
    check_not_an_id(name)
    for char in name:
        if unicodedata.category(char) == "Cf" and char not in _JOINERS and not "\U000e0020" <= char <= "\U000e007f":
            raise StoreError(f"a session name must not contain invisible characters (U+{ord(char):04X})")
    return name


# Text no database can hold (see check_unicode) that reached a query anyway,
# e.g. a session name looked up: one line, not a traceback.
_NOT_UNICODE = "the text is not valid Unicode (it holds a lone surrogate)"
_NO_NUL = "the text holds a NUL (0x00) character, which PostgreSQL cannot store; nothing was stored"


def check_unicode(kind: str, value: str) -> str:
    """`value`, or StoreError when it is not text the database can hold: a
    lone surrogate (from a JSON "\\ud800" escape, or an argument that was not
    UTF-8) cannot be encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"{kind} is not valid Unicode text (it holds a lone surrogate)") from None
    return value


# A fact is a short memory; a longer text could never fit the recall budget.
MAX_FACT_VALUE = 2000


def check_value(value: str) -> str:
    """A fact value as stored, or StoreError saying what is wrong."""
    if not value.strip():
        raise StoreError("a fact value must not be empty")
    if len(value) > MAX_FACT_VALUE:
        raise StoreError(f"a fact value is longer than {MAX_FACT_VALUE} characters")
    if "\x00" in value:
        raise StoreError("a fact value must not contain NUL characters")
    return check_unicode("a fact value", value)


@dataclass
class Session:
    id: int
    name: str
    created_at: datetime
    last_active_at: datetime
    turn_count: int
    token_count: int
    settings: dict = field(default_factory=dict)
    title: str | None = None  # set by the user, else made from the first question


@dataclass
class Summary:
    """A session's rolling summary: what its turns up to `last_turn_id` said."""

    session_id: int
    content: str
    tokens: int
    last_turn_id: int
    turn_count: int
    updated_at: datetime
    model: str | None = None


@dataclass
class Role:
    name: str
    content: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Embedded:
    """A fact or turn with the vector one embedding model made of it, if any.

    `digest` is the SHA-256 (hex) of the text that vector was made from: when
    it differs from the record's text now, the vector is stale."""

    record: Turn | Fact
    digest: str | None
    dimensions: int | None
    vector: bytes | None  # float32, little-endian, unit length


@dataclass
class Turn:
    id: int
    session_id: int
    role: str
    content: str
    tokens: int
    status: str
    created_at: datetime
    name: str | None = None
    model: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ref: str | None = None
    token_encoding: str | None = None  # the encoding `tokens` was counted with; None: not known

    def counted_for(self, model: str) -> Turn:
        """The turn with its tokens as `model` counts them. The stored count
        was made for the model of the day it was written: under another
        encoding the same text can count less than half as much, or over
        twice as much, so it is counted again. A turn written before schema
        0011 has no encoding recorded: the one of the model it names (the
        model it was asked of, or that answered it) is taken for it, and a
        turn that names none is trusted."""
        from . import tokens

        encoding = tokens.encoding_name_for_model(model)
        counted_with = self.token_encoding
        if counted_with is None and self.model:
            counted_with = tokens.encoding_name_for_model(self.model)
        if counted_with is None or counted_with == encoding:
            return self
        return replace(self, tokens=tokens.count_tokens(self.content, model), token_encoding=encoding)


@dataclass
class NewTurn:
    """A turn to be written: what the caller knows before the database does."""

    role: str
    content: str
    tokens: int
    status: str = "complete"
    name: str | None = None
    model: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ref: str | None = None
    created_at: datetime | None = None
    token_encoding: str | None = None


@dataclass
class Fact:
    id: int
    key: str
    value: str
    source: str
    created_at: datetime
    updated_at: datetime
    turn_id: int | None = None
    ref: str | None = None


@dataclass
class FactsImported:
    changed: int  # facts added, or given a new value
    older: int  # items dated before the stored value they would replace (or the key's forget): passed over


@dataclass
class FactVersion:
    key: str
    value: str | None  # None for a forget, and for a value deleted with its session
    action: str
    source: str
    created_at: datetime
    turn_id: int | None = None

    @property
    def deleted_with_session(self) -> bool:
        """A value that was set, and blanked when its session was deleted
        with its facts (`sessions delete --facts`)."""
        return self.action == "set" and self.value is None


@dataclass
class SkippedFact:
    """A fact left out because it looked like a secret; never its value."""

    id: int
    key: str | None  # None when the key itself looked like a secret
    reason: str  # what it looked like: "api key", "password", ...
    source: str  # rules or model
    created_at: datetime
    turn_id: int | None = None


@dataclass
class Hit:
    """A search result: the record, its bm25 score (higher is better)."""

    record: Turn | Fact
    score: float


def _turn(row) -> Turn:
    m = row._mapping
    return Turn(
        id=m["id"],
        session_id=m["session_id"],
        role=m["role"],
        content=m["content"],
        tokens=m["tokens"],
        status=m["status"],
        created_at=_utc(m["created_at"]),
        name=m["name"],
        model=m["model"],
        error=m["error"],
        prompt_tokens=m["prompt_tokens"],
        completion_tokens=m["completion_tokens"],
        ref=m["ref"],
        token_encoding=m["token_encoding"],
    )


def _fact(row) -> Fact:
    m = row._mapping
    return Fact(
        id=m["id"],
        key=m["key"],
        value=m["value"],
        source=m["source"],
        created_at=_utc(m["created_at"]),
        updated_at=_utc(m["updated_at"]),
        turn_id=m["turn_id"],
        ref=m["ref"],
    )


def _role(row) -> Role:
    return Role(name=row[0], content=row[1], created_at=_stored_time(row[2]), updated_at=_stored_time(row[3]))


def _embedded(record: Turn | Fact, row) -> Embedded:
    # PostgreSQL drivers may hand binary columns back as memoryview.
    vector = bytes(row.vector) if row.vector is not None else None
    return Embedded(record, row.digest, row.dimensions, vector)


def _session(row) -> Session:
    m = row._mapping
    return Session(
        id=m["id"],
        name=m["name"],
        created_at=_utc(m["created_at"]),
        last_active_at=_utc(m["last_active_at"]),
        turn_count=m["turn_count"],
        token_count=m["token_count"],
        settings=_settings(m["name"], m["settings"]),
        title=m["title"],
    )


def _settings(session_name: str, raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        settings = json.loads(raw)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        # Only a hand-edited or damaged database gets here: say how to mend
        # it when the settings are used, and keep listing sessions meanwhile.
        return {"_unreadable": raw[:200]}
    return settings


@dataclass
class ModelCall:
    """The tokens one model request cost (see schema.model_calls)."""

    kind: str  # answer, extract, summary or embed
    session_id: int | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    reported: bool | None  # None: not known (answers stored before calls were recorded)


@dataclass
class UsageRow:
    """Model calls summed over one group: a session (`key` its id; None for
    calls of deleted sessions, and embeddings made for `kvchat recall` outside
    any), a model, a local day (ISO date) or a kind, split by kind and by
    model (prices are per model)."""

    key: object
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted_calls: int = 0  # calls whose tokens kvchat counted, or whose source is unknown
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [calls, in, out]
    by_model: dict[str | None, list[int]] = field(default_factory=dict)  # model -> [calls, in, out]


@contextmanager
def ctrl_c_ends_only_this() -> Iterator[None]:
    """For work after a commit that only fills a cache, such as counting the
    common terms after an import or a copy (17 s at a million turns on
    PostgreSQL): Ctrl-C ends that work and not the command, which then
    reports what it stored. A bare "interrupted" would leave the user unsure
    whether anything was."""
    try:
        yield
    except KeyboardInterrupt:
        pass


@dataclass
class Deleted:
    """What a delete or prune removed."""

    sessions: int = 0
    turns: int = 0
    facts: int = 0
    names: list[str] = field(default_factory=list)  # of the sessions deleted
    questions: set[str] = field(default_factory=set)  # those of the `asked` texts their user turns held


@dataclass
class TermStats:
    documents: int
    average_length: float  # characters of key and value for facts, tokens for turns
    containing: dict[str, int]  # term -> how many documents hold it


class Store:
    """Open (creating and upgrading as needed) the database at `url`, as
    `user` (default: the operating system's user name): every read and write
    sees that user's sessions, facts, roles and model calls only."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None, user: str | None = None):
        self.user = check_name("a user name", user if user is not None else users.default_user())
        self.url = database.resolve_url(url) if engine is None else str(engine.url)
        self._engine = engine
        # An SQLite file already at this kvchat's schema is read through this
        # connection (see _raw), and the engine is made only when a method
        # that needs it runs: the commands that only list what is stored
        # never import SQLAlchemy (about 0.2 s of `kvchat history`).
        self._connection = database.connect_if_current(self.url) if engine is None else None
        # PostgreSQL keeps its full-text index in tables kvchat writes (see postgres_search).
        self._postgres = self._connection is None and not database.is_sqlite(self.url)
        self._reader = None  # see _postgres_reader
        if self._connection is None:
            database.ensure_schema(self.engine, self.user)
        self._totals: dict[str, tuple[int, float]] = {}
        # Term counts made by term_stats, written with the next write (see
        # _keep_term_counts): kind -> (deletions then, {term: (rows holding it, rows)}).
        self._new_term_counts: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
        # The store's own connection serves one thread at a time, so that no
        # thread reads another's write before it commits. Re-entrant: a read
        # inside a write sees it, and a write begun inside another fails
        # (SQLite refuses the second BEGIN) rather than waiting for itself.
        self._connection_lock = threading.RLock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = database.create_engine(self.url)
        return self._engine

    @property
    def location(self) -> str:
        """Where the data is, for people (database.where)."""
        return database.where(self.url)

    def _postgres_reader(self):
        """The connection the Store's SELECTs use on PostgreSQL, kept open,
        each statement on its own (autocommit): one round trip a statement
        instead of three (BEGIN, the statement, ROLLBACK), which made a
        recall of a dozen statements several times slower than on SQLite."""
        if self._reader is None:
            from sqlalchemy.exc import DatabaseError as SQLError

            try:
                self._reader = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            except SQLError as exc:
                raise database.DatabaseError(database.describe_error(exc, self.engine.url)) from None
        return self._reader

    def _after_postgres_commit(self) -> None:
        """Move the search generation on again once a write has committed:
        another process may have counted terms between the move inside the
        transaction and the commit, and must not keep those counts. The write
        has committed whatever happens here, so a failure only costs that."""
        from sqlalchemy.exc import DatabaseError as SQLError

        try:
            self._postgres_reader().exec_driver_sql(postgres_search.NEXT_GENERATION)
        except (SQLError, database.DatabaseError):
            self._close_postgres_reader()

    def _close_postgres_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self._close_postgres_reader()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------

    def _own(self, table):
        """The condition that a row of `table` is this store's user's."""
        return table.c.user_name == self.user

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        from sqlalchemy.exc import DatabaseError as SQLError

        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLError as exc:
            raise database.DatabaseError(database.describe_error(exc, self.engine.url)) from None
        except UnicodeEncodeError:
            raise StoreError(_NOT_UNICODE) from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        from sqlalchemy.exc import DatabaseError as SQLError

        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(kvchat_write=True, kvchat_writer=self.user)
                with connection.begin():
                    yield connection
                    if self._postgres:
                        connection.exec_driver_sql(postgres_search.NEXT_GENERATION)
            if self._postgres:
                self._after_postgres_commit()
        except SQLError as exc:
            if "cannot contain NUL" in str(exc):
                raise StoreError(_NO_NUL) from None
            raise database.DatabaseError(database.describe_error(exc, self.engine.url)) from None
        except UnicodeEncodeError:
            raise StoreError(_NOT_UNICODE) from None

    @contextmanager
    def _write_sql(self) -> Iterator[_Writer]:
        """One write transaction for statements written as SQL text (see
        _Writer). On an SQLite file at this kvchat's schema it runs on the
        store's own connection, as the reads do, and SQLAlchemy is never
        imported: `kvchat ask` writes its question, answer, usage and facts
        this way, and importing SQLAlchemy was a quarter of its start-up and
        27 MB of its memory. BEGIN IMMEDIATE takes the write lock up front,
        as the engine's writes do (database._on_begin)."""
        if self._connection is None:
            with self._write() as db:
                sql = _Writer(db, sqlite=not self._postgres)
                if not self._postgres:
                    self._keep_term_counts(sql)
                yield sql
            if self._postgres and self._new_term_counts:
                self._keep_term_counts_apart()
            return
        with self._raw() as connection:
            try:
                # Inside the try: a Ctrl-C that arrives while BEGIN waits for
                # the lock is raised once BEGIN has taken it, and must not
                # leave the connection holding it.
                connection.execute("BEGIN IMMEDIATE")
                sql = _Writer(connection, sqlite=True)
                self._keep_term_counts(sql)
                yield sql
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    # -- sessions ---------------------------------------------------------

    def session(self, name: str) -> Session | None:
        composed = unicodedata.normalize("NFC", name)
        rows = self._select(_SESSION_BY_NAME, dict(user=self.user, name=composed))
        if not rows and composed != name:  # a session named before names were composed
            rows = self._select(_SESSION_BY_NAME, dict(user=self.user, name=name))
        return _raw_session(rows[0]) if rows else None

    def open_session(self, name: str) -> Session:
        """The session called `name`, created if it does not exist yet."""
        name = check_session_name(name)
        existing = self.session(name)
        if existing is not None:
            return existing
        with self._write_sql() as sql:
            return self._ensure_session(sql, name)

    def _ensure_session(self, sql: _Writer, name: str) -> Session:
        row = sql(_SESSION_BY_NAME, dict(user=self.user, name=name)).fetchone()
        if row is not None:
            return _raw_session(row)
        check_new_session_name(name)
        stamp = _naive_utc(now())
        return _raw_session(sql(
            "INSERT INTO sessions (user_name, name, created_at, last_active_at, turn_count, token_count) "
            f"VALUES (:user, :name, :stamp, :stamp, 0, 0) RETURNING {_SESSION_COLUMNS}",
            dict(user=self.user, name=name, stamp=stamp),
        ).fetchone())

    def sessions(self) -> list[Session]:
        rows = self._select(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_name = :user "
            "ORDER BY last_active_at DESC, id DESC",
            dict(user=self.user),
        )
        return [_raw_session(row) for row in rows]

    def fresh_session_name(self) -> str:
        """A new session name from the current time, unused so far."""
        base = now().astimezone().strftime("%Y-%m-%d-%H%M%S")
        name, n = base, 1
        while self.session(name) is not None:
            n += 1
            name = f"{base}-{n}"
        return name

    def update_settings(self, name: str, changes: dict, *, reset: bool = False) -> Session:
        """Merge `changes` into the settings of session `name` (created if
        missing), or into none with `reset`; a value of None removes that setting."""
        name = check_session_name(name)
        with self._write_sql() as sql:
            session = self._ensure_session(sql, name)
            settings = {} if reset else dict(session.settings)
            for key, value in changes.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            return _raw_session(sql(
                "UPDATE sessions SET settings = :settings WHERE id = :id "
                f"RETURNING {_SESSION_COLUMNS}",
                dict(settings=json.dumps(settings, sort_keys=True) if settings else None, id=session.id),
            ).fetchone())

    # -- summaries ----------------------------------------------------------

    def summary(self, session_id: int) -> Summary | None:
        rows = self._select(
            "SELECT session_id, content, tokens, last_turn_id, turn_count, updated_at, model "
            "FROM session_summaries WHERE session_id = :session",
            dict(session=session_id),
        )
        if not rows:
            return None
        session, content, tokens, last_turn_id, turn_count, updated_at, model = rows[0]
        return Summary(
            session_id=session, content=content, tokens=tokens, last_turn_id=last_turn_id,
            turn_count=turn_count, updated_at=_stored_time(updated_at), model=model,
        )

    def save_summary(
        self, session_id: int, content: str, *, tokens: int, last_turn_id: int,
        turn_count: int, model: str | None, covers_after: int | None,
    ) -> bool:
        """Store a session's new summary, unless another process has moved it
        past `covers_after` (the last turn of the summary this one extends)
        since it was read: the summary only ever moves forward, never twice
        over the same turns. Returns whether it was stored."""
        values = dict(
            session=session_id, content=content, tokens=tokens, last_turn_id=last_turn_id,
            turn_count=turn_count, model=model, updated_at=_naive_utc(now()),
        )
        with self._write_sql() as sql:
            current = sql(
                "SELECT last_turn_id FROM session_summaries WHERE session_id = :session", values
            ).fetchone()
            if (current[0] if current else None) != covers_after:
                return False
            if current is None:
                sql("INSERT INTO session_summaries "
                    "(session_id, content, tokens, last_turn_id, turn_count, model, updated_at) "
                    "VALUES (:session, :content, :tokens, :last_turn_id, :turn_count, :model, :updated_at)", values)
            else:
                sql("UPDATE session_summaries SET content = :content, tokens = :tokens, "
                    "last_turn_id = :last_turn_id, turn_count = :turn_count, model = :model, "
                    "updated_at = :updated_at WHERE session_id = :session", values)
        return True

    # -- roles --------------------------------------------------------------

    def roles(self) -> list[Role]:
        rows = self._select(f"SELECT {_ROLE_COLUMNS} FROM roles WHERE user_name = :user ORDER BY name", dict(user=self.user))
        return [_role(row) for row in rows]

    def role(self, name: str) -> Role | None:
        rows = self._select(
            f"SELECT {_ROLE_COLUMNS} FROM roles WHERE user_name = :user AND name = :name", dict(user=self.user, name=name)
        )
        return _role(rows[0]) if rows else None

    def set_role(self, name: str, content: str) -> bool:
        """Add or replace a role; True when it is new."""
        from sqlalchemy import select

        from .schema import roles

        name = check_name("a role name", name)
        if "\x00" in content:
            raise StoreError("a role's text must not contain NUL characters")
        if not content.strip():
            raise StoreError("a role's text must not be empty")
        stamp = _naive_utc(now())
        with self._write() as db:
            exists = db.execute(select(roles.c.id).where(self._own(roles), roles.c.name == name)).first()
            if exists:
                db.execute(roles.update().where(roles.c.id == exists.id).values(content=content, updated_at=stamp))
            else:
                db.execute(roles.insert().values(
                    user_name=self.user, name=name, content=content, created_at=stamp, updated_at=stamp
                ))
        return not exists

    def remove_role(self, name: str) -> bool:
        from .schema import roles

        with self._write() as db:
            return db.execute(roles.delete().where(self._own(roles), roles.c.name == name)).rowcount > 0

    # -- embeddings ---------------------------------------------------------

    def embedded_facts(self, model: str) -> list[Embedded]:
        """Every fact, with its vector from `model` where it has one."""
        from sqlalchemy import and_, select

        from .schema import embeddings, facts

        stored = and_(embeddings.c.kind == "fact", embeddings.c.item_id == facts.c.id, embeddings.c.model == model)
        query = (
            select(facts, embeddings.c.digest, embeddings.c.dimensions, embeddings.c.vector)
            .select_from(facts.outerjoin(embeddings, stored))
            .where(self._own(facts))
            .order_by(facts.c.id)
        )
        with self._read() as db:
            return [_embedded(_fact(row), row) for row in db.execute(query)]

    def embedded_turns(self, session_id: int, model: str, *, before_id: int | None) -> list[Embedded]:
        """The session's usable turns older than `before_id` (all when None),
        oldest first, with their vectors from `model` where they have one."""
        from sqlalchemy import and_, select

        from .schema import embeddings, turns

        stored = and_(embeddings.c.kind == "turn", embeddings.c.item_id == turns.c.id, embeddings.c.model == model)
        query = (
            select(turns, embeddings.c.digest, embeddings.c.dimensions, embeddings.c.vector)
            .select_from(turns.outerjoin(embeddings, stored))
            .where(turns.c.session_id == session_id, turns.c.status.in_(USABLE_STATUSES))
            .order_by(turns.c.id)
        )
        if before_id is not None:
            query = query.where(turns.c.id < before_id)
        with self._read() as db:
            return [_embedded(_turn(row), row) for row in db.execute(query)]

    def save_embeddings(self, model: str, vectors: Iterable[tuple[str, int, str, int, bytes]]) -> int:
        """Store (kind, item id, digest, dimensions, vector) rows made by
        `model`, replacing the vectors those items had from it; returns how many.

        Replacing is a delete and an insert in one transaction: the same on
        SQLite and PostgreSQL, which spell an upsert differently."""
        from .schema import embeddings

        rows = [
            dict(kind=kind, item_id=item_id, model=model, digest=digest, dimensions=dimensions, vector=vector)
            for kind, item_id, digest, dimensions, vector in vectors
        ]
        with self._write() as db:
            for kind in {row["kind"] for row in rows}:
                ids = [row["item_id"] for row in rows if row["kind"] == kind]
                for start in range(0, len(ids), 500):  # well under any engine's limit on parameters
                    db.execute(embeddings.delete().where(
                        embeddings.c.kind == kind, embeddings.c.model == model,
                        embeddings.c.item_id.in_(ids[start : start + 500]),
                    ))
            if rows:
                db.execute(embeddings.insert(), rows)
        return len(rows)

    def prune_embeddings(self) -> int:
        """Delete the vectors of facts that no longer exist (from any model);
        returns how many. They are never read (vectors are read joined to
        their facts): this only gives the space back."""
        from sqlalchemy import exists

        from .schema import embeddings, facts

        orphan = ~exists().where(facts.c.id == embeddings.c.item_id)
        with self._write() as db:
            return db.execute(embeddings.delete().where(embeddings.c.kind == "fact", orphan)).rowcount

    # -- model calls ----------------------------------------------------------

    def record_model_call(self, call: ModelCall) -> None:
        """Note the tokens one model request cost, for `kvchat usage`."""
        with self._write_sql() as sql:
            self._insert_model_call(sql, call)

    def _insert_model_call(self, sql: _Writer, call: ModelCall) -> None:
        sql(
            "INSERT INTO model_calls (user_name, kind, session_id, model, prompt_tokens, completion_tokens, "
            "reported, created_at) VALUES (:user, :kind, :session, :model, :prompt_tokens, :completion_tokens, "
            ":reported, :created_at)",
            dict(user=self.user, kind=call.kind, session=call.session_id, model=call.model,
                 prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                 reported=call.reported, created_at=_naive_utc(now())),
        )

    USAGE_GROUPS = ("session", "model", "day", "kind")

    def usage(self, by: str, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        """The model calls made between `since` and `until` (either open when None), summed per
        session, model, day (in local time) or kind: days oldest first, the
        others by tokens, most first. A session's row has its id as `key`."""
        from sqlalchemy import case, func, select

        from .schema import model_calls as calls

        if by not in self.USAGE_GROUPS:
            raise ValueError(by)
        if by == "day":
            # Summed by the quarter hour in SQL (every time zone's offset is
            # a multiple of 15 minutes), then by local day here, where the
            # zone's offset on each date (summer time included) is known.
            if database.is_sqlite(self.url):
                group = func.strftime("%Y-%m-%d %H:", calls.c.created_at).concat(
                    func.printf("%02d", func.strftime("%M", calls.c.created_at) / 15 * 15))
            else:
                group = func.date_trunc("minute", calls.c.created_at)
        else:
            group = {"session": calls.c.session_id, "model": calls.c.model, "kind": calls.c.kind}[by]
        counted = func.sum(case((calls.c.reported.is_(True), 0), else_=1))
        query = (
            select(group, calls.c.kind, calls.c.model, func.count(), func.sum(calls.c.prompt_tokens),
                   func.sum(calls.c.completion_tokens), counted)
            .where(self._own(calls))
            .group_by(group, calls.c.kind, calls.c.model)
        )
        if since is not None:
            query = query.where(calls.c.created_at >= _naive_utc(since))
        if until is not None:
            query = query.where(calls.c.created_at <= _naive_utc(until))
        rows: dict[object, UsageRow] = {}
        with self._read() as db:
            for key, kind, model, count, prompt, completion, not_reported in db.execute(query):
                if by == "day":
                    key = _stored_time(key).astimezone().date().isoformat()
                row = rows.setdefault(key, UsageRow(key))
                row.calls += count
                row.prompt_tokens += prompt
                row.completion_tokens += completion
                row.counted_calls += not_reported
                for split, part in ((row.by_kind, kind), (row.by_model, model)):
                    totals = split.setdefault(part, [0, 0, 0])
                    totals[0] += count
                    totals[1] += prompt
                    totals[2] += completion
        if by == "day":
            return sorted(rows.values(), key=lambda row: row.key)
        return sorted(rows.values(), key=lambda row: (-(row.prompt_tokens + row.completion_tokens), str(row.key)))

    def sessions_by_id(self, ids: Iterable[int]) -> dict[int, Session]:
        wanted = list(ids)
        found: dict[int, Session] = {}
        for start in range(0, len(wanted), 500):
            chunk = {f"id{i}": session_id for i, session_id in enumerate(wanted[start : start + 500])}
            rows = self._select(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_name = :user "
                f"AND id IN ({', '.join(':' + name for name in chunk)})",
                dict(chunk, user=self.user),
            )
            found.update((session.id, session) for session in map(_raw_session, rows))
        return found

    # -- skipped facts ------------------------------------------------------

    def record_skipped_facts(
        self, items: Iterable[tuple[str | None, str]], *, source: str, turn_id: int | None = None
    ) -> int:
        """Note (key or None, reason) facts left out as secrets; returns how
        many. The caller gives no value, so none can be stored."""
        stamp = _naive_utc(now())
        rows = [
            dict(user=self.user, key=key[:MAX_NAME_LENGTH] if key else None, reason=reason[:200], source=source,
                 turn_id=turn_id, created_at=stamp)
            for key, reason in items
        ]
        if rows:
            with self._write_sql() as sql:
                sql.many(
                    "INSERT INTO skipped_facts (user_name, key, reason, source, turn_id, created_at) "
                    "VALUES (:user, :key, :reason, :source, :turn_id, :created_at)",
                    rows,
                )
        return len(rows)

    def skipped_facts(self, limit: int | None = None) -> list[SkippedFact]:
        """The facts left out as secrets, the newest `limit` (all when None), oldest first."""
        sql = (
            "SELECT id, key, reason, source, turn_id, created_at FROM skipped_facts "
            "WHERE user_name = :user ORDER BY id DESC"
        )
        params = dict(user=self.user)
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        rows = [
            SkippedFact(id=id, key=key, reason=reason, source=source, turn_id=turn_id, created_at=_stored_time(created))
            for id, key, reason, source, turn_id, created in self._select(sql, params)
        ]
        rows.reverse()
        return rows

    # -- deleting -----------------------------------------------------------

    def resolve_session(self, ref: str) -> Session:
        """The session `ref` names (see `find_session`); StoreError when none
        does, or when several do (naming them, so the user can type more of one)."""
        if not ref.strip():
            raise StoreError("a session name must not be empty")
        found, _ = self.find_session(ref)
        if found is None:
            raise StoreError(f"no session named {ref!r} or starting with it (see `kvchat sessions`)")
        return found

    def find_session(self, ref: str, *, several: str = "give more of the name") -> tuple[Session | None, str]:
        """The session `ref` names, and how: "name" for the one called
        exactly `ref`; "id" for `#N`, the session whose id is N (ids never
        change, so scripts can hold on to them); "prefix" for the one session
        whose name starts with `ref`. (None, "") when no session matches.
        StoreError when `#N` is no session's id, or when several names start
        with `ref` (naming them, then saying `several`: what to do instead)."""
        check_unicode("a session name", ref)
        exact = self.session(ref)
        if exact is not None:
            return exact, "name"
        if SESSION_ID.fullmatch(ref):
            by_id = self.sessions_by_id([int(ref[1:])]).get(int(ref[1:]))
            if by_id is None:
                raise StoreError(f"no session has the id {ref} (see `kvchat sessions`)")
            return by_id, "id"
        if not ref:
            return None, ""
        ref = unicodedata.normalize("NFC", ref)
        # substr, not LIKE: a prefix holding % or _ means those characters.
        found = [_raw_session(row) for row in self._select(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_name = :user "
            "AND substr(name, 1, :length) = :ref ORDER BY name LIMIT 6",
            dict(user=self.user, length=len(ref), ref=ref),
        )]
        if not found:
            return None, ""
        if len(found) > 1:
            names = ", ".join(repr(session.name) for session in found[:5]) + (", ..." if len(found) > 5 else "")
            raise StoreError(f"{ref!r} is the start of several sessions ({names}); {several}")
        return found[0], "prefix"

    def set_title(self, name: str, title: str | None) -> Session:
        """Give session `name` (its exact name) the title `title`, or with
        None the one made from its first question again."""
        from sqlalchemy import func, select

        from .schema import sessions, turns

        if title is not None:
            title = check_name("a title", title)
        with self._write() as db:
            found = db.execute(select(sessions.c.id).where(self._own(sessions), sessions.c.name == name)).scalar()
            if found is None:
                raise StoreError(f"no session named {name!r}")
            if title is None:
                first = db.execute(
                    select(func.substr(turns.c.content, 1, 4000))
                    .where(turns.c.session_id == found, turns.c.role == "user")
                    .order_by(turns.c.id).limit(1)
                ).scalar()
                title = title_from_question(first) if first is not None else None
            db.execute(sessions.update().where(sessions.c.id == found).values(title=title))
            return _session(db.execute(select(sessions).where(sessions.c.id == found)).one())

    def rename_session(self, old: str, new: str) -> Session:
        """Give session `old` (its exact name) the name `new`, which must be free."""
        from sqlalchemy import select

        from .schema import sessions

        new = check_new_session_name(check_session_name(new))
        with self._write() as db:
            session = db.execute(select(sessions.c.id).where(self._own(sessions), sessions.c.name == old)).first()
            if session is None:
                raise StoreError(f"no session named {old!r}")
            taken = db.execute(select(sessions.c.id).where(self._own(sessions), sessions.c.name == new)).first()
            if taken is not None and taken.id != session.id:
                raise StoreError(f"there is already a session named {new!r}")
            db.execute(sessions.update().where(sessions.c.id == session.id).values(name=new))
            return _session(db.execute(select(sessions).where(sessions.c.id == session.id)).one())

    def sessions_older_than(self, before: datetime) -> list[Session]:
        """The sessions last active before `before`, oldest first."""
        from sqlalchemy import select

        from .schema import sessions

        query = (
            select(sessions).where(self._own(sessions), sessions.c.last_active_at < _naive_utc(before))
            .order_by(sessions.c.last_active_at, sessions.c.id)
        )
        with self._read() as db:
            return [_session(row) for row in db.execute(query)]

    def facts_from_sessions(self, session_ids: Iterable[int]) -> list[Fact]:
        """The facts whose current value was extracted from a turn of these
        sessions: what deleting them with `facts=True` forgets."""
        from sqlalchemy import select

        from .schema import facts, turns

        ids = list(session_ids)
        found: list[Fact] = []
        with self._read() as db:
            for start in range(0, len(ids), 500):
                from_turns = select(turns.c.id).where(turns.c.session_id.in_(ids[start : start + 500]))
                query = select(facts).where(self._own(facts), facts.c.turn_id.in_(from_turns)).order_by(facts.c.key)
                found += [_fact(row) for row in db.execute(query)]
        return found

    def delete_session(self, name: str, *, facts: bool = False, asked: Collection[str] = ()) -> Deleted:
        """Delete the session called exactly `name`: its turns (and their
        full-text entries and vectors), its summary and settings, and with
        `facts` the facts extracted from it (see `_delete_sessions`). Those
        of the `asked` texts that were questions in it are in the result's
        `questions` (kvchat chat's history holds what was typed too)."""
        from sqlalchemy import select

        from .schema import sessions

        with self._write() as db:
            found = db.execute(select(sessions.c.id).where(self._own(sessions), sessions.c.name == name)).scalar()
            if found is None:
                raise StoreError(f"no session named {name!r}")
            deleted = self._delete_sessions(db, [found], facts, asked)
        self._erase_deleted_text(deleted)
        return deleted

    def prune_sessions(self, before: datetime, *, facts: bool = False, asked: Collection[str] = ()) -> Deleted:
        """Delete every session last active before `before`, as `delete_session`
        does. Which ones is decided inside the deleting transaction, so a
        session that became active since a preview is kept."""
        from sqlalchemy import select

        from .schema import sessions

        with self._write() as db:
            ids = list(db.execute(
                select(sessions.c.id).where(self._own(sessions), sessions.c.last_active_at < _naive_utc(before))
            ).scalars())
            deleted = self._delete_sessions(db, ids, facts, asked)
        self._erase_deleted_text(deleted)
        return deleted

    def _delete_sessions(self, db: Connection, ids: list[int], facts: bool, asked: Collection[str]) -> Deleted:
        """Delete these sessions and all they hold, in the caller's transaction.

        Turns go through their delete trigger, which takes them out of the
        full-text index. With `facts`, the facts whose value came from one of
        their turns are forgotten (a 'forget' entry in each key's history, as
        `forget_fact` writes), and the values those turns wrote into any
        key's history are blanked: that text came from the session too. The
        keys stay in the history, as the record of what was forgotten.
        Without `facts`, the facts stay and lose only their link to the turn.
        """
        from sqlalchemy import select

        from .schema import embeddings, fact_history, session_summaries, sessions, turns
        from .schema import facts as facts_table

        deleted = Deleted()
        stamp = _naive_utc(now())
        for start in range(0, len(ids), 500):  # well under any engine's limit on parameters
            chunk = ids[start : start + 500]
            session_turns = select(turns.c.id).where(turns.c.session_id.in_(chunk))
            if facts:
                gone = db.execute(
                    select(facts_table.c.id, facts_table.c.key).where(facts_table.c.turn_id.in_(session_turns))
                ).all()
                db.execute(embeddings.delete().where(
                    embeddings.c.kind == "fact", embeddings.c.item_id.in_([row.id for row in gone])
                ))
                if gone:
                    db.execute(facts_table.delete().where(facts_table.c.id.in_([row.id for row in gone])))
                db.execute(
                    fact_history.update().where(fact_history.c.turn_id.in_(session_turns))
                    .values(value=None)
                )
                if gone:
                    db.execute(fact_history.insert(), [
                        dict(user_name=self.user, key=row.key, value=None, action="forget", turn_id=None,
                             source="user", created_at=stamp)
                        for row in gone
                    ])
                deleted.facts += len(gone)
            db.execute(embeddings.delete().where(embeddings.c.kind == "turn", embeddings.c.item_id.in_(session_turns)))
            deleted.questions.update(_questions_among(db, chunk, asked))
            deleted.turns += db.execute(turns.delete().where(turns.c.session_id.in_(chunk))).rowcount
            db.execute(session_summaries.delete().where(session_summaries.c.session_id.in_(chunk)))
            deleted.names += db.execute(select(sessions.c.name).where(sessions.c.id.in_(chunk))).scalars().all()
            deleted.sessions += db.execute(sessions.delete().where(sessions.c.id.in_(chunk))).rowcount
        return deleted

    def questions_among(self, session_ids: list[int], asked: Collection[str]) -> set[str]:
        """Which of the `asked` texts were questions in these sessions: what a
        delete of them would report in `Deleted.questions`."""
        found: set[str] = set()
        with self._read() as db:
            for start in range(0, len(session_ids), 500):
                found.update(_questions_among(db, session_ids[start : start + 500], asked))
        return found

    def _erase_deleted_text(self, deleted: Deleted) -> None:
        """Make deleted text unrecoverable from the SQLite file.

        secure_delete (see database.py) zeroes deleted rows, but a full-text
        delete only adds a tombstone: the terms stay in the index's older
        segments until those are merged. 'optimize' merges every segment
        into one, leaving none of the deleted terms. It rewrites the whole
        index (about 1.9 s for 100,000 turns, 0.9 s for 100,000 facts), so
        it runs once per delete or prune, after the delete has committed:
        the rows are gone and searches miss them even if it is cut short,
        and the next delete's 'optimize' finishes the job. A partial 'merge'
        would be cheaper but may leave the very segment holding the text.
        Then the write-ahead log, which still holds the pages as they were,
        is copied into the file and emptied (unless another process is
        reading an older snapshot: then a later checkpoint empties it).
        """
        if not deleted.sessions or not database.is_sqlite(self.url):
            return
        with self._write() as db:
            db.exec_driver_sql("INSERT INTO turns_fts(turns_fts) VALUES('optimize')")
            if deleted.facts:
                db.exec_driver_sql("INSERT INTO facts_fts(facts_fts) VALUES('optimize')")
        with self._raw() as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- turns ------------------------------------------------------------

    def add_turn(self, session_id: int, turn: NewTurn) -> Turn:
        with self._write_sql() as sql:
            return self._insert_turns(sql, session_id, [turn])[0]

    def _insert_turns(self, sql: _Writer, session_id: int, new: list[NewTurn]) -> list[Turn]:
        """Write turns to a session; the one turn of a single write comes back."""
        stamp = now()
        rows = []
        for turn in new:
            check_unicode("a turn's text", turn.content)
            content = turn.content
            if turn.role == "assistant":
                # PostgreSQL's text cannot hold NUL; an answer is kept with
                # U+FFFD in its place rather than lost (a question with one
                # is refused, see _write). On SQLite too: the engines keep
                # the same text, and what `kvchat export` writes, `import` takes.
                content = content.replace("\x00", "\ufffd")
            created = turn.created_at or stamp
            rows.append(
                dict(
                    session_id=session_id,
                    role=turn.role,
                    name=turn.name,
                    content=content,
                    tokens=turn.tokens,
                    token_encoding=turn.token_encoding,
                    model=turn.model,
                    status=turn.status,
                    error=turn.error,
                    prompt_tokens=turn.prompt_tokens,
                    completion_tokens=turn.completion_tokens,
                    ref=turn.ref,
                    created_at=_naive_utc(created),
                )
            )
        inserted: list[Turn] = []
        if len(rows) == 1:
            inserted.append(_raw_turn(sql(f"{_INSERT_TURN} RETURNING {_TURN_COLUMNS}", rows[0]).fetchone()))
            ids = [inserted[0].id]
        elif self._postgres:
            from .schema import turns

            # PostgreSQL needs the ids for its search table, in the rows' order.
            ids = sql.connection.execute(
                turns.insert().returning(turns.c.id, sort_by_parameter_order=True), rows
            ).scalars().all()
        else:
            sql.many(_INSERT_TURN, rows)
        if self._postgres:
            postgres_search.index_turns(
                sql.connection, [(id, session_id, row["content"]) for id, row in zip(ids, rows)]
            )
        question = next((turn.content for turn in new if turn.role == "user"), None)
        sql(
            "UPDATE sessions SET turn_count = turn_count + :added, token_count = token_count + :tokens, "
            "last_active_at = CASE WHEN last_active_at > :last THEN last_active_at ELSE :last END, "
            "title = coalesce(title, :title) WHERE id = :session",
            dict(
                added=len(rows), tokens=sum(row["tokens"] for row in rows),
                last=max(row["created_at"] for row in rows),
                title=title_from_question(question) if question is not None else None, session=session_id,
            ),
        )
        return inserted

    def add_turns(self, session_name: str, new: list[NewTurn],
                  progress: Callable[[int], None] | None = None) -> int:
        """Append many turns to a session (created if missing) in one
        transaction; `progress` hears how many are written so far, a batch
        at a time, so a long import can say how far it is."""
        if not new:
            return 0
        with self._write_sql() as sql:
            session = self._ensure_session(sql, check_session_name(session_name))
            for start in range(0, len(new), TURN_BATCH):
                self._insert_turns(sql, session.id, new[start : start + TURN_BATCH])
                if progress is not None:
                    progress(min(start + TURN_BATCH, len(new)))
        return len(new)

    def record_answer(self, question: Turn, answer: NewTurn, *, reported: bool | None = None) -> Turn:
        """Store the answer to `question` and mark the question answered,
        atomically, with the call's usage (the answer's prompt and completion
        tokens; `reported`: whether the server reported them) in model_calls."""
        with self._write_sql() as sql:
            sql("UPDATE turns SET status = 'complete' WHERE id = :id", dict(id=question.id))
            stored = self._insert_turns(sql, question.session_id, [answer])[0]
            if answer.prompt_tokens is not None or answer.completion_tokens is not None:
                self._insert_model_call(sql, ModelCall(
                    kind="answer", session_id=question.session_id, model=answer.model,
                    prompt_tokens=answer.prompt_tokens or 0, completion_tokens=answer.completion_tokens or 0,
                    reported=reported,
                ))
            return stored

    def already_stored(self, session_name: str, new: list[NewTurn]) -> list[bool]:
        """For each of `new`, whether the session already holds it: a turn
        with its `ref` or, when it has none, one with its time, role and text,
        as an export of the session wrote them. A turn with neither a ref nor
        a time is never taken for one already stored."""
        from sqlalchemy import select

        from .schema import sessions, turns

        in_session = (sessions.c.id == turns.c.session_id, self._own(sessions), sessions.c.name == session_name)
        times = [_naive_utc(turn.created_at) for turn in new if turn.ref is None and turn.created_at is not None]
        with self._read() as db:
            refs = set(db.execute(select(turns.c.ref).where(*in_session, turns.c.ref.is_not(None))).scalars())
            written = set()
            if times:
                rows = db.execute(
                    select(turns.c.role, turns.c.created_at, turns.c.content)
                    .where(*in_session, turns.c.ref.is_(None), turns.c.created_at.between(min(times), max(times)))
                )
                written = {(row.role, _utc(row.created_at), row.content) for row in rows}
        return [
            turn.ref in refs if turn.ref is not None
            else turn.created_at is not None and (turn.role, turn.created_at, turn.content) in written
            for turn in new
        ]

    def update_turn(self, turn_id: int, **values) -> None:
        """Change a stored turn's status, text or usage (e.g. a question answered)."""
        unknown = set(values) - _UPDATABLE_TURN_FIELDS
        if unknown:
            raise ValueError(f"not a turn field that can change: {', '.join(sorted(unknown))}")
        with self._write_sql() as sql:
            before = sql("SELECT tokens, session_id FROM turns WHERE id = :id", dict(id=turn_id)).fetchone()
            if before is None:
                raise StoreError(f"no turn {turn_id}")
            tokens, session_id = before
            if values:
                changes = ", ".join(f"{name} = :{name}" for name in values)
                sql(f"UPDATE turns SET {changes} WHERE id = :turn_id", dict(values, turn_id=turn_id))
            if self._postgres and "content" in values:
                postgres_search.index_turns(sql.connection, [(turn_id, session_id, values["content"])])
            if "tokens" in values and values["tokens"] != tokens:
                sql("UPDATE sessions SET token_count = token_count + :change WHERE id = :session",
                    dict(change=values["tokens"] - tokens, session=session_id))

    def turn(self, turn_id: int) -> Turn | None:
        """Turn `turn_id`, if it is in one of the user's sessions."""
        from sqlalchemy import select

        from .schema import sessions, turns

        mine = select(sessions.c.id).where(self._own(sessions))
        with self._read() as db:
            row = db.execute(select(turns).where(turns.c.id == turn_id, turns.c.session_id.in_(mine))).first()
        return _turn(row) if row else None

    def turns_newest_first(
        self, session_id: int, *, before_id: int | None = None, batch: int = 64
    ) -> Iterator[Turn]:
        """The session's turns from newest to oldest, read a batch at a time."""
        while True:
            older = "" if before_id is None else " AND id < :before"
            rows = [_raw_turn(row) for row in self._select(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = :session{older} ORDER BY id DESC LIMIT :batch",
                dict(session=session_id, before=before_id, batch=batch),
            )]
            yield from rows
            if len(rows) < batch:
                return
            before_id = rows[-1].id

    def turns_between(
        self, session_id: int, *, after_id: int | None, before_id: int | None, limit: int = 200
    ) -> list[Turn]:
        """Up to `limit` usable turns after `after_id` and before `before_id`, oldest first."""
        conditions = [f"session_id = :session AND status IN {USABLE_STATUSES!r}"]
        if after_id is not None:
            conditions.append("id > :after")
        if before_id is not None:
            conditions.append("id < :before")
        rows = self._select(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE {' AND '.join(conditions)} ORDER BY id LIMIT :limit",
            dict(session=session_id, after=after_id, before=before_id, limit=limit),
        )
        return [_raw_turn(row) for row in rows]

    def history(
        self, session_id: int, limit: int | None = None, *,
        since: datetime | None = None, until: datetime | None = None,
    ) -> list[Turn]:
        """The session's last `limit` turns (all when None) written at or
        after `since` and at or before `until`, oldest first."""
        conditions, params = ["session_id = :session"], dict(session=session_id)
        for name, operator, value in (("since", ">=", since), ("until", "<=", until)):
            if value is not None:
                conditions.append(f"created_at {operator} :{name}")
                params[name] = _naive_utc(value)
        sql = f"SELECT {_TURN_COLUMNS} FROM turns WHERE {' AND '.join(conditions)} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        rows = [_raw_turn(row) for row in self._select(sql, params)]
        rows.reverse()
        return rows

    def search_history(
        self, terms: Iterable[str], words: Iterable[str] = (), *, session_id: int | None = None,
        since: datetime | None = None, until: datetime | None = None, limit: int | None = None,
    ) -> list[tuple[str, Turn]]:
        """(session name, turn) for the last `limit` turns (all when None)
        holding every one of `terms` (analyzed as kvchat.textsearch does) and
        every one of `words` (lower-case; found in the text as written, for
        words the index leaves out), in one session or all of them, between
        `since` and `until`; oldest first."""
        terms, words = list(dict.fromkeys(terms)), list(dict.fromkeys(words))
        if not terms and not words:
            return []
        if self._postgres:
            return self._search_history_postgres(terms, words, session_id, since, until, limit)
        wanted = " AND ".join(quote(term) for term in terms)
        conditions, params = ["sessions.user_name = ?"], [self.user]
        if wanted:
            match = f"content : ({wanted})"
            if session_id is not None:  # the session is a term of its own (see migration 0002)
                match = f'session_id : "s{int(session_id)}" AND {match}'
            conditions.append("turns_fts MATCH ?")
            params.append(match)
            source = "turns_fts JOIN turns ON turns.id = turns_fts.rowid"
        else:
            source = "turns"
            if session_id is not None:
                conditions.append("turns.session_id = ?")
                params.append(session_id)
        for word in words:
            if word.isascii():
                # instr first: SQLite's own, and it passes over most turns
                # (its lower() knows ASCII letters only).
                conditions.append("instr(lower(turns.content), ?) > 0")
                params.append(word)
            conditions.append("kvchat_holds_word(turns.content, ?)")
            params.append(word)
        for operator, value in ((">=", since), ("<=", until)):
            if value is not None:
                conditions.append(f"turns.created_at {operator} ?")
                params.append(_naive_utc(value).strftime(_STORED_TIME))
        sql = (
            f"SELECT {_TURN_COLUMNS}, sessions.name FROM {source} "
            "JOIN sessions ON sessions.id = turns.session_id "
            f"WHERE {' AND '.join(conditions)} ORDER BY turns.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._raw() as db:
            found = [(row[-1], _raw_turn(row)) for row in db.execute(sql, params)]
        found.reverse()
        return found

    def _search_history_postgres(self, terms, words, session_id, since, until, limit):
        conditions, params = ["sessions.user_name = :user"], dict(user=self.user)
        source = "turns"
        if terms:
            source = "turns_search JOIN turns ON turns.id = turns_search.turn_id"
            conditions.append("turns_search.terms @@ CAST(:query AS tsquery)")
            params["query"] = postgres_search.all_of(terms)
        if session_id is not None:
            conditions.append("turns.session_id = :session")
            params["session"] = session_id
        checked_here = []  # words whose ends PostgreSQL may not tell: held as words, checked below
        for n, word in enumerate(words):
            pattern = postgres_word_pattern(word)
            if pattern is not None:
                conditions.append(f"strpos(lower(turns.content), :word{n}) > 0 AND turns.content ~* :pattern{n}")
                params.update({f"word{n}": word, f"pattern{n}": pattern})
            else:
                # lower() and \m know only ASCII letters in a C-locale database.
                conditions.append(f"(strpos(turns.content, :word{n}) > 0 OR strpos(turns.content, :upper{n}) > 0)")
                params.update({f"word{n}": word, f"upper{n}": word.upper()})
                checked_here.append(word)
        for name, operator, value in (("since", ">=", since), ("until", "<=", until)):
            if value is not None:
                conditions.append(f"turns.created_at {operator} :{name}")
                params[name] = _naive_utc(value)
        sql = (
            f"SELECT {_TURN_COLUMNS}, sessions.name FROM {source} "
            "JOIN sessions ON sessions.id = turns.session_id "
            f"WHERE {' AND '.join(conditions)} ORDER BY turns.id DESC"
        )
        if limit is not None and not checked_here:
            sql += " LIMIT :limit"
            params["limit"] = limit
        found = [(row[-1], _raw_turn(row)) for row in self._select(sql, params)]
        if checked_here:
            found = [(name, turn) for name, turn in found
                     if all(holds_word(turn.content, word) for word in checked_here)][:limit]
        found.reverse()
        return found

    def all_turns(self, session_id: int | None = None) -> Iterator[tuple[str, Turn]]:
        """(session name, turn) for every turn, in order, streamed for export."""
        from sqlalchemy import select

        from .schema import sessions, turns

        query = select(sessions.c.name.label("session_name"), turns).join(
            sessions, sessions.c.id == turns.c.session_id
        ).where(self._own(sessions))
        if session_id is not None:
            query = query.where(turns.c.session_id == session_id)
        query = query.order_by(turns.c.session_id, turns.c.id)
        with self._read() as db:
            for row in db.execution_options(yield_per=1000).execute(query):
                yield row.session_name, _turn(row)

    def neighbours(self, turn: Turn) -> list[Turn]:
        """The turn just before and just after `turn` in its session."""
        sql = (
            f"SELECT * FROM (SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = :session AND id < :id "
            "ORDER BY id DESC LIMIT 1) AS before "
            f"UNION ALL SELECT * FROM (SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = :session AND id > :id "
            "ORDER BY id LIMIT 1) AS after"
        )
        return [_raw_turn(row) for row in self._select(sql, dict(session=turn.session_id, id=turn.id))]

    def turns_in_periods(
        self, session_id: int, periods: list[tuple[datetime, datetime]], *, before_id: int | None, limit: int
    ) -> list[Turn]:
        """The session's newest usable turns (up to `limit`) older than
        `before_id` made in any of the [start, end) `periods`, newest first."""
        if not periods:
            return []
        params = dict(session=session_id, before=before_id if before_id is not None else 2**62,
                      user=self.user, limit=limit)
        within = []
        for n, (start, end) in enumerate(periods):
            within.append(f"(created_at >= :start{n} AND created_at < :end{n})")
            params[f"start{n}"], params[f"end{n}"] = _naive_utc(start), _naive_utc(end)
        sql = (
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = :session AND id < :before "
            f"AND status IN {USABLE_STATUSES!r} AND ({' OR '.join(within)}) "
            "AND EXISTS (SELECT 1 FROM sessions WHERE sessions.id = turns.session_id AND user_name = :user) "
            "ORDER BY id DESC LIMIT :limit"
        )
        return [_raw_turn(row) for row in self._select(sql, params)]

    def search_turns(
        self, session_id: int, query: MatchQuery, *, before_id: int | None, limit: int
    ) -> list[Hit]:
        """Turns of a session older than `before_id` that match, best first."""
        if self._postgres:
            return [Hit(_raw_turn(row), row[-1]) for row in self._select(f"""
                SELECT {_TURN_COLUMNS}, ts_rank(turns_search.terms, query) AS score
                FROM turns_search JOIN turns ON turns.id = turns_search.turn_id,
                     CAST(:query AS tsquery) AS query
                WHERE turns_search.session_id = :session AND turns_search.terms @@ query
                  AND turns.id < :before AND turns.status IN {USABLE_STATUSES!r}
                  AND EXISTS (SELECT 1 FROM sessions WHERE sessions.id = turns.session_id AND user_name = :user)
                ORDER BY score DESC, turns.id DESC
                LIMIT :limit
                """, dict(
                    query=postgres_search.any_of(query.terms), session=session_id,
                    before=before_id if before_id is not None else 2**62, user=self.user, limit=limit,
                ))]
        sql = f"""
            SELECT {_TURN_COLUMNS}, -bm25(turns_fts, 0.0, 1.0) AS score
            FROM turns_fts JOIN turns ON turns.id = turns_fts.rowid
            WHERE turns_fts MATCH ? AND turns.session_id = ?
              AND turns.id < ? AND turns.status IN {USABLE_STATUSES!r}
              AND EXISTS (SELECT 1 FROM sessions WHERE sessions.id = turns.session_id AND user_name = ?)
            ORDER BY score DESC, turns.id DESC
            LIMIT ?
            """
        params = (
            # The session is a term of its own in the index (see migration 0002).
            f'session_id : "s{int(session_id)}" AND content : ({query.expression})',
            session_id,
            before_id if before_id is not None else 2**62,
            self.user,
            limit,
        )
        with self._raw() as db:
            return [Hit(_raw_turn(row), row[-1]) for row in db.execute(sql, params)]

    # -- facts ------------------------------------------------------------

    def facts(self) -> list[Fact]:
        rows = self._select(f"SELECT {_FACT_COLUMNS} FROM facts WHERE user_name = :user ORDER BY key", dict(user=self.user))
        return [_raw_fact(row) for row in rows]

    def fact(self, key: str) -> Fact | None:
        # Raw SQL, as facts(): `kvchat facts get` need not load SQLAlchemy's statements.
        rows = self._select(f"SELECT {_FACT_COLUMNS} FROM facts WHERE user_name = :user AND key = :key",
                            dict(user=self.user, key=key))
        return _raw_fact(rows[0]) if rows else None

    def set_fact(
        self,
        key: str,
        value: str,
        *,
        source: str,
        turn_id: int | None = None,
        ref: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """Store `value` under `key`: 'created', 'updated' or 'unchanged'."""
        key = check_name("a fact key", key)
        check_value(value)
        with self._write_sql() as sql:
            return self._set_fact(sql, key, value, source, turn_id, ref, at)

    def _set_fact(self, sql: _Writer, key, value, source, turn_id, ref, at) -> str:
        fields = dict(user=self.user, key=key, value=value, turn_id=turn_id, source=source, ref=ref,
                      stamp=_naive_utc(at or now()))
        row = sql("SELECT id, value FROM facts WHERE user_name = :user AND key = :key", fields).fetchone()
        if row is not None and row[1] == value:
            return "unchanged"
        if row is None:
            fact_id = sql(
                "INSERT INTO facts (user_name, key, value, turn_id, source, ref, created_at, updated_at) "
                "VALUES (:user, :key, :value, :turn_id, :source, :ref, :stamp, :stamp) RETURNING id",
                fields,
            ).fetchone()[0]
        else:
            fact_id = row[0]
            sql(
                "UPDATE facts SET value = :value, turn_id = :turn_id, source = :source, updated_at = :stamp, "
                "ref = coalesce(:ref, ref) WHERE id = :id",
                dict(fields, id=fact_id),
            )
        if self._postgres:
            postgres_search.index_facts(sql.connection, [(fact_id, self.user, key, value)])
        self._note_fact_history(sql, dict(fields, action="set"))
        return "created" if row is None else "updated"

    def _note_fact_history(self, sql: _Writer, fields: dict) -> None:
        sql(
            "INSERT INTO fact_history (user_name, key, value, action, turn_id, source, created_at) "
            "VALUES (:user, :key, :value, :action, :turn_id, :source, :stamp)",
            fields,
        )

    def forget_fact(self, key: str, *, source: str, turn_id: int | None = None) -> bool:
        """Remove the fact (keeping its history); False when there was none."""
        with self._write_sql() as sql:
            return self._forget_fact(sql, key, source, turn_id)

    def _forget_fact(self, sql: _Writer, key, source, turn_id) -> bool:
        fields = dict(user=self.user, key=key, value=None, action="forget", turn_id=turn_id, source=source,
                      stamp=_naive_utc(now()))
        removed = sql("DELETE FROM facts WHERE user_name = :user AND key = :key", fields).rowcount
        if removed:
            self._note_fact_history(sql, fields)
        return bool(removed)

    def apply_facts(
        self,
        changes: Iterable[tuple[str, str | None]],
        *,
        source: str,
        turn_id: int | None = None,
    ) -> dict[str, str]:
        """Set (value) or forget (None) several keys at once: key -> what happened."""
        outcome: dict[str, str] = {}
        with self._write_sql() as sql:
            for key, value in changes:
                key = check_name("a fact key", key)
                if value is None:
                    if self._forget_fact(sql, key, source, turn_id):
                        outcome[key] = "forgotten"
                elif value.strip():
                    outcome[key] = self._set_fact(sql, key, value, source, turn_id, None, None)
        return outcome

    def import_facts(self, items: Iterable[tuple]) -> FactsImported:
        """Load (key, value, ref, set_at[, created_at]) items in one
        transaction: set_at is when the value was set (now when None),
        created_at when the key first was (set_at when not given).

        Keys new to the store are written in bulk (an import is mostly those);
        a key already stored, or repeated in the items, goes through the same
        path as `set_fact`, history and all. An item dated before the value
        it would replace was set, or before its key was last forgotten, is
        passed over: re-importing an old backup does not undo what was
        learned, or forgotten, since.
        """
        from sqlalchemy import func, select

        from .schema import fact_history, facts

        checked = [
            (check_name("a fact key", key), check_value(value), ref, at, first[0] if first else at)
            for key, value, ref, at, *first in items
        ]
        stamp = now()
        with self._write() as db:
            keys = list({key for key, *_ in checked})
            set_at: dict[str, datetime] = {}  # when each stored key got its value
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                set_at.update((row.key, _utc(row.updated_at)) for row in db.execute(
                    select(facts.c.key, facts.c.updated_at).where(self._own(facts), facts.c.key.in_(chunk))
                ))
            # A key forgotten since a backup was made must not come back from it either.
            gone = [key for key in keys if key not in set_at]
            forgotten_at: dict[str, datetime] = {}
            for start in range(0, len(gone), 500):
                forgotten_at.update((row.key, _utc(row.at)) for row in db.execute(
                    select(fact_history.c.key, func.max(fact_history.c.created_at).label("at"))
                    .where(self._own(fact_history), fact_history.c.action == "forget",
                           fact_history.c.key.in_(gone[start : start + 500]))
                    .group_by(fact_history.c.key)
                ))
            fresh, later, older = [], [], 0
            for item in checked:
                key, at = item[0], item[3]
                since = set_at.get(key) or forgotten_at.get(key)
                # Strictly older: the same export imported again is "unchanged".
                if since is not None and at is not None and at < since:
                    older += 1
                    continue
                (later if key in set_at else fresh).append(item)
                set_at[key] = at or stamp
            if fresh:
                rows = [
                    dict(user_name=self.user, key=key, value=value, turn_id=None, source="import", ref=ref,
                         created_at=_naive_utc(first or at or stamp), updated_at=_naive_utc(at or stamp))
                    for key, value, ref, at, first in fresh
                ]
                if self._postgres:
                    ids = db.execute(
                        facts.insert().returning(facts.c.id, sort_by_parameter_order=True), rows
                    ).scalars().all()
                    postgres_search.index_facts(
                        db, [(id, self.user, row["key"], row["value"]) for id, row in zip(ids, rows)]
                    )
                else:
                    db.execute(facts.insert(), rows)
                db.execute(
                    fact_history.insert(),
                    [dict(user_name=self.user, key=row["key"], value=row["value"], action="set", turn_id=None, source="import",
                          created_at=row["updated_at"]) for row in rows],
                )
            changed = len(fresh)
            sql = _Writer(db, sqlite=not self._postgres)
            for key, value, ref, at, _ in later:
                changed += self._set_fact(sql, key, value, "import", None, ref, at) != "unchanged"
        with ctrl_c_ends_only_this():
            self.recount_common_terms("facts", added=len(fresh))
        return FactsImported(changed=changed, older=older)

    def fact_history(self, key: str) -> list[FactVersion]:
        from sqlalchemy import select

        from .schema import fact_history

        with self._read() as db:
            rows = db.execute(
                select(fact_history).where(self._own(fact_history), fact_history.c.key == key)
                .order_by(fact_history.c.id)
            )
            return [
                FactVersion(
                    key=row.key, value=row.value, action=row.action, source=row.source,
                    created_at=_utc(row.created_at), turn_id=row.turn_id,
                )
                for row in rows
            ]

    def term_stats(self, kind: str, terms: tuple[str, ...]) -> TermStats:
        """How many facts (kind "facts") or turns ("turns") there are, how many
        hold each term, and their average length, for bm25's weights.

        The totals are read once per Store: in one process they drift only by
        what that process writes, which moves a ranking not at all in practice.
        The counts of each term are kept while the index stays the same (see
        `_frequencies`): only the terms not asked for since are looked up.
        """
        if kind not in ("facts", "turns"):
            raise ValueError(kind)
        if kind not in self._totals:
            if kind == "facts":
                # The average length of the newest facts: averaging all of
                # them reads every value (32 ms at 100,000 facts, against 1).
                sql = (
                    "SELECT (SELECT count(*) FROM facts), coalesce((SELECT avg(length(key) + length(value)) "
                    f"FROM (SELECT key, value FROM facts ORDER BY id DESC LIMIT {self.AVERAGE_OF_FACTS}) AS newest), 0)"
                )
            else:
                sql = (
                    "SELECT coalesce(sum(turn_count), 0), "
                    "coalesce(sum(token_count) * 1.0 / nullif(sum(turn_count), 0), 0) FROM sessions"
                )
            (row,) = self._select(sql, {})
            self._totals[kind] = (int(row[0]), float(row[1]))
        count, average = self._totals[kind]
        found: dict[str, int] = {}
        if terms and self._postgres:
            found = self._term_counts_postgres(kind, terms, count)
        elif terms:
            with self._raw() as db:
                known = self._frequencies(db, kind)
                missing = [term for term in dict.fromkeys(terms) if term not in known]
                if missing:
                    deletions, kept = self._kept_term_counts(db, kind, missing, count)
                    known.update(kept)
                    missing = [term for term in missing if term not in known]
                if missing:
                    # fts5vocab answers `term = ?` from the index but scans the
                    # whole vocabulary for `term IN (...)`. Joining the terms as a
                    # list of values makes one statement of equality look-ups: for
                    # 48 terms, 0.26 ms on a 500-term vocabulary and 1.6 ms on
                    # 350,000 terms, against 0.4 and 4.2 ms for IN, and 0.9 and
                    # 2.1 ms for 48 separate statements.
                    values = ", ".join("(?)" for _ in missing)
                    sql = (
                        f"WITH asked(term) AS (VALUES {values}) "
                        f"SELECT v.term, v.doc FROM asked JOIN {kind}_terms AS v ON v.term = asked.term"
                    )
                    looked_up = dict(db.execute(sql, missing).fetchall())
                    counted = {term: looked_up.get(term, 0) for term in missing}
                    known.update(counted)
                    self._made_term_counts(kind, deletions, counted, count)
            found = {term: known[term] for term in terms if known.get(term)}
        return TermStats(documents=max(count, 1), average_length=average or 1.0, containing=found)

    def _term_counts_postgres(self, kind: str, terms: tuple[str, ...], documents: int) -> dict[str, int]:
        """How many facts or turns hold each term (of every user, as the
        totals and SQLite's vocabulary count them), counted from the GIN
        index. Counting a common term visits every row that holds it (0.3 s
        for one term at 1,000,000 turns), so the counts are kept, as on
        SQLite (see _frequencies), while the search generation stays the
        same: every committed write moves it on (see _write). Between
        processes the common ones are kept in search_term_counts, as on
        SQLite (migration 0010)."""
        generation = tuple(self._select(f"SELECT last_value, is_called FROM {postgres_search.GENERATION}", {})[0])
        memos = self.__dict__.setdefault("_known_terms", {})
        memo = memos.get(kind)
        if memo is None or memo[0] != generation or len(memo[1]) > self.MAX_KNOWN_TERMS:
            memo = memos[kind] = (generation, {})
        known = memo[1]
        missing = [term for term in dict.fromkeys(terms) if term not in known]
        if missing:
            rows = self._select(
                "SELECT term, documents, counted_among FROM search_term_counts "
                "WHERE kind = :kind AND term = ANY(:terms)", dict(kind=kind, terms=["", *missing]),
            )
            deletions, kept = self._still_close(rows, documents)
            known.update(kept)
            sought = {term: query for term in missing
                      if term not in known and (query := postgres_search.any_of([term]))}
            if sought:
                params = {f"t{n}": query for n, query in enumerate(sought.values())}
                counts = [f"(SELECT count(*) FROM {kind}_search WHERE terms @@ CAST(:{name} AS tsquery))" for name in params]
                (row,) = self._select(f"SELECT {', '.join(counts)}", params)
                counted = dict(zip(sought, row))
                known.update(counted)
                self._made_term_counts(kind, deletions, counted, documents)
            known.update((term, 0) for term in missing if term not in known)
        return {term: known[term] for term in terms if known.get(term)}

    # How many of the newest facts bm25's average fact length is taken from.
    AVERAGE_OF_FACTS = 2000
    # Terms whose counts are kept, per index, before the memo starts afresh.
    MAX_KNOWN_TERMS = 200_000
    # How far the number of turns or facts may move, as a share, before a
    # term's kept count is made again: a term's weight (bm25's idf) then
    # moves by less than log(1.05) = 0.05.
    TERM_COUNT_DRIFT = 0.05
    # Only the counts of terms held by at least this many rows are kept: a
    # rarer term is counted quickly, and exactly, every time, so a word new
    # to the store, or a few times more frequent than it was, is seen at once.
    KEPT_TERM_MIN_ROWS = 1000

    def _kept_term_counts(self, db, kind: str, terms: list[str], documents: int) -> tuple[int, dict[str, int]]:
        """How many deletions of `kind` there have been, and the counts of
        `terms` kept by earlier processes (migration 0008) that are still
        close enough. Counting a common term from the index walks its whole
        list of rows, which in a fresh process was most of a prompt (110 ms
        at 1,000,000 turns)."""
        values = ", ".join("(?)" for _ in terms)
        rows = db.execute(
            f"WITH asked(term) AS (VALUES (''), {values}) SELECT c.term, c.documents, c.counted_among "
            "FROM asked JOIN search_term_counts AS c ON c.kind = ? AND c.term = asked.term",
            [*terms, kind],
        ).fetchall()
        return self._still_close(rows, documents)

    def _still_close(self, rows, documents: int) -> tuple[int, dict[str, int]]:
        """The deletion count (the row whose term is '') and the kept counts
        made among a number of rows within TERM_COUNT_DRIFT of `documents`,
        from (term, documents, counted_among) rows of search_term_counts."""
        deletions = next((among for term, _, among in rows if term == ""), 0)
        return deletions, {
            term: held for term, held, among in rows
            if term and abs(documents - among) <= self.TERM_COUNT_DRIFT * among
        }

    def _made_term_counts(self, kind: str, deletions: int, counted: dict[str, int], documents: int) -> None:
        """Note the common ones of `counted` (made among `documents` rows,
        after `deletions` deletions) to be kept with the next write."""
        made = self._new_term_counts.get(kind)
        if made is None or made[0] != deletions:
            made = self._new_term_counts[kind] = (deletions, {})
        made[1].update((term, (held, documents)) for term, held in counted.items() if held >= self.KEPT_TERM_MIN_ROWS)

    def recount_common_terms(self, kind: str, *, added: int, starting: Callable[[], None] | None = None) -> bool:
        """After an import of `added` facts or turns (`kind`): when it grew
        the store by more than TERM_COUNT_DRIFT, count every common term of
        that kind in one pass over the index and keep the counts for later
        processes. `starting` hears when the pass begins; returns whether it
        counted.

        Such an import leaves every kept count too old to use, and the
        questions after it would count their common terms one at a time, each
        walking the term's whole list of rows: after a million turns were
        imported, the first questions took 0.1 to 0.6 s more to build their
        prompt on SQLite, and up to 7 s on PostgreSQL. The pass counts them
        all at once: at a million turns 2.5 s on SQLite (fts5vocab), about 1%
        of that import, and 17 s on PostgreSQL (ts_stat reads every row)."""
        if kind not in ("facts", "turns"):
            raise ValueError(kind)
        if added <= 0:
            return False
        try:
            return self._recount_common_terms(kind, added, starting)
        except database.DatabaseError:
            # The import or copy has committed; the counts are only a cache,
            # and its first questions count what they need, as before.
            return False

    # How many rows of each kind the store holds (of every user, as the index counts them).
    ROWS_SQL = {"facts": "SELECT count(*) FROM facts", "turns": "SELECT coalesce(sum(turn_count), 0) FROM sessions"}
    # How many deletions of a kind emptied its kept counts so far (the row whose term is '').
    _DELETIONS_SQL = "SELECT counted_among FROM search_term_counts WHERE kind = :kind AND term = ''"

    def _recount_common_terms(self, kind: str, added: int, starting: Callable[[], None] | None) -> bool:
        (total,) = self._select(self.ROWS_SQL[kind], {})[0]
        if added <= self.TERM_COUNT_DRIFT * (total - added):
            return False
        marker = self._select(self._DELETIONS_SQL, dict(kind=kind))
        deletions = marker[0][0] if marker else 0
        if starting is not None:
            starting()
        if self._postgres:
            sql = f"SELECT word, ndoc FROM ts_stat('SELECT terms FROM {kind}_search') WHERE ndoc >= :least"
        else:
            sql = f"SELECT term, doc FROM {kind}_terms WHERE doc >= :least"
        self._made_term_counts(kind, deletions, dict(self._select(sql, dict(least=self.KEPT_TERM_MIN_ROWS))), total)
        if self._postgres:
            self._keep_term_counts_apart()
        else:
            with self._write_sql():
                pass  # the counts are written with a write (_keep_term_counts)
        return True

    def _keep_term_counts(self, sql: _Writer) -> None:
        """Write the term counts made since the last write, for later
        processes, in the transaction of this one (a command that only reads
        never writes), unless turns or facts of their kind were deleted since
        they were made: the terms of deleted text are not kept."""
        made, self._new_term_counts = self._new_term_counts, {}
        for kind, (deletions, counts) in made.items():
            row = sql(self._DELETIONS_SQL, dict(kind=kind)).fetchone()
            if (row[0] if row else 0) != deletions:
                continue
            sql.many(
                "INSERT INTO search_term_counts (kind, term, documents, counted_among) "
                "VALUES (:kind, :term, :documents, :among) "
                "ON CONFLICT (kind, term) DO UPDATE SET documents = excluded.documents, "
                "counted_among = excluded.counted_among",
                [dict(kind=kind, term=term, documents=held, among=among) for term, (held, among) in counts.items()],
            )

    # The lock that orders writing the kept counts on PostgreSQL against
    # emptying them (migration 0010): "kvcnt" in ASCII.
    TERM_COUNTS_LOCK = 0x6B76636E74

    def _keep_term_counts_apart(self) -> None:
        """PostgreSQL: write the term counts made since the last write in a
        short transaction of their own, after that write has committed.

        There several users write at once and share the counts. Written
        inside a user's write, they would hold the counts' rows to its end,
        where another user's delete could wait on them past the lock timeout
        and fail that write; and they could be kept beside a deletion that
        committed in between. This transaction takes TERM_COUNTS_LOCK, which
        the deletion triggers take too, or writes nothing: the counts are
        only a cache, counted again by a later question, and so is a
        failure to write them."""
        from sqlalchemy import text
        from sqlalchemy.exc import DatabaseError as SQLError

        try:
            with self.engine.begin() as db:
                locked = db.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), dict(key=self.TERM_COUNTS_LOCK))
                if locked.scalar():
                    self._keep_term_counts(_Writer(db, sqlite=False))
        except SQLError:
            pass
        finally:
            self._new_term_counts = {}

    def _frequencies(self, db, kind: str) -> dict[str, int]:
        """The memo of how many rows of `kind` hold each term, valid for the
        index as it is now.

        Counting the rows that hold a term walks the term's whole list of rows
        (1-2 ms a question at 100,000 facts), while a question's words recur
        from one question to the next. The memo lasts while FTS5's own
        structure and totals records (rows 10 and 1 of the index's data table)
        stay as they are: every write to the index, by this process or
        another, changes the structure record, since it lists the segments
        that hold the index and every committed write adds one.
        """
        stamp = tuple(db.execute(f"SELECT block FROM {kind}_fts_data WHERE id IN (1, 10) ORDER BY id").fetchall())
        memos = self.__dict__.setdefault("_known_terms", {})
        memo = memos.get(kind)
        if memo is None or memo[0] != stamp or len(memo[1]) > self.MAX_KNOWN_TERMS:
            memo = memos[kind] = (stamp, {})
        return memo[1]

    def search_facts(self, query: MatchQuery, *, limit: int) -> list[Hit]:
        """Facts whose key or value match, best first; a key match weighs double."""
        if self._postgres:
            return [Hit(_raw_fact(row), row[-1]) for row in self._select(f"""
                SELECT {_FACT_COLUMNS}, hit.score
                FROM (SELECT fact_id, ts_rank(CAST(:weights AS real[]), terms, query) AS score
                      FROM facts_search, CAST(:query AS tsquery) AS query
                      WHERE user_name = :user AND terms @@ query ORDER BY score DESC LIMIT :limit) AS hit
                JOIN facts ON facts.id = hit.fact_id AND facts.user_name = :user
                ORDER BY hit.score DESC, facts.updated_at DESC
                """, dict(
                    weights=postgres_search.FACT_WEIGHTS, query=postgres_search.any_of(query.terms),
                    user=self.user, limit=limit,
                ))]
        # Ranked inside the index first: joining every match to its fact
        # before the LIMIT reads a row of facts per match.
        sql = f"""
            SELECT {_FACT_COLUMNS}, hit.score
            FROM (SELECT rowid AS id, -bm25(facts_fts, 0.0, 2.0, 1.0) AS score FROM facts_fts
                  WHERE facts_fts MATCH ? ORDER BY score DESC LIMIT ?) AS hit
            JOIN facts ON facts.id = hit.id AND facts.user_name = ?
            ORDER BY hit.score DESC, facts.updated_at DESC
            """
        match = f"{{key value}} : ({query.expression})"
        with self._raw() as db:
            # When others have facts too, only this user's are ranked: the
            # user is a term of its own in the index (see migration 0006).
            # Alone, the user's term would hold every fact, and ANDing it in
            # costs 2.2 ms at 100,000 facts (2.7 against 0.5 ms): it is left
            # out. The join checks the user either way, so a fact another
            # user writes in between is never returned.
            others = db.execute(
                "SELECT EXISTS (SELECT 1 FROM facts WHERE user_name < ?1) "
                "OR EXISTS (SELECT 1 FROM facts WHERE user_name > ?1)", (self.user,)
            ).fetchone()[0]
            if others:
                match = f"user_name : {quote(users.index_user(self.user))} AND {match}"
            return [Hit(_raw_fact(row), row[-1]) for row in db.execute(sql, (match, limit, self.user))]

    @contextmanager
    def _raw(self) -> Iterator:
        """The DBAPI connection itself, for the statements recall runs on every
        prompt: SQLAlchemy's statement handling (about 0.5 ms a statement)
        costs more than SQLite's own work on them. Each statement is its own
        read transaction (pysqlite is in autocommit mode, see database.py).
        Without an engine yet, it is the store's own connection (see __init__)."""
        import sqlite3

        pooled = None
        if self._connection is not None:
            connection = self._connection
            self._connection_lock.acquire()
        else:
            from sqlalchemy.exc import DatabaseError as SQLError

            try:
                pooled = self.engine.raw_connection()
            except SQLError as exc:
                raise database.DatabaseError(database.describe_error(exc, self.engine.url)) from None
            connection = pooled.driver_connection
        try:
            yield connection
        except sqlite3.DatabaseError as exc:
            raise database.DatabaseError(database.describe_error(exc, self.url)) from None
        except UnicodeEncodeError:
            raise StoreError(_NOT_UNICODE) from None
        finally:
            if pooled is not None:
                pooled.close()
            else:
                self._connection_lock.release()

    def _select(self, sql: str, params: dict) -> list:
        """The rows of one SELECT written with :name parameters (times as
        naive UTC): on SQLite from the DBAPI connection (see _raw), with the
        times written as the SQLite dialect stores them; on other engines
        through SQLAlchemy."""
        if self._postgres:
            from sqlalchemy import text
            from sqlalchemy.exc import DatabaseError as SQLError

            if any(isinstance(value, str) and "\x00" in value for value in params.values()):
                return []  # PostgreSQL's text holds no NUL, so nothing stored can match
            for attempt in (1, 2):
                try:
                    return self._postgres_reader().execute(text(sql), params).all()
                except SQLError as exc:
                    self._close_postgres_reader()
                    # A connection the server dropped (a restart, an idle
                    # timeout) is opened again, once: a read can be repeated.
                    if attempt == 2 or not exc.connection_invalidated:
                        raise database.DatabaseError(database.describe_error(exc, self.engine.url)) from None
        with self._raw() as db:
            return db.execute(sql, _as_stored(params)).fetchall()


def _questions_among(db: Connection, session_ids: list[int], asked: Collection[str]) -> Iterator[str]:
    """The user turns of these sessions whose text is one of `asked`."""
    if not asked:  # nothing to look for: the questions of a large store would not fit in memory
        return
    from sqlalchemy import select

    from .schema import turns

    for question in db.execute(
        select(turns.c.content).where(turns.c.session_id.in_(session_ids), turns.c.role == "user")
    ).scalars():
        if question.strip() in asked:
            yield question


# The turn columns a turn is written with (see _insert_turns) and may change (update_turn).
_NEW_TURN_FIELDS = (
    "session_id", "role", "name", "content", "tokens", "token_encoding", "model", "status", "error",
    "prompt_tokens", "completion_tokens", "ref", "created_at",
)
_INSERT_TURN = (
    f"INSERT INTO turns ({', '.join(_NEW_TURN_FIELDS)}) VALUES ({', '.join(':' + name for name in _NEW_TURN_FIELDS)})"
)
_UPDATABLE_TURN_FIELDS = frozenset(_NEW_TURN_FIELDS) - {"session_id", "created_at"}

# Explicit columns (not *) for the statements on the raw connection, which
# turn rows into records by position.
_TURN_COLUMNS = ", ".join(
    f"turns.{name}" for name in (
        "id", "session_id", "role", "content", "tokens", "status", "created_at", "name",
        "model", "error", "prompt_tokens", "completion_tokens", "ref", "token_encoding",
    )
)
_FACT_COLUMNS = ", ".join(
    f"facts.{name}" for name in ("id", "key", "value", "source", "created_at", "updated_at", "turn_id", "ref")
)
_ROLE_COLUMNS = "roles.name, roles.content, roles.created_at, roles.updated_at"
_SESSION_COLUMNS = ", ".join(
    f"sessions.{name}" for name in (
        "id", "name", "created_at", "last_active_at", "turn_count", "token_count", "settings", "title",
    )
)
_SESSION_BY_NAME = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_name = :user AND name = :name"


# How SQLAlchemy's SQLite dialect writes a time, for comparing with stored ones.
_STORED_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _as_stored(params: dict) -> dict:
    """`params` with its times (naive UTC) written as SQLite holds them."""
    return {
        name: value.strftime(_STORED_TIME) if isinstance(value, datetime) else value
        for name, value in params.items()
    }


class _Writer:
    """The statements of one write transaction, written as SQL text with
    :name parameters (times as naive UTC datetimes), on either connection
    a Store has: the SQLite file's own DBAPI connection, or one of the
    engine's (PostgreSQL, or SQLite before the file was at this schema).
    Calling it runs one statement and returns its cursor (fetchone,
    fetchall and rowcount work on both)."""

    def __init__(self, connection, *, sqlite: bool):
        self.connection = connection  # the engine's, for code that builds SQLAlchemy statements
        self._sqlite = sqlite
        self._dbapi = not hasattr(connection, "exec_driver_sql")

    def __call__(self, sql: str, params: dict | None = None):
        params = _as_stored(params or {}) if self._sqlite else params or {}
        if self._dbapi:
            return self.connection.execute(sql, params)
        from sqlalchemy import text

        return self.connection.execute(text(sql), params)

    def many(self, sql: str, rows: list[dict]) -> None:
        if not rows:
            return  # SQLAlchemy would run the statement once, without parameters
        rows = [_as_stored(row) for row in rows] if self._sqlite else rows
        if self._dbapi:
            self.connection.executemany(sql, rows)
        else:
            from sqlalchemy import text

            self.connection.execute(text(sql), rows)


def _stored_time(value) -> datetime | None:
    """A time as SQLAlchemy's SQLite dialect stores it (ISO 8601 text, UTC)."""
    if value is None or isinstance(value, datetime):
        return _utc(value)
    try:
        # Parsed with its zone in one call: replace() afterwards was most of
        # turning 100,000 facts into records for `kvchat facts`.
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:  # a time stored with a zone of its own
        return _utc(datetime.fromisoformat(value))


def _raw_turn(row) -> Turn:
    return Turn(
        id=row[0], session_id=row[1], role=row[2], content=row[3], tokens=row[4], status=row[5],
        created_at=_stored_time(row[6]), name=row[7], model=row[8], error=row[9],
        prompt_tokens=row[10], completion_tokens=row[11], ref=row[12], token_encoding=row[13],
    )


def _raw_session(row) -> Session:
    return Session(
        id=row[0], name=row[1], created_at=_stored_time(row[2]), last_active_at=_stored_time(row[3]),
        turn_count=row[4], token_count=row[5], settings=_settings(row[1], row[6]), title=row[7],
    )


def _raw_fact(row) -> Fact:
    return Fact(
        id=row[0], key=row[1], value=row[2], source=row[3], created_at=_stored_time(row[4]),
        updated_at=_stored_time(row[5]), turn_id=row[6], ref=row[7],
    )

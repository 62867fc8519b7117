"""Turns and facts in and out as JSON lines (and turns as Markdown).

Turn lines: {"session", "role", "content", "created_at"?, "name"?, "ref"?}.
Fact lines: {"key", "value", "ref"?, "created_at"?}.
Imported turns are redacted like asked ones (see kvchat.redaction), and a
fact that looks like a secret fails the import.
A file is checked whole before anything is written, and then written in one
transaction per session, so a bad line never leaves half an import behind.
Long imports and exports say how far they have got through an optional
`progress(stage, done, total)` callback (see Progress).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import extraction, tokens
from .redaction import redact
from .schema import TURN_ROLES, TURN_STATUSES
from .store import (
    MAX_NAME_LENGTH, NewTurn, Store, StoreError, Turn, check_name, check_new_session_name, check_not_an_id,
    check_session_name, check_unicode, check_value, ctrl_c_ends_only_this,
)


Progress = Callable[[str, int, "int | None"], None]
"""progress(stage, done, total): `done` of `total` records (None: not known)
are through `stage`, one of "checking", "storing" and "exporting"; called
every PROGRESS_STEP records and at the end of each stage. An import that
grows the store by more than 5% ends with "counting terms" (0 of None)."""
PROGRESS_STEP = 500


class TransferError(Exception):
    """An import file line is not valid; the message says which line and why."""


def _parse_time(record: dict, field: str, where: str) -> datetime | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TransferError(f"{where}: {field} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TransferError(f"{where}: {field} {value!r} is not an ISO 8601 time") from None
    try:
        # A time without a zone is local, as --since and --until read theirs.
        parsed = parsed if parsed.tzinfo else parsed.astimezone()
        parsed.astimezone(timezone.utc)  # the store keeps UTC: year 1 at +14:00 has none
    except (OverflowError, ValueError):
        raise TransferError(f"{where}: {field} {value!r} is out of range") from None
    return parsed


def _valid_text(value: str, field: str, where: str) -> str:
    """`value`, unless the database could not hold it (NUL, a lone surrogate)."""
    if "\x00" in value:
        raise TransferError(f"{where}: {field} contains a NUL character")
    try:
        return check_unicode(field, value)
    except StoreError as exc:
        raise TransferError(f"{where}: {exc}") from None


def _optional_text(record: dict, field: str, where: str, *, limit: int | None = None) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TransferError(f"{where}: {field} must be a string")
    if limit is not None and len(value) > limit:
        raise TransferError(f"{where}: {field} is longer than {limit} characters")
    return _valid_text(value, field, where)


def json_lines(lines: Iterable[str], progress: Progress | None = None) -> Iterator[tuple[str, dict]]:
    """("line N", object) for each non-blank line, or TransferError naming the bad one;
    `progress` hears of the lines checked."""
    total = len(lines) if isinstance(lines, Sized) else None
    number = 0
    for number, line in enumerate(lines, 1):
        if progress is not None and number % PROGRESS_STEP == 0:
            progress("checking", number, total)
        where = f"line {number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TransferError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise TransferError(f"{where}: expected a JSON object")
        yield where, record
    if progress is not None:
        progress("checking", number, number)


def _label(record: dict, field: str, where: str) -> str | None:
    """A short optional label of a turn (speaker name, ref, model): None
    when missing or blank, and a line of error when it holds a control
    character, which would break the lines it is shown in."""
    value = _optional_text(record, field, where, limit=MAX_NAME_LENGTH)
    if value is None or not value.strip():
        return None
    try:
        return check_name(field, value)
    except StoreError as exc:
        raise TransferError(f"{where}: {exc}") from None


def _required_text(record: dict, field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise TransferError(f"{where}: {field} must be a non-empty string")
    return _valid_text(value, field, where)


def parse_turns(
    lines: Iterable[str], *, model: str, secrets: Iterable[str] = (), progress: Progress | None = None,
    stored: Callable[[str], bool] = lambda name: False,
) -> dict[str, list[NewTurn]]:
    """Every turn of a JSON-lines file, grouped by session, in file order,
    with secrets (and the configured `secrets`) blanked. A session that is
    not `stored` yet must have a name a new session may have."""
    secrets = list(secrets)
    encoding = tokens.encoding_name_for_model(model)
    by_session: dict[str, list[NewTurn]] = {}
    for where, record in json_lines(lines, progress):
        try:
            session = check_session_name(_required_text(record, "session", where))
            if session not in by_session:
                (check_not_an_id if stored(session) else check_new_session_name)(session)
        except StoreError as exc:
            raise TransferError(f"{where}: {exc}") from None
        role = record.get("role")
        if role not in TURN_ROLES:
            raise TransferError(f"{where}: role must be one of {', '.join(TURN_ROLES)}")
        if role == "assistant" and isinstance(record.get("content"), str):
            # As the store keeps an answer (Store._insert_turns); an export
            # of a store from before that holds the NUL as it came.
            record = {**record, "content": record["content"].replace("\x00", "\ufffd")}
        status = record.get("status", "complete")
        if status not in TURN_STATUSES or status == "pending":
            raise TransferError(f"{where}: status must be one of complete, unanswered, interrupted, length")
        # Secrets never land in the database, whichever way text comes in.
        content = redact(_required_text(record, "content", where), secrets)
        by_session.setdefault(session, []).append(
            NewTurn(
                role=role, content=content, tokens=tokens.count_tokens(content, model),
                token_encoding=encoding, status=status,
                name=_label(record, "name", where),
                ref=_label(record, "ref", where),
                model=_label(record, "model", where),
                error=redact(_optional_text(record, "error", where) or "", secrets) or None,
                created_at=_parse_time(record, "created_at", where),
            )
        )
    return by_session


@dataclass
class Imported:
    """What an import of turns did."""

    added: dict[str, int] = field(default_factory=dict)  # turns added, by session
    skipped: int = 0  # lines their session already held


def import_turns(
    store: Store, lines: Iterable[str], *, model: str, secrets: Iterable[str] = (),
    progress: Progress | None = None,
) -> Imported:
    """Load a turns file.

    A line its session already holds is skipped (Store.already_stored: the
    same `ref`, or without one the same time, role and text), so importing
    the same file, or an export, twice adds nothing twice. Each session is
    stored in one transaction; progress is reported as its turns are
    written.
    """
    parsed = parse_turns(lines, model=model, secrets=secrets, progress=progress,
                         stored=lambda name: store.session(name) is not None)
    total = sum(len(new) for new in parsed.values())
    imported, done = Imported(), 0
    added = imported.added
    if progress is not None:
        progress("storing", done, total)
    for name, new in parsed.items():
        fresh = [turn for turn, stored in zip(new, store.already_stored(name, new)) if not stored]
        imported.skipped += len(new) - len(fresh)
        before = done
        added[name] = store.add_turns(
            name, fresh, None if progress is None else lambda count: progress("storing", before + count, total)
        )
        done += len(new)
        if progress is not None and len(fresh) < len(new):
            progress("storing", done, total)  # lines already stored count as done
    with ctrl_c_ends_only_this():
        store.recount_common_terms(
            "turns", added=sum(added.values()),
            starting=None if progress is None else lambda: progress("counting terms", 0, None),
        )
    return imported


def parse_facts(lines: Iterable[str]) -> list[tuple[str, str, str | None, datetime | None, datetime | None]]:
    """(key, value, ref, when the value was set, when the key was first
    set) for Store.import_facts: a line's updated_at, or its created_at
    when it has none, says when its value was set."""
    items = []
    for where, record in json_lines(lines):
        raw_key = _required_text(record, "key", where)
        key = extraction.normalise_key(raw_key, cut=False)
        if key is None:
            raise TransferError(f"{where}: {raw_key!r} is not a usable fact key")
        if len(key) > extraction.MAX_KEY_LENGTH:
            raise TransferError(f"{where}: a fact key is at most {extraction.MAX_KEY_LENGTH} characters")
        value = _required_text(record, "value", where)
        try:
            check_value(value)
        except StoreError as exc:
            raise TransferError(f"{where}: {exc}") from None
        reason = extraction.skip_reason(key, value)
        if reason is not None:
            raise TransferError(f"{where}: looks like a secret ({reason}); kvchat does not store secrets")
        created = _parse_time(record, "created_at", where)
        updated = _parse_time(record, "updated_at", where)
        items.append((key, value, _optional_text(record, "ref", where, limit=MAX_NAME_LENGTH), updated or created,
                      created))
    return items


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def turn_record(session: str, turn) -> dict:
    record = {"session": session, "role": turn.role, "content": turn.content,
              "created_at": iso(turn.created_at)}
    if turn.name:
        record["name"] = turn.name
    if turn.ref:
        record["ref"] = turn.ref
    if turn.status != "complete":
        record["status"] = turn.status
    return record


def _all_turns(store: Store, session_id: int | None, progress: Progress | None) -> Iterator[tuple[str, Turn]]:
    """store.all_turns, telling `progress` how many have been read."""
    if progress is None:
        yield from store.all_turns(session_id)
        return
    total = sum(s.turn_count for s in store.sessions() if session_id is None or s.id == session_id)
    done = 0
    for done, item in enumerate(store.all_turns(session_id), 1):
        if done % PROGRESS_STEP == 0:
            progress("exporting", done, total)
        yield item
    progress("exporting", done, done)


def export_turns(store: Store, session_id: int | None = None, progress: Progress | None = None) -> Iterator[dict]:
    for session, turn in _all_turns(store, session_id, progress):
        yield turn_record(session, turn)


def export_markdown(store: Store, session_id: int | None = None, progress: Progress | None = None) -> Iterator[str]:
    current = None
    for session, turn in _all_turns(store, session_id, progress):
        if session != current:
            current = session
            yield f"# Session: {session}\n\n"
        speaker = turn.name or turn.role
        note = f" ({turn.status})" if turn.status != "complete" else ""
        stamp = turn.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        yield f"## {speaker}{note} · {stamp}\n\n{turn.content}\n\n"


def fact_record(fact) -> dict:
    record = {"key": fact.key, "value": fact.value, "created_at": iso(fact.created_at),
              "updated_at": iso(fact.updated_at), "source": fact.source}
    if fact.ref:
        record["ref"] = fact.ref
    return record

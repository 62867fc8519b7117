"""Turns and facts in and out as JSON lines (and turns as Markdown).

Turn lines: {"session", "role", "content", "created_at"?, "name"?, "ref"?}.
Fact lines: {"key", "value", "ref"?, "created_at"?}.
Imported turns are redacted like asked ones (see kvchat.redaction), and a
fact that looks like a secret fails the import.
A file is checked whole before anything is written, and then written in one
transaction per session, so a bad line never leaves half an import behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

from . import extraction, tokens
from .redaction import redact
from .schema import TURN_ROLES, TURN_STATUSES
from .store import MAX_NAME_LENGTH, NewTurn, Store, StoreError, check_name, check_unicode, check_value


class TransferError(Exception):
    """An import file line is not valid; the message says which line and why."""


def _parse_time(value, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TransferError(f"{where}: created_at must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TransferError(f"{where}: created_at {value!r} is not an ISO 8601 time") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    try:
        parsed.astimezone(timezone.utc)  # the store keeps UTC: year 1 at +14:00 has none
    except OverflowError:
        raise TransferError(f"{where}: created_at {value!r} is out of range") from None
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


def json_lines(lines: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """("line N", object) for each non-blank line, or TransferError naming the bad one."""
    for number, line in enumerate(lines, 1):
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


def _required_text(record: dict, field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise TransferError(f"{where}: {field} must be a non-empty string")
    return _valid_text(value, field, where)


def parse_turns(
    lines: Iterable[str], *, model: str, secrets: Iterable[str] = ()
) -> dict[str, list[NewTurn]]:
    """Every turn of a JSON-lines file, grouped by session, in file order,
    with secrets (and the configured `secrets`) blanked."""
    secrets = list(secrets)
    by_session: dict[str, list[NewTurn]] = {}
    for where, record in json_lines(lines):
        try:
            session = check_name("session", _required_text(record, "session", where))
        except StoreError as exc:
            raise TransferError(f"{where}: {exc}") from None
        role = record.get("role")
        if role not in TURN_ROLES:
            raise TransferError(f"{where}: role must be one of {', '.join(TURN_ROLES)}")
        status = record.get("status", "complete")
        if status not in TURN_STATUSES or status == "pending":
            raise TransferError(f"{where}: status must be one of complete, unanswered, interrupted, length")
        # Secrets never land in the database, whichever way text comes in.
        content = redact(_required_text(record, "content", where), secrets)
        by_session.setdefault(session, []).append(
            NewTurn(
                role=role, content=content, tokens=tokens.count_tokens(content, model), status=status,
                name=_optional_text(record, "name", where, limit=MAX_NAME_LENGTH),
                ref=_optional_text(record, "ref", where, limit=MAX_NAME_LENGTH),
                model=_optional_text(record, "model", where, limit=MAX_NAME_LENGTH),
                error=redact(_optional_text(record, "error", where) or "", secrets) or None,
                created_at=_parse_time(record.get("created_at"), where),
            )
        )
    return by_session


def import_turns(
    store: Store, lines: Iterable[str], *, model: str, secrets: Iterable[str] = ()
) -> dict[str, int]:
    """Load a turns file; returns the number of turns added per session.

    A line whose `ref` is already stored in its session is skipped, so
    importing the same file (or an export) twice adds nothing twice.
    """
    parsed = parse_turns(lines, model=model, secrets=secrets)
    added = {}
    for name, new in parsed.items():
        known = store.refs(name)
        fresh = [turn for turn in new if turn.ref is None or turn.ref not in known]
        added[name] = store.add_turns(name, fresh)
    return added


def parse_facts(lines: Iterable[str]) -> list[tuple[str, str, str | None, datetime | None]]:
    items = []
    for where, record in json_lines(lines):
        raw_key = _required_text(record, "key", where)
        key = extraction.normalise_key(raw_key)
        if key is None:
            raise TransferError(f"{where}: {raw_key!r} is not a usable fact key")
        value = _required_text(record, "value", where)
        try:
            check_value(value)
        except StoreError as exc:
            raise TransferError(f"{where}: {exc}") from None
        reason = extraction.skip_reason(key, value)
        if reason is not None:
            raise TransferError(f"{where}: looks like a secret ({reason}); kvchat does not store secrets")
        items.append(
            (
                key,
                value,
                _optional_text(record, "ref", where, limit=MAX_NAME_LENGTH),
                _parse_time(record.get("created_at"), where),
            )
        )
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


def export_turns(store: Store, session_id: int | None = None) -> Iterator[dict]:
    for session, turn in store.all_turns(session_id):
        yield turn_record(session, turn)


def export_markdown(store: Store, session_id: int | None = None) -> Iterator[str]:
    current = None
    for session, turn in store.all_turns(session_id):
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

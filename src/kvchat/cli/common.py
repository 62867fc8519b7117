"""What every command shares: settings from the environment, opening the
store, one-line errors, and output that suits a terminal or a pipe."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..config import SETTINGS

if TYPE_CHECKING:
    from ..store import Session, Store

DEFAULT_MODEL = SETTINGS["model"].default
DEFAULT_SESSION = SETTINGS["session"].default

# Defaults None: the value then comes from the environment, the config file
# (and for ask and chat the session), in the order kvchat.config gives.
SessionOption = Annotated[
    Optional[str],
    typer.Option(
        "--session", "-s",
        help="Session: its name, the start of exactly one name, or #ID "
        "(default: KVCHAT_SESSION, the config file, or default).",
    ),
]
ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Model name (default: KVCHAT_MODEL, the config file, or gpt-4o-mini)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def setting_flags(options: dict) -> dict:
    """What a command's options (its `locals()`, before anything else is
    assigned) gave for each setting; None where not given."""
    return {name: options[name] for name in SETTINGS if name in options}


def setting(name: str, given):
    """`given` if the command line gave it, else the configured value."""
    if given is not None:
        return given
    from ..config import resolve

    return getattr(resolve({}, None), name)


class CliError(Exception):
    """A problem to report to the user in one line, with exit status 1."""


# What the root command's --user gave for this invocation (None: not given).
user_flag: str | None = None


def open_store() -> Store:
    """The store, as the user --user names, else KVCHAT_USER, the config
    file's `user`, or the operating system's user name."""
    from ..config import resolve_one
    from ..store import Store

    return Store(os.environ.get("KVCHAT_DB"), user=resolve_one("user", user_flag).value)


def find_session(store: Store, ref: str) -> Session:
    """The session `ref` names: its exact name, #ID, or the start of exactly
    one name (see Store.find_session); a one-line error otherwise."""
    return store.resolve_session(ref)


def given_or_configured_session(store: Store, given: str | None) -> Session:
    """The session --session names (by name, #ID or a unique start), or
    without it the configured one (KVCHAT_SESSION, the config file, or
    default), which is taken by its exact name only: a default that does not
    exist yet must not fall on some other session that starts like it."""
    if given is not None:
        return find_session(store, given)
    name = setting("session", None)
    session = store.session(name)
    if session is None:
        raise CliError(f"no session named {name!r} yet (see `kvchat sessions`)")
    return session


def session_to_use(store: Store, ref: str) -> str:
    """The name of the session `ref` names, for a command that starts a new
    session when none matches (ask, chat, sessions set): the session called
    exactly `ref`; else the one with id N for #N; else the one session whose
    name starts with `ref`, said on stderr since the user may have meant a
    new one; else `ref` itself. Several names starting with `ref` are an error."""
    found, how = store.find_session(ref)
    if found is None:
        return ref
    if how == "prefix":
        typer.echo(f"kvchat: using session {found.name!r}, the only one whose name starts with {ref!r}", err=True)
    return found.name


def new_session_to_use(store: Store, ref: str) -> str:
    """The name for `--new --session NAME`: a session by that name, started
    now, so it must not be one there is already."""
    from ..store import check_session_name

    ref = check_session_name(ref)  # as the session will be named: " review" is "review"
    found, how = store.find_session(ref)
    if found is not None and how != "prefix":
        raise CliError(f"there is already a session {found.name!r}: --new starts another one; leave out --new "
                       "to go on with it, or give a new name")
    return ref


_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_ALONE = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def parse_age(text: str) -> timedelta:
    """A duration such as 30d, 12h, 2w or 90m."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise typer.BadParameter("give a number and a unit: 90m, 12h, 30d or 2w")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_when(text: str, option: str, *, end_of_day: bool = False) -> datetime:
    """A point in time from an age back from now (7d, 12h, 90m, 2w) or an ISO
    8601 date or time; a time without a zone is local time. A date alone is
    the start of that day, or its end with `end_of_day` (so that
    `--until 2026-11-20` takes in the 20th)."""
    from ..store import now

    value = text.strip()
    try:
        if _DURATION.fullmatch(value.lower()):
            return now() - parse_age(value)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise CliError(
                f"{option}: {text!r} is neither a date or time (2026-11-20, 2026-11-20T14:30) "
                "nor an age (90m, 12h, 7d, 2w)"
            ) from None
        if end_of_day and _DATE_ALONE.fullmatch(value):
            moment = datetime.combine(moment.date(), time.max)
        return moment if moment.tzinfo is not None else moment.astimezone()
    except (OverflowError, ValueError):  # year 0 or 10000 once moved to a time zone, or an age past year 1
        raise CliError(f"{option}: {text!r} is further from now than kvchat can count") from None


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """"1 turn", "2 turns": a number and its noun, singular or plural."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def print_json(value) -> None:
    """One JSON document on a line of its own (flushed: scripts read as we go)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_row(*fields) -> str:
    """One line of tab-separated output. Stored text may hold tabs and line
    breaks, which would shift a column or start a new row: they are written
    as \\t, \\n and \\r (a backslash as \\\\), as PostgreSQL's COPY and
    MySQL write them, so every row stays one line of the same columns."""
    return "\t".join(str(field).translate(_TSV_ESCAPES) for field in fields) + "\n"


def on_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False):
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, stderr=stderr)


def local_time(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def read_text_argument(value: str | None, what: str) -> str:
    """An argument's text, or standard input for "-" (or nothing, when piped)."""
    if value is None or value == "-":
        if value is None and sys.stdin.isatty():
            raise CliError(f"give the {what} as an argument, or pipe it in with `-`")
        data = sys.stdin.buffer.read()
        try:
            value = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise CliError(f"standard input is not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in value:
        raise CliError(f"the {what} contains a NUL character")
    if not value.strip():
        raise CliError(f"the {what} is empty")
    return value


def _lines(path: Path):
    if str(path) == "-":
        return sys.stdin
    try:
        return path.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def read_lines(path: Path) -> list[str]:
    """All lines of a file (or stdin for -), as text, with a clear error if it is not UTF-8."""
    source = _lines(path)
    try:
        lines = list(source)
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not valid UTF-8 (byte {exc.start})") from None
    finally:
        if source is not sys.stdin:
            source.close()
    if lines:
        # Windows editors start UTF-8 files with a byte-order mark.
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines

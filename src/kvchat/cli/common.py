"""What every command shares: settings from the environment, opening the
store, one-line errors, and output that suits a terminal or a pipe."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
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
    typer.Option("--session", "-s", help="Session name (default: KVCHAT_SESSION, the config file, or default)."),
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


def open_store() -> Store:
    from ..store import Store

    return Store(os.environ.get("KVCHAT_DB"))


def find_session(store: Store, name: str) -> Session:
    session = store.session(name)
    if session is None:
        raise CliError(f"no session named {name!r} (see `kvchat sessions`)")
    return session


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def print_json(value) -> None:
    """One JSON document on a line of its own (flushed: scripts read as we go)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


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
            value = data.decode("utf-8")
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
        return list(source)
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not valid UTF-8 (byte {exc.start})") from None
    finally:
        if source is not sys.stdin:
            source.close()

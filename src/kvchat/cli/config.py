"""`kvchat config`: every effective setting, its value and where it came from."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from . import common
from .common import JsonOption, console, find_session, on_terminal, open_store, print_json, tsv_row
from .terminal_text import safe_text

app = typer.Typer(
    invoke_without_command=True,
    help="The effective settings and where each comes from. `kvchat config path` prints the config file's path.",
    rich_markup_mode=None,
)


def show_value(value: object) -> str:
    """A value as it is written in the config file or an environment variable."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@app.callback()
def config(
    ctx: typer.Context,
    session: Annotated[
        Optional[str], typer.Option("--session", "-s", help="Include this session's own settings.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """The effective settings, each with its value and where it comes from:
    a flag, the session, an environment variable, the config file or the default."""
    if ctx.invoked_subcommand is not None:
        return
    from .. import config as settings_config

    session_settings = None
    if session is not None:
        with open_store() as store:
            found = find_session(store, session)
        session, session_settings = found.name, found.settings
    settings = settings_config.resolve({"session": session, "user": common.user_flag}, session_settings, session)
    key = _key_shown(settings)
    # A password in the base URL is a secret, as the key is.
    rows = [(item.name, settings_config.shown_url(item.value) if item.name == "base_url" and item.value else item.value,
             item.source) for item in settings]
    if json_output:
        shown = {name: {"value": value, "source": source} for name, value, source in rows}
        print_json(shown | {"api_key": {"value": key[0], "source": key[1]}})
        return
    if not on_terminal():
        for name, value, source in rows:
            sys.stdout.write(tsv_row(name, show_value(value), source))
        sys.stdout.write(tsv_row("api_key", show_value(key[0]), key[1]))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    table.add_column("setting", style="cyan", no_wrap=True)
    table.add_column("value")
    table.add_column("from", style="dim")
    for name, value, source in rows:
        # Text, not str: values are the user's text, never Rich markup.
        table.add_row(name, safe_text(show_value(value)), safe_text(source))
    table.add_row("api key", safe_text(show_value(key[0])), safe_text(key[1]))
    out = console()
    out.print(table)
    path = settings_config.default_path()
    out.print(Text(f"config file: {path}{'' if path.exists() else ' (none yet)'}", style="dim"))


def _key_shown(settings) -> tuple[str | None, str]:
    """The key calls would use, masked, and where it comes from; never the key itself."""
    from ..config import ConfigError
    from ..credentials import find_key, mask

    try:
        key = find_key(settings)
    except ConfigError as exc:
        return None, f"unusable: {exc}"
    if key is None:
        return None, "none: `kvchat keys set` stores one"
    return mask(key.value), key.source


@app.command("path")
def path() -> None:
    """Print the config file's path ($KVCHAT_CONFIG, else config.toml in the config directory)."""
    from .. import config as settings_config

    sys.stdout.write(f"{settings_config.default_path()}\n")

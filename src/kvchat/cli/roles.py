"""`kvchat roles`: the system roles, built-in and the user's own; list, show,
add and remove."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import JsonOption, console, on_terminal, open_store, print_json, read_text_argument, tsv_row
from .terminal_text import safe_text

app = typer.Typer(
    no_args_is_help=True,
    help="The system roles: built-in ones and your own. A role of yours may take a built-in's name.",
    rich_markup_mode=None,
)

NameArgument = Annotated[str, typer.Argument(help="The role's name.")]


def _kind(entry) -> str:
    if entry.builtin:
        return "built-in"
    return "user, replaces built-in" if entry.shadows_builtin else "user"


def _entry_json(entry) -> dict:
    return {"name": entry.name, "builtin": entry.builtin,
            "shadows_builtin": entry.shadows_builtin, "text": entry.text}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0]


@app.command("list")
def list_roles(json_output: JsonOption = False) -> None:
    """Every role: name, built-in or yours, and the first line of its text."""
    from .. import roles

    with open_store() as store:
        entries = roles.available(store)
    if json_output:
        print_json([_entry_json(entry) for entry in entries])
        return
    if not on_terminal():
        for entry in entries:
            sys.stdout.write(tsv_row(entry.name, _kind(entry), _first_line(entry.text)))
        return
    from rich.table import Table

    # Names and kinds in full; the text alone is cut to the terminal's width
    # (Rich gives the rest of the line to the one ratio column only when expanding).
    table = Table(box=None, header_style="bold", expand=True)
    table.add_column("role", style="cyan", no_wrap=True)
    table.add_column("kind", style="dim", no_wrap=True)
    table.add_column("text", no_wrap=True, overflow="ellipsis", ratio=1)
    for entry in entries:
        # Text, not str: role text is the user's, never Rich markup.
        table.add_row(safe_text(entry.name), _kind(entry), safe_text(_first_line(entry.text)))
    console().print(table)


@app.command("show")
def show(name: NameArgument, json_output: JsonOption = False) -> None:
    """Print a role's whole text."""
    from .. import roles

    with open_store() as store:
        entry = roles.find(store, name)
    if json_output:
        print_json(_entry_json(entry))
        return
    if on_terminal():
        typer.echo(f"{entry.name}: {_kind(entry)}", err=True)
    sys.stdout.write(entry.text if entry.text.endswith("\n") else entry.text + "\n")


@app.command("add")
def add(
    name: NameArgument,
    text: Annotated[
        Optional[str], typer.Argument(help="The system text; - (or a pipe) reads it from standard input.")
    ] = None,
) -> None:
    """Add a role of your own, or replace one (a built-in's name makes yours take its place)."""
    from ..roles import BUILTIN_ROLES

    content = read_text_argument(text, "role text")
    with open_store() as store:
        new = store.set_role(name, content)
    name = name.strip()  # as stored
    message = f"Added role {name!r}." if new else f"Replaced your role {name!r}."
    if name in BUILTIN_ROLES:
        message += f" It takes the place of the built-in role; `kvchat roles remove {name}` brings that back."
    typer.echo(message, err=True)


@app.command("remove")
def remove(name: NameArgument) -> None:
    """Remove a role of yours (built-in roles cannot be removed)."""
    from .. import roles

    with open_store() as store:
        roles.remove(store, name)
        name = name.strip()
        using = [session.name for session in store.sessions() if session.settings.get("role") == name]
    message = f"Removed role {name!r}."
    if name in roles.BUILTIN_ROLES:
        message += " The built-in role of that name is used again."
    elif using:
        # Said now, not at the session's next question.
        shown = ", ".join(repr(session) for session in using)
        one = len(using) == 1
        message += (f" {'Session' if one else 'Sessions'} {shown} still {'names' if one else 'name'} it: "
                    f"`kvchat sessions set NAME --role ROLE` (or --unset role) gives {'it' if one else 'them'} "
                    "another.")
    if name not in roles.BUILTIN_ROLES:
        from .. import config

        default = config.resolve({}, None)
        if default.role == name:
            message += f" It is the default role ({default.source('role')}): name another there."
    typer.echo(message, err=True)

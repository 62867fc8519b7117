"""`kvchat db`: the database as a whole (copying a store to another engine)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .common import JsonOption, print_json
from .render import ProgressBar

app = typer.Typer(
    help="The database as a whole: copy a store between SQLite and PostgreSQL.",
    no_args_is_help=True,
)


@app.command("copy")
def copy(
    to: Annotated[str, typer.Option(
        "--to", help="Where to copy the store: a PostgreSQL URL (postgresql+psycopg://user@host/db) "
        "or an SQLite file. It must hold no kvchat data yet.",
    )],
    json_output: JsonOption = False,
) -> None:
    """Copy the whole store (every user's sessions, turns, facts and all) into another
    database, and check the copy by counts and checksums before keeping it."""
    from .. import database
    from ..config import resolve_one
    from ..store_copy import copy_store
    from . import common

    if not to.strip():
        # resolve_url takes no URL for the default store, the source itself.
        raise common.CliError("--to must name a database: a PostgreSQL URL or an SQLite file")
    source = database.resolve_url(os.environ.get("KVCHAT_DB"))
    target = database.resolve_url(to)
    with ProgressBar() as bar:
        copied = copy_store(source, target, user_name=resolve_one("user", common.user_flag).value, progress=bar.update)
    if json_output:
        print_json({
            "from": database.where(source), "to": database.where(target),
            "tables": {table.name: {"rows": table.rows, "sha256": table.checksum} for table in copied},
        })
        return
    for table in copied:
        typer.echo(f"{table.name:<18} {table.rows:>10,} rows  sha256 {table.checksum[:16]}")
    typer.echo(
        f"Copied {database.where(source)} to {database.where(target)}: every table's rows and checksum match.",
        err=True,
    )

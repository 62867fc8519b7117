"""`kvchat history`, `kvchat sessions`, `kvchat import` and `kvchat export`."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    DEFAULT_MODEL,
    DEFAULT_SESSION,
    JsonOption,
    SessionOption,
    console,
    find_session,
    local_time,
    on_terminal,
    open_store,
    print_json,
    read_lines,
)


def turn_json(turn) -> dict:
    from ..transfer import iso

    return {
        "id": turn.id,
        "role": turn.role,
        "name": turn.name,
        "content": turn.content,
        "tokens": turn.tokens,
        "status": turn.status,
        "error": turn.error,
        "model": turn.model,
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "ref": turn.ref,
        "created_at": iso(turn.created_at),
    }


ROLE_STYLE = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}


def history(
    session: SessionOption = DEFAULT_SESSION,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="Only the last N turns.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The stored turns of a session, oldest first, with time, role and tokens."""
    with open_store() as store:
        turns = store.history(find_session(store, session).id, limit)
    if json_output:
        print_json([turn_json(turn) for turn in turns])
        return
    if not on_terminal():
        for turn in turns:
            note = f" [{turn.status}]" if turn.status != "complete" else ""
            speaker = turn.name or turn.role
            sys.stdout.write(
                f"{local_time(turn.created_at)}\t{speaker}{note}\t{turn.tokens} tokens\n{turn.content}\n\n"
            )
        return
    from rich.text import Text

    out = console()
    for turn in turns:
        header = Text()
        header.append(turn.name or turn.role, style=ROLE_STYLE.get(turn.role, "bold"))
        header.append(f"  {local_time(turn.created_at)}  {turn.tokens} tokens", style="dim")
        if turn.status != "complete":
            header.append(f"  {turn.status}", style="bold yellow")
            if turn.error:
                header.append(f": {turn.error}", style="yellow")
        out.print(header)
        out.print(Text(turn.content))
        out.print()


def sessions(json_output: JsonOption = False) -> None:
    """Every session, with its turn count, total tokens and last activity."""
    with open_store() as store:
        found = store.sessions()
    if json_output:
        print_json(
            [
                {
                    "name": s.name, "turns": s.turn_count, "tokens": s.token_count,
                    "created_at": s.created_at, "last_active_at": s.last_active_at,
                }
                for s in found
            ]
        )
        return
    if not on_terminal():
        for s in found:
            sys.stdout.write(f"{s.name}\t{s.turn_count}\t{s.token_count}\t{local_time(s.last_active_at)}\n")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column, justify in (("session", "left"), ("turns", "right"), ("tokens", "right"), ("last active", "left")):
        table.add_column(column, justify=justify)
    for s in found:
        table.add_row(Text(s.name), str(s.turn_count), str(s.token_count), local_time(s.last_active_at))
    console().print(table if found else "No sessions yet. Start one with `kvchat ask` or `kvchat chat`.")


def import_turns(
    file: Annotated[Path, typer.Argument(help="JSON lines: session, role, content, and optionally created_at, name, ref. - reads stdin.")],
    model: Annotated[str, typer.Option("--model", "-m", envvar="KVCHAT_MODEL", help="Model whose encoding counts the tokens.")] = DEFAULT_MODEL,
    json_output: JsonOption = False,
) -> None:
    """Import turns from a JSON-lines file (all of it, or nothing if a line is bad)."""
    from .. import transfer

    lines = read_lines(file)
    with open_store() as store:
        added = transfer.import_turns(store, lines, model=model)
    if json_output:
        print_json({"imported": sum(added.values()), "sessions": added})
    else:
        typer.echo(f"Imported {sum(added.values())} turns into {len(added)} sessions.", err=True)


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    markdown = "markdown"


def export_turns(
    session: Annotated[Optional[str], typer.Option("--session", "-s", help="Only this session (default: all).")] = None,
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="jsonl (re-importable) or markdown.")] = ExportFormat.jsonl,
) -> None:
    """Export turns to standard output, as JSON lines or Markdown."""
    import json

    from .. import transfer

    with open_store() as store:
        session_id = find_session(store, session).id if session else None
        write = sys.stdout.write
        if format is ExportFormat.markdown:
            for chunk in transfer.export_markdown(store, session_id):
                write(chunk)
        else:
            for record in transfer.export_turns(store, session_id):
                write(json.dumps(record, ensure_ascii=False) + "\n")


def register(app: typer.Typer) -> None:
    app.command("history")(history)
    app.command("sessions")(sessions)
    app.command("import")(import_turns)
    app.command("export")(export_turns)

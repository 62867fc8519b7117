"""`kvchat import` and `kvchat export`: turns in and out as JSON lines or Markdown."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import JsonOption, ModelOption, counted, find_session, open_store, print_json, read_lines, setting
from .render import ProgressBar


def import_turns(
    file: Annotated[Path, typer.Argument(help="JSON lines: session, role, content, and optionally created_at, name, ref. - reads stdin.")],
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import turns from a JSON-lines file (all of it, or nothing if a line is bad)."""
    from .. import transfer

    lines = read_lines(file)
    with open_store() as store, ProgressBar() as bar:
        # The configured key is blanked too, whatever its format.
        key = os.environ.get("OPENAI_API_KEY", "")
        done = transfer.import_turns(store, lines, model=setting("model", model), secrets=[key], progress=bar.update)
    added = sum(done.added.values())
    if json_output:
        print_json({"imported": added, "sessions": done.added, "already_stored": done.skipped})
    else:
        skipped = f"; {counted(done.skipped, 'line')} already stored, skipped" if done.skipped else ""
        sessions = sum(1 for count in done.added.values() if count)
        typer.echo(f"Imported {counted(added, 'turn')} into {counted(sessions, 'session')}{skipped}.", err=True)


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

    with open_store() as store, ProgressBar(output_on_stdout=True) as bar:
        session_id = find_session(store, session).id if session else None
        write = sys.stdout.write
        if format is ExportFormat.markdown:
            for chunk in transfer.export_markdown(store, session_id, bar.update):
                write(chunk)
        else:
            for record in transfer.export_turns(store, session_id, bar.update):
                write(json.dumps(record, ensure_ascii=False) + "\n")


def register(app: typer.Typer) -> None:
    app.command("import")(import_turns)
    app.command("export")(export_turns)

"""`kvchat history`, `kvchat sessions`, `kvchat import` and `kvchat export`."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import ask
from .common import (
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    console,
    find_session,
    local_time,
    on_terminal,
    open_store,
    print_json,
    read_lines,
    setting,
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
    session: SessionOption = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="Only the last N turns.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The stored turns of a session, oldest first, with time, role and tokens."""
    with open_store() as store:
        turns = store.history(find_session(store, setting("session", session)).id, limit)
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


sessions_app = typer.Typer(
    invoke_without_command=True, no_args_is_help=False,
    help="Every session, with its turn count, total tokens and last activity; `sessions set` and `sessions show` for one.",
)


@sessions_app.callback()
def sessions(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every session, with its turn count, total tokens and last activity;
    `sessions set` and `sessions show` for one session's settings."""
    if ctx.invoked_subcommand is not None:
        return
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
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import turns from a JSON-lines file (all of it, or nothing if a line is bad)."""
    from .. import transfer

    lines = read_lines(file)
    with open_store() as store:
        added = transfer.import_turns(store, lines, model=setting("model", model))
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


@sessions_app.command("set")
def set_settings(
    name: Annotated[str, typer.Argument(help="The session (created if it does not exist).")],
    model: ModelOption = None,
    role: ask.RoleOption = None,
    memory: ask.MemoryOption = None,
    window: ask.WindowOption = None,
    memory_tokens: ask.MemoryTokensOption = None,
    summary_tokens: ask.SummaryTokensOption = None,
    recall_tokens: ask.RecallTokensOption = None,
    facts: ask.FactsOption = None,
    vector: ask.VectorOption = None,
    embedding_model: ask.EmbeddingModelOption = None,
    answer_tokens: ask.AnswerTokensOption = None,
    context_tokens: ask.ContextTokensOption = None,
    extract: ask.ExtractOption = None,
    unset: Annotated[
        Optional[list[str]], typer.Option("--unset", help="Forget this setting of the session (repeatable).")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Forget all the session's settings first.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Keep settings with a session: every later ask or chat in it uses them
    (flags on a call still win for that call)."""
    from .. import config
    from ..roles import role_text

    given = dict(
        model=model, role=role, memory=memory, window=window, memory_tokens=memory_tokens,
        summary_tokens=summary_tokens, recall_tokens=recall_tokens, facts=facts, vector=vector,
        embedding_model=embedding_model, answer_tokens=answer_tokens, context_tokens=context_tokens,
        extract=extract,
    )
    changes = {key: config.check(key, value) for key, value in given.items() if value is not None}
    for key in unset or []:
        key = key.replace("-", "_")
        if key not in config.SESSION_SETTINGS:
            raise CliError(f"--unset: {key!r} is not a session setting ({', '.join(sorted(config.SESSION_SETTINGS))})")
        if key in changes:
            raise CliError(f"--unset {key} and --{key.replace('_', '-')} contradict each other")
        changes[key] = None
    if not changes and not reset:
        raise CliError("nothing to set: give settings such as --memory summary, --unset NAME, or --reset")
    with open_store() as store:
        if role is not None:
            role_text(store, role)  # an unknown role is refused now, not at the next ask
        session = store.update_settings(name, changes, reset=reset)
    if json_output:
        print_json({"session": session.name, "settings": session.settings})
        return
    shown = ", ".join(f"{k}={v}" for k, v in sorted(session.settings.items())) or "none (defaults apply)"
    typer.echo(f"Session {session.name!r} settings: {shown}", err=True)


@sessions_app.command("show")
def show_session(
    name: Annotated[str, typer.Argument(help="The session.")],
    json_output: JsonOption = False,
) -> None:
    """One session: its counts, its own settings and its rolling summary."""
    with open_store() as store:
        session = find_session(store, name)
        summary = store.summary(session.id)
    data = {
        "name": session.name, "turns": session.turn_count, "tokens": session.token_count,
        "created_at": session.created_at, "last_active_at": session.last_active_at,
        "settings": session.settings,
        "summary": None if summary is None else {
            "content": summary.content, "tokens": summary.tokens, "turns": summary.turn_count,
            "last_turn_id": summary.last_turn_id, "model": summary.model, "updated_at": summary.updated_at,
        },
    }
    if json_output:
        print_json(data)
        return
    lines = [
        f"session\t{session.name}",
        f"turns\t{session.turn_count} ({session.token_count} tokens)",
        f"last active\t{local_time(session.last_active_at)}",
    ]
    lines += [f"setting {key}\t{value}" for key, value in sorted(session.settings.items())] or [
        "settings\tnone of its own (see `kvchat config --session NAME`)"
    ]
    if summary is not None:
        lines.append(f"summary\t{summary.tokens} tokens, {summary.turn_count} turns, "
                     f"updated {local_time(summary.updated_at)}")
        lines.append(summary.content)
    sys.stdout.write("\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    app.command("history")(history)
    app.add_typer(sessions_app, name="sessions")
    app.command("import")(import_turns)
    app.command("export")(export_turns)

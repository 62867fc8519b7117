"""`kvchat history` and `kvchat sessions`."""

from __future__ import annotations

import re
import sys
from collections import Counter
from datetime import timedelta
from typing import Annotated, Optional

import typer

from . import ask
from .common import (
    setting_flags,
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    console,
    counted,
    find_session,
    given_or_configured_session,
    local_time,
    on_terminal,
    open_store,
    parse_age,
    parse_when,
    print_json,
    session_to_use,
    tsv_row,
)
from .connection import EndpointOption
from .terminal_text import safe_text, visible

_WORD = re.compile(r"\w+")

SessionArgument = Annotated[
    str, typer.Argument(help="The session: its name, #ID, or the start of exactly one name.", show_default=False)
]


def turn_json(turn, session: str) -> dict:
    from ..transfer import iso

    return {
        "id": turn.id,
        "session": session,
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


SinceOption = Annotated[
    Optional[str],
    typer.Option("--since", metavar="WHEN",
                 help="From this time on: a date or time (2026-11-20, 2026-11-20T14:30; local time) "
                 "or an age back from now (90m, 12h, 7d, 2w)."),
]
UntilOption = Annotated[
    Optional[str],
    typer.Option("--until", metavar="WHEN", help="Up to this time (as --since; a date alone takes in that whole day)."),
]


def time_range(since: str | None, until: str | None = None):
    """--since and --until as times (None where not given); a date alone for
    --until takes in that whole day."""
    start = parse_when(since, "--since") if since is not None else None
    end = parse_when(until, "--until", end_of_day=True) if until is not None else None
    if start is not None and end is not None and start > end:
        # Nothing could match: an empty listing would read as "nothing happened then".
        raise CliError(f"--since ({since}) is later than --until ({until})")
    return start, end


def history(
    session: SessionOption = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="Only the last N turns.")] = None,
    search: Annotated[
        Optional[str],
        typer.Option("--search", metavar="TEXT",
                     help="Only turns holding every word of TEXT, as memory search reads words (\"running\" "
                     "finds \"run\"; Chinese by its characters), across all sessions unless --session is given."),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    json_output: JsonOption = False,
) -> None:
    """The stored turns of a session, oldest first, with time, role and tokens;
    --search finds turns in every session."""
    since_at, until_at = time_range(since, until)
    with open_store() as store:
        if search is not None:
            from ..textsearch import terms

            # The index leaves out common words ("thanks", "hello"); a turn
            # must still hold each of them, found in its text as written.
            words = terms(search)
            unindexed = [word.casefold() for word in _WORD.findall(search) if not terms(word)]
            if not words and not unindexed:
                raise CliError(f"--search: {search!r} has no words to search for")
            session_id = find_session(store, session).id if session is not None else None
            found = store.search_history(words, unindexed, session_id=session_id, since=since_at, until=until_at,
                                         limit=limit)
        else:
            chosen = given_or_configured_session(store, session)
            found = [(chosen.name, turn) for turn in store.history(chosen.id, limit, since=since_at, until=until_at)]
    if json_output:
        print_json([turn_json(turn, name) for name, turn in found])
        return
    # Results from several sessions say which each turn is from.
    several = search is not None and session is None
    if not on_terminal():
        for name, turn in found:
            note = f" [{turn.status}]" if turn.status != "complete" else ""
            speaker = turn.name or turn.role
            where = f"{name}\t" if several else ""
            sys.stdout.write(
                f"{local_time(turn.created_at)}\t{where}{speaker}{note}\t{turn.tokens} tokens\n{turn.content}\n\n"
            )
        return
    from rich.text import Text

    out = console()
    if not found and search is not None:
        out.print("No turn matches.")
    for name, turn in found:
        header = Text()
        if several:
            header.append(f"{visible(name)}  ", style="bold blue")
        header.append(visible(turn.name or turn.role), style=ROLE_STYLE.get(turn.role, "bold"))
        header.append(f"  {local_time(turn.created_at)}  {turn.tokens} tokens", style="dim")
        if turn.status != "complete":
            header.append(f"  {turn.status}", style="bold yellow")
            if turn.error:
                header.append(f": {visible(turn.error)}", style="yellow")
        out.print(header)
        out.print(safe_text(turn.content))
        out.print()


sessions_app = typer.Typer(
    invoke_without_command=True, no_args_is_help=False,
    help="Every session, with its turn count, total tokens and last activity; `sessions set`, `show`, `rename`, `delete` and `prune` to manage them.",
)


@sessions_app.callback()
def sessions(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every session, with its turn count, total tokens and last activity;
    `sessions set` and `sessions show` for one session's settings, `rename`,
    `delete` and `prune` to manage them."""
    if ctx.invoked_subcommand is not None:
        return
    with open_store() as store:
        found = store.sessions()
    if json_output:
        print_json([session_json(s) for s in found])
        return
    if not on_terminal():
        # The title last: the columns before it hold no space to split on.
        for s in found:
            sys.stdout.write(tsv_row(s.name, s.turn_count, s.token_count, local_time(s.last_active_at), f"#{s.id}",
                                     s.title or ""))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column, justify in (("id", "right"), ("session", "left"), ("title", "left"), ("turns", "right"),
                            ("tokens", "right"), ("last active", "left")):
        # The title gives way when the terminal is narrow, cut on its one line.
        table.add_column(column, justify=justify, no_wrap=column != "title")
    for s in found:
        title = safe_text(s.title or "", no_wrap=True, overflow="ellipsis")
        table.add_row(f"#{s.id}", safe_text(s.name), title, str(s.turn_count), str(s.token_count),
                      local_time(s.last_active_at))
    console().print(table if found else "No sessions yet. Start one with `kvchat ask` or `kvchat chat`.")


def session_json(s) -> dict:
    return {
        "id": s.id, "name": s.name, "title": s.title, "turns": s.turn_count, "tokens": s.token_count,
        "created_at": s.created_at, "last_active_at": s.last_active_at,
    }


@sessions_app.command("set")
def set_settings(
    name: Annotated[str, typer.Argument(
        help="The session: its name, #ID, or the start of exactly one name; a new session if none matches.")],
    model: ModelOption = None,
    endpoint: EndpointOption = None,
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
    from .. import config, endpoints
    from ..roles import role_text

    given = setting_flags(locals())
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
        # An unknown role or endpoint is refused now, not at the next ask.
        if role is not None:
            role_text(store, role)
        if endpoint not in (None, "default"):
            endpoints.get(endpoint)
        session = store.update_settings(session_to_use(store, name), changes, reset=reset)
    if json_output:
        print_json({"session": session.name, "settings": session.settings})
        return
    from .config import show_value

    shown = ", ".join(f"{k}={show_value(v)}" for k, v in sorted(session.settings.items())) or "none (defaults apply)"
    typer.echo(f"Session {session.name!r} settings: {shown}", err=True)


@sessions_app.command("show")
def show_session(
    name: SessionArgument,
    json_output: JsonOption = False,
) -> None:
    """One session: its title, counts, own settings and rolling summary."""
    with open_store() as store:
        session = find_session(store, name)
        summary = store.summary(session.id)
    data = {
        **session_json(session),
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
        f"session\t{session.name} (#{session.id})",
        f"title\t{session.title or '(none yet: made from the first question)'}",
        f"turns\t{session.turn_count} ({session.token_count} tokens)",
        f"last active\t{local_time(session.last_active_at)}",
    ]
    from .config import show_value  # as `kvchat config` and the config file write them: true, not True

    lines += [f"setting {key}\t{show_value(value)}" for key, value in sorted(session.settings.items())] or [
        "settings\tnone of its own (see `kvchat config --session NAME`)"
    ]
    if summary is not None:
        lines.append(f"summary\t{summary.tokens} tokens, {summary.turn_count} turns, "
                     f"updated {local_time(summary.updated_at)}")
        lines.append(summary.content)
    sys.stdout.write("\n".join(lines) + "\n")


def _confirm_or_refuse(question: str, yes: bool) -> bool:
    """True to go ahead: --yes, or the user said so at a terminal. Without a
    terminal to ask at, refuse rather than delete unasked."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CliError("deleting needs confirmation: pass --yes to delete without being asked")
    return typer.confirm(question, default=False, err=True)


def _what(deleted, typed_out: int | None = None) -> str:
    parts = [counted(deleted.turns, "turn")]
    if deleted.facts:
        parts.append(counted(deleted.facts, "fact"))
    if typed_out:
        parts.append(f"{counted(typed_out, 'entry', 'entries')} of the chat history")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _typed_questions() -> Counter[str] | None:
    """The questions `kvchat chat`'s history holds (and how many entries typed
    each), for a delete to look for in its sessions; None, with a warning, when the history cannot be read
    (the sessions are deleted all the same)."""
    from .repl import history_path, typed_questions

    try:
        return typed_questions()
    except OSError as exc:
        typer.echo(f"kvchat: warning: could not read the chat history {history_path()} to take the deleted "
                   f"sessions' questions out of it: {exc.strerror or exc}", err=True)
        return None


def _forget_typed(questions: set[str], typed: Counter[str] | None) -> int | None:
    """The deleted sessions' questions out of `kvchat chat`'s history too, and
    how many entries went; None when the history could not be read or
    rewritten (said in a warning): the sessions are gone from the database by
    then, and that is not undone."""
    from .repl import forget_typed, history_path

    if typed is None:
        return None
    try:
        return forget_typed(questions)
    except OSError as exc:
        typer.echo(f"kvchat: warning: could not take the deleted sessions' questions out of the chat history "
                   f"{history_path()}: {exc.strerror or exc}", err=True)
        return None


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")]
DeleteFactsOption = Annotated[
    bool, typer.Option("--facts", help="Also forget the facts extracted from the session's turns.")
]


@sessions_app.command("delete")
def delete_session(
    name: Annotated[str, typer.Argument(help="The session: its whole name, or #ID.", show_default=False)],
    facts: DeleteFactsOption = False,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Delete a session for good: its turns, their search entries, its summary
    and settings, and its questions in chat's history (with --facts, the facts
    learnt from it too). The text is erased from the database file, not only
    hidden."""
    with open_store() as store:
        session, how = store.find_session(name, several="give the whole name, or '#ID', of the one to delete")
        if session is None:
            session = store.resolve_session(name)  # says that no session has that name
        if how == "prefix":
            # Deleting is for good: the start of a name is not enough, even if only one name starts so.
            raise CliError(f"{name!r} is only the start of session {session.name!r}: give its whole name "
                           f"or '#{session.id}' to delete it")
        learnt = len(store.facts_from_sessions([session.id])) if facts else 0
        what = counted(session.turn_count, "turn") + (f" and {counted(learnt, 'fact')}" if facts else "")
        typed = _typed_questions()  # first: a warning that it cannot be read comes before the question
        if not _confirm_or_refuse(f"Delete session {session.name!r} ({what})?", yes):
            raise CliError("nothing deleted")
        deleted = store.delete_session(session.name, facts=facts, asked=typed or ())
    typed_out = _forget_typed(deleted.questions, typed)
    if json_output:
        print_json({"session": session.name, "turns": deleted.turns, "facts": deleted.facts,
                    "chat_history_entries": typed_out})
    else:
        typer.echo(f"Deleted session {session.name!r}: {_what(deleted, typed_out)}.", err=True)


@sessions_app.command("rename")
def rename_session(
    old: SessionArgument,
    new: Annotated[str, typer.Argument(help="Its new name (not another session's).")],
) -> None:
    """Give a session a new name; its turns, facts and settings stay with it."""
    with open_store() as store:
        session = store.rename_session(store.resolve_session(old).name, new)
    typer.echo(f"Renamed session {old!r} to {session.name!r}.", err=True)


@sessions_app.command("title")
def title_session(
    name: SessionArgument,
    title: Annotated[Optional[str], typer.Argument(help="The title (quote it).", show_default=False)] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Go back to the title made from the session's first question.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Give a session a title of your own, shown by `kvchat sessions`; without
    one, a session is titled by the start of its first question."""
    if title is not None and reset:
        raise CliError("give either a title or --reset, not both")
    if title is None and not reset:
        raise CliError("give a title, or --reset to go back to the one made from the first question")
    with open_store() as store:
        session = store.set_title(store.resolve_session(name).name, None if reset else title)
    if json_output:
        print_json(session_json(session))
    else:
        typer.echo(f"Session {session.name!r} is titled {session.title!r}." if session.title
                   else f"Session {session.name!r} has no title (it has no question yet).", err=True)


@sessions_app.command("prune")
def prune_sessions(
    older_than: Annotated[
        timedelta, typer.Option("--older-than", parser=parse_age, metavar="AGE",
                                help="Delete the sessions with no activity for this long: 90m, 12h, 30d, 2w.")
    ],
    facts: DeleteFactsOption = False,
    yes: YesOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete, for good, every session last active longer ago than --older-than,
    as `sessions delete` does (with --facts, the facts learnt from them too)."""
    from ..store import now

    before = now() - older_than
    with open_store() as store:
        found = store.sessions_older_than(before)
        learnt = len(store.facts_from_sessions([s.id for s in found])) if facts else 0
        turns = sum(s.turn_count for s in found)
        what = f"{counted(len(found), 'session')}, {counted(turns, 'turn')}" + (
            f", {counted(learnt, 'fact')}" if facts else ""
        )
        typed = _typed_questions()  # first: a warning that it cannot be read comes before the question
        if dry_run or not found:
            typed_out = None if typed is None else sum(typed[question] for question in {
                text.strip() for text in store.questions_among([s.id for s in found], typed)
            })
            if json_output:
                print_json({"dry_run": dry_run, "sessions": len(found), "names": [s.name for s in found],
                            "turns": turns, "facts": learnt, "chat_history_entries": typed_out})
                return
            for s in found:
                sys.stdout.write(tsv_row(s.name, s.turn_count, local_time(s.last_active_at)))
            if typed_out:
                what += f", {counted(typed_out, 'entry', 'entries')} of the chat history"
            typer.echo(f"Would delete {what}." if dry_run else "No session is that old.", err=True)
            return
        if not _confirm_or_refuse(f"Delete {what}, last active before {local_time(before)}?", yes):
            raise CliError("nothing deleted")
        deleted = store.prune_sessions(before, facts=facts, asked=typed or ())
    typed_out = _forget_typed(deleted.questions, typed)
    if json_output:
        print_json({"dry_run": False, "sessions": deleted.sessions, "names": deleted.names,
                    "turns": deleted.turns, "facts": deleted.facts, "chat_history_entries": typed_out})
    else:
        typer.echo(f"Deleted {counted(deleted.sessions, 'session')}: {_what(deleted, typed_out)}.", err=True)


def register(app: typer.Typer) -> None:
    app.command("history")(history)
    app.add_typer(sessions_app, name="sessions")

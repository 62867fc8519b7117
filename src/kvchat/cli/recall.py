"""`kvchat recall`: exactly the memories `ask` would put into the prompt, and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import budgets
from . import ask
from .common import (
    setting_flags,
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    console,
    open_store,
    print_json,
    read_lines,
    read_text_argument,
    tsv_row,
)
from .connection import EndpointOption
from .terminal_text import safe_text


def item_json(item) -> dict:
    from ..transfer import iso

    data = {
        "kind": item.kind,
        "id": item.id,
        "ref": item.ref,
        "text": item.text,
        "score": float(f"{item.score:.4g}"),
        "tokens": item.tokens,
        "matched": item.matched,
        "parts": item.parts,
    }
    if item.kind == "fact":
        data.update(key=item.key, value=item.value)
    else:
        data["turns"] = [
            {"id": t.id, "role": t.role, "name": t.name, "ref": t.ref, "created_at": iso(t.created_at)}
            for t in item.turns
        ]
    return data


def prompt_for(store, question: str, session_name: str | None, flags: dict, system: str | None, limit: int,
               semantic_for=None, *, exact: bool = False):
    """The prompt `ask` would build for `question` in the session, as it
    stands (nothing is stored, and the summary is not brought up to date).
    With `exact`, the session is the one of that very name (chat's own, which
    may not be stored yet), never one whose name merely starts so."""
    from .. import config, tokens
    from ..prompt import build_prompt

    if exact:
        session, name = store.session(session_name), session_name
    elif session_name is not None:
        # By name, #ID or a unique start; a name no session has recalls facts only.
        session, _ = store.find_session(session_name)
        name = session.name if session else session_name
    else:
        name = config.resolve(flags, None).session
        session = store.session(name)
    settings = config.resolve(flags, session.settings if session else None, name)
    options = ask.ask_options(store, settings, system=system, stream=False, no_extract=True)
    options.prompt.recall_limit = limit
    prompt = build_prompt(
        store, question=question, question_tokens=tokens.count_tokens(question, settings.model),
        session_id=session.id if session else None, before_id=None, options=options.prompt,
        semantic=semantic_for(store, settings, options) if semantic_for else None,
    )
    if session is None and session_name is not None and not exact:
        # A mistyped name would look like a memory with nothing in it.
        prompt.notes.append(f"no session is named {session_name!r}: this is what a new session would recall "
                            "(facts only)")
    return prompt


def _semantic(store, settings, options):
    if not settings.vector:
        return None
    from .connection import conversation

    return conversation(store, settings).semantic_recall(options)


def _queries(path: Path) -> list[dict]:
    """Every record of a --queries file, all checked before the first is
    answered: a bad line names itself, and no results come before the error."""
    from ..transfer import TransferError, json_lines

    records = []
    for where, record in json_lines(read_lines(path)):
        query, session = record.get("query"), record.get("session")
        if not isinstance(query, str) or not query.strip():
            raise TransferError(f"{where}: expected an object with a non-empty \"query\" string")
        if "\x00" in query:
            raise TransferError(f"{where}: the query contains a NUL character")
        if session is not None and not isinstance(session, str):
            raise TransferError(f"{where}: \"session\" must be a string")
        records.append(record)
    return records


def recall(
    question: Annotated[Optional[str], typer.Argument(help="The question; - reads it from standard input.")] = None,
    session: SessionOption = None,
    model: ModelOption = None,
    endpoint: EndpointOption = None,
    role: ask.RoleOption = None,
    system: ask.SystemOption = None,
    memory: ask.MemoryOption = None,
    window: ask.WindowOption = None,
    memory_tokens: ask.MemoryTokensOption = None,
    recall_tokens: ask.RecallTokensOption = None,
    facts: ask.FactsOption = None,
    vector: ask.VectorOption = None,
    embedding_model: ask.EmbeddingModelOption = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="At most this many memories.")] = budgets.RECALL_LIMIT,
    answer_tokens: ask.AnswerTokensOption = None,
    context_tokens: ask.ContextTokensOption = None,
    queries: Annotated[
        Optional[Path],
        typer.Option("--queries", help='JSON lines {"id", "query", "session"?}: one result line each, '
                     '{"id", "items", "notes"} (notes: what recall would warn of, e.g. an unknown session).'),
    ] = None,
    show_whole_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="Show the whole prompt section by section, with token counts.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show the facts and older turns `ask` would put into the prompt, without calling the model.

    On a terminal the prompt's sections and their token counts come first.
    """
    flags = setting_flags(locals())
    if queries is not None:
        if question is not None:
            raise CliError("give either a question or --queries, not both")
        if show_whole_prompt:
            raise CliError("--show-prompt shows one question's prompt: give a question, not --queries")
        with open_store() as store:
            for record in _queries(queries):
                prompt = prompt_for(store, record["query"], record.get("session") or session, flags, system, limit,
                                    _semantic)
                print_json({"id": record.get("id"), "items": [item_json(item) for item in prompt.memories],
                            "notes": prompt.notes})
        return
    text = read_text_argument(question, "question")
    with open_store() as store:
        prompt = prompt_for(store, text, session, flags, system, limit, _semantic)
    show(prompt, whole=show_whole_prompt, json_output=json_output)


def show(prompt, *, whole: bool = False, json_output: bool = False) -> None:
    """What `recall` prints of a prompt: its memories and why, or (`whole`)
    the prompt itself, section by section."""
    for note in prompt.notes:
        typer.echo(f"kvchat: warning: {note}", err=True)
    items = prompt.memories
    if whole:
        if json_output:
            print_json({
                "tokens": prompt.tokens,
                "sections": [{"name": s.name, "tokens": s.tokens, "items": s.items, "text": s.text}
                             for s in prompt.sections],
                "messages": prompt.messages,
            })
        else:
            ask.show_prompt(prompt, err=False)
        return
    if json_output:
        print_json([item_json(item) for item in items])
        return
    if not items:
        typer.echo("No memories match this question.", err=True)
        return
    if not sys.stdout.isatty():
        for item in items:
            sys.stdout.write(tsv_row(item.kind, f"{item.score:.3g}", item.tokens, ",".join(item.matched), item.text))
        return
    from rich.text import Text

    out = console()
    sizes = ", ".join(f"{s.name} {s.tokens}" for s in prompt.sections if s.tokens)
    out.print(Text(f"prompt: {prompt.tokens} tokens ({sizes})", style="dim"))
    if len({item.kind for item in items}) > 1:
        # Otherwise a list going 2.47, 18.6, 2.3 reads as a mistake.
        out.print(Text("Facts and turns are scored apart: each is ranked by its score against the best of its kind.",
                       style="dim"))
    out.print()
    for item in items:
        head = Text()
        head.append(item.kind, style="bold cyan" if item.kind == "fact" else "bold green")
        head.append(f"  score {item.score:.3g}  {item.tokens} tokens", style="dim")
        if item.matched:
            head.append(f"  matched: {', '.join(item.matched)}", style="yellow")
        out.print(head)
        out.print(safe_text(item.text))
        out.print()


def register(app: typer.Typer) -> None:
    app.command("recall")(recall)

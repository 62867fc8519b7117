"""`kvchat recall`: exactly the memories `ask` would put into the prompt, and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import budgets
from .ask import (
    AnswerTokensOption,
    ContextTokensOption,
    MemoryTokensOption,
    RecallTokensOption,
    SystemOption,
    prompt_options,
)
from .common import (
    DEFAULT_MODEL,
    DEFAULT_SESSION,
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    console,
    open_store,
    print_json,
    read_lines,
    read_text_argument,
)


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


def _memories(store, question: str, session_name: str, options) -> list:
    from .. import tokens
    from ..prompt import build_prompt

    session = store.session(session_name)
    prompt = build_prompt(
        store, question=question, question_tokens=tokens.count_tokens(question, options.model),
        session_id=session.id if session else None, before_id=None, options=options,
    )
    return prompt.memories


def _queries(path: Path):
    from ..transfer import TransferError, json_lines

    for where, record in json_lines(read_lines(path)):
        if not isinstance(record.get("query"), str):
            raise TransferError(f"{where}: expected an object with a \"query\" string")
        yield record


def recall(
    question: Annotated[Optional[str], typer.Argument(help="The question; - reads it from standard input.")] = None,
    session: SessionOption = DEFAULT_SESSION,
    model: ModelOption = DEFAULT_MODEL,
    system: SystemOption = None,
    memory_tokens: MemoryTokensOption = budgets.MEMORY_TOKENS,
    recall_tokens: RecallTokensOption = budgets.RECALL_TOKENS,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="At most this many memories.")] = budgets.RECALL_LIMIT,
    answer_tokens: AnswerTokensOption = budgets.ANSWER_TOKENS,
    context_tokens: ContextTokensOption = None,
    queries: Annotated[
        Optional[Path],
        typer.Option("--queries", help='JSON lines {"id", "query", "session"?}: one result line each.'),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show the facts and older turns `ask` would put into the prompt, without calling the model."""
    options = prompt_options(model, system, memory_tokens, recall_tokens, answer_tokens, context_tokens)
    options.recall_limit = limit
    if queries is not None:
        if question is not None:
            raise CliError("give either a question or --queries, not both")
        with open_store() as store:
            for record in _queries(queries):
                items = _memories(store, record["query"], str(record.get("session") or session), options)
                print_json({"id": record.get("id"), "items": [item_json(item) for item in items]})
        return
    text = read_text_argument(question, "question")
    with open_store() as store:
        items = _memories(store, text, session, options)
    if json_output:
        print_json([item_json(item) for item in items])
        return
    if not items:
        typer.echo("No memories match this question.", err=True)
        return
    if not sys.stdout.isatty():
        for item in items:
            sys.stdout.write(
                f"{item.kind}\t{item.score:.3g}\t{item.tokens}\t{','.join(item.matched)}\t"
                f"{item.text.replace(chr(10), ' | ')}\n"
            )
        return
    from rich.text import Text

    out = console()
    for item in items:
        head = Text()
        head.append(item.kind, style="bold cyan" if item.kind == "fact" else "bold green")
        head.append(f"  score {item.score:.3g}  {item.tokens} tokens", style="dim")
        if item.matched:
            head.append(f"  matched: {', '.join(item.matched)}", style="yellow")
        out.print(head)
        out.print(Text(item.text))
        out.print()


def register(app: typer.Typer) -> None:
    app.command("recall")(recall)

"""`kvchat ask` and `kvchat chat`: questions to the model, with memory."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import budgets
from .common import (
    DEFAULT_MODEL,
    DEFAULT_SESSION,
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    conversation as make_conversation,
    open_store,
    print_json,
    read_text_argument,
)

SystemOption = Annotated[
    Optional[str], typer.Option("--system", help="System role text, replacing the default code role.")
]
MemoryTokensOption = Annotated[
    int, typer.Option("--memory-tokens", min=0, help="Token budget for the recent turns of the session.")
]
RecallTokensOption = Annotated[
    int, typer.Option("--recall-tokens", min=0, help="Token budget for recalled facts and older turns.")
]
ContextTokensOption = Annotated[
    Optional[int],
    typer.Option("--context-tokens", min=256, help="The model's context window, for models kvchat does not know."),
]
AnswerTokensOption = Annotated[
    int, typer.Option("--answer-tokens", min=16, help="Most tokens the answer may use.")
]
ExtractOption = Annotated[
    str,
    typer.Option(
        "--extract", envvar="KVCHAT_EXTRACT", show_envvar=True,
        help="How facts are learned after each answer: model (rules plus a model call), rules, or off.",
    ),
]
NoExtractOption = Annotated[bool, typer.Option("--no-extract", help="Learn no facts from this exchange.")]
NoStreamOption = Annotated[bool, typer.Option("--no-stream", help="Wait for the whole answer.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Say what went into the prompt and what was learned.")]


def prompt_options(model, system, memory_tokens, recall_tokens, answer_tokens, context_tokens):
    from ..prompt import PromptOptions

    return PromptOptions(
        model=model, role=system, memory_tokens=memory_tokens, recall_tokens=recall_tokens,
        answer_tokens=answer_tokens, context_tokens=context_tokens,
    )


def _ask_options(prompt, *, stream: bool, extract: str, no_extract: bool):
    from ..conversation import EXTRACT_MODES, AskOptions

    if extract not in EXTRACT_MODES:
        raise CliError(f"--extract must be one of {', '.join(EXTRACT_MODES)}, not {extract!r}")
    return AskOptions(prompt=prompt, stream=stream, extract="off" if no_extract else extract)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _report(result, verbose: bool) -> None:
    """Warnings about the answer, and with --verbose what went into the prompt."""
    answer = result.answer
    if answer is not None and answer.status == "length":
        typer.echo("kvchat: warning: the answer was cut off at the token limit (--answer-tokens)", err=True)
    if not verbose:
        return
    for section in result.prompt.sections:
        count = f" ({section.items} items)" if section.items else ""
        typer.echo(f"kvchat: prompt {section.name}: {section.tokens} tokens{count}", err=True)
    usage = "reported by the server" if result.usage_reported else "counted with tiktoken"
    typer.echo(
        f"kvchat: usage: {result.prompt_tokens} prompt + {result.completion_tokens} answer tokens ({usage})",
        err=True,
    )
    for key, what in result.facts.items():
        typer.echo(f"kvchat: fact {key}: {what}", err=True)
    for note in result.notes:
        typer.echo(f"kvchat: {note}", err=True)


def result_json(result) -> dict:
    answer = result.answer
    return {
        "session": result.session.name,
        "question_id": result.question.id,
        "answer_id": answer.id if answer else None,
        "answer": answer.content if answer else None,
        "status": answer.status if answer else "unanswered",
        "model": answer.model if answer else None,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "reported_by_server": result.usage_reported,
        },
        "memories": [
            {"kind": item.kind, "id": item.id, "ref": item.ref} for item in result.prompt.memories
        ],
        "facts": result.facts,
    }


def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question; - (or a pipe) reads it from standard input.")] = None,
    session: SessionOption = DEFAULT_SESSION,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh session (named after the time).")] = False,
    model: ModelOption = DEFAULT_MODEL,
    system: SystemOption = None,
    memory_tokens: MemoryTokensOption = budgets.MEMORY_TOKENS,
    recall_tokens: RecallTokensOption = budgets.RECALL_TOKENS,
    answer_tokens: AnswerTokensOption = budgets.ANSWER_TOKENS,
    context_tokens: ContextTokensOption = None,
    no_stream: NoStreamOption = False,
    json_output: JsonOption = False,
    extract: ExtractOption = "model",
    no_extract: NoExtractOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Ask one question in a session; the answer streams to the terminal."""
    text = read_text_argument(question, "question")
    options = _ask_options(
        prompt_options(model, system, memory_tokens, recall_tokens, answer_tokens, context_tokens),
        stream=not no_stream, extract=extract, no_extract=no_extract,
    )
    with open_store() as store:
        name = store.fresh_session_name() if new else session
        conversation = make_conversation(store)
        result = conversation.ask(name, text, options, on_text=None if json_output else _write)
    if json_output:
        print_json(result_json(result))
    elif result.answer is not None and not result.answer.content.endswith("\n"):
        _write("\n")
    _report(result, verbose)
    if result.answer is not None and result.answer.status == "interrupted":
        raise CliError(f"the answer is incomplete: {result.answer.error} (the partial answer is kept)")


EXIT_WORDS = {"exit", "quit", "/exit", "/quit", "退出"}


def chat(
    session: SessionOption = DEFAULT_SESSION,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh session (named after the time).")] = False,
    model: ModelOption = DEFAULT_MODEL,
    system: SystemOption = None,
    memory_tokens: MemoryTokensOption = budgets.MEMORY_TOKENS,
    recall_tokens: RecallTokensOption = budgets.RECALL_TOKENS,
    answer_tokens: AnswerTokensOption = budgets.ANSWER_TOKENS,
    context_tokens: ContextTokensOption = None,
    no_stream: NoStreamOption = False,
    extract: ExtractOption = "model",
    no_extract: NoExtractOption = False,
    verbose: VerboseOption = False,
) -> None:
    """An interactive dialog in a session. Type exit or quit (or press Ctrl-D) to end it."""
    from ..conversation import AskFailed

    options = _ask_options(
        prompt_options(model, system, memory_tokens, recall_tokens, answer_tokens, context_tokens),
        stream=not no_stream, extract=extract, no_extract=no_extract,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    with open_store() as store:
        name = store.fresh_session_name() if new else session
        conversation = make_conversation(store)
        typer.echo(
            f"kvchat chat: session {name!r}, model {model}. Type exit or quit (or Ctrl-D) to end.",
            err=True,
        )
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                typer.echo("", err=True)
                continue
            if line.strip().lower() in EXIT_WORDS:
                break
            if not line.strip():
                continue
            try:
                result = conversation.ask(name, line, options, on_text=_write)
            except AskFailed as exc:
                typer.echo(f"kvchat: error: {exc} (your question is kept)", err=True)
                continue
            except KeyboardInterrupt:
                typer.echo("\nkvchat: answer interrupted (the partial answer is kept)", err=True)
                continue
            if not result.answer.content.endswith("\n"):
                _write("\n")
            _report(result, verbose)
        if store.session(name) is None:
            typer.echo("Nothing was asked; no session was created.", err=True)
        else:
            typer.echo(f"Conversation saved: session {name!r} in {store.location}", err=True)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("chat")(chat)

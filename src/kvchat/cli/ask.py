"""`kvchat ask`: one question to the model, with memory; the options and
rendering helpers it shares with `kvchat chat` (chat.py)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    setting_flags,
    CliError,
    JsonOption,
    ModelOption,
    SessionOption,
    counted,
    new_session_to_use,
    open_store,
    print_json,
    read_text_argument,
    session_to_use,
)
from .connection import EndpointOption, conversation as make_conversation
from .render import AnswerView, PlainOption
from .terminal_text import safe_text

# Every option that is also a setting defaults to None ("not given"), so the
# session's own setting, the environment and the config file can apply (see
# kvchat.config for the order).
SystemOption = Annotated[
    Optional[str], typer.Option("--system", help="System role text for this call, instead of the role.")
]
RoleOption = Annotated[
    Optional[str], typer.Option("--role", "-r", help="Named role (see `kvchat roles list`); default: code.")
]
MemoryOption = Annotated[
    Optional[str],
    typer.Option(
        "--memory",
        help="Recent-turn strategy: token (newest turns within --memory-tokens; the default), "
        "window (the last --window turns), or summary (token, plus a rolling summary of older turns).",
    ),
]
WindowOption = Annotated[
    Optional[int], typer.Option("--window", min=1, help="Turns kept by the window strategy (default 10).")
]
MemoryTokensOption = Annotated[
    Optional[int], typer.Option("--memory-tokens", min=0, help="Token budget for the recent turns (default 4000).")
]
SummaryTokensOption = Annotated[
    Optional[int], typer.Option("--summary-tokens", min=16, help="Largest size of the rolling summary (default 400).")
]
RecallTokensOption = Annotated[
    Optional[int], typer.Option("--recall-tokens", min=0, help="Token budget for recalled facts and older turns (default 1000).")
]
FactsOption = Annotated[
    Optional[bool], typer.Option("--facts/--no-facts", help="Put matching key/value facts into the prompt (default: on).")
]
VectorOption = Annotated[
    Optional[bool],
    typer.Option("--vector/--no-vector", help="Also recall by embedding similarity, through the server's /v1/embeddings (default: off)."),
]
EmbeddingModelOption = Annotated[
    Optional[str], typer.Option("--embedding-model", help="Model for --vector (default text-embedding-3-small).")
]
ContextTokensOption = Annotated[
    Optional[int],
    typer.Option("--context-tokens", min=256, help="The model's context window, for models kvchat does not know."),
]
AnswerTokensOption = Annotated[
    Optional[int], typer.Option("--answer-tokens", min=16, help="Most tokens the answer may use (default 2048).")
]
ExtractOption = Annotated[
    Optional[str],
    typer.Option("--extract", help="How facts are learned after each answer: model (rules plus a model call; the default), rules, or off."),
]
NoExtractOption = Annotated[bool, typer.Option("--no-extract", help="Learn no facts from this exchange.")]
NoStreamOption = Annotated[bool, typer.Option("--no-stream", help="Wait for the whole answer.")]
ShowPromptOption = Annotated[
    bool, typer.Option("--show-prompt", help="Show the prompt, section by section with token counts, before the answer (on stderr).")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Say what went into the prompt and what was learned.")]
SaveCodeOption = Annotated[
    Optional[Path],
    typer.Option(
        "--save-code", metavar="DIR",
        help="Write each code block of the answer to a file in DIR, named by the block's info string or language.",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Let --save-code overwrite existing files.")]


def resolve_settings(store, flags: dict, *, new: bool = False):
    """The session to use, the effective settings for this call (flags, then
    the session's own settings, the environment, the config file), and the
    flags a new session should keep (see remember_settings)."""
    from .. import config

    name = store.fresh_session_name() if new else config.resolve(flags, None).session
    session = store.session(name)
    if session is not None and "_unreadable" in session.settings:
        raise CliError(
            f"the settings of session {name!r} cannot be read (the database was changed by hand?); "
            f"`kvchat sessions set {name} --reset` clears them"
        )
    settings = config.resolve(flags, session.settings if session else None, name)
    keep = {}
    if session is None:
        keep = {key: value for key, value in flags.items()
                if value is not None and key in config.SESSION_SETTINGS}
    return name, settings, keep


def remember_settings(store, name: str, keep: dict, result) -> None:
    """A new session keeps the settings it was started with, once its first
    exchange has an answer: a mistyped model or role is not made permanent."""
    if keep and result.answer is not None:
        store.update_settings(name, keep)


def prompt_options(store, settings, system: str | None):
    from ..prompt import PromptOptions, fits_a_question
    from ..roles import RoleError, role_text

    try:
        role = system or role_text(store, settings.role)
    except RoleError as exc:
        source = settings.source("role")
        if source.startswith("session "):
            import ast
            import shlex

            name = shlex.quote(ast.literal_eval(source.split(" ", 1)[1]))  # the source reads "session 'NAME'"
            raise RoleError(f"{exc}; {source} uses it: `kvchat sessions set {name} --role NAME` "
                            "(or --unset role) changes that") from None
        raise
    options = PromptOptions(
        model=settings.model, role=role,
        memory=settings.memory, window=settings.window, memory_tokens=settings.memory_tokens,
        summary_tokens=settings.summary_tokens, recall_tokens=settings.recall_tokens,
        answer_tokens=settings.answer_tokens, context_tokens=settings.context_tokens, facts=settings.facts,
    )
    if not fits_a_question(options):
        # A setting's mistake, said before any question is stored as unanswered.
        from .. import tokens
        from ..prompt import DEFAULT_ROLE

        context = (f"context_tokens ({settings.source('context_tokens')})" if settings.context_tokens
                   else f"the context of {options.model}")
        answer = f"answer_tokens ({options.answer_tokens}, {settings.source('answer_tokens')})"
        role_tokens = tokens.count_tokens(options.role or DEFAULT_ROLE, options.model)
        if role_tokens > options.answer_tokens:  # the role is what takes the room: say so
            raise CliError(f"the role is {role_tokens} tokens: with {answer} it leaves no room for a question "
                           f"in the {options.context_window} tokens of {context}")
        raise CliError(f"{answer} leaves no room for a question in the {options.context_window} tokens of {context}")
    return options


def ask_options(store, settings, *, system: str | None, stream: bool, no_extract: bool):
    from ..conversation import AskOptions

    return AskOptions(
        prompt=prompt_options(store, settings, system), stream=stream,
        extract="off" if no_extract else settings.extract,
        vector=settings.vector, embedding_model=settings.embedding_model,
    )


def show_prompt(prompt, *, err: bool = True) -> None:
    """The prompt as the model gets it, section by section with token counts."""
    from rich.rule import Rule

    from .common import console

    titles = [
        (f"{section.name} ({section.tokens} tokens"
         f"{', ' + counted(section.items, 'turn' if section.name == 'summary' else 'item') if section.items else ''})",
         section.text)
        for section in prompt.sections if section.tokens
    ]
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        # Piped: the text as it is, not wrapped and padded to a terminal's width.
        for title, text in titles:
            stream.write(f"{title}:\n{text}\n\n")
        stream.write(f"total {prompt.tokens} tokens\n")
        return
    out = console(stderr=err)
    for title, text in titles:
        out.print(Rule(title, align="left", style="dim"))
        out.print(safe_text(text))
    out.print(Rule(f"total {prompt.tokens} tokens", align="left", style="dim"))


def prompt_shower(view: AnswerView | None):
    """An on_prompt callback for --show-prompt that pauses the answer's view
    (its spinner) while the prompt prints."""
    if view is None:
        return show_prompt

    def show(prompt) -> None:
        with view.paused():
            show_prompt(prompt)

    return show


def incomplete_message(result) -> str | None:
    """What to say when the answer broke off (the stream was cut), else None."""
    answer = result.answer
    if answer is None or answer.status != "interrupted":
        return None
    return f"the answer is incomplete: {answer.error} (the partial answer is kept)"


def report_result(result, verbose: bool) -> None:
    """Warnings about the answer, and with --verbose what went into the prompt."""
    answer = result.answer
    if answer is not None and answer.status == "length":
        typer.echo("kvchat: warning: the answer was cut off at the token limit (--answer-tokens)", err=True)
    for warning in result.warnings:
        typer.echo(f"kvchat: warning: {warning}", err=True)
    if not verbose:
        return
    for section in result.prompt.sections:
        if not section.tokens:
            continue
        count = f" ({counted(section.items, 'item')})" if section.items else ""
        typer.echo(f"kvchat: prompt {section.name}: {counted(section.tokens, 'token')}{count}", err=True)
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
        "error": answer.error if answer else None,  # why an answer broke off
    }


def failed_json(session: str, failed) -> dict:
    """What `ask --json` says of a question the model did not answer: the
    keys of result_json, with what is not known null, and the error."""
    return {
        "session": session, "question_id": failed.question.id, "answer_id": None, "answer": None,
        "status": "unanswered", "model": None, "usage": None, "memories": None, "facts": None,
        "error": str(failed),
    }


def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question; - (or a pipe) reads it from standard input.")] = None,
    session: SessionOption = None,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh session: named --session NAME, else after the time.")] = False,
    model: ModelOption = None,
    endpoint: EndpointOption = None,
    role: RoleOption = None,
    system: SystemOption = None,
    memory: MemoryOption = None,
    window: WindowOption = None,
    memory_tokens: MemoryTokensOption = None,
    summary_tokens: SummaryTokensOption = None,
    recall_tokens: RecallTokensOption = None,
    facts: FactsOption = None,
    vector: VectorOption = None,
    embedding_model: EmbeddingModelOption = None,
    answer_tokens: AnswerTokensOption = None,
    context_tokens: ContextTokensOption = None,
    no_stream: NoStreamOption = False,
    json_output: JsonOption = False,
    extract: ExtractOption = None,
    no_extract: NoExtractOption = False,
    show_prompt_first: ShowPromptOption = False,
    verbose: VerboseOption = False,
    save_code: SaveCodeOption = None,
    force: ForceOption = False,
    plain: PlainOption = False,
) -> None:
    """Ask one question in a session; the answer streams to the terminal
    (as Markdown; raw text when piped or with --plain).

    Settings given with --new (or for a session that does not exist yet) stay
    with the session; for an existing session they apply to this call only.
    """
    from ..conversation import AskFailed

    text = read_text_argument(question, "question")
    flags = setting_flags(locals())
    with open_store() as store:
        if session is not None:
            flags["session"] = new_session_to_use(store, session) if new else session_to_use(store, session)
        name, settings, keep = resolve_settings(store, flags, new=new and session is None)
        options = ask_options(store, settings, system=system, stream=not no_stream, no_extract=no_extract)
        conversation = make_conversation(store, settings)
        with nullcontext() if json_output else AnswerView(plain=plain) as view:
            try:
                result = conversation.ask(
                    name, text, options, on_text=view.write if view else None,
                    on_prompt=prompt_shower(view) if show_prompt_first else None,
                )
            except AskFailed as failed:
                if json_output:  # a script still learns what was stored, then the error on stderr
                    print_json(failed_json(name, failed))
                raise
        remember_settings(store, name, keep, result)
    saved, save_failed = [], None
    if save_code is not None and result.answer is not None:
        from ..codeblocks import CodeBlockError
        from .code import save_answer

        try:
            saved = save_answer(result.answer, save_code, force=force, quiet=json_output)
        except CodeBlockError as exc:
            save_failed = exc  # reported after the JSON, which scripts still need
    if json_output:
        saving = {"saved": [str(path) for path in saved], "save_error": str(save_failed) if save_failed else None}
        print_json(result_json(result) | (saving if save_code is not None else {}))
    report_result(result, verbose)
    if save_failed:
        raise save_failed
    if incomplete_message(result):
        raise CliError(incomplete_message(result))


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)

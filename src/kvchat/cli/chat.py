"""`kvchat chat`: an interactive dialog in a session."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from .ask import (
    AnswerTokensOption,
    ContextTokensOption,
    EmbeddingModelOption,
    ExtractOption,
    FactsOption,
    ForceOption,
    MemoryOption,
    MemoryTokensOption,
    NoExtractOption,
    NoStreamOption,
    RecallTokensOption,
    RoleOption,
    SaveCodeOption,
    ShowPromptOption,
    SummaryTokensOption,
    SystemOption,
    VectorOption,
    VerboseOption,
    WindowOption,
    incomplete_message,
    report_result,
    write_answer,
    ask_options,
    remember_settings,
    resolve_settings,
    show_prompt,
)
from .common import ModelOption, SessionOption, open_store, setting_flags
from .connection import conversation as make_conversation

EXIT_WORDS = {"exit", "quit", "/exit", "/quit", "退出"}
# A second Ctrl-C within this many seconds of the first ends `kvchat chat` at
# once, as in other REPLs; one alone stops the answer or clears the line.
DOUBLE_CTRL_C_SECONDS = 1.5


def chat(
    session: SessionOption = None,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh session (named after the time).")] = False,
    model: ModelOption = None,
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
    extract: ExtractOption = None,
    no_extract: NoExtractOption = False,
    show_prompt_first: ShowPromptOption = False,
    verbose: VerboseOption = False,
    save_code: SaveCodeOption = None,
    force: ForceOption = False,
) -> None:
    """An interactive dialog in a session. Type exit or quit (or press Ctrl-D) to end it."""
    from ..conversation import AskFailed

    flags = setting_flags(locals())
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    with open_store() as store:
        name, settings, keep = resolve_settings(store, flags, new=new)
        options = ask_options(store, settings, system=system, stream=not no_stream, no_extract=no_extract)
        conversation = make_conversation(store, settings)
        typer.echo(
            f"kvchat chat: session {name!r}, model {settings.model}, memory {settings.memory}. "
            "Type exit or quit (or Ctrl-D) to end.",
            err=True,
        )
        last_ctrl_c = float("-inf")  # time.monotonic() of the last Ctrl-C

        def ctrl_c(note: str) -> None:
            """One Ctrl-C says `note`; a second one soon after leaves with status 130."""
            nonlocal last_ctrl_c
            now = time.monotonic()
            if now - last_ctrl_c < DOUBLE_CTRL_C_SECONDS:
                where = "" if store.session(name) is None else f"; session {name!r} is saved in {store.location}"
                typer.echo(f"\nkvchat: interrupted{where}", err=True)
                raise typer.Exit(130)
            last_ctrl_c = now
            typer.echo(f"\n{note}", err=True)

        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                ctrl_c("(Ctrl-C again to leave; or type exit, or press Ctrl-D)")
                continue
            last_ctrl_c = float("-inf")  # a line was typed since: the next Ctrl-C is a first one
            if line.strip().lower() in EXIT_WORDS:
                break
            if not line.strip():
                continue
            try:
                result = conversation.ask(
                    name, line, options, on_text=write_answer,
                    on_prompt=show_prompt if show_prompt_first else None,
                )
            except AskFailed as exc:
                typer.echo(f"kvchat: error: {exc} (your question is kept)", err=True)
                continue
            except KeyboardInterrupt:
                ctrl_c("kvchat: answer interrupted (the partial answer is kept; Ctrl-C again to leave)")
                continue
            remember_settings(store, name, keep, result)
            keep = {}
            if not result.answer.content.endswith("\n"):
                write_answer("\n")
            report_result(result, verbose)
            if incomplete_message(result):
                typer.echo(f"kvchat: error: {incomplete_message(result)}", err=True)
            if save_code is not None:
                from ..codeblocks import CodeBlockError
                from .code import save_answer

                try:
                    save_answer(result.answer, save_code, force=force, quiet=False)
                except CodeBlockError as exc:
                    typer.echo(f"kvchat: error: {exc}", err=True)
        if store.session(name) is None:
            typer.echo("Nothing was asked; no session was created.", err=True)
        else:
            typer.echo(f"Conversation saved: session {name!r} in {store.location}", err=True)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)

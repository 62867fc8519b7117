"""`kvchat chat`: an interactive dialog in a session, with slash commands
(slash.py) and, at a terminal, line editing and history (repl.py)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

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
    ask_options,
    prompt_shower,
    remember_settings,
    resolve_settings,
)
from .common import (
    CliError,
    ModelOption,
    SessionOption,
    new_session_to_use,
    open_store,
    session_to_use,
    setting_flags,
)
from .connection import EndpointOption, conversation as make_conversation, warn_if_context_unknown
from .render import AnswerView, PlainOption

if TYPE_CHECKING:
    from ..config import Settings
    from ..conversation import AskOptions, Conversation
    from ..store import Store

EXIT_WORDS = {"exit", "quit", "退出"}
WAIT_QUIETLY_SECONDS = 0.5  # for the last answer's fact extraction, before saying so
# A second Ctrl-C within this many seconds of the first ends `kvchat chat` at
# once, as in other REPLs; one alone stops the answer or clears the line.
DOUBLE_CTRL_C_SECONDS = 1.5
_UNCHANGED: Any = object()


@dataclass
class ChatState:
    """The session this chat is in and the settings its next question uses.

    `flags` are this chat's own settings: the command line's, then what
    /model, /role and /session changed. They win over the session's stored
    settings for as long as the chat lasts, as flags do for one `ask`; a
    session that does not exist yet keeps them once it has its first answer
    (`keep`, see remember_settings)."""

    store: Store
    flags: dict
    system: str | None
    stream: bool
    no_extract: bool
    conversation: Conversation | None = None
    name: str = ""
    settings: Settings | None = None
    options: AskOptions | None = None
    keep: dict = field(default_factory=dict)
    asked_in: list[str] = field(default_factory=list)  # the sessions this chat asked in, in order
    learning: Learning | None = None  # the last answer's fact extraction, while it runs

    def change(self, *, new: bool = False, system: str | None = _UNCHANGED, **flags) -> None:
        """Move to another session or settings; when they cannot be used (an
        unknown role, a bad value) nothing changes and the error is raised."""
        before = dict(self.flags), self.system
        self.flags.update(flags)
        if system is not _UNCHANGED:
            self.system = system
        try:
            name, settings, keep = resolve_settings(self.store, self.flags, new=new)
            options = ask_options(self.store, settings, system=self.system, stream=self.stream,
                                  no_extract=self.no_extract)
            conversation = self.conversation
            if conversation is None or _server(settings) != _server(self.settings):
                # Another session may keep another endpoint: its questions,
                # and its key, must go to that server and no other.
                conversation = make_conversation(self.store, settings)
            elif settings.model != self.settings.model:
                warn_if_context_unknown(settings.model, settings.context_tokens)
        except Exception:
            self.flags, self.system = before
            raise
        self.flags["session"] = name  # later changes stay in this session, a --new one included
        self.name, self.settings, self.options, self.keep = name, settings, options, keep
        self.conversation = conversation


def _server(settings: Settings | None) -> tuple:
    """What decides where questions go and with which key."""
    return None if settings is None else (settings.endpoint, settings.base_url, settings.timeout)


def chat(
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
    extract: ExtractOption = None,
    no_extract: NoExtractOption = False,
    show_prompt_first: ShowPromptOption = False,
    verbose: VerboseOption = False,
    save_code: SaveCodeOption = None,
    force: ForceOption = False,
    plain: PlainOption = False,
) -> None:
    """An interactive dialog in a session. Type /help for the slash commands;
    exit, /exit or Ctrl-D ends it.

    At a terminal: line editing, history (up arrow; kept across chats), Tab
    completes commands, Enter sends, Alt-Enter starts a new line. Anywhere, a
    line of three double quotes starts and ends a message of several lines.
    /model and /role apply to the rest of this chat; a new session keeps them.
    """
    from . import repl, slash

    state = ChatState(
        open_store(), setting_flags(locals()), system, stream=not no_stream, no_extract=no_extract,
    )
    with state.store as store:
        if session is not None:
            state.flags["session"] = new_session_to_use(store, session) if new else session_to_use(store, session)
        state.change(new=new and session is None)
        if repl.can_prompt():
            read_line = repl.terminal_reader(slash.COMMANDS, state.conversation.secrets)
        else:
            read_line = repl.plain_reader()
        typer.echo(
            f"kvchat chat: session {state.name!r}, model {state.settings.model}, memory {state.settings.memory}. "
            "/help lists the commands; exit, /exit or Ctrl-D ends.",
            err=True,
        )
        last_ctrl_c = float("-inf")  # time.monotonic() of the last Ctrl-C

        def leave() -> None:
            """Leave at once, with status 130. A fact extraction still running
            is abandoned, and the process ends without closing the store under
            it: its unfinished write rolls back, as at any crash."""
            learning = state.learning
            if learning is not None and learning.running:
                saved = state.name in state.asked_in  # the store is the thread's now
                typer.echo(f"\nkvchat: interrupted{where_saved(saved)}", err=True)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(130)
            _finish_learning(state)  # done: say what it learned, or how it failed
            typer.echo(f"\nkvchat: interrupted{where_saved(store.session(state.name) is not None)}", err=True)
            raise typer.Exit(130)

        def where_saved(saved: bool) -> str:
            return f"; session {state.name!r} is saved in {store.location}" if saved else ""

        def ctrl_c(note: str) -> None:
            """One Ctrl-C says `note`; a second one soon after leaves with status 130."""
            nonlocal last_ctrl_c
            now = time.monotonic()
            if now - last_ctrl_c < DOUBLE_CTRL_C_SECONDS:
                leave()
            last_ctrl_c = now
            typer.echo(f"\n{note}", err=True)

        while True:
            try:
                message = repl.read_message(read_line)
            except EOFError:
                break
            except KeyboardInterrupt:
                ctrl_c("(Ctrl-C again to leave; or type exit, or press Ctrl-D)")
                continue
            except CliError as exc:  # a line that cannot be read: say so and read on
                _report(exc)
                continue
            last_ctrl_c = float("-inf")  # a line was typed since: the next Ctrl-C is a first one
            try:
                _finish_learning(state)  # whatever comes next may need the facts it learns
            except KeyboardInterrupt:
                ctrl_c("kvchat: still learning facts from the last answer; that line was not sent "
                       "(Ctrl-C again to leave)")
                continue
            text = message.text
            if not message.fenced and text.strip().lower() in EXIT_WORDS:
                break
            if not text.strip():
                continue
            command = None if message.fenced else slash.parse(text)
            try:
                if command is not None:
                    slash.run(state, *command)
                else:
                    _ask(state, slash.question_text(text) if not message.fenced else text,
                         show_prompt_first=show_prompt_first, verbose=verbose, save_code=save_code, force=force,
                         plain=plain)
            except slash.EndChat:
                break
            except KeyboardInterrupt:
                if command is None:
                    ctrl_c("kvchat: answer interrupted (the partial answer is kept; Ctrl-C again to leave)")
                else:
                    ctrl_c("kvchat: command interrupted (Ctrl-C again to leave)")
            except BrokenPipeError:
                raise  # no one reads the answers any more: kvchat's usual quiet exit
            except Exception as exc:
                _report(exc)
        try:
            _finish_learning(state)
        except KeyboardInterrupt:
            leave()
        saved = [name for name in dict.fromkeys([*state.asked_in, state.name]) if store.session(name) is not None]
        if not saved:
            typer.echo("Nothing was asked; no session was created.", err=True)
        else:
            names = ", ".join(repr(name) for name in saved)
            typer.echo(f"Conversation saved: {'session' if len(saved) == 1 else 'sessions'} {names} in "
                       f"{store.location}", err=True)


def _ask(state: ChatState, text: str, *, show_prompt_first: bool, verbose: bool, save_code, force: bool,
         plain: bool) -> None:
    from ..conversation import AskFailed

    if "\x00" in text:  # as `ask` refuses it: PostgreSQL cannot store it, and no model needs it
        raise CliError("the question contains a NUL character; it was not asked")
    state.asked_in.append(state.name)
    result = None
    try:
        try:
            with AnswerView(plain=plain) as view:
                result = state.conversation.ask(
                    state.name, text, state.options, on_text=view.write,
                    on_prompt=prompt_shower(view) if show_prompt_first else None, learn_later=True,
                )
        except AskFailed as exc:
            typer.echo(f"kvchat: error: {exc} (your question is kept)", err=True)
            return
        remember_settings(state.store, state.name, state.keep, result)
        state.keep = {}
        report_result(result, verbose)
        if incomplete_message(result):
            typer.echo(f"kvchat: error: {incomplete_message(result)}", err=True)
        if save_code is not None:
            from .code import save_answer

            save_answer(result.answer, save_code, force=force, quiet=False)
    finally:
        # A stored answer is learned from whatever happens after it: a code
        # block that cannot be saved, a Ctrl-C held back while it was drawn.
        if result is not None and result.learning is not None:
            state.learning = Learning(result, verbose)
            state.learning.start()  # after: a Ctrl-C here leaves no thread untracked


class Learning:
    """The model's fact extraction for an answer, run in a thread while the
    user reads the answer and types the next message: with a real model it
    is a second request of a second or more, which the next prompt need not
    wait for. It is joined before anything else the chat does (the next
    question may need what it learns), and it is the only thread using the
    store and the model client until then. A chat left with a double Ctrl-C,
    or with Ctrl-C while it waits for it at the end, does not wait for it:
    an unfinished write of facts is rolled back."""

    def __init__(self, result, verbose: bool):
        import threading

        self.result = result
        self.verbose = verbose
        self.known = (dict(result.facts), len(result.notes))  # what report_result has shown
        self.failure: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="kvchat fact extraction", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result.learning()
        except Exception as exc:  # reported by finish, in the chat's thread
            self.failure = exc

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def finish(self) -> None:
        """Wait for it; say what it learned (with --verbose) or how it failed."""
        if self.thread.ident is None:
            return  # never started (Ctrl-C came first): nothing was learned
        self.thread.join(WAIT_QUIETLY_SECONDS)
        if self.running:
            typer.echo("kvchat: still learning facts from the last answer...", err=True)
            self.thread.join()
        if self.failure is not None:
            from .errors import one_line_error

            if os.environ.get("KVCHAT_DEBUG"):
                raise self.failure
            line = one_line_error(self.failure)[0].replace("kvchat: error: ", "", 1)
            typer.echo(f"kvchat: warning: no facts were learned from the last answer: {line}", err=True)
        if not self.verbose:
            return
        facts, notes = self.known
        for key, what in self.result.facts.items():
            if facts.get(key) != what:
                typer.echo(f"kvchat: fact {key}: {what}", err=True)
        for note in self.result.notes[notes:]:
            typer.echo(f"kvchat: {note}", err=True)


def _finish_learning(state: ChatState) -> None:
    if state.learning is not None:
        state.learning.finish()
        state.learning = None


def _report(exc: Exception) -> None:
    """A failed command or question in one line, as kvchat reports any
    failure, except that the chat goes on."""
    from .errors import one_line_error

    if os.environ.get("KVCHAT_DEBUG"):
        raise exc
    typer.echo(one_line_error(exc)[0], err=True)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)

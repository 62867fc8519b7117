"""The slash commands of `kvchat chat`: /help, /new, /session, /model, /role,
/facts, /remember, /forget, /recall, /history, /tokens, /exit.

A command is one line whose first word is a slash and a name (`/facts`, not
`/etc/hosts`, which is a question about a path); `//` at the start sends the
rest as a question beginning with `/`. The listings reuse the one-shot
commands (`kvchat facts`, `recall`, `history`), so they look and behave the
same. Whatever goes wrong is one line on stderr, and the chat goes on.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from .common import CliError, counted

if TYPE_CHECKING:
    from .chat import ChatState

_COMMAND = re.compile(r"/([A-Za-z][\w-]*)(?:\s+(.*))?", re.DOTALL)
HISTORY_TURNS = 20


class UsageError(CliError):
    """A slash command given the wrong arguments."""


class EndChat(Exception):
    """/exit: the chat ends as at Ctrl-D."""


@dataclass(frozen=True)
class SlashCommand:
    usage: str  # as /help shows it: "/session NAME"
    summary: str
    run: Callable[[ChatState, str], None]  # the state and the text after the name

    @property
    def name(self) -> str:
        return self.usage.split()[0]


def parse(line: str) -> tuple[str, str] | None:
    """(name, arguments) when the line is a slash command, else None."""
    if "\n" in line.strip():
        return None  # a message of several lines is a question, whatever it starts with
    match = _COMMAND.fullmatch(line.strip())
    if match is None:
        return None
    return "/" + match[1].lower(), (match[2] or "").strip()


def question_text(line: str) -> str:
    """What a line that is not a command sends: `//x` sends `/x`."""
    return line.lstrip()[1:] if line.lstrip().startswith("//") else line


def run(state: ChatState, name: str, arguments: str) -> None:
    """Carry out one command; EndChat for /exit, one-line errors as
    exceptions (chat reports them and goes on)."""
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"unknown command {name} (/help lists them; start with // to send a line beginning with /)")
    command.run(state, arguments)


def _no_arguments(name: str, arguments: str) -> None:
    if arguments:
        raise UsageError(f"{name} takes no arguments")


def _one_word(usage: str, arguments: str) -> str:
    if not arguments or len(arguments.split()) != 1:
        raise UsageError(f"usage: {usage}")
    return arguments


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _help(state: ChatState, arguments: str) -> None:
    _no_arguments("/help", arguments)
    width = max(len(command.usage) for command in COMMANDS.values())
    lines = [f"  {command.usage:<{width}}  {command.summary}" for command in _UNIQUE]
    lines += [
        "",
        'Enter sends; Alt-Enter (or Esc, Enter) starts a new line; a line of """ starts and ends a block.',
        "Start a line with // to send it as a question beginning with /. Ctrl-C stops an answer; "
        "Ctrl-D, exit or /exit ends.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _new(state: ChatState, arguments: str) -> None:
    _no_arguments("/new", arguments)
    state.change(new=True)
    _say(f"New session {state.name!r}: it is stored with your first question.")


def _session(state: ChatState, arguments: str) -> None:
    if not arguments:
        _say(f"Session {state.name!r} (`/session NAME` switches).")
        return
    from ..store import check_session_name
    from .common import session_to_use

    name = session_to_use(state.store, check_session_name(arguments))
    state.change(session=name)
    stored = state.store.session(name)
    if stored is None:
        _say(f"New session {name!r}: it is stored with your first question.")
    else:
        _say(f"Session {name!r}: {stored.turn_count} turns, model {state.settings.model}.")


def _keeping(state: ChatState, setting: str, value: str) -> str:
    """What happens to a setting changed in the chat, as `ask` treats flags:
    a new session keeps it once it has an answer, an existing one does not."""
    if state.store.session(state.name) is None:
        return f"session {state.name!r} keeps it once it has its first answer"
    return (f"for this chat only; `kvchat sessions set {shlex.quote(state.name)} --{setting} {shlex.quote(value)}` "
            "keeps it with the session")


def _model(state: ChatState, arguments: str) -> None:
    if not arguments:
        _say(f"Model {state.settings.model} (from {state.settings.source('model')}).")
        return
    state.change(model=_one_word("/model NAME", arguments))
    _say(f"Model {state.settings.model} for the next questions ({_keeping(state, 'model', state.settings.model)}).")


def _role(state: ChatState, arguments: str) -> None:
    if not arguments:
        role = "your --system text" if state.system else f"{state.settings.role} (from {state.settings.source('role')})"
        _say(f"Role {role}.")
        return
    state.change(role=_one_word("/role NAME", arguments), system=None)
    _say(f"Role {state.settings.role} for the next questions ({_keeping(state, 'role', state.settings.role)}).")


def _facts(state: ChatState, arguments: str) -> None:
    from . import facts

    if arguments:
        facts.search(arguments, json_output=False)
    else:
        facts.show_facts(state.store.facts(), json_output=False)


def _remember(state: ChatState, arguments: str) -> None:
    from . import facts

    words = arguments.split(maxsplit=1)
    if len(words) != 2:
        raise UsageError("usage: /remember KEY VALUE")
    facts.set_fact(*words)


def _forget(state: ChatState, arguments: str) -> None:
    from . import facts

    facts.forget(_one_word("/forget KEY", arguments))


def _recall(state: ChatState, arguments: str) -> None:
    from .. import budgets
    from . import recall

    if not arguments:
        raise UsageError("usage: /recall QUERY")
    # The chat's own store, and its conversation's vector recall: an
    # embeddings endpoint that failed is not tried (and reported) again.
    prompt = recall.prompt_for(
        state.store, arguments, state.name, state.flags, state.system, budgets.RECALL_LIMIT,
        lambda store, settings, options: state.conversation.semantic_recall(options), exact=True,
    )
    recall.show(prompt)


def _history(state: ChatState, arguments: str) -> None:
    from . import sessions

    if arguments and not (arguments.isdecimal() and int(arguments) > 0):
        raise UsageError("usage: /history [N], N a number of turns")
    if state.store.session(state.name) is None:
        _say(f"Nothing asked in session {state.name!r} yet.")
        return
    sessions.history(session=state.name, limit=int(arguments or HISTORY_TURNS), json_output=False)


def _tokens(state: ChatState, arguments: str) -> None:
    from .. import pricing, tokens
    from ..prompt import build_prompt

    options = state.options.prompt
    session = state.store.session(state.name)
    prompt = build_prompt(
        state.store, question=arguments, question_tokens=tokens.count_tokens(arguments, options.model),
        session_id=session.id if session else None, before_id=None, options=options,
        semantic=state.conversation.semantic_recall(state.options),
    )
    for note in prompt.notes:
        _say(f"kvchat: warning: {note}")
    shown = [section for section in prompt.sections if section.tokens]
    width = max(len(section.name) for section in shown)
    lines = [
        f"Next prompt: {prompt.tokens} tokens of {options.model}'s {options.context_window}-token context "
        f"({options.answer_tokens} kept for the answer)"
    ]
    for section in shown:
        what = "turn" if section.name in ("summary", "recent turns") else "item"
        count = f"  ({counted(section.items, what)})" if section.items else ""
        lines.append(f"  {section.name:<{width}}  {section.tokens:>6}{count}")
    if not arguments:
        lines.append("  (without your question and what it recalls: `/tokens QUESTION` counts those too)")
    prompt_cost = pricing.cost(options.model, prompt.tokens, 0)
    if prompt_cost is not None:
        most = pricing.cost(options.model, prompt.tokens, options.answer_tokens)
        lines.append(f"Estimated cost: ${prompt_cost:.6f} for the prompt, at most ${most:.6f} with a whole "
                     f"{options.answer_tokens}-token answer (prices of {pricing.PRICES_CHECKED})")
    sys.stdout.write("\n".join(lines) + "\n")


def _exit(state: ChatState, arguments: str) -> None:
    raise EndChat


_UNIQUE = [
    SlashCommand("/help", "this list", _help),
    SlashCommand("/new", "start a new session, named after the time", _new),
    SlashCommand("/session [NAME]", "switch to session NAME (or #ID, or a unique start of a name); a new name starts one",
                 _session),
    SlashCommand("/model [NAME]", "ask the next questions with model NAME", _model),
    SlashCommand("/role [NAME]", "answer the next questions in role NAME (see `kvchat roles list`)", _role),
    SlashCommand("/facts [WORDS]", "the stored facts, or those matching WORDS", _facts),
    SlashCommand("/remember KEY VALUE", "store a fact, as `kvchat facts set` does", _remember),
    SlashCommand("/forget KEY", "forget a fact, as `kvchat facts forget` does", _forget),
    SlashCommand("/recall QUERY", "the memories a question would bring into the prompt here", _recall),
    SlashCommand("/history [N]", f"the last N turns of this session (default {HISTORY_TURNS})", _history),
    SlashCommand("/tokens [QUESTION]", "what the next prompt costs, section by section", _tokens),
    SlashCommand("/exit", "end the chat (also /quit, exit, Ctrl-D)", _exit),
]
COMMANDS = {command.name: command for command in _UNIQUE} | {"/quit": SlashCommand("/quit", "", _exit)}

"""Reading what the user types in `kvchat chat`.

At a terminal, prompt_toolkit gives line editing, a history kept across chats
(`history_path()`), Tab completion of slash commands and multi-line input:
Enter sends, Alt-Enter (or Esc then Enter) starts a new line, and a bracketed
paste of several lines is one message. Elsewhere (a pipe, a file, a test's
input) plain lines are read, with no prompt shown.

Either way a line holding only `\"\"\"` starts a block that runs up to the next
such line (or the end of the input) and is sent as one message, so a script
can pass a question of several lines too.

prompt_toolkit is imported only here and only for a terminal: it costs tens
of milliseconds that `kvchat --help` and piped chats need not pay.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import typer

from .. import paths
from ..files import write_atomically
from ..redaction import redact
from .common import CliError

PROMPT = "you> "
CONTINUATION = "...> "
BLOCK_FENCE = '"""'
HISTORY_NAME = "chat_history"

ReadLine = Callable[[str], str]  # shows the prompt, returns the text; EOFError, KeyboardInterrupt


@dataclass(frozen=True)
class Message:
    text: str
    fenced: bool = False  # came as a \"\"\" block: always a question, never a command


def history_path() -> Path:
    """What was typed at chat's prompt, in kvchat's data directory (so
    KVCHAT_HOME moves it too), with secrets blanked as in stored turns."""
    return paths.data_dir() / HISTORY_NAME


def typed_questions() -> Counter[str]:
    """The questions chat's history holds, as chat sent them (its entries
    less the slash commands, "/x" for an entry "//x"), with the number of
    entries that typed each."""
    path = history_path()
    if not path.exists():
        return Counter()
    entries, _ = _history_entries(path.read_bytes())
    return Counter(question for _, question in _questions(entries))


def forget_typed(questions: Iterable[str]) -> int:
    """Take out of the chat history every entry that typed one of
    `questions` (the user turns of deleted sessions, whose text must not
    outlive them on disk; see `typed_questions`); returns how many entries
    went.

    The file is prompt_toolkit's, read as prompt_toolkit reads it: bytes
    split after each newline, an entry's lines each after a "+", anything
    else between entries. What stays is written back byte for byte, in one
    step; a line another chat appends meanwhile can be lost."""
    gone = {question.strip() for question in questions}
    path = history_path()
    if not gone or not path.exists():
        return 0
    entries, tail = _history_entries(path.read_bytes())
    drop = {place for place, question in _questions(entries) if question in gone}
    if drop:
        write_atomically(path, b"".join(raw for place, (raw, _) in enumerate(entries) if place not in drop) + tail)
    return len(drop)


def _questions(entries: list[tuple[bytes, str]]) -> Iterator[tuple[int, str]]:
    """The entries that sent a question, and the question, stripped."""
    from .slash import parse, question_text

    for place, (_, text) in enumerate(entries):
        if parse(text) is None:
            yield place, question_text(text).strip()


def _history_entries(data: bytes) -> tuple[list[tuple[bytes, str]], bytes]:
    """The entries of a history file, each one's bytes (with the lines before
    it) and its text, and the bytes after the last one (none, normally)."""
    entries: list[tuple[bytes, str]] = []
    raw: list[bytes] = []
    typed: list[bytes] = []
    for line in _lines(data):
        if line.startswith(b"+"):
            typed.append(line[1:])
        elif typed:
            entries.append((b"".join(raw), b"".join(typed)[:-1].decode("utf-8", errors="replace")))
            raw, typed = [], []
        raw.append(line)
    if typed:
        entries.append((b"".join(raw), b"".join(typed)[:-1].decode("utf-8", errors="replace")))
        raw = []
    return entries, b"".join(raw)


def _lines(data: bytes) -> list[bytes]:
    """`data` split after each newline only, as a file read in binary mode
    is; bytes.splitlines would also split at a carriage return."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def can_prompt() -> bool:
    """prompt_toolkit needs the keyboard and a screen: stdin a terminal, and
    stdout or stderr one (the prompt goes to stderr when stdout is redirected)."""
    return sys.stdin.isatty() and (sys.stdout.isatty() or sys.stderr.isatty())


def read_message(read_line: ReadLine) -> Message:
    """One message: a line, or a \"\"\" block (cut short by the end of input,
    it is sent as it stands; Ctrl-C drops it). A line of the block that
    cannot be read makes the whole block unsendable: it is read to its end
    and refused, so its other lines are not taken for questions."""
    line = read_line(PROMPT)
    if line.strip() != BLOCK_FENCE:
        return Message(line)
    lines: list[str] = []
    unreadable: CliError | None = None
    while True:
        try:
            line = read_line(CONTINUATION)
        except EOFError:
            break
        except CliError as exc:
            unreadable = exc
            continue
        if line.strip() == BLOCK_FENCE:
            break
        lines.append(line)
    if unreadable is not None:
        raise CliError(f"{unreadable} (the whole \"\"\" block was left out)")
    return Message("\n".join(lines), fenced=True)


def plain_reader() -> ReadLine:
    """Lines from a pipe or file: no prompt, since no one is watching. A line
    that is not UTF-8 is refused (Python hands its bad bytes on as lone
    surrogates, which no database can store); a Windows line end (CR LF)
    ends a line as LF does."""

    def read(prompt: str) -> str:
        line = input().removesuffix("\r")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise CliError("that line of standard input is not valid UTF-8; it was not asked") from None
        return line

    return read


def terminal_reader(commands: Iterable[str], secrets: list[str]) -> ReadLine:
    """A prompt_toolkit prompt: line editing, persistent history, Tab
    completion of the slash commands, Alt-Enter for a new line."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.output import create_output
    from prompt_toolkit.styles import Style

    bindings = KeyBindings()

    # prompt_toolkit's own Alt-Enter sends; here Enter sends and Alt-Enter
    # (Esc, Enter on terminals without an Alt key) makes room for another line.
    @bindings.add("escape", "enter")
    def _new_line(event) -> None:
        event.current_buffer.insert_text("\n")

    history = _history(secrets)
    options = dict(
        key_bindings=bindings,
        output=create_output(always_prefer_tty=True),
        # The user's colour in `kvchat history`. A coloured space is drawn,
        # where a plain one would be skipped with a cursor move, so "you> "
        # reaches the screen, and the tests that wait for it, whole.
        style=Style.from_dict({"prompt": "ansicyan bold"}),
    )
    session = PromptSession(
        history=history, completer=WordCompleter(sorted(commands), sentence=True, match_middle=False),
        complete_while_typing=False, **options,
    )
    # The lines of a \"\"\" block go to a history of their own, and the block
    # to the file as one entry once it closes, as a message of several lines
    # typed with Alt-Enter does: redacted whole (a key spread over several
    # lines is one secret), and found whole when its session is deleted.
    block: list[str] = []
    block_session = None

    def read(prompt: str) -> str:
        nonlocal block_session
        if prompt != CONTINUATION:
            block.clear()
            return session.prompt([("class:prompt", prompt)])
        if block_session is None:
            block_session = PromptSession(history=InMemoryHistory(), **options)
        line = block_session.prompt([("class:prompt", prompt)])
        if line.strip() != BLOCK_FENCE:
            block.append(line)
        elif block:
            history.append_string("\n".join(block))
        return line

    return read


def _history(secrets: list[str]):
    """The history file, owner-only, with secrets blanked before they are
    written; this chat's own entries stay whole for the up arrow. Without a
    usable file the history lasts only as long as the chat."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    class RedactedHistory(FileHistory):
        def append_string(self, string: str) -> None:
            if string.strip() != BLOCK_FENCE:  # the block it opens goes in whole when it closes (terminal_reader)
                super().append_string(string)

        def store_string(self, string: str) -> None:
            try:
                super().store_string(redact(string, secrets))
            except OSError as exc:
                self.store_string = lambda string: None  # say it once, then stop trying
                typer.echo(f"\nkvchat: warning: cannot write the chat history {self.filename}: "
                           f"{exc.strerror or exc}", err=True)

    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)  # a file made before, or by hand, is tightened too: it holds what was typed
    except OSError as exc:
        typer.echo(f"kvchat: warning: no chat history ({path}: {exc.strerror or exc})", err=True)
        return InMemoryHistory()
    return RedactedHistory(str(path))

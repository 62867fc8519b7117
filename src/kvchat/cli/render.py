"""How answers and long work look at a terminal.

An answer streams as Markdown with highlighted code (Rich) when standard
output is a terminal, and as the raw text, byte for byte, when it is piped
or with --plain. A spinner on stderr fills the wait for the first token, and
long imports and exports get a progress bar on stderr; neither ever shows
when output is piped. Rich's live and markdown modules load only when a
terminal needs them, so `kvchat --help` and piped runs stay fast.

Streaming Markdown: Rich's `Live` redraws its area by moving the cursor up,
which cannot reach lines that have scrolled off the screen, so a long answer
kept whole in a Live area would smear copies of itself down the terminal.
Instead each block (paragraph, heading, list, code fence, ...) is printed for
good as soon as nothing that follows can change it, and only the unfinished
last block stays live; if even that block is taller than the screen, the
live area shows its last screenful while it grows, and the whole block is
printed once it is finished. What stays on the screen is the whole answer.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Annotated, Iterator

import typer

from .common import console
from .terminal_text import visible

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.live import Live

PlainOption = Annotated[
    bool, typer.Option("--plain", help="Print the answer as raw text, without Markdown rendering.")
]

# Redraws of the live area per second: smooth to the eye. Pieces that arrive
# in between are rendered together, so a long unfinished code block is
# highlighted again at most this often.
REFRESHES_PER_SECOND = 10
# Work that is over sooner needs no progress bar.
PROGRESS_AFTER_SECONDS = 0.5


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal that can redraw (not TERM=dumb, as Rich reckons too)."""
    return stream.isatty() and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def _write_raw(piece: str) -> None:
    """Answer text as it is, flushed at once: whoever reads the pipe sees it as it streams."""
    sys.stdout.write(piece)
    sys.stdout.flush()


@cache
def _parser() -> MarkdownIt:
    """The parser Rich's Markdown uses, but with raw HTML off, so a `List<String>`
    or `<div>` in an answer shows as written instead of vanishing as a tag."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])


def _markdown(text: str) -> RenderableType:
    from rich.markdown import Markdown

    # Links show their address (hyperlinks=False): many terminals cannot
    # follow a hyperlink escape, and the answer must not lose the URL.
    rendered = Markdown("", hyperlinks=False)
    rendered.markup, rendered.parsed = text, _parser().parse(text)
    return rendered


def _blocks(text: str) -> list:
    """The top-level block tokens of `text` (paragraph_open, fence, ...), each with its line range."""
    return [token for token in _parser().parse(text) if token.level == 0 and token.nesting >= 0 and token.map]


# Blocks that no later line can change once their own last line is complete.
_DONE_WHEN_WRITTEN = {"heading_open", "hr"}
# Blocks that end at a blank line; lists and indented code go on after one.
_DONE_AFTER_BLANK_LINE = {"paragraph_open", "table_open", "blockquote_open"}


def _finished_lines(text: str) -> int:
    """How many of the lines of `text` (which ends with a newline) hold only finished blocks."""
    blocks = _blocks(text)
    if not blocks:
        return 0
    last = blocks[-1]
    start, end = last.map
    if last.type in _DONE_WHEN_WRITTEN:
        return end
    if last.type in _DONE_AFTER_BLANK_LINE and text.count("\n") > end:
        return end
    if last.type == "fence" and end - start >= 2 and text.split("\n")[end - 1].strip().startswith(last.markup):
        # The last line looks like the closing fence; the parser is the judge:
        # after a closed fence, a new line starts a block of its own.
        if len(_blocks(text + "x\n")) > len(blocks):
            return end
    return start


def _offset_of_line(text: str, line: int) -> int:
    """Where line number `line` (counting from 0) of `text` starts."""
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset


def _load_rendering() -> None:
    import rich.live  # noqa: F401
    import rich.markdown  # noqa: F401
    import rich.syntax  # noqa: F401

    _parser()


class _Rendered:
    """Markdown as the answer shows it: set off by one blank line from the
    blocks printed before it (`separate`), and with `fit` only its last
    lines that fit on the screen, one line kept free for the cursor (a Live
    area must never be taller than the screen). Rendered once per size,
    however often a live area redraws it."""

    def __init__(self, text: str, *, separate: bool, fit: bool = False) -> None:
        self.text = text
        self.separate = separate
        self.fit = fit
        self.rendered: tuple[tuple[int, int], list] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        size = (options.max_width, options.size.height)
        if self.rendered is None or self.rendered[0] != size:
            lines = console.render_lines(_markdown(self.text), options, pad=False)
            while lines and not lines[0]:  # Rich starts a list, quote or table with an empty line of its own
                lines.pop(0)
            if self.separate and lines:
                lines.insert(0, [])
            self.rendered = size, lines[-max(1, options.size.height - 1):] if self.fit else lines
        for line in self.rendered[1]:
            yield from line
            yield Segment.line()


class _MarkdownStream:
    """Markdown arriving piece by piece, on the terminal as it comes (see the module's notes)."""

    def __init__(self) -> None:
        self.console = console()
        self.pending = ""  # text not yet printed for good
        self.separate = False  # a blank line goes before the next block printed
        self.live: Live | None = None

    def add(self, piece: str) -> None:
        # Count lines as the parser does: it reads \r as a line end too.
        piece = visible(piece.replace("\r\n", "\n").replace("\r", "\n"))
        self.pending += piece
        finished = ""
        if "\n" in piece:
            complete = self.pending[: self.pending.rfind("\n") + 1]
            cut = _offset_of_line(self.pending, _finished_lines(complete))
            finished, self.pending = self.pending[:cut], self.pending[cut:]
        printed = self._for_good(finished)
        # The live area is redrawn below whatever is printed: it must show the rest already.
        self._show_pending(refresh=printed is not None)
        if printed is not None:
            self.console.print(printed)

    def _for_good(self, text: str) -> RenderableType | None:
        """`text` as it is printed for good, set off from the blocks before it;
        None if it shows nothing (blank lines, link definitions)."""
        blocks = _blocks(text)
        if not blocks:
            return None
        rendered = _Rendered(text, separate=self.separate)
        self.separate = blocks[-1].type != "hr"  # Rich leaves a blank line after a rule itself
        return rendered

    def _show_pending(self, *, refresh: bool) -> None:
        from rich.live import Live

        shown = _Rendered(self.pending, separate=self.separate, fit=True)
        if self.live is None:
            self.live = Live(
                shown, console=self.console, transient=True, auto_refresh=True,
                refresh_per_second=REFRESHES_PER_SECOND, redirect_stdout=False, redirect_stderr=False,
                vertical_overflow="visible",
            )
            self.live.start(refresh=True)
        else:
            self.live.update(shown, refresh=refresh)

    def pause(self) -> None:
        """Clear the live area (what is printed for good stays); the next piece brings it back."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def finish(self) -> None:
        """Print what is left for good and give the terminal back (cursor shown)."""
        try:
            printed = self._for_good(self.pending)
            self.pending = ""
            if self.live is not None:
                self.live.update(_Rendered("", separate=False), refresh=True)
            if printed is not None:
                self.console.print(printed)
        finally:
            self.pause()


class AnswerView:
    """Shows one streamed answer: live Markdown on a terminal, raw text otherwise.

    Use it as a context manager around the call that streams, with `write` as
    the `on_text` callback. Leaving it always ends the answer with a newline
    and gives the terminal back, after a Ctrl-C or an error too.
    """

    def __init__(self, *, plain: bool = False) -> None:
        self.markdown = not plain and is_terminal(sys.stdout)
        # The spinner needs the screen to itself: none when the answer goes
        # to a pipe or file (`| less`, scripts), whatever stderr is.
        self.spins = is_terminal(sys.stdout) and is_terminal(sys.stderr)
        self.spinner: Live | None = None
        self.stream: _MarkdownStream | None = None
        self.answered = False  # some text has arrived
        self.ends_line = True  # the raw text written so far ends with a newline

    def __enter__(self) -> AnswerView:
        if self.markdown:
            # Rich's Markdown and Pygments take a few hundred milliseconds to
            # load: load them while the model thinks, not after its first token.
            threading.Thread(target=_load_rendering, name="kvchat-load-rendering", daemon=True).start()
        self._start_spinner()
        return self

    def write(self, piece: str) -> None:
        if not piece:
            return
        self._stop_spinner()
        self.answered = True
        if self.markdown:
            if self.stream is None:
                self.stream = _MarkdownStream()
            self.stream.add(piece)
        else:
            _write_raw(piece)
            self.ends_line = piece.endswith("\n")

    def pause(self) -> None:
        """Stop the spinner and the live area, so something else can print;
        the next `write` brings the answer's display back."""
        self._stop_spinner()
        if self.stream is not None:
            self.stream.pause()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Pause while the block prints (e.g. --show-prompt), then spin again
        if the answer has not started yet."""
        self.pause()
        try:
            yield
        finally:
            if not self.answered:
                self._start_spinner()

    def __exit__(self, *exc) -> None:
        self._stop_spinner()
        if self.stream is not None:
            from ..conversation import ctrl_c_deferred

            # A second Ctrl-C must not leave the cursor hidden or the answer half drawn.
            with ctrl_c_deferred():
                self.stream.finish()
        elif not self.ends_line:
            _write_raw("\n")

    def _start_spinner(self) -> None:
        if not self.spins or self.spinner is not None:
            return
        from rich.live import Live
        from rich.spinner import Spinner

        self.spinner = Live(
            Spinner("dots", text="waiting for the answer…", style="dim"), console=console(stderr=True),
            transient=True, refresh_per_second=12.5, redirect_stdout=False, redirect_stderr=False,
        )
        self.spinner.start(refresh=True)

    def _stop_spinner(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None


class ProgressBar:
    """A progress bar on stderr for work that turns out long: it appears only
    once the work has taken PROGRESS_AFTER_SECONDS, and only when stderr is a
    terminal. Pass `update` as the library's progress callback."""

    def __init__(self, *, output_on_stdout: bool = False) -> None:
        # When the work's output goes to the terminal (an export not redirected),
        # that output shows the progress, and a bar would be drawn through it.
        self.enabled = is_terminal(sys.stderr) and not (output_on_stdout and sys.stdout.isatty())
        self.started = time.monotonic()
        self.progress = None
        self.task = None
        self.stage = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, stage: str, done: int, total: int | None) -> None:
        """`done` of `total` (None: unknown) items through `stage` ("checking", "storing", "counting terms", "exporting", ...)."""
        if not self.enabled:
            return
        if self.progress is None:
            if time.monotonic() - self.started < PROGRESS_AFTER_SECONDS or (total is not None and done >= total):
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False,
            )
            self.progress.start()
        if stage != self.stage:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(stage, total=total)
            self.stage = stage
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

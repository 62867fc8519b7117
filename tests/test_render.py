"""How answers look: Markdown with highlighted code on a terminal, the raw
text byte for byte when piped or with --plain, a spinner on stderr while the
model thinks (terminal only), and a terminal left sane after Ctrl-C."""

from __future__ import annotations

import io
import itertools
import re
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Terminal
from kvchat.cli.render import _finished_lines

ANSWER = (
    "# Plan\n\n"
    "Use a `List<String>` and **bold** words; see [the docs](https://example.com/docs).\n\n"
    "```python\n"
    "print('hello from kvchat')\n"
    "```\n\n"
    "1. first step\n"
    "2. second step\n"
)
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def visible(screen: str) -> str:
    """What a terminal shows of `screen`, less colours and cursor moves."""
    return ESCAPES.sub("", screen).replace("\r\n", "\n")


def test_a_terminal_shows_the_answer_as_markdown_with_highlighted_code(model, kvchat_terminal):
    model.queue_answer(ANSWER)
    done = kvchat_terminal("ask", "plan it", "--no-extract")
    assert done.exit_code == 0, done.stdout
    shown = visible(done.stdout)
    assert "```" not in shown and "# Plan" not in shown and "**bold**" not in shown
    assert "Plan" in shown and "print('hello from kvchat')" in shown
    assert "\x1b[" in done.stdout  # colour: the code is highlighted
    # Nothing of the text is lost: tags in prose, links' addresses, list items.
    assert "List<String>" in shown and "https://example.com/docs" in shown
    assert "first step" in shown and "second step" in shown


def test_escape_sequences_in_an_answer_are_shown_not_obeyed_at_a_terminal(model, kvchat_terminal, store):
    hostile = "Here: \x1b]0;PWNED\x07 and \x1b]52;c;Y3VybCBldmlsLnNo\x07 then \x1b[31mred\x1b[0m \u202egnp.exe\n"
    model.queue_answer(hostile)
    done = kvchat_terminal("ask", "show me", "--no-extract")
    assert done.exit_code == 0, done.stdout
    assert "\x1b]" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    assert "\x1b[31m" not in done.stdout
    assert "\u241b]0;PWNED\u2407" in done.stdout and "<U+202E>gnp.exe" in done.stdout
    # What is stored, and what a pipe gets, is the answer as it came.
    assert store.history(store.session("default").id)[-1].content == hostile


def test_plain_on_a_terminal_shows_the_raw_text(model, kvchat_terminal):
    model.queue_answer(ANSWER)
    done = kvchat_terminal("ask", "plan it", "--no-extract", "--plain")
    assert done.exit_code == 0, done.stdout
    assert ANSWER in visible(done.stdout)


def test_piped_output_is_the_raw_answer_byte_for_byte_without_a_spinner(model, kvchat_process):
    model.queue_answer(ANSWER, delay=1.0)  # long enough that a spinner would show
    done = kvchat_process("ask", "plan it", "--no-extract")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ANSWER
    assert done.stderr == ""


def test_an_answer_without_a_final_newline_gets_one_when_piped(model, kvchat_process):
    model.queue_answer("print('no newline')")
    assert kvchat_process("ask", "code", "--no-extract").stdout == "print('no newline')\n"


def test_a_spinner_shows_at_a_terminal_while_waiting_for_the_first_token(model, kvchat_terminal):
    model.queue_answer("Here it is.", delay=1.5)
    done = kvchat_terminal("ask", "slow one", "--no-extract")
    assert done.exit_code == 0, done.stdout
    shown = visible(done.stdout)
    assert "waiting for the answer" in shown
    assert shown.index("waiting for the answer") < shown.index("Here it is.")


def test_show_prompt_at_a_terminal_prints_the_prompt_before_the_answer(model, kvchat_terminal):
    model.queue_answer("Forty-two.", delay=0.5)
    done = kvchat_terminal("ask", "what goes in?", "--no-extract", "--show-prompt")
    shown = visible(done.stdout)
    assert done.exit_code == 0, done.stdout
    assert shown.index("what goes in?") < shown.index("total") < shown.index("Forty-two.")


def test_json_output_is_not_rendered(model, kvchat_process):
    import json

    model.queue_answer(ANSWER)
    done = kvchat_process("ask", "plan it", "--no-extract", "--json")
    assert json.loads(done.stdout)["answer"] == ANSWER and done.stderr == ""


def test_a_long_answer_ends_up_on_the_screen_whole_and_once(model, kvchat_terminal, monkeypatch):
    """Taller than the screen: finished blocks print for good, so the live
    area never has to redraw lines that have scrolled away."""
    pyte = pytest.importorskip("pyte")

    code = "".join(f"step_{i} = compute({i})\n" for i in range(40))
    items = "".join(f"- item {i}\n" for i in range(30))
    model.chunk_chars = 7
    model.queue_answer(f"Intro words.\n\n```python\n{code}```\n\n{items}\nClosing words.")
    monkeypatch.setenv("LINES", "20")
    done = kvchat_terminal("ask", "long", "--no-extract")
    screen = pyte.HistoryScreen(120, 20, history=1000)
    pyte.Stream(screen).feed(done.stdout)
    scrolled = ["".join(char.data for char in line.values()) for line in screen.history.top]
    lines = [line.strip() for line in scrolled + screen.display if line.strip()]
    assert lines == ["Intro words.", *code.splitlines(), *(f"• item {i}" for i in range(30)), "Closing words."]
    assert not screen.cursor.hidden


def test_ctrl_c_at_a_terminal_keeps_the_partial_answer_on_screen_and_the_cursor_back(model, store):
    model.chunk_chars = 4
    model.stream_delay = 0.05
    model.queue_answer("Partial words arrive.\n\n```python\n" + "x = 1\n" * 300 + "```\n")
    with Terminal("ask", "long", "--no-extract") as term:
        term.expect(b"Partial words", timeout=60)
        time.sleep(0.5)
        term.kill(signal.SIGINT)
        assert term.wait(timeout=60) == 130
    text = term.text
    assert "Traceback" not in text and "kvchat: interrupted" in text
    assert text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l")  # the cursor is shown again
    question, answer = store.history(store.session("default").id)
    assert answer.status == "interrupted" and answer.content.startswith("Partial words arrive.")


def test_help_loads_no_rendering_machinery():
    code = ("import sys, kvchat.cli; "
            "print([m for m in ('rich.markdown', 'rich.live', 'rich.progress', 'markdown_it') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "text, finished",
    [
        ("A paragraph\n", 0),  # the next line may continue it
        ("A paragraph\n\n", 1),  # a blank line ends it
        ("# Heading\n", 1),
        ("```python\nx = 1\n", 0),  # an open fence
        ("```python\nx = 1\n```\n", 3),  # closed
        ("```python\nx = 1\n    ```\n", 0),  # indented four spaces: still code, not the closing fence
        ("````\nx\n```\n", 0),  # shorter than the opening fence: still code
        ("- one\n- two\n\n", 0),  # a list may go on after a blank line
        ("- one\n\nAfter the list\n", 2),  # it ends where the next block starts
        ("Intro\n\n```\ncode\n", 2),
    ],
)
def test_a_block_is_printed_for_good_only_once_nothing_can_change_it(text, finished):
    assert _finished_lines(text) == finished


BLOCKS = [
    "# Heading\n", "A paragraph of words\nthat goes on\n", "```python\nx = 1\n\ny = 2\n```\n", "- a\n- b\n",
    "1. one\n2. two\n", "- loose\n\n  item\n", "> quoted\n", "---\n", "| a | b |\n|---|---|\n| 1 | 2 |\n",
    "    indented code\n", "Setext\n======\n", "a <T> tag, **bold**\n", "~~~\nz\n~~~\n", "````\n```\nnested\n````\n",
]


@settings(max_examples=150, deadline=None)
@given(
    blocks=st.lists(st.tuples(st.sampled_from(BLOCKS), st.sampled_from(["", "\n", "\n\n"])), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40),
)
def test_printing_blocks_as_they_finish_shows_what_rendering_the_whole_answer_shows(blocks, cuts):
    """Whatever the pieces, what is printed for good (all that stays on the
    screen) is the whole answer rendered at once, blank lines aside."""
    from rich.console import Console

    from kvchat.cli.render import _MarkdownStream, _Rendered

    answer = "".join(block + gap for block, gap in blocks)
    stream = _MarkdownStream()
    # Not a terminal: the live area draws nothing, so only what is printed for good is captured.
    stream.console = Console(file=io.StringIO(), width=60, color_system=None)
    start = 0
    for cut in itertools.cycle(cuts):
        if start >= len(answer):
            break
        stream.add(answer[start:start + cut])
        start += cut
    stream.finish()
    whole = Console(file=io.StringIO(), width=60, color_system=None)
    whole.print(_Rendered(answer, separate=False))

    def shown(console):
        return [line.rstrip() for line in console.file.getvalue().splitlines() if line.strip()]

    assert shown(stream.console) == shown(whole)

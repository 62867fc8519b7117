"""Shared fixtures: every test gets its own kvchat home (database, cache) in a
temporary directory, and talks to our own OpenAI-compatible server on
127.0.0.1 through the real openai client."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
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


class Terminal:
    """`kvchat ARGS` in a new process on a pseudo-terminal 120 columns wide,
    used as a user would: keys typed (Ctrl-C is the byte 0x03, which the
    terminal turns into SIGINT), text awaited on the screen, the exit status.
    `screen` holds every byte the process wrote; leaving the `with` block
    kills a process still running."""

    def __init__(self, *args: str):
        self.args = args
        self.screen = b""
        self.seen = 0  # where the last `expect` found its text

    def __enter__(self) -> Terminal:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["COLUMNS"] = "120"
            os.execv(sys.executable, [sys.executable, "-m", "kvchat", *self.args])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
        os.close(self.fd)

    @property
    def text(self) -> str:
        return self.screen.decode(errors="replace")

    def _read(self, until: float) -> bool:
        """Add what the process wrote (waiting until `until` at most, 0.1 s
        at a time) to the screen; False once it has closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, min(0.1, until - time.monotonic())))
        if ready:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child has gone
                return False
            self.screen += chunk
            return bool(chunk)
        return True

    def expect(self, text: bytes, timeout: float = 30) -> None:
        """Wait until `text` shows up after what the last expect found."""
        deadline = time.monotonic() + timeout
        while text not in self.screen[self.seen:]:
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError(f"{text!r} never showed up; the screen:\n{self.text}")
        self.seen = self.screen.index(text, self.seen) + len(text)

    def prompt(self) -> None:
        """Wait for chat's prompt, and until input() reads keys behind it: a
        SIGINT that lands between the prompt and readline's select() is only
        acted on at the next key (CPython's readline loop), which no one types
        that fast but a test does."""
        self.expect(b"you> ")
        time.sleep(0.3)

    def keys(self, data: str | bytes) -> None:
        """Type `data` as it is: escape sequences are keys, "\\r" is Enter."""
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def send(self, line: str) -> None:
        self.keys(line + "\n")

    def ctrl_c(self) -> None:
        self.keys(b"\x03")

    def kill(self, signum: int) -> None:
        """Send `signum` to kvchat's process alone, not through the terminal."""
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        """The exit status, once the process has ended; the screen then holds
        all it wrote."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.pid = 0
                while self._read(time.monotonic() + 0.05):
                    if not select.select([self.fd], [], [], 0)[0]:
                        break
                return os.waitstatus_to_exitcode(status)
            self._read(deadline)
        raise AssertionError(f"still running; the screen:\n{self.text}")


@pytest.fixture
def kvchat_terminal():
    """Run `kvchat` to its end on a pseudo-terminal (see `Terminal`), as at a
    real terminal; returns the exit status and everything the screen showed."""

    def run(*args: str, timeout: float = 60) -> Outcome:
        with Terminal(*args) as term:
            status = term.wait(timeout)
        return Outcome(status, term.text, "")

    return run

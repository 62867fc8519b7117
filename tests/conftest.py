"""Shared fixtures: every test gets its own kvchat home (database, cache) in a
temporary directory, and talks to our own OpenAI-compatible server on
127.0.0.1 through the real openai client.

`pytest --engine postgresql` runs the same tests with the store on
PostgreSQL: each test gets a database of its own on the server of
KVCHAT_TEST_POSTGRES (default: the local server's `test` database), dropped
afterwards. Tests about SQLite files are marked `sqlite_only` and skipped
there.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
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


POSTGRES_DEFAULT = "postgresql+psycopg://127.0.0.1:5432/test"


def pytest_addoption(parser):
    parser.addoption(
        "--engine", choices=("sqlite", "postgresql"), default="sqlite",
        help="the database engine under kvchat's store (default: sqlite)",
    )


def pytest_configure(config):
    # A shell starts a background job (`make test &`) with SIGINT ignored, and
    # every process started from it inherits that: the tests of Ctrl-C would
    # then send signals nobody hears. A handler of our own is not inherited
    # across exec, so the kvchat processes the tests start get Python's own.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "sqlite_only: about SQLite's files; skipped with --engine postgresql")
    config.addinivalue_line("markers", "blank_database: starts from an empty database, not one at the newest schema")


def pytest_collection_modifyitems(config, items):
    if config.getoption("engine") != "postgresql":
        return
    skip = pytest.mark.skip(reason="about SQLite's database file, which PostgreSQL does not have")
    for item in items:
        if "sqlite_only" in item.keywords:
            item.add_marker(skip)


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


# Test databases are named kvtest_MACHINE_PID_...: a run drops those of this
# machine's runs that were killed, and never another machine's.
_RUN_PREFIX = f"kvtest_{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}_"


def _drop_databases_of_ended_runs(connection) -> None:
    names = connection.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (_RUN_PREFIX,)
    ).fetchall()
    for (name,) in names:
        pid = name[len(_RUN_PREFIX):].split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server():
    """(URL, autocommit connection, template database) on the run's
    PostgreSQL server, or a skip that says what is missing. The template is a
    database at kvchat's newest schema, made once by kvchat's migrations;
    each test's database is a copy of it (80 ms, against 0.4 s to migrate)."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("KVCHAT_TEST_POSTGRES", POSTGRES_DEFAULT)
    where = make_url(url).render_as_string(hide_password=True)
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgresql]' (make install does)")
    try:
        connection = psycopg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True, connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        pytest.skip(
            f"no PostgreSQL server at {where} ({reason}): install PostgreSQL (Debian: apt install "
            "postgresql) and start it, or point KVCHAT_TEST_POSTGRES at one (README: Running the tests)"
        )
    from kvchat.store import Store

    template = f"{_RUN_PREFIX}{os.getpid()}_template"
    # Copying a database file by file (PostgreSQL 15 and later) is what makes
    # a test's database cheap; earlier servers copy it their one way.
    strategy = " STRATEGY FILE_COPY" if connection.info.server_version >= 150000 else ""
    with connection:
        _drop_databases_of_ended_runs(connection)
        connection.execute(f'CREATE DATABASE "{template}"')
        try:
            Store(_with_database(url, template)).close()
            yield url, connection, template, strategy
        finally:
            connection.execute(f'DROP DATABASE "{template}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A URL of a PostgreSQL database of this test's own: at kvchat's newest
    schema, or empty for a test marked `blank_database`."""
    url, connection, template, strategy = postgres_server
    name = f"{_RUN_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    origin = "template0" if "blank_database" in request.keywords else template
    connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{origin}"{strategy}')
    try:
        yield _with_database(url, name)
    finally:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(request) -> str:
    """The engine this run tests: "sqlite" or "postgresql" (--engine)."""
    return request.config.getoption("engine")


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory) -> Path:
    """One verified copy of the encodings for the whole run, so tests stay fast."""
    return tmp_path_factory.mktemp("tiktoken-cache")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch, tiktoken_cache, engine, request) -> Path:
    """KVCHAT_HOME isolates everything kvchat reads and writes (and, on
    PostgreSQL, KVCHAT_DB names the test's own schema)."""
    for name in _ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("KVCHAT_HOME", str(path))
    if engine == "postgresql" and "sqlite_only" not in request.keywords:
        monkeypatch.setenv("KVCHAT_DB", request.getfixturevalue("postgres_url"))
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
    """A store as every command after the first opens it: the database is
    there already, at the current schema, so on SQLite the Store reads and
    writes through its own sqlite3 connection (see Store.__init__)."""
    from kvchat.store import Store

    Store().close()
    with Store() as opened:
        yield opened


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def kvchat():
    """Run the CLI in this process: kvchat("ask", "hi", input="..."). The
    command is built as `kvchat` builds it (`kvchat.cli.command_for`)."""
    from kvchat.cli import command_for

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None) -> Outcome:
        with runner.isolation(input=input) as (stdout, stderr, _):
            try:
                command_for(list(args)).main(args=list(args), prog_name="kvchat")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if code and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)  # as the interpreter does at exit
            sys.stdout.flush()  # the isolation's text streams buffer
            sys.stderr.flush()
            out, err = stdout.getvalue(), stderr.getvalue()
        return Outcome(code, _text(out), _text(err))

    return run


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


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

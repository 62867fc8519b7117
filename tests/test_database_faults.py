"""What kvchat does when its database cannot be used as it is: a missing
directory, a read-only location, a full disk, a file that is not a database,
a damaged one, one from a newer kvchat, an upgrade that fails part-way.

Each case goes through the `kvchat` command in a process of its own, as a user
would meet it: one line of error, a non-zero exit, and the user's data exactly
as it was (the file's bytes, or for a full disk every stored row and an intact
database).
"""

from __future__ import annotations

import ctypes
from contextlib import closing
import hashlib
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Outcome
from test_migrations import database_at
from kvchat import database
from kvchat.store import NewTurn, Store
from kvchat.textsearch import match_query

# Files, directories, disks and SQLite's own errors: PostgreSQL has none of these.
pytestmark = pytest.mark.sqlite_only

# Linux capabilities that let root read and write any file whatever its mode.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_PR_CAPBSET_DROP = 24


def _without_root_override() -> None:
    """In the child, before exec: give up root's power to ignore file modes, so
    that chmod means for this kvchat what it means for every other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _with_file_size_limit(limit: int):
    def apply() -> None:
        # Past the limit a write fails with EFBIG, as on a full disk, instead
        # of the process being killed by SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_kvchat(*args: str, before_exec=None, input: bytes = b"") -> Outcome:
    """`kvchat` in a new process, with `before_exec` run in the child first."""
    done = subprocess.run(
        [sys.executable, "-m", "kvchat", *args], input=input, capture_output=True,
        env=dict(os.environ), timeout=60, preexec_fn=before_exec,
    )
    return Outcome(done.returncode, done.stdout.decode(), done.stderr.decode())


def run_as_ordinary_user(*args: str) -> Outcome:
    return run_kvchat(*args, before_exec=_without_root_override if os.geteuid() == 0 else None)


@pytest.fixture
def modes_apply(tmp_path):
    """Skip when file modes cannot bind this test's kvchat processes (root
    that may not give up its override)."""
    probe = tmp_path / "probe"
    probe.write_text("")
    probe.chmod(0o400)
    check = subprocess.run(
        [sys.executable, "-c", f"open({str(probe)!r}, 'a')"], capture_output=True,
        preexec_fn=_without_root_override if os.geteuid() == 0 else None,
    )
    if check.returncode == 0:
        pytest.skip("running as root without the right to drop CAP_DAC_OVERRIDE: file modes do not apply")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error(outcome: Outcome, message: str) -> None:
    assert outcome.exit_code == 1
    assert outcome.stderr == f"kvchat: error: {message}\n"


def fill(path: Path, turns: int = 40) -> None:
    """A real kvchat database with a session of `turns` long turns and a fact."""
    with Store(str(path)) as store:
        store.open_session("work")
        store.add_turns("work", [
            NewTurn(role="user" if i % 2 == 0 else "assistant",
                    content=f"turn {i} about the parser " + "and its tests " * 80, tokens=200)
            for i in range(turns)
        ])
        store.set_fact("user.editor", "neovim", source="user")


def stored(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every turn's text and every fact, read with plain sqlite3."""
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        turns = [row[0] for row in raw.execute("SELECT content FROM turns ORDER BY id")]
        facts = list(raw.execute("SELECT key, value FROM facts ORDER BY key"))
    return turns, facts


# -- where the database lives ------------------------------------------------


def test_missing_directories_are_created_for_the_owner_only(tmp_path, monkeypatch, kvchat_process):
    path = tmp_path / "a" / "b" / "c" / "kvchat.db"
    monkeypatch.setenv("KVCHAT_DB", str(path))
    outcome = kvchat_process("facts", "set", "user.editor", "neovim")
    assert outcome.exit_code == 0, outcome.stderr
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # SQLite gives its write-ahead log and shared-memory index the database's mode.
    with Store(str(path)) as store:
        store.set_fact("user.shell", "zsh", source="user")
        companions = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert [stat.S_IMODE(p.stat().st_mode) for p in companions] == [0o600, 0o600]


def test_a_directory_that_cannot_be_created_is_reported(tmp_path, monkeypatch, modes_apply):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("KVCHAT_DB", str(locked / "data" / "kvchat.db"))
    one_error(run_as_ordinary_user("facts"),
              f"cannot create the directory {locked / 'data'}: Permission denied")
    assert list(locked.iterdir()) == []


def test_a_read_only_directory_is_reported_and_nothing_changes(tmp_path, monkeypatch, modes_apply):
    path = tmp_path / "data" / "kvchat.db"
    monkeypatch.setenv("KVCHAT_DB", str(path))
    fill(path)
    before = digest(path)
    path.parent.chmod(0o500)
    try:
        one_error(
            run_as_ordinary_user("facts", "set", "user.editor", "emacs"),
            f"cannot write to {path}: its directory is read-only "
            "(SQLite keeps its write-ahead log next to the database)",
        )
    finally:
        path.parent.chmod(0o700)
    assert digest(path) == before


def test_a_read_only_database_can_be_read_but_not_written(tmp_path, monkeypatch, modes_apply):
    path = tmp_path / "kvchat.db"
    monkeypatch.setenv("KVCHAT_DB", str(path))
    fill(path)
    before = digest(path)
    path.chmod(0o400)
    one_error(run_as_ordinary_user("facts", "set", "user.editor", "emacs"),
              f"cannot write to {path}: it is read-only")
    listed = run_as_ordinary_user("facts")
    assert (listed.exit_code, listed.stdout) == (0, "user.editor\tneovim\n"), listed.stderr
    assert digest(path) == before


# -- a full disk ---------------------------------------------------------------


def test_a_write_past_a_file_size_limit_loses_nothing(model, home):
    """RLIMIT_FSIZE makes every write that would grow a file fail with EFBIG,
    as a full disk would fail it, for this one process only."""
    path = home / "kvchat.db"
    for i in range(3):
        assert run_kvchat("ask", f"question {i}", "-s", "work", "--extract", "rules").exit_code == 0
    turns, facts = stored(path)
    # The shared-memory index (32 KiB) still fits; the question's pages do not.
    big = ("a long pasted log line that the user wants explained\n" * 2000).encode()
    outcome = run_kvchat("ask", "-", "-s", "work", "--extract", "rules",
                         before_exec=_with_file_size_limit(48 * 1024), input=big)
    one_error(outcome, f"cannot write to {path}: disk I/O error (is the disk full, or the file over a size limit?)")
    assert stored(path) == (turns, facts)
    assert len(turns) == 6
    assert run_kvchat("ask", "question 3", "-s", "work", "--extract", "rules").exit_code == 0
    assert len(stored(path)[0]) == 8


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system of its own (tmpfs), where a disk really fills up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_reported_and_everything_stored_stays(small_disk, monkeypatch, model):
    path = small_disk / "kvchat.db"
    monkeypatch.setenv("KVCHAT_DB", str(path))
    written = 0
    with Store() as store:
        with pytest.raises(database.DatabaseError, match="the disk is full"):
            while True:
                store.set_fact(f"note.{written}", f"note number {written} " + "x" * 1900, source="user")
                written += 1
    assert written > 5
    turns, facts = stored(path)
    assert len(facts) == written
    one_error(run_kvchat("facts", "set", "note.last", "y" * 1999), f"cannot write to {path}: the disk is full")
    # Larger than the frames the failed write left at the end of the
    # write-ahead log, which a new write may reuse without taking more disk.
    asked = run_kvchat("ask", "what did I note? " + "z" * 100_000, "--extract", "rules")
    assert asked.exit_code == 1
    assert asked.stderr == f"kvchat: error: cannot write to {path}: the disk is full\n"
    assert stored(path) == (turns, facts)


# -- files that are not a usable kvchat database -------------------------------


def test_a_file_that_is_not_a_database_is_left_alone(home, model):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "kvchat.db"
    path.write_text("my notes, not a database\n" * 100)
    before = digest(path)
    for command in (["history"], ["ask", "hello", "--extract", "rules"], ["facts", "set", "a", "b"]):
        one_error(run_kvchat(*command),
                  f"{path} is not a kvchat database (not an SQLite file at all); kvchat left it untouched")
    assert digest(path) == before


def test_another_programs_sqlite_database_is_left_alone(home):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "kvchat.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, taken TEXT)")
        raw.execute("INSERT INTO photos (taken) VALUES ('2024-05-01')")
    before = digest(path)
    one_error(run_kvchat("facts", "set", "user.editor", "neovim"),
              f"{path} is not a kvchat database (it holds other tables: photos); kvchat left it untouched")
    assert digest(path) == before


@pytest.mark.parametrize("revision", ["3b1e2f9a7c4d", "0003", database.SCHEMA_HEAD])
def test_another_programs_alembic_database_is_neither_changed_nor_migrated(home, revision):
    """Many programs keep an alembic_version table; numbered revisions like
    kvchat's are common, even kvchat's newest. Only kvchat's own tables make
    a database kvchat's, for the commands that write and for those that only
    read (which at kvchat's newest revision would read without migrating)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "kvchat.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        raw.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        raw.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    before = digest(path)
    for command in (["facts", "set", "user.editor", "neovim"], ["facts"], ["sessions"], ["history"]):
        one_error(run_kvchat(*command),
                  f"{path} is not a kvchat database (it holds other tables: alembic_version, invoices); "
                  "kvchat left it untouched")
    assert digest(path) == before


def test_a_damaged_database_is_reported_and_not_written(home, model):
    path = home / "kvchat.db"
    fill(path, turns=60)
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    assert pages > 20
    # Overwrite the middle third of the pages (not their first bytes, so some
    # still look like b-tree pages): the turns and their index live there.
    for page in range(pages // 3, 2 * pages // 3):
        start = page * 4096 + 100
        data[start:start + 3900] = bytes((page * 7 + i) % 251 for i in range(3900))
    path.write_bytes(data)
    before = digest(path)
    damaged = f"{path} is damaged ("
    recover = f"); kvchat left it untouched: `sqlite3 {path} .recover` can rescue what is readable\n"
    for command in (["history", "-s", "work"], ["ask", "and the parser tests?", "-s", "work", "--extract", "rules"]):
        outcome = run_kvchat(*command)
        assert outcome.exit_code == 1, outcome.stdout
        assert outcome.stderr.startswith("kvchat: error: " + damaged), outcome.stderr
        assert outcome.stderr.endswith(recover) and outcome.stderr.count("\n") == 1, outcome.stderr
    assert digest(path) == before


def test_a_database_from_a_newer_kvchat_is_refused_untouched(home, model):
    path = home / "kvchat.db"
    fill(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    before = digest(path)
    for command in (["history", "-s", "work"], ["ask", "hello", "--extract", "rules"]):
        one_error(run_kvchat(*command),
                  f"{path} was written by a newer kvchat (schema 9999); upgrade kvchat to use it "
                  "(kvchat left it untouched)")
    assert digest(path) == before


# -- migrations ----------------------------------------------------------------


def test_an_older_database_is_upgraded_by_a_command_that_only_reads(home):
    """Only a database at the newest schema is read without the migrations."""
    path = home / "kvchat.db"
    home.mkdir(parents=True, exist_ok=True)
    database_at("0005", path)
    listed = run_kvchat("sessions")
    assert listed.exit_code == 0, listed.stderr
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [["旧的", "0"], ["old", "4"]]
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(database.SCHEMA_HEAD,)]
    shown = run_kvchat("history", "-s", "old", "-n", "1")
    assert (shown.exit_code, shown.stdout.splitlines()[1]) == (0, "Rust is a good fit for command-line tools.")


def test_an_upgrade_that_fails_part_way_leaves_the_database_as_it_was(home):
    """0003 first adds a column to sessions and creates two tables; a table
    already in the way of the third makes it fail after that work is done.
    SQLite's DDL is transactional, so all of it is undone."""
    path = home / "kvchat.db"
    home.mkdir(parents=True, exist_ok=True)
    database_at("0002", path)
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("CREATE TABLE embeddings (note TEXT)")
        raw.execute("INSERT INTO embeddings VALUES ('in the way')")
    before = digest(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        schema_before = sorted(raw.execute("SELECT type, name, sql FROM sqlite_master"))
    one_error(run_kvchat("facts"),
              f"database error on {path}: table embeddings already exists "
              f"(while upgrading it from schema 0002 to {database.SCHEMA_HEAD}; it is left as it was)")
    assert digest(path) == before
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        assert sorted(raw.execute("SELECT type, name, sql FROM sqlite_master")) == schema_before
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        assert raw.execute("SELECT count(*) FROM turns").fetchone() == (4,)
        assert raw.execute("SELECT * FROM embeddings").fetchall() == [("in the way",)]

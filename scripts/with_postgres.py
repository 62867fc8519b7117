"""Run a command (the PostgreSQL half of the tests) with a fresh database.

Checks that the PostgreSQL server of KVCHAT_TEST_SERVER (default: this
machine's, on 127.0.0.1:5432, database `test`) answers, starts it with
pg_ctlcluster if it is a local cluster that is down, creates a new empty
database for the run, runs the command with KVCHAT_TEST_POSTGRES naming that
database, and drops it afterwards. Without a server the command still runs,
and the tests that need one skip, saying what to install; in CI (the
variable CI set) a missing server fails the run instead, so that a run
that skipped the PostgreSQL half never passes for one that ran it.

    python scripts/with_postgres.py python -m pytest --engine postgresql
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

DEFAULT_SERVER = "postgresql://127.0.0.1:5432/test"


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _start_local_cluster() -> bool:
    """Start Debian's local cluster(s) with pg_ctlcluster; whether it ran."""
    if shutil.which("pg_ctlcluster") is None:
        return False
    versions = [os.path.basename(path) for path in glob.glob("/etc/postgresql/*")]
    for version in versions:
        print(f"with_postgres: starting PostgreSQL {version} (pg_ctlcluster)", file=sys.stderr)
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
    return bool(versions)


def _server(url: str):
    """A connection to the server, started first if it is a local one that is down; None if none answers."""
    import psycopg

    try:
        return _connect(url)
    except psycopg.OperationalError as exc:
        first_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if _start_local_cluster():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                return _connect(url)
            except psycopg.OperationalError:
                time.sleep(0.5)
    print(f"with_postgres: no PostgreSQL server at {url} ({first_error}); "
          "the tests that need one will be skipped", file=sys.stderr)
    return None


def main() -> int:
    command = sys.argv[1:]
    if not command:
        raise SystemExit(__doc__)
    url = os.environ.get("KVCHAT_TEST_SERVER", DEFAULT_SERVER)
    try:
        server = _server(url)
    except ImportError:
        print("with_postgres: psycopg is not installed (pip install -e '.[postgresql]'); "
              "the tests that need PostgreSQL will be skipped", file=sys.stderr)
        server = None
    if server is None:
        if os.environ.get("CI"):
            print("with_postgres: CI is set, and CI runs both halves: failing", file=sys.stderr)
            return 1
        return subprocess.run(command).returncode
    name = f"kvchat_run_{os.getpid()}"
    with server:
        server.execute(f'CREATE DATABASE "{name}"')
        try:
            base, _, _ = url.rpartition("/")
            database = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
            print(f"with_postgres: a fresh database for the run: {database}", file=sys.stderr)
            return subprocess.run(command, env=dict(os.environ, KVCHAT_TEST_POSTGRES=database)).returncode
        finally:
            server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())

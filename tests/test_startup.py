"""What a command imports decides how fast it starts (issue 6): `kvchat
--help` needs no database, model client or rich text; `kvchat history` no
model client, ORM, migrations or tokenizer; `kvchat ask` no ORM, migrations,
Markdown renderer or line editor when its output is piped. Each test runs the
real command in a new process with Python's import log on
(PYTHONPROFILEIMPORTTIME) and reads the modules from it."""

from __future__ import annotations

import json

import pytest

NEVER_AT_START = {"alembic", "prompt_toolkit", "numpy", "sqlalchemy.orm", "rich.markdown"}


def imported(stderr: str) -> set[str]:
    """The modules named in Python's import log on `stderr`."""
    modules = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules


def packages_of(modules: set[str], names: set[str]) -> set[str]:
    """The modules in `modules` that are `names` or inside them."""
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


@pytest.fixture
def import_log(monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")


def test_help_imports_no_database_model_client_or_rich_text(kvchat_process, import_log):
    outcome = kvchat_process("--help")
    assert outcome.exit_code == 0 and "history" in outcome.stdout
    modules = imported(outcome.stderr)
    assert "typer" in modules  # the log is there at all
    assert not packages_of(modules, NEVER_AT_START | {"openai", "sqlalchemy", "pydantic", "rich", "tiktoken"})


def test_history_imports_no_model_client_orm_or_tokenizer(kvchat_process, import_log, tmp_path, monkeypatch):
    lines = tmp_path / "turns.jsonl"
    lines.write_text("\n".join(json.dumps({"session": "work", "role": role, "content": text}) for role, text in (
        ("user", "which port does the staging database use?"), ("assistant", "5433, behind the bastion host"),
    )) + "\n")
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    assert kvchat_process("import", str(lines)).exit_code == 0
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")

    outcome = kvchat_process("history", "-s", "work", "-n", "20")
    assert outcome.exit_code == 0 and "5433, behind the bastion host" in outcome.stdout
    modules = imported(outcome.stderr)
    assert "kvchat.store" in modules
    assert not packages_of(modules, NEVER_AT_START | {"openai", "tiktoken"})


def test_piped_ask_imports_no_orm_migrations_or_markdown(kvchat_process, import_log, model, store):
    # `store` has created the database: only a first start runs the migrations.
    model.queue_answer("Use `git bisect run pytest`.")
    outcome = kvchat_process("ask", "how do I find the commit that broke a test?")
    assert outcome.exit_code == 0 and "git bisect run pytest" in outcome.stdout
    modules = imported(outcome.stderr)
    assert {"openai", "tiktoken"} <= modules
    assert not packages_of(modules, NEVER_AT_START)

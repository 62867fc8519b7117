"""What a command imports decides how fast it starts (issue 6): `kvchat
--help` needs no database, model client or rich text; `kvchat history`,
`sessions` and `facts` on an SQLite store at the current schema no model
client, tokenizer, or SQLAlchemy at all (they read with sqlite3); `kvchat ask`
no ORM, migrations, Markdown renderer or line editor when its output is piped,
and on such a store no SQLAlchemy either (it writes with sqlite3 too).
Each test runs the real command in a new process with Python's import log on
(PYTHONPROFILEIMPORTTIME) and reads the modules from it."""

from __future__ import annotations

import json

import pytest

from kvchat.store import NewTurn

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


@pytest.mark.sqlite_only  # reading without SQLAlchemy is for SQLite files
@pytest.mark.parametrize("command, shown", [
    (("history", "-s", "work", "-n", "20"), "5433, behind the bastion host"),
    (("history", "-s", "wo"), "5433, behind the bastion host"),  # the start of a name
    (("history", "--search", "staging port"), "which port does the staging database use?"),
    (("sessions",), "work\t2\t"),
    (("facts",), "project.staging.port\t5433"),
    (("facts", "--skipped"), ""),
])
def test_read_commands_import_no_sqlalchemy_model_client_tokenizer_or_pydantic(kvchat_process, import_log, store, command, shown):
    """`store` has created the database at the current schema: reading it
    needs neither SQLAlchemy nor Alembic; and their options are plain values,
    which kvchat.cli.coercion converts without pydantic."""
    store.open_session("work")
    store.add_turns("work", [
        NewTurn(role="user", content="which port does the staging database use?", tokens=9),
        NewTurn(role="assistant", content="5433, behind the bastion host", tokens=7),
    ])
    store.set_fact("project.staging.port", "5433", source="user")
    store.close()

    outcome = kvchat_process(*command)
    assert outcome.exit_code == 0 and shown in outcome.stdout, outcome.stderr[-2000:]
    modules = imported(outcome.stderr)
    assert "kvchat.store" in modules
    assert not packages_of(modules, NEVER_AT_START | {"sqlalchemy", "openai", "tiktoken", "pydantic"})


def test_piped_ask_imports_no_orm_migrations_or_markdown(kvchat_process, import_log, model, store):
    # `store` has created the database: only a first start runs the migrations.
    model.queue_answer("Use `git bisect run pytest`.")
    outcome = kvchat_process("ask", "how do I find the commit that broke a test?")
    assert outcome.exit_code == 0 and "git bisect run pytest" in outcome.stdout
    modules = imported(outcome.stderr)
    assert {"openai", "tiktoken"} <= modules
    assert not packages_of(modules, NEVER_AT_START)


@pytest.mark.sqlite_only  # writing without SQLAlchemy is for SQLite files
def test_ask_on_a_current_store_writes_everything_without_sqlalchemy(kvchat_process, import_log, model, store):
    """The question, the answer, both calls' usage and the extracted facts
    (one set, one forgotten) are written through the store's own sqlite3
    connection, in a new session."""
    store.set_fact("user.editor", "vim", source="user")
    store.close()
    model.queue_answer("Helix it is.")
    model.queue_json_reply(json.dumps({"facts": [{"key": "user.name", "value": "Ada"}], "forget": ["user.editor"]}))

    outcome = kvchat_process("ask", "-s", "editors", "I am Ada and I dropped vim for helix")
    assert outcome.exit_code == 0 and "Helix it is." in outcome.stdout, outcome.stderr[-2000:]
    modules = imported(outcome.stderr)
    assert {"openai", "tiktoken", "kvchat.store"} <= modules
    assert not packages_of(modules, NEVER_AT_START | {"sqlalchemy"})

    from kvchat.store import Store

    with Store() as reopened:
        session = reopened.session("editors")
        turns = reopened.history(session.id)
        assert [(t.role, t.status) for t in turns] == [("user", "complete"), ("assistant", "complete")]
        assert session.turn_count == 2 and session.token_count == sum(t.tokens for t in turns) > 0
        assert session.title == "I am Ada and I dropped vim for helix"
        assert {f.key: f.value for f in reopened.facts()} == {"user.name": "Ada"}
        assert [v.value for v in reopened.fact_history("user.editor")] == ["vim", None]
        assert {row.key: row.calls for row in reopened.usage("kind")} == {"answer": 1, "extract": 1}


@pytest.mark.parametrize("args, only", [
    (["ask", "hello"], ["ask"]),
    (["--user", "bob", "facts", "list"], ["facts"]),
    (["--user=bob", "history", "-n", "20"], ["history"]),
    (["--help"], None),
    ([], None),
    (["--user"], None),
    (["--version"], None),
    (["aks"], None),  # no such command: Click's error, with its suggestion, needs them all
])
def test_a_process_builds_only_the_command_it_runs(args, only):
    from typer.main import get_command

    from kvchat.cli import _command_named, _only, app

    everything = sorted(get_command(app).commands)
    assert sorted(get_command(_only(_command_named(args))).commands) == (only or everything)


def test_shell_completion_sees_every_command(monkeypatch):
    from kvchat.cli import _command_named

    monkeypatch.setenv("_KVCHAT_COMPLETE", "bash_complete")
    assert _command_named(["ask"]) is None


def test_a_mistyped_command_is_still_suggested(kvchat_process):
    outcome = kvchat_process("--user", "bob", "histroy")
    assert outcome.exit_code == 2
    assert "No such command 'histroy'. Did you mean 'history'?" in outcome.stderr


def _every_parameter():
    from typer.main import get_command

    from kvchat.cli import app

    def walk(command, path):
        for parameter in command.params:
            yield " ".join(path + [parameter.name]), parameter
        for name, subcommand in getattr(command, "commands", {}).items():
            yield from walk(subcommand, path + [name])

    return dict(walk(get_command(app), []))


PARAMETERS = _every_parameter()
VALUES = [None, "", "x", " 7 ", "\u30007", "\x1c7", "7", "+7", "-7", "007", "0", "1.0", "1_0", "1e3", "٣", "abc", 7, 0, -1,
          "9" * 18, "9" * 19, "1" * 4301, 10**30, True, False, ["a"]]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_plain_values_convert_as_typer_does(name):
    """Whatever kvchat.cli.coercion takes itself gives what Typer gives, and
    the rest is Typer's: the same value, or the same error."""
    from typer._click.exceptions import BadParameter
    from typer._coercion import build_runtime_param
    from typer.core import TyperGroup

    from kvchat.cli.coercion import _PlainValues

    parameter = PARAMETERS[name]
    ctx = TyperGroup(name="kvchat").make_context("kvchat", [], resilient_parsing=True)

    def outcome(converter, value):
        try:
            return "value", converter.coerce(value, param=parameter, ctx=ctx)
        except BadParameter as exc:
            return "error", exc.format_message()
        except Exception as exc:  # what Typer raises, kvchat must raise the same
            return type(exc).__name__, str(exc)

    plain, typers = _PlainValues(parameter), build_runtime_param(parameter.type_descriptor)
    for value in VALUES:
        assert outcome(plain, value) == outcome(typers, value), value


@pytest.mark.sqlite_only
def test_an_error_line_imports_nothing_to_find_its_words(kvchat_process, import_log, store):
    store.close()
    outcome = kvchat_process("history", "-s", "no-such-session")
    assert outcome.exit_code == 1
    assert "kvchat: error: no session named 'no-such-session'" in outcome.stderr
    assert not packages_of(imported(outcome.stderr), {"sqlalchemy", "openai", "tiktoken", "pydantic"})


def test_every_known_error_is_where_the_error_line_looks_for_it():
    import importlib

    from kvchat.cli.errors import _KNOWN_ERRORS

    for module, name in _KNOWN_ERRORS.items():
        assert issubclass(getattr(importlib.import_module(module), name), Exception)

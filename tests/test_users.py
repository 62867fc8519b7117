"""Users: several people share one store, and each sees only their own
sessions, turns, facts, roles and model calls. Above all, one user's facts
never reach the prompt kvchat sends for another."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest
from test_migrations import database_at

from kvchat import database
from kvchat.store import NewTurn, Store
from kvchat.textsearch import index_key, index_text, match_query, terms

# Words only alice's memories hold, so finding any of them anywhere bob looks is a leak.
ALICE_FACT = ("project.archive.keeper", "the lighthouse keeper named Zebulon")
ALICE_QUESTION = "Where does the lighthouse keeper Zebulon keep the quarterly ledger?"
ALICE_WORDS = ("Zebulon", "lighthouse", "ledger")


def as_user(kvchat, user):
    return lambda *args, **kwargs: kvchat("--user", user, *args, **kwargs)


@pytest.fixture
def alice(kvchat, model):
    run = as_user(kvchat, "alice")
    assert run("facts", "set", *ALICE_FACT).exit_code == 0
    model.queue_answer("In the lighthouse's ledger room, with Zebulon.")
    assert run("ask", ALICE_QUESTION, "-s", "work", "--no-extract").exit_code == 0
    model.reset()
    return run


def leaks(text: str) -> list[str]:
    return [word for word in ALICE_WORDS if word.lower() in text.lower()]


def test_bobs_prompt_never_holds_alices_facts_or_turns_even_for_her_very_words(alice, kvchat, model):
    bob = as_user(kvchat, "bob")
    # Bob asks in a session of the same name, in alice's own words.
    assert bob("ask", ALICE_QUESTION, "-s", "work", "--no-extract").exit_code == 0
    assert bob("ask", "Who is Zebulon, the lighthouse keeper?", "-s", "work", "--no-extract").exit_code == 0
    [first, second] = model.chat_requests
    assert [m["content"] for m in first["messages"] if m["role"] != "system"] == [ALICE_QUESTION]
    for request in (first, second):
        assert ALICE_FACT[1] not in json.dumps(request)
        assert not leaks(request["messages"][0]["content"]), "nothing of alice's in the system message"
    # Bob's own first exchange comes back to him, never alice's answer.
    assert "with Zebulon" not in json.dumps(second)
    # Alice, asking the same, does get her fact: the test could fail.
    model.reset()
    alice("ask", ALICE_QUESTION, "-s", "work", "--no-extract")
    assert ALICE_FACT[1] in json.dumps(model.chat_requests[0])


def test_bobs_vector_recall_neither_embeds_nor_sends_alices_facts(alice, kvchat, model):
    bob = as_user(kvchat, "bob")
    assert bob("ask", "Who is the lighthouse keeper Zebulon?", "--vector", "--no-extract", "-s", "own").exit_code == 0
    assert not any(leaks(text) and text != "Who is the lighthouse keeper Zebulon?" for text in model.embedded_texts)
    assert ALICE_FACT[1] not in json.dumps(model.chat_requests)


def test_bob_sees_none_of_alices_memories_anywhere_he_looks(alice, kvchat, model):
    bob = as_user(kvchat, "bob")
    assert bob("facts", "set", "user.editor", "helix").exit_code == 0
    model.queue_answer("Bob's own answer.")
    bob("ask", "What should bob have for lunch?", "-s", "lunch", "--no-extract")
    looks = [
        bob("facts"), bob("facts", "--json"), bob("facts", "search", "Zebulon lighthouse"),
        bob("facts", "history", ALICE_FACT[0]), bob("facts", "--skipped"),
        bob("history", "-s", "work"), bob("history", "--search", "Zebulon lighthouse"),
        bob("history", "--search", "lighthouse", "--json"),
        bob("sessions"), bob("sessions", "--json"), bob("recall", ALICE_QUESTION, "--json"),
        bob("recall", ALICE_QUESTION, "-s", "work", "--memory-tokens", "0", "--json"),
        bob("usage", "--json"), bob("usage", "--by", "session", "--json"), bob("export"), bob("facts", "export"),
    ]
    for outcome in looks:
        assert not leaks(outcome.stdout + outcome.stderr), outcome
    sessions = json.loads(bob("sessions", "--json").stdout)
    assert [s["name"] for s in sessions] == ["lunch"]
    # Nor can he reach her session by its id, or her answer by its turn id.
    alices = json.loads(alice("sessions", "--json").stdout)[0]
    assert bob("history", "-s", f"#{alices['id']}").exit_code == 1
    [answer] = [t for t in json.loads(alice("history", "-s", "work", "--json").stdout) if t["role"] == "assistant"]
    done = bob("code", str(answer["id"]))
    assert done.exit_code == 1 and not leaks(done.stdout + done.stderr)


def test_the_same_session_name_and_fact_key_belong_to_each_user_apart(kvchat, model):
    alice, bob = as_user(kvchat, "alice"), as_user(kvchat, "bob")
    alice("facts", "set", "user.editor", "neovim")
    bob("facts", "set", "user.editor", "helix")
    bob("facts", "set", "user.editor", "emacs")
    assert {f["key"]: f["value"] for f in json.loads(alice("facts", "--json").stdout)} == {"user.editor": "neovim"}
    assert {f["key"]: f["value"] for f in json.loads(bob("facts", "--json").stdout)} == {"user.editor": "emacs"}
    assert "helix" not in alice("facts", "history", "user.editor").stdout
    for run, words in ((alice, "alpha"), (bob, "bravo")):
        model.queue_answer(f"{words} answer")
        run("ask", f"{words} question", "-s", "notes", "--no-extract")
    assert [t["content"] for t in json.loads(alice("history", "-s", "notes", "--json").stdout)] == [
        "alpha question", "alpha answer"]
    # Deleting bob's "notes" leaves alice's.
    assert bob("sessions", "delete", "notes", "--yes").exit_code == 0
    assert json.loads(bob("sessions", "--json").stdout) == []
    assert [s["name"] for s in json.loads(alice("sessions", "--json").stdout)] == ["notes"]
    assert len(json.loads(alice("history", "-s", "notes", "--json").stdout)) == 2


def test_pruning_old_sessions_prunes_only_the_users_own(kvchat, model):
    alice, bob = as_user(kvchat, "alice"), as_user(kvchat, "bob")
    for run in (alice, bob):
        model.queue_answer("ok")
        run("ask", "hello", "-s", "old", "--no-extract")
    assert bob("sessions", "prune", "--older-than", "0m", "--yes").exit_code == 0
    assert [s["name"] for s in json.loads(alice("sessions", "--json").stdout)] == ["old"]


def test_roles_are_per_user(kvchat, model):
    alice, bob = as_user(kvchat, "alice"), as_user(kvchat, "bob")
    assert alice("roles", "add", "zebulon-critic", "You review Zebulon's code harshly.").exit_code == 0
    assert "zebulon-critic" not in bob("roles", "list").stdout and "zebulon-critic" in alice("roles", "list").stdout
    model.queue_answer("ok")
    done = bob("ask", "hi", "--role", "zebulon-critic", "--no-extract")
    assert done.exit_code != 0 and "Zebulon" not in json.dumps(model.chat_requests)


def test_the_user_comes_from_the_flag_the_environment_or_the_login_name(kvchat, monkeypatch):
    from kvchat.users import default_user

    kvchat("--user", "carol", "facts", "set", "user.pet", "a heron")
    monkeypatch.setenv("KVCHAT_USER", "carol")
    assert "a heron" in kvchat("facts").stdout
    config = json.loads(kvchat("config", "--json").stdout)
    assert config["user"] == {"value": "carol", "source": "env KVCHAT_USER"}
    config = json.loads(kvchat("--user", "dave", "config", "--json").stdout)
    assert config["user"] == {"value": "dave", "source": "flag --user"}
    monkeypatch.delenv("KVCHAT_USER")
    assert "a heron" not in kvchat("facts").stdout
    assert json.loads(kvchat("config", "--json").stdout)["user"] == {"value": default_user(), "source": "default"}
    with Store(user=default_user()) as store:
        assert store.facts() == []


@pytest.mark.parametrize("name, message", [
    ("", "a user name must not be empty"),
    ("   ", "a user name must not be empty"),
    ("bob\nalice", "a user name must not contain control characters"),
    ("x" * 201, "a user name is longer than 200 characters"),
])
def test_a_bad_user_name_is_a_one_line_error(kvchat, name, message):
    done = kvchat("--user", name, "facts")
    assert done.exit_code == 1 and done.stderr == f"kvchat: error: {message}\n"


def test_a_bad_user_name_in_the_environment_is_a_one_line_error(kvchat, monkeypatch):
    monkeypatch.setenv("KVCHAT_USER", "bob\x1b[2J")
    done = kvchat("facts")
    assert done.exit_code == 1 and done.stderr == "kvchat: error: a user name must not contain control characters\n"


def test_fact_search_ranks_only_the_users_facts_however_many_others_match(home):
    """Ranked inside the full-text index, a search must not let another
    user's better matches crowd one's own out of its limit."""
    with Store(user="alice") as alice:
        alice.import_facts([(f"note.n{i}", "deploy deploy deploy rotation", None, None) for i in range(50)])
    with Store(user="bob") as bob:
        bob.set_fact("note.ops", "the deploy happens on Fridays, long text around it", source="user")
        hits = bob.search_facts(match_query("deploy"), limit=5)
        assert [hit.record.key for hit in hits] == ["note.ops"]
        assert bob.term_stats("facts", ("deploy",)).containing == {"deploy": 51}, "shared document counts"


@pytest.mark.parametrize("name", ["José", "陈 伟", "ops.team-1", "u616c696365"])
def test_any_user_name_is_one_term_of_the_index(home, name):
    with Store(user=name) as store:
        store.set_fact("user.editor", "helix", source="user")
    with Store(user="alice") as alice:  # hex of "alice": a name that looks like another's index term
        alice.set_fact("user.editor", "vim", source="user")
        assert [hit.record.value for hit in alice.search_facts(match_query("editor"), limit=5)] == ["vim"]
    with Store(user=name) as store:
        assert [hit.record.value for hit in store.search_facts(match_query("editor"), limit=5)] == ["helix"]


@pytest.mark.sqlite_only
def test_an_upgraded_store_gives_its_rows_to_the_user_who_upgraded_it(home):
    """A personal store becoming a shared one: its owner keeps their memories."""
    path = home / "kvchat.db"
    home.mkdir(parents=True, exist_ok=True)
    database_at("0005", path)
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("INSERT INTO roles (name, content, created_at, updated_at) VALUES ('terse', 'Be brief.', '2024-01-01', '2024-01-01')")
    with Store(user="dana") as dana:
        assert sorted(s.name for s in dana.sessions()) == ["old", "旧的"]
        assert [h.record.value for h in dana.search_facts(match_query("editor"), limit=5)] == ["neovim"]
        assert [r.name for r in dana.roles()] == ["terse"]
    with Store(user="erin") as erin:
        assert erin.sessions() == [] and erin.facts() == [] and erin.roles() == []
        assert erin.search_history(terms("命令行")) == [] and erin.fact_history("user.editor") == []
        erin.open_session("old")
        erin.set_fact("user.editor", "helix", source="user")
        assert erin.fact("user.editor").value == "helix"
    with Store(user="dana") as dana:
        assert dana.fact("user.editor").value == "neovim"
        assert [turn.content for _, turn in dana.search_history(terms("命令行"))] == ["我喜欢用Rust写命令行工具"]


def _migrate(path, revision: str) -> None:
    """Downgrade the database at `path` to `revision`, in one transaction, as ensure_schema upgrades."""
    from alembic import command

    engine = database.create_engine(database.resolve_url(str(path)))
    config, _ = database.migration_scripts()
    try:
        with engine.connect() as connection:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # tables are rebuilt
            connection = connection.execution_options(kvchat_write=True)
            with connection.begin():
                config.attributes["connection"] = connection
                command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_a_store_of_one_user_goes_back_to_the_schema_without_users_and_up_again(home):
    path = home / "kvchat.db"
    with Store(str(path), user="dana") as dana:
        dana.add_turns("work", [NewTurn("user", "我喜欢用Rust写命令行工具", 10)])
        dana.set_fact("user.editor", "neovim", source="user")
    _migrate(path, "0005")
    with closing(sqlite3.connect(path)) as raw:
        raw.create_function("kvchat_index_key", 1, index_key)
        raw.create_function("kvchat_index_text", 1, index_text)
        assert raw.execute("SELECT facts.key FROM facts_fts JOIN facts ON facts.id = facts_fts.rowid "
                           "WHERE facts_fts MATCH 'editor'").fetchall() == [("user.editor",)]
        with pytest.raises(sqlite3.IntegrityError):  # one session of a name in the whole store again
            raw.execute("INSERT INTO sessions (name, created_at, last_active_at) VALUES ('work', '2024-01-01', '2024-01-01')")
    with Store(str(path), user="erin") as erin:
        assert [s.name for s in erin.sessions()] == ["work"], "upgraded again, by erin this time"


def test_a_store_of_several_users_refuses_to_go_back_and_is_left_as_it_was(home):
    path = home / "kvchat.db"
    for user in ("dana", "erin"):
        with Store(str(path), user=user) as store:
            store.open_session("work")
    with pytest.raises(RuntimeError, match=r"^sessions holds rows of several users \('dana', 'erin', \.\.\.\)"):
        _migrate(path, "0005")
    with Store(str(path), user="erin") as erin:
        assert database.current_revision(erin.engine) == database.SCHEMA_HEAD
        assert [s.name for s in erin.sessions()] == ["work"]


def test_an_export_carries_no_user_and_an_import_goes_to_whoever_imports_it(kvchat, model, tmp_path):
    alice, bob, mallory = as_user(kvchat, "alice"), as_user(kvchat, "bob"), as_user(kvchat, "mallory")
    model.queue_answer("Kept.")
    alice("ask", "Remember the harbour code", "-s", "harbour", "--no-extract")
    exported = alice("export").stdout
    assert exported and all("user" not in json.loads(line) for line in exported.splitlines())
    # A line naming a user is still imported as the importer's own: nobody writes into another's memory.
    lines = tmp_path / "turns.jsonl"
    lines.write_text("".join(json.dumps({**json.loads(line), "user": "mallory"}) + "\n" for line in exported.splitlines()))
    assert bob("import", str(lines)).exit_code == 0
    assert [s["name"] for s in json.loads(bob("sessions", "--json").stdout)] == ["harbour"]
    assert json.loads(mallory("sessions", "--json").stdout) == []
    assert len(json.loads(alice("history", "-s", "harbour", "--json").stdout)) == 2, "alice's own are untouched"

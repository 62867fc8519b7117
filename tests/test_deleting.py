"""Sessions deleted, renamed and pruned (issue 7): deletion is real, the
text is gone from the database file, and what is not deleted is untouched."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conftest import Terminal
from kvchat.store import ModelCall, NewTurn, Store, StoreError, now
from kvchat.textsearch import analyze, match_query

# Words no other text in these tests holds, in both scripts.
ASCII_MARKER = "Zorblaxified"
CJK_MARKER = "猫咪砖头"


def add(store, session, *contents, at=None):
    store.add_turns(session, [NewTurn(role="user", content=text, tokens=3, created_at=at) for text in contents])
    return store.history(store.session(session).id)


def make_idle(store, session, since):
    """Set the session's last activity back to `since`, as if untouched since."""
    from kvchat.schema import sessions

    with store.engine.begin() as db:
        db.execute(sessions.update().where(sessions.c.name == session).values(last_active_at=since))


def file_bytes(home) -> bytes:
    """Everything SQLite keeps on disk for the database: the file and its logs."""
    return b"".join(path.read_bytes() for path in sorted(home.glob("kvchat.db*")))


def traces(data: bytes) -> set[str]:
    """Which forms of the markers the bytes hold: as written, and as the
    full-text index stores them (lower-cased, stemmed, CJK bigrams)."""
    forms = {ASCII_MARKER, CJK_MARKER, *analyze(ASCII_MARKER), *(t for t in analyze(CJK_MARKER) if len(t) > 1)}
    return {form for form in forms if form.encode() in data}


def secret_session(store):
    turns = add(store, "secret", f"my cat is {ASCII_MARKER} and {CJK_MARKER}", f"{ASCII_MARKER} again, {CJK_MARKER}")
    store.set_fact("pet.name", f"{ASCII_MARKER} {CJK_MARKER}", source="model", turn_id=turns[0].id)
    store.save_summary(
        store.session("secret").id, f"about {ASCII_MARKER}", tokens=3, last_turn_id=turns[-1].id,
        turn_count=2, model=None, covers_after=None,
    )
    store.save_embeddings("embed", [("turn", turns[0].id, "d", 1, b"\0\0\0\0"), ("fact", store.fact("pet.name").id, "d", 1, b"\0\0\0\0")])
    store.update_settings("secret", {"window": 4})
    return turns


@pytest.mark.sqlite_only
def test_deleted_text_is_gone_from_the_file_and_the_index(home):
    with Store() as store:
        secret_session(store)
        add(store, "kept", "the quarterly report mentions giraffes", "长颈鹿的报告")
        store.set_fact("user.editor", "helix", source="user")
        assert traces(file_bytes(home)) >= {ASCII_MARKER, CJK_MARKER, analyze(ASCII_MARKER)[0]}, \
            "the scan must see the markers, and the index's form of them, before the delete"

        deleted = store.delete_session("secret", facts=True)
        assert (deleted.sessions, deleted.turns, deleted.facts) == (1, 2, 1)
        # While the store is open (its write-ahead log with it) ...
        assert traces(file_bytes(home)) == set()
        assert store.search_turns(store.session("kept").id, match_query("giraffe"), before_id=None, limit=5)
        assert store.search_facts(match_query(ASCII_MARKER), limit=5) == []
    # ... and once everything is closed.
    data = file_bytes(home)
    assert traces(data) == set()
    assert "giraffes".encode() in data and "长颈鹿".encode() in data
    with Store() as store:
        kept = store.session("kept")
        assert [t.content for t in store.history(kept.id)][0] == "the quarterly report mentions giraffes"
        assert store.search_turns(kept.id, match_query("长颈鹿"), before_id=None, limit=5)
        assert [h.record.key for h in store.search_facts(match_query("helix"), limit=5)] == ["user.editor"]


def test_delete_removes_everything_the_session_held(store):
    from sqlalchemy import func, select

    from kvchat.schema import embeddings, session_summaries

    turns = secret_session(store)
    secret_id = store.session("secret").id
    other = add(store, "other", "unrelated")
    store.set_fact("user.name", "Ada", source="model", turn_id=other[0].id)
    for session_id in (secret_id, store.session("other").id):
        store.record_model_call(ModelCall("answer", session_id, "gpt-4o-mini", 100, 10, True))

    deleted = store.delete_session("secret")
    assert (deleted.sessions, deleted.turns, deleted.facts) == (1, 2, 0)
    assert store.session("secret") is None and store.turn(turns[0].id) is None
    assert store.summary(secret_id) is None
    with store.engine.connect() as db:
        assert db.execute(select(func.count()).select_from(session_summaries)).scalar() == 0
        assert db.execute(select(embeddings.c.kind)).scalars().all() == ["fact"]
    # Without --facts the facts stay, only their link to the turn goes.
    assert store.fact("pet.name").turn_id is None
    assert store.fact("user.name").turn_id == other[0].id
    assert [s.name for s in store.sessions()] == ["other"]
    # Its model calls stay counted, without the session: they hold no text.
    assert {row.key: row.calls for row in store.usage("session")} == {None: 1, store.session("other").id: 1}
    # A new session of the same name starts empty, without the old settings.
    assert store.open_session("secret").settings == {}


def test_deleting_facts_records_a_forget_and_blanks_the_sessions_values(store):
    turns = add(store, "s", "I use vim", "I moved to helix")
    store.set_fact("user.editor", "vim", source="model", turn_id=turns[0].id)
    store.set_fact("user.editor", "helix", source="model", turn_id=turns[1].id)
    store.set_fact("user.shell", "fish", source="user")
    other = add(store, "t", "my name is Ada")
    store.set_fact("user.name", "Ada", source="model", turn_id=other[0].id)

    assert [f.key for f in store.facts_from_sessions([store.session("s").id])] == ["user.editor"]
    assert store.delete_session("s", facts=True).facts == 1
    assert store.fact("user.editor") is None
    history = store.fact_history("user.editor")
    assert [(v.action, v.value, v.deleted_with_session) for v in history] == [
        ("set", None, True), ("set", None, True), ("forget", None, False),
    ]
    assert history[-1].source == "user"
    assert {f.key for f in store.facts()} == {"user.shell", "user.name"}
    assert [v.value for v in store.fact_history("user.name")] == ["Ada"]


def test_a_session_is_addressed_by_its_name_or_a_unique_start_of_it(store):
    for name in ("alpha", "alpine", "beta", "al"):
        add(store, name, "x")
    assert store.resolve_session("al").name == "al"  # an exact name wins over a prefix
    assert store.resolve_session("alph").name == "alpha"
    assert store.resolve_session("b").name == "beta"
    with pytest.raises(StoreError, match=r"'alp' is the start of several sessions \('alpha', 'alpine'\)"):
        store.resolve_session("alp")
    with pytest.raises(StoreError, match="no session named 'zeta'"):
        store.resolve_session("zeta")
    add(store, "100%", "x")
    with pytest.raises(StoreError, match="no session"):
        store.resolve_session("1_0")  # the prefix is text, not a LIKE pattern
    beta = store.session("beta")
    assert store.resolve_session(f"#{beta.id}") == beta
    with pytest.raises(StoreError, match="cannot be a session name"):
        add(store, f"#{beta.id}", "x")  # it would take beta's place wherever #ID is used
    with pytest.raises(StoreError, match="no session has the id #12345"):
        store.resolve_session("#12345")


def test_rename_keeps_everything_and_refuses_a_taken_name(store):
    turns = add(store, "old", "hello")
    store.update_settings("old", {"window": 3})
    add(store, "taken", "x")
    renamed = store.rename_session("old", "new")
    assert (renamed.name, renamed.turn_count, renamed.settings) == ("new", 1, {"window": 3})
    assert store.history(renamed.id)[0].id == turns[0].id
    assert store.session("old") is None
    with pytest.raises(StoreError, match="already a session named 'taken'"):
        store.rename_session("new", "taken")
    with pytest.raises(StoreError, match="must not be empty"):
        store.rename_session("new", "  ")


def test_prune_deletes_by_last_activity(store):
    old = now() - timedelta(days=40)
    add(store, "ancient", f"{ASCII_MARKER}", at=old)
    make_idle(store, "ancient", old)
    add(store, "revived", "first", at=old)
    make_idle(store, "revived", old)
    add(store, "revived", "later")  # its last activity is now
    add(store, "fresh", "today")
    cutoff = now() - timedelta(days=30)
    assert [s.name for s in store.sessions_older_than(cutoff)] == ["ancient"]
    deleted = store.prune_sessions(cutoff)
    assert (deleted.sessions, deleted.turns) == (1, 1)
    assert {s.name for s in store.sessions()} == {"revived", "fresh"}
    assert store.prune_sessions(cutoff).sessions == 0


# -- the command line ---------------------------------------------------------


def test_cli_delete_needs_yes_without_a_terminal(home, kvchat):
    with Store() as store:
        secret_session(store)
    refused = kvchat("sessions", "delete", "secret", "--facts")
    assert refused.exit_code == 1
    assert refused.stderr == "kvchat: error: deleting needs confirmation: pass --yes to delete without being asked\n"
    done = kvchat("sessions", "delete", "secret", "--facts", "--yes")
    assert done.exit_code == 0, done.stderr
    assert done.stderr == "Deleted session 'secret': 2 turns and 1 fact.\n"
    gone = kvchat("sessions", "delete", "secret", "--yes")
    assert gone.exit_code == 1 and gone.stderr.startswith("kvchat: error: no session named 'secret'")


def test_facts_history_shows_a_value_deleted_with_its_session_as_blank_not_as_text(home, kvchat):
    with Store() as store:
        secret_session(store)
        key = store.facts()[0].key
    assert kvchat("sessions", "delete", "secret", "--facts", "--yes").exit_code == 0
    history = json.loads(kvchat("facts", "history", key, "--json").stdout)
    assert [(v["action"], v["value"], v["deleted_with_session"]) for v in history] == [
        ("set", None, True), ("forget", None, False),
    ]
    piped = kvchat("facts", "history", key).stdout.splitlines()
    assert [line.split("\t")[1:4] for line in piped] == [["deleted", "", "model"], ["forget", "", "user"]]


def test_cli_delete_refuses_an_ambiguous_prefix(home, kvchat):
    with Store() as store:
        add(store, "work-a", "x")
        add(store, "work-b", "y")
    out = kvchat("sessions", "delete", "work", "--yes")
    assert out.exit_code == 1
    assert out.stderr == (
        "kvchat: error: 'work' is the start of several sessions ('work-a', 'work-b'); give the whole name, or '#ID', "
        "of the one to delete\n"
    )
    assert kvchat("sessions", "delete", "work-b", "--yes", "--json").stdout.startswith('{')
    with Store() as store:
        assert [s.name for s in store.sessions()] == ["work-a"]


def test_cli_delete_takes_a_whole_name_or_id_never_only_its_start(home, kvchat):
    with Store() as store:
        add(store, "test-important", "precious data")
        session_id = store.session("test-important").id
    out = kvchat("sessions", "delete", "test", "--yes")
    assert out.exit_code == 1
    assert out.stderr == (
        f"kvchat: error: 'test' is only the start of session 'test-important': give its whole name "
        f"or '#{session_id}' to delete it\n"
    )
    with Store() as store:
        assert store.session("test-important") is not None
    assert kvchat("sessions", "delete", f"#{session_id}", "--yes").exit_code == 0
    with Store() as store:
        assert store.sessions() == []


def test_no_session_can_be_named_like_an_id(home, kvchat, model):
    with Store() as store:
        add(store, "big", "x")
    renamed = kvchat("sessions", "rename", "big", "#3")
    assert renamed.exit_code == 1
    assert renamed.stderr == "kvchat: error: '#3' cannot be a session name: #N stands for the session whose id is N\n"
    asked = kvchat("ask", "hello", "-s", "#99")  # no session has id 99: not a name to create either
    assert asked.exit_code == 1 and model.chat_requests == []


def _on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run kvchat on a pseudo-terminal and type `answer` at its question."""
    with Terminal(*args) as term:
        term.expect(b"[y/N]", timeout=60)
        term.keys(answer)
        status = term.wait(timeout=60)
    return status, term.text


def test_cli_delete_asks_at_a_terminal_showing_what_goes(home):
    with Store() as store:
        secret_session(store)
    code, screen = _on_terminal(["sessions", "delete", "secret", "--facts"], "n\n")
    assert code == 1 and "Delete session 'secret' (2 turns and 1 fact)? [y/N]" in screen
    assert "nothing deleted" in screen
    with Store() as store:
        assert store.session("secret") is not None
    code, screen = _on_terminal(["sessions", "delete", "secret"], "y\n")
    assert code == 0, screen
    assert "Deleted session 'secret': 2 turns." in screen
    with Store() as store:
        assert store.session("secret") is None and store.fact("pet.name") is not None


def test_cli_rename(home, kvchat):
    with Store() as store:
        add(store, "draft-2024", "x")
        add(store, "final", "y")
    out = kvchat("sessions", "rename", "draft", "notes")
    assert out.exit_code == 0 and out.stderr == "Renamed session 'draft' to 'notes'.\n"
    clash = kvchat("sessions", "rename", "notes", "final")
    assert clash.exit_code == 1
    assert clash.stderr == "kvchat: error: there is already a session named 'final'\n"
    with Store() as store:
        assert sorted(s.name for s in store.sessions()) == ["final", "notes"]


def chat_history():
    """`kvchat chat`'s history, read and written by prompt_toolkit itself."""
    from prompt_toolkit.history import FileHistory

    from kvchat.cli.repl import history_path

    history_path().parent.mkdir(parents=True, exist_ok=True)
    return FileHistory(str(history_path()))


def test_deleting_a_session_takes_what_was_typed_into_it_out_of_the_chat_history(home, kvchat):
    from kvchat.cli.repl import history_path

    with Store() as store:
        add(store, "secret", f"my cat is {ASCII_MARKER}", f"{CJK_MARKER}\non two lines", "/etc/hosts?")
        add(store, "kept", "what is a monad?")
    for line in (f"my cat is {ASCII_MARKER}", "/facts", "what is a monad?", f"{CJK_MARKER}\non two lines",
                 "//etc/hosts?"):
        chat_history().store_string(line)
    result = kvchat("sessions", "delete", "secret", "--yes")
    assert result.exit_code == 0
    assert result.stderr == "Deleted session 'secret': 3 turns and 3 entries of the chat history.\n"
    assert list(chat_history().load_history_strings()) == ["what is a monad?", "/facts"]  # newest first
    assert not traces(history_path().read_bytes())
    assert history_path().stat().st_mode & 0o777 == 0o600
    # Pruning does the same; what another session still holds is another entry.
    with Store() as store:
        add(store, "old", "what is a monad?")
        make_idle(store, "old", now() - timedelta(days=3))
    preview = kvchat("sessions", "prune", "--older-than", "2d", "--dry-run")
    assert preview.stderr == "Would delete 1 session, 1 turn, 1 entry of the chat history.\n"
    preview = kvchat("sessions", "prune", "--older-than", "2d", "--dry-run", "--json")
    assert json.loads(preview.stdout)["chat_history_entries"] == 1
    assert list(chat_history().load_history_strings()) == ["what is a monad?", "/facts"]
    pruned = kvchat("sessions", "prune", "--older-than", "2d", "--yes", "--json")
    assert json.loads(pruned.stdout)["chat_history_entries"] == 1
    assert list(chat_history().load_history_strings()) == ["/facts"]


def test_the_chat_history_keeps_other_entries_byte_for_byte(home, kvchat):
    """prompt_toolkit splits its file at newlines only: entries holding other
    line breaks (form feed, U+2028, a carriage return) are single entries,
    removed whole or kept whole, and what follows the last entry stays."""
    from kvchat.cli.repl import history_path

    with Store() as store:
        add(store, "secret", f"{ASCII_MARKER}\x0cpart two", f"{CJK_MARKER}\u2028sep", "first line\nsecond line")
    kept = ["keep\x0cme", "carriage\rreturn", "ends\u2028here", "second line", f"{ASCII_MARKER}"]
    for line in [kept[0], f"{ASCII_MARKER}\x0cpart two", kept[1], "first line\nsecond line", kept[2],
                 f"{CJK_MARKER}\u2028sep", kept[3], kept[4]]:
        chat_history().store_string(line)
    with history_path().open("ab") as file:
        file.write(b"\n# an unfinished entry")  # no newline at the end
    result = kvchat("sessions", "delete", "secret", "--yes", "--json")
    assert json.loads(result.stdout)["chat_history_entries"] == 3
    assert list(chat_history().load_history_strings()) == kept[::-1]
    assert history_path().read_bytes().endswith(b"\n# an unfinished entry")


def test_a_chat_history_that_cannot_be_read_is_reported_after_the_delete(home, kvchat):
    from kvchat.cli.repl import history_path

    with Store() as store:
        add(store, "secret", "a question")
        add(store, "other", "another question")
    history_path().mkdir()  # not a file kvchat can read
    result = kvchat("sessions", "delete", "secret", "--yes")
    assert result.exit_code == 0
    assert result.stderr.startswith(f"kvchat: warning: could not read the chat history {history_path()} to take "
                                    "the deleted sessions' questions out of it: Is a directory\n")
    assert result.stderr.endswith("Deleted session 'secret': 1 turn.\n")
    result = kvchat("sessions", "delete", "other", "--yes", "--json")
    assert json.loads(result.stdout)["chat_history_entries"] is None
    with Store() as store:
        assert store.sessions() == []


def test_cli_prune_dry_run_then_for_real(home, kvchat):
    old = now() - timedelta(days=20)
    with Store() as store:
        turns = add(store, "old-1", "a", "b", at=old)
        make_idle(store, "old-1", old)
        store.set_fact("user.lang", "rust", source="model", turn_id=turns[0].id)
        add(store, "old-2", "c")
        make_idle(store, "old-2", now() - timedelta(hours=13))
        add(store, "new", "d")
    dry = kvchat("sessions", "prune", "--older-than", "12h", "--facts", "--dry-run")
    assert dry.exit_code == 0
    assert [line.split("\t")[:2] for line in dry.stdout.splitlines()] == [["old-1", "2"], ["old-2", "1"]]
    assert dry.stderr == "Would delete 2 sessions, 3 turns, 1 fact.\n"
    preview = json.loads(kvchat("sessions", "prune", "--older-than", "12h", "--facts", "--dry-run", "--json").stdout)
    assert preview == {"dry_run": True, "sessions": 2, "names": ["old-1", "old-2"], "turns": 3, "facts": 1,
                       "chat_history_entries": 0}
    assert kvchat("sessions", "prune", "--older-than", "12h").exit_code == 1  # no terminal, no --yes
    with Store() as store:
        assert len(store.sessions()) == 3
    weeks = kvchat("sessions", "prune", "--older-than", "2w", "--facts", "--yes", "--json")
    assert weeks.exit_code == 0
    assert json.loads(weeks.stdout) == {"dry_run": False, "sessions": 1, "names": ["old-1"], "turns": 2, "facts": 1,
                                        "chat_history_entries": 0}
    nothing = kvchat("sessions", "prune", "--older-than", "30d", "--yes")
    assert nothing.exit_code == 0 and nothing.stderr == "No session is that old.\n"
    with Store() as store:
        assert sorted(s.name for s in store.sessions()) == ["new", "old-2"]
        assert store.fact("user.lang") is None
    bad = kvchat("sessions", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "90m, 12h, 30d or 2w" in bad.stderr

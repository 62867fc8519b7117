"""`kvchat history`: searching every session through the full-text index
(stems and Chinese as memory search reads them), --since/--until, and
sessions named by #ID or a unique start of their name (issue 7)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from kvchat.store import NewTurn

DAY = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def add(store, session, *contents, at=None):
    store.add_turns(session, [
        NewTurn(role="user" if i % 2 == 0 else "assistant", content=text, tokens=5, created_at=at)
        for i, text in enumerate(contents)
    ])


def shown(kvchat, *args) -> list[tuple[str, str]]:
    done = kvchat("history", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return [(turn["session"], turn["content"]) for turn in json.loads(done.stdout)]


def one_line_error(done, start: str) -> None:
    assert done.exit_code == 1 and done.stdout == ""
    assert done.stderr.startswith(f"kvchat: error: {start}") and done.stderr.count("\n") == 1, done.stderr


def test_search_finds_stems_and_chinese_in_every_session_oldest_first(kvchat, store):
    add(store, "rust", "How do I run the migrations?", "Running them is one command.")
    add(store, "notes", "我们在迁移数据库", "Nothing about it here.")
    add(store, "other", "The weather is fine.")
    assert shown(kvchat, "--search", "migration") == [("rust", "How do I run the migrations?")]
    assert shown(kvchat, "--search", "RUNS") == [
        ("rust", "How do I run the migrations?"), ("rust", "Running them is one command."),
    ]
    assert shown(kvchat, "--search", "数据库") == [("notes", "我们在迁移数据库")]
    # Every word must be there, not any one of them.
    assert shown(kvchat, "--search", "run weather") == []


def test_search_keeps_to_a_session_when_one_is_given_and_to_the_last_n(kvchat, store):
    add(store, "a", "parsing JSON in Rust", "parse it with serde")
    add(store, "b", "parsing YAML in Python")
    assert shown(kvchat, "--search", "parse", "-s", "a") == [("a", "parsing JSON in Rust"), ("a", "parse it with serde")]
    assert shown(kvchat, "--search", "parse", "-n", "1") == [("b", "parsing YAML in Python")]


def test_search_text_is_data_and_words_it_lacks_are_an_error(kvchat, store):
    add(store, "a", 'a "quoted" NEAR(x y) OR * term')
    assert shown(kvchat, "--search", '"quoted" OR *') == [("a", 'a "quoted" NEAR(x y) OR * term')]
    one_line_error(kvchat("history", "--search", "... !"), "--search: '... !' has no words to search for")


def test_search_finds_words_the_index_leaves_out_and_still_wants_every_word(kvchat, store):
    add(store, "a", "Thanks for the help!", "Hello, the world is round.", "hello there, world", "The world is flat.")
    add(store, "b", "谢谢你的帮助")
    assert shown(kvchat, "--search", "thanks") == [("a", "Thanks for the help!")]
    assert shown(kvchat, "--search", "Hello world") == [("a", "Hello, the world is round."), ("a", "hello there, world")]
    assert shown(kvchat, "--search", "hello round") == [("a", "Hello, the world is round.")]
    assert shown(kvchat, "--search", "thanks", "-s", "b") == []


def test_a_word_the_index_leaves_out_is_found_as_a_whole_word_not_inside_others(kvchat, store):
    add(store, "a", "Other people went there", "I like forests", "The end, or is it?", "我的书", "Я тоже", "это моя книга")
    assert shown(kvchat, "--search", "the") == [("a", "The end, or is it?")]
    assert shown(kvchat, "--search", "OR") == [("a", "The end, or is it?")]
    assert shown(kvchat, "--search", "的") == [("a", "我的书")]  # Chinese is not spaced: anywhere
    assert shown(kvchat, "--search", "я") == [("a", "Я тоже")]
    one_line_error(kvchat("history", "--search", "🎉"), "--search: '🎉' has no words to search for")


def test_search_results_from_several_sessions_say_which_session_in_plain_text(kvchat, store):
    add(store, "first", "deploying with docker")
    add(store, "second", "docker compose again")
    lines = kvchat("history", "--search", "docker").stdout.splitlines()
    assert [line.split("\t")[1] for line in lines if "\t" in line] == ["first", "second"]


def test_since_and_until_take_dates_times_and_ages(kvchat, store):
    add(store, "s", "long ago", at=DAY - timedelta(days=30))
    add(store, "s", "on the day", at=DAY)
    add(store, "s", "just now")
    everything = [c for _, c in shown(kvchat, "-s", "s")]
    assert everything == ["long ago", "on the day", "just now"]
    assert [c for _, c in shown(kvchat, "-s", "s", "--since", "1h")] == ["just now"]
    assert [c for _, c in shown(kvchat, "-s", "s", "--since", "2026-03-01", "--until", "2026-03-10")] == ["on the day"], \
        "a date alone for --until takes in that whole day"
    at = DAY.isoformat()
    assert [c for _, c in shown(kvchat, "-s", "s", "--until", at)] == ["long ago", "on the day"]
    assert [c for _, c in shown(kvchat, "-s", "s", "--since", "2026-03-10T12:00:01+00:00")] == ["just now"]
    assert [c for _, c in shown(kvchat, "--search", "day", "--since", "2w")] == []
    for bad in ("yesterday", "2026-13-01", "5 parsecs"):
        one_line_error(kvchat("history", "-s", "s", "--since", bad), f"--since: {bad!r} is neither a date or time")
    one_line_error(kvchat("history", "-s", "s", "--until", "soon"), "--until: 'soon' is neither")


def test_a_session_is_named_by_its_id_or_a_unique_start_everywhere(kvchat, store):
    add(store, "project-alpha", "alpha question")
    add(store, "project-beta", "beta question")
    add(store, "2026", "a session whose name is a number")
    alpha = store.session("project-alpha")
    assert shown(kvchat, "-s", "project-a") == [("project-alpha", "alpha question")]
    assert shown(kvchat, "-s", f"#{alpha.id}") == [("project-alpha", "alpha question")]
    assert json.loads(kvchat("sessions", "show", "project-b", "--json").stdout)["name"] == "project-beta"
    assert json.loads(kvchat("sessions", "show", f"#{alpha.id}", "--json").stdout)["id"] == alpha.id
    assert "alpha question" in kvchat("export", "--session", "project-al").stdout
    one_line_error(kvchat("history", "-s", "project"),
                   "'project' is the start of several sessions ('project-alpha', 'project-beta')")
    one_line_error(kvchat("history", "-s", "#999"), "no session has the id #999")
    one_line_error(kvchat("history", "-s", "nothing"), "no session named 'nothing' or starting with it")


def test_sessions_set_picks_a_session_by_prefix_and_says_so_else_starts_one(kvchat, store):
    add(store, "project-alpha", "alpha question")
    done = kvchat("sessions", "set", "project-a", "--window", "3")
    assert done.exit_code == 0
    assert "using session 'project-alpha', the only one whose name starts with 'project-a'" in done.stderr
    assert store.session("project-alpha").settings == {"window": 3}
    assert kvchat("sessions", "set", "fresh", "--window", "2").exit_code == 0
    assert store.session("fresh").settings == {"window": 2}
    one_line_error(kvchat("sessions", "set", "#42", "--window", "2"), "no session has the id #42")


def test_the_configured_session_is_taken_by_its_exact_name_only(kvchat, store, monkeypatch):
    add(store, "default-old", "an old question")
    monkeypatch.setenv("KVCHAT_SESSION", "work")
    add(store, "work-2025", "last year's work")
    one_line_error(kvchat("history"), "no session named 'work' yet (see `kvchat sessions`)")
    assert shown(kvchat, "-s", "work") == [("work-2025", "last year's work")], "a given --session may be a prefix"

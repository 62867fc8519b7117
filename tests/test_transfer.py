"""Turns in and out: JSON-lines import (checked whole), export as JSON lines or
Markdown, `ref` kept from import to history and recall, sessions listing."""

from __future__ import annotations

import json
import time

import pytest


def write_lines(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_import_then_export_round_trips(kvchat, tmp_path):
    records = [
        {"session": "madial-1", "role": "user", "name": "Bart", "content": "I'm doing a magic trick!", "ref": "d1-1", "created_at": "2024-01-01T10:00:00+00:00"},
        {"session": "madial-1", "role": "assistant", "content": "That's fantastic!", "ref": "d1-2", "created_at": "2024-01-01T10:00:05+00:00"},
        {"session": "other", "role": "user", "content": "你好"},
    ]
    done = kvchat("import", str(write_lines(tmp_path / "turns.jsonl", records)))
    assert done.exit_code == 0, done.stderr
    exported = [json.loads(line) for line in kvchat("export").stdout.splitlines()]
    assert [(r["session"], r["role"], r["content"], r.get("ref"), r.get("name")) for r in exported] == [
        (r["session"], r["role"], r["content"], r.get("ref"), r.get("name")) for r in records
    ]
    assert exported[0]["created_at"].startswith("2024-01-01T10:00:00")


def test_history_json_returns_the_ref(kvchat, tmp_path):
    kvchat("import", str(write_lines(tmp_path / "t.jsonl", [{"session": "s", "role": "user", "content": "hi", "ref": "ext-7"}])))
    [turn] = json.loads(kvchat("history", "-s", "s", "--json").stdout)
    assert turn["ref"] == "ext-7" and turn["tokens"] > 0


def test_a_bad_line_imports_nothing_and_names_the_line(kvchat, tmp_path, store):
    path = tmp_path / "t.jsonl"
    path.write_text('{"session": "s", "role": "user", "content": "fine"}\n{"session": "s", "role": "wizard", "content": "x"}\n')
    done = kvchat("import", str(path))
    assert done.exit_code == 1 and "line 2" in done.stderr and done.stderr.count("\n") == 1
    assert store.sessions() == []


def test_not_utf8_is_refused_clearly(kvchat, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"session": "s", "role": "user", "content": "\xff\xfe"}\n')
    done = kvchat("import", str(path))
    assert done.exit_code == 1 and "UTF-8" in done.stderr


def test_export_markdown_of_one_session(kvchat, tmp_path):
    kvchat("import", str(write_lines(tmp_path / "t.jsonl", [
        {"session": "a", "role": "user", "content": "question in a"},
        {"session": "b", "role": "user", "content": "question in b"},
    ])))
    markdown = kvchat("export", "--session", "a", "--format", "markdown").stdout
    assert markdown.startswith("# Session: a") and "question in a" in markdown and "question in b" not in markdown


def test_sessions_lists_turns_tokens_and_activity(kvchat, tmp_path):
    kvchat("import", str(write_lines(tmp_path / "t.jsonl", [
        {"session": "a", "role": "user", "content": "one two three"},
        {"session": "a", "role": "assistant", "content": "four"},
    ])))
    [session] = json.loads(kvchat("sessions", "--json").stdout)
    assert session["name"] == "a" and session["turns"] == 2 and session["tokens"] >= 4
    assert session["last_active_at"]


def test_history_limit_and_unknown_session(kvchat, tmp_path):
    kvchat("import", str(write_lines(tmp_path / "t.jsonl", [
        {"session": "a", "role": "user", "content": f"turn {i}"} for i in range(5)
    ])))
    shown = json.loads(kvchat("history", "-s", "a", "-n", "2", "--json").stdout)
    assert [t["content"] for t in shown] == ["turn 3", "turn 4"]
    missing = kvchat("history", "-s", "nope")
    assert missing.exit_code == 1 and "no session" in missing.stderr


def test_import_of_ten_thousand_turns(kvchat, tmp_path, store):
    records = [{"session": f"s{i % 10}", "role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} about databases and 数据库"} for i in range(10_000)]
    assert kvchat("import", str(write_lines(tmp_path / "big.jsonl", records))).exit_code == 0
    assert sum(s.turn_count for s in store.sessions()) == 10_000


def test_importing_the_same_file_twice_adds_nothing_the_second_time(kvchat, tmp_path, store):
    path = write_lines(tmp_path / "t.jsonl", [
        {"session": "s", "role": "user", "content": "hi", "ref": "a"},
        {"session": "s", "role": "assistant", "content": "hello", "ref": "b"},
    ])
    kvchat("import", str(path))
    kvchat("import", str(path))
    assert store.session("s").turn_count == 2


def test_re_importing_an_export_adds_nothing_twice(model, kvchat, tmp_path, store):
    """Turns asked here have no ref: the export's time, role and text tell
    the import that the session already holds them."""
    model.queue_answer("Use reversed(xs).")
    kvchat("ask", "How do I reverse a list?", "--no-extract")
    export = tmp_path / "export.jsonl"
    export.write_text(kvchat("export").stdout)
    again = kvchat("import", str(export))
    assert again.exit_code == 0
    assert again.stderr == "Imported 0 turns into 0 sessions; 2 lines already stored, skipped.\n"
    assert json.loads(kvchat("import", str(export), "--json").stdout) == {
        "imported": 0, "sessions": {"default": 0}, "already_stored": 2,
    }
    assert [turn.content for turn in store.history(store.session("default").id)] == [
        "How do I reverse a list?", "Use reversed(xs).",
    ]


def test_the_same_text_at_another_time_or_without_one_is_a_new_turn(kvchat, tmp_path, store):
    first = {"session": "s", "role": "user", "content": "ping", "created_at": "2024-01-01T10:00:00+00:00"}
    kvchat("import", str(write_lines(tmp_path / "a.jsonl", [first])))
    later = dict(first, created_at="2024-01-01T10:05:00+00:00")
    undated = {key: value for key, value in first.items() if key != "created_at"}
    answered = dict(first, role="assistant")
    done = kvchat("import", str(write_lines(tmp_path / "b.jsonl", [first, later, undated, answered])), "--json")
    assert json.loads(done.stdout) == {"imported": 3, "sessions": {"s": 3}, "already_stored": 1}
    assert store.session("s").turn_count == 4


def test_an_export_keeps_incomplete_answers_incomplete_through_import(model, kvchat, tmp_path, home, monkeypatch):
    model.queue_cut_stream("half an ans")
    kvchat("ask", "explain", "--no-extract")
    exported = kvchat("export").stdout
    assert '"status": "interrupted"' in exported
    monkeypatch.setenv("KVCHAT_DB", str(tmp_path / "other.db"))
    kvchat("import", "-", input=exported)
    [turn] = [t for t in json.loads(kvchat("history", "--json").stdout) if t["role"] == "assistant"]
    assert turn["status"] == "interrupted"


def test_a_long_import_and_export_report_their_progress(store):
    from kvchat import transfer

    lines = [json.dumps({"session": f"s{i % 2}", "role": "user", "content": f"turn {i}"}) + "\n" for i in range(1200)]
    heard = []
    transfer.import_turns(store, lines, model="gpt-4o-mini", progress=lambda *report: heard.append(report))
    assert heard == [
        ("checking", 500, 1200), ("checking", 1000, 1200), ("checking", 1200, 1200),
        ("storing", 0, 1200), ("storing", 600, 1200), ("storing", 1200, 1200),
        ("counting terms", 0, None),  # it grew the store by more than 5% (see test_kept_term_counts)
    ]
    heard.clear()
    assert len(list(transfer.export_turns(store, progress=lambda *report: heard.append(report)))) == 1200
    assert heard == [("exporting", 500, 1200), ("exporting", 1000, 1200), ("exporting", 1200, 1200)]
    # One session's turns are written in batches, each reported, in one transaction.
    heard.clear()
    lines = [json.dumps({"session": "long", "role": "user", "content": f"turn {i}"}) + "\n" for i in range(2500)]
    transfer.import_turns(store, lines, model="gpt-4o-mini", progress=lambda *report: heard.append(report))
    assert [report for report in heard if report[0] == "storing"] == [
        ("storing", 0, 2500), ("storing", 1000, 2500), ("storing", 2000, 2500), ("storing", 2500, 2500),
    ]


def big_import(path, turns=30_000):
    """An import long enough (a second or more) for a progress bar to show."""
    return write_lines(path, [{"session": "big", "role": "user", "content": f"turn {i} about sqlite"} for i in range(turns)])


def test_a_long_import_at_a_terminal_shows_a_progress_bar(kvchat_terminal, tmp_path):
    done = kvchat_terminal("import", str(big_import(tmp_path / "big.jsonl")))
    assert done.exit_code == 0, done.stdout
    assert "storing" in done.stdout and "/30000" in done.stdout
    assert "Imported 30000 turns into 1 session." in done.stdout


def test_a_long_import_or_export_that_is_piped_prints_no_progress_bar(kvchat, tmp_path):
    done = kvchat("import", str(big_import(tmp_path / "big.jsonl")))
    assert done.stderr == "Imported 30000 turns into 1 session.\n"
    exported = kvchat("export")
    assert exported.stderr == "" and len(exported.stdout.splitlines()) == 30_000


def test_an_answer_holding_a_nul_is_kept_with_u_fffd_and_its_export_imports(model, kvchat, tmp_path, store):
    model.queue_answer('print("a\x00b")')
    assert kvchat("ask", "show me", "--no-extract").exit_code == 0
    [_, answer] = store.history(store.session("default").id)
    assert answer.content == 'print("a\ufffdb")'
    export = tmp_path / "export.jsonl"
    export.write_text(kvchat("export").stdout)
    assert kvchat("sessions", "delete", "default", "--yes").exit_code == 0
    done = kvchat("import", str(export))
    assert done.exit_code == 0, done.stderr
    # An export of a store from before: the answer's NUL as it came.
    old = write_lines(tmp_path / "old.jsonl", [{"session": "old", "role": "assistant", "content": "a\x00b"}])
    assert kvchat("import", str(old)).exit_code == 0
    assert [t["content"] for t in json.loads(kvchat("history", "-s", "old", "--json").stdout)] == ["a\ufffdb"]


def test_import_checks_speaker_names_and_session_names_line_by_line(kvchat, tmp_path, store):
    for record, error in [
        ({"session": "s", "role": "user", "content": "x", "name": "a\nb"}, "line 1: name must not contain control characters"),
        ({"session": "#5", "role": "user", "content": "x"}, "line 1: '#5' cannot be a session name"),
    ]:
        done = kvchat("import", str(write_lines(tmp_path / "bad.jsonl", [record])))
        assert done.exit_code == 1 and done.stderr.startswith(f"kvchat: error: {error}"), done.stderr
    assert store.sessions() == []


@pytest.fixture
def in_tokyo(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_an_empty_name_or_ref_is_none_and_a_time_without_zone_is_local(kvchat, tmp_path, store, in_tokyo):
    record = {"session": "s", "role": "user", "content": "x", "name": " ", "ref": "", "created_at": "2026-01-01T09:00:00"}
    assert kvchat("import", str(write_lines(tmp_path / "t.jsonl", [record]))).exit_code == 0
    [turn] = json.loads(kvchat("history", "-s", "s", "--json").stdout)
    assert (turn["name"], turn["ref"]) == (None, None)
    assert turn["created_at"].startswith("2026-01-01T00:00:00")  # 09:00 in Tokyo, as UTC


def test_a_file_starting_with_a_byte_order_mark_imports(kvchat, tmp_path, store):
    path = tmp_path / "bom.jsonl"
    path.write_text('\ufeff{"session": "s", "role": "user", "content": "from Notepad"}\n', encoding="utf-8")
    done = kvchat("import", str(path))
    assert done.exit_code == 0, done.stderr
    assert store.session("s").turn_count == 1


def test_the_sessions_listing_escapes_a_backslash_when_piped(kvchat, tmp_path):
    kvchat("import", str(write_lines(tmp_path / "t.jsonl", [{"session": "C:\\new", "role": "user", "content": "x"}])))
    [line] = kvchat("sessions").stdout.splitlines()
    assert line.split("\t")[0] == "C:\\\\new"


def test_a_new_session_name_an_import_may_not_make_is_refused_before_anything_is_stored(kvchat, tmp_path, store):
    lines = [{"session": "good", "role": "user", "content": "x"}, {"session": "b\u200bc", "role": "user", "content": "y"}]
    done = kvchat("import", str(write_lines(tmp_path / "t.jsonl", lines)))
    assert (done.exit_code, done.stderr) == (
        1, "kvchat: error: line 2: a session name must not contain invisible characters (U+200B)\n"
    )
    assert store.sessions() == []


def test_a_bad_time_is_named_by_its_field(kvchat, tmp_path):
    lines = tmp_path / "facts.jsonl"
    lines.write_text('{"key": "user.editor", "value": "vim", "updated_at": "yesterday"}\n')
    done = kvchat("facts", "import", str(lines))
    assert done.stderr == "kvchat: error: line 1: updated_at 'yesterday' is not an ISO 8601 time\n"

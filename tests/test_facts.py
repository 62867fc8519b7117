"""Facts: learned after each exchange (by rule and by model), and inspected,
corrected and deleted with `kvchat facts`."""

from __future__ import annotations

import json

import pytest


def facts_json(kvchat) -> dict[str, str]:
    return {f["key"]: f["value"] for f in json.loads(kvchat("facts", "--json").stdout)}


def test_explicit_statements_are_learned_by_rule_without_a_model_call(model, kvchat):
    kvchat("ask", "My name is Ada and I use neovim", "--extract", "rules")
    assert facts_json(kvchat)["user.name"] == "Ada"
    assert model.json_requests == []


def test_chinese_statements_are_learned_by_rule(model, kvchat):
    kvchat("ask", "我叫小明", "--extract", "rules")
    assert facts_json(kvchat)["user.name"] == "小明"


def test_the_model_extracts_facts_with_a_json_schema(model, kvchat):
    model.queue_json_reply(json.dumps({"facts": [{"key": "project.kvchat.language", "value": "Python 3.11"}], "forget": []}))
    kvchat("ask", "Our kvchat project targets Python 3.11")
    assert facts_json(kvchat) == {"project.kvchat.language": "Python 3.11"}
    [request] = model.json_requests
    assert request["response_format"]["type"] == "json_schema"
    history = json.loads(kvchat("facts", "history", "project.kvchat.language", "--json").stdout)
    assert history[0]["source"] == "model" and history[0]["turn_id"] is not None


def test_a_new_value_replaces_the_old_and_forget_removes(model, kvchat):
    model.queue_json_reply('{"facts": [{"key": "user.editor", "value": "vim"}], "forget": []}')
    kvchat("ask", "I edit with vim")
    model.queue_json_reply('{"facts": [{"key": "user.editor", "value": "helix"}], "forget": []}')
    kvchat("ask", "I switched to helix")
    assert facts_json(kvchat)["user.editor"] == "helix"
    model.queue_json_reply('{"facts": [], "forget": ["user.editor"]}')
    kvchat("ask", "I don't use an editor any more")
    assert "user.editor" not in facts_json(kvchat)
    values = [v["value"] for v in json.loads(kvchat("facts", "history", "user.editor", "--json").stdout)]
    assert values == ["vim", "helix", None]


def test_the_model_cannot_forget_a_fact_the_exchange_does_not_mention(model, kvchat):
    assert kvchat("facts", "set", "user.editor", "neovim").exit_code == 0
    model.queue_json_reply('{"facts": [], "forget": ["user.editor"]}')
    done = kvchat("ask", "what is 2+2?", "--verbose")
    assert facts_json(kvchat)["user.editor"] == "neovim"
    assert ("kvchat: the model asked to forget user.editor, which this exchange does not mention; "
            "nothing of it was forgotten\n") in done.stderr
    # A forget the rules already made is no guess of the model's.
    assert kvchat("facts", "set", "user.uses.vim", "vim").exit_code == 0
    model.queue_json_reply('{"facts": [], "forget": ["user.uses.vim"]}')
    done = kvchat("ask", "forget that I use vim", "--verbose")
    assert "user.uses.vim" not in facts_json(kvchat)
    assert "asked to forget" not in done.stderr


def test_a_server_that_rejects_json_schema_gets_json_object(model, kvchat):
    model.reject_json_schema = True
    model.queue_json_reply('{"facts": [{"key": "user.os", "value": "Debian"}], "forget": []}')
    kvchat("ask", "I run Debian")
    assert facts_json(kvchat)["user.os"] == "Debian"
    assert [r["response_format"]["type"] for r in model.json_requests] == ["json_schema", "json_object"]


def test_broken_extraction_json_stores_nothing_says_so_and_keeps_the_answer(model, kvchat, store):
    model.queue_json_reply('{"facts": [{"key": "user.os", "val')
    done = kvchat("ask", "I run Debian", "--verbose")
    assert done.exit_code == 0
    assert done.stdout == "echo: I run Debian\n"
    assert "fact extraction stored nothing" in done.stderr
    assert facts_json(kvchat) == {}
    assert store.history(store.session("default").id)[-1].status == "complete"


def test_extraction_that_fails_at_the_server_never_fails_the_answer(model, kvchat):
    model.queue_answer("hello to you")
    model.queue_error(500, json_mode=True)  # json_schema refused
    model.queue_error(500, json_mode=True)  # json_object refused
    model.queue_error(500)  # and plain text fails as well
    done = kvchat("ask", "hello", "--verbose")
    assert done.exit_code == 0 and done.stdout == "hello to you\n"
    assert "fact extraction stored nothing" in done.stderr


def test_secrets_are_never_stored_as_facts(model, kvchat):
    model.queue_json_reply('{"facts": [{"key": "user.github_token", "value": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}], "forget": []}')
    kvchat("ask", "here is my token ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    assert facts_json(kvchat) == {}
    refused = kvchat("facts", "set", "user.password", "hunter2")
    assert refused.exit_code == 1 and "secret" in refused.stderr


def test_set_search_forget_from_the_command_line(kvchat):
    assert kvchat("facts", "set", "User.Editor", "Neovim 0.10").exit_code == 0
    kvchat("facts", "set", "user.shell", "fish")
    found = json.loads(kvchat("facts", "neovim", "--json").stdout)
    assert [f["key"] for f in found] == ["user.editor"]
    assert json.loads(kvchat("facts", "search", "fish", "--json").stdout)[0]["key"] == "user.shell"
    assert kvchat("facts", "forget", "user.editor").exit_code == 0
    missing = kvchat("facts", "forget", "user.editor")
    assert missing.exit_code == 1 and "no fact" in missing.stderr
    assert list(facts_json(kvchat)) == ["user.shell"]


def test_facts_import_and_export_keep_ref_and_time(kvchat, tmp_path):
    source = tmp_path / "facts.jsonl"
    source.write_text(
        '{"key": "user.name", "value": "Bart", "ref": "mem-1", "created_at": "2023-12-25T10:00:00+00:00"}\n'
        '{"key": "user.hobby", "value": "magic tricks"}\n'
    )
    assert kvchat("facts", "import", str(source)).exit_code == 0
    exported = [json.loads(line) for line in kvchat("facts", "export").stdout.splitlines()]
    by_key = {f["key"]: f for f in exported}
    assert by_key["user.name"]["ref"] == "mem-1"
    assert by_key["user.name"]["created_at"].startswith("2023-12-25T10:00:00")
    # A listing has every field for every fact: an unset ref is null, not missing.
    listed = {f["key"]: f for f in json.loads(kvchat("facts", "--json").stdout)}
    assert (listed["user.name"]["ref"], listed["user.hobby"]["ref"]) == ("mem-1", None)
    assert set(listed["user.name"]) == set(listed["user.hobby"])


def test_a_bad_facts_file_imports_nothing(kvchat, tmp_path):
    source = tmp_path / "facts.jsonl"
    source.write_text('{"key": "user.name", "value": "Bart"}\n{"key": "", "value": "x"}\n')
    done = kvchat("facts", "import", str(source))
    assert done.exit_code == 1 and "line 2" in done.stderr
    assert facts_json(kvchat) == {}


def test_a_facts_file_with_a_secret_imports_nothing(kvchat, tmp_path):
    source = tmp_path / "facts.jsonl"
    source.write_text('{"key": "user.editor", "value": "vim"}\n{"key": "user.password", "value": "hunter2"}\n')
    done = kvchat("facts", "import", str(source))
    assert done.exit_code == 1 and "line 2" in done.stderr and "secret" in done.stderr
    assert facts_json(kvchat) == {}


def test_imported_keys_are_normalised_like_any_other(kvchat, tmp_path):
    source = tmp_path / "facts.jsonl"
    source.write_text('{"key": "User Favourite Editor ", "value": "vim"}\n')
    kvchat("facts", "import", str(source))
    assert facts_json(kvchat) == {"user_favourite_editor": "vim"}


def test_extraction_is_shown_the_related_facts_and_a_token_limit(model, kvchat):
    kvchat("facts", "set", "user.editor", "neovim")
    kvchat("facts", "set", "user.pet", "a cat called Miso")
    kvchat("ask", "Which editor plugins do you recommend?")
    [request] = model.json_requests
    sent = json.dumps(request["messages"])
    assert "neovim" in sent and "Miso" not in sent
    assert request.get("max_tokens") == 600 or request.get("max_completion_tokens") == 600


def test_an_explicit_statement_is_kept_even_when_the_answer_fails(model, kvchat):
    for _ in range(3):
        model.queue_error(500)
    done = kvchat("ask", "Remember that the staging port is 6543")
    assert done.exit_code == 1
    assert facts_json(kvchat) == {"note.staging_port": "6543"}


def test_a_statement_already_informs_its_own_question(model, kvchat):
    kvchat("ask", "My name is Ada. What is my name?", "--extract", "rules")
    assert "user.name: Ada" in model.chat_requests[0]["messages"][0]["content"]


def test_a_fact_too_long_to_ever_be_recalled_is_refused(kvchat, tmp_path):
    done = kvchat("facts", "set", "user.essay", "word " * 1000)
    assert done.exit_code == 1 and "longer than" in done.stderr
    source = tmp_path / "facts.jsonl"
    source.write_text(json.dumps({"key": "user.essay", "value": "word " * 1000}) + "\n")
    done = kvchat("facts", "import", str(source))
    assert done.exit_code == 1 and "line 1" in done.stderr


def test_an_import_that_repeats_and_updates_keys_keeps_every_version(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "vim")
    source = tmp_path / "facts.jsonl"
    source.write_text(
        '{"key": "user.shell", "value": "bash"}\n'
        '{"key": "user.editor", "value": "helix"}\n'
        '{"key": "user.shell", "value": "fish"}\n'
        '{"key": "user.os", "value": "Debian"}\n'
    )
    done = kvchat("facts", "import", str(source), "--json")
    assert json.loads(done.stdout) == {"imported": 4, "changed": 4, "older_than_stored": 0}
    assert facts_json(kvchat) == {"user.editor": "helix", "user.os": "Debian", "user.shell": "fish"}
    shell = [v["value"] for v in json.loads(kvchat("facts", "history", "user.shell", "--json").stdout)]
    assert shell == ["bash", "fish"]
    assert "fish" in kvchat("facts", "fish").stdout and "bash" not in kvchat("facts", "bash").stdout


def test_a_value_with_tabs_and_line_breaks_is_one_escaped_row_when_piped(kvchat):
    value = "first line\nsecond\tcolumn \\ end"
    assert kvchat("facts", "set", "note.layout", value).exit_code == 0
    kvchat("facts", "set", "user.shell", "fish")

    listed = kvchat("facts").stdout
    assert listed.splitlines() == ["note.layout\tfirst line\\nsecond\\tcolumn \\\\ end", "user.shell\tfish"]
    assert [line.split("\t")[1:3] for line in kvchat("facts", "history", "note.layout").stdout.splitlines()] == [
        ["set", "first line\\nsecond\\tcolumn \\\\ end"]
    ]
    assert json.loads(kvchat("facts", "--json").stdout)[0]["value"] == value  # JSON stays exact


def test_re_importing_an_old_backup_does_not_undo_newer_values(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "neovim")
    backup = tmp_path / "backup.jsonl"
    backup.write_text(kvchat("facts", "export").stdout + '{"key": "user.os", "value": "Debian"}\n')
    kvchat("facts", "set", "user.editor", "helix")
    done = kvchat("facts", "import", str(backup))
    assert done.stderr == "Imported 2 facts (1 new or changed; 1 older than the stored value or forget, passed over).\n"
    assert facts_json(kvchat) == {"user.editor": "helix", "user.os": "Debian"}
    dated = tmp_path / "dated.jsonl"
    dated.write_text('{"key": "user.editor", "value": "vim", "created_at": "2020-01-01T00:00:00Z"}\n'
                     '{"key": "user.editor", "value": "zed", "created_at": "2099-01-01T00:00:00Z"}\n')
    assert json.loads(kvchat("facts", "import", str(dated), "--json").stdout) == {
        "imported": 2, "changed": 1, "older_than_stored": 1,
    }
    assert [v["value"] for v in json.loads(kvchat("facts", "history", "user.editor", "--json").stdout)] == [
        "neovim", "helix", "zed",
    ]


def test_a_long_key_folds_and_leaves_room_for_the_values_on_a_terminal(kvchat, kvchat_terminal):
    key = "project.kvchat.database.migrations.tool_preference_for_production." + "x" * 34  # 100 characters
    assert kvchat("facts", "set", key, "alembic").exit_code == 0
    kvchat("facts", "set", "user.editor", "neovim")
    done = kvchat_terminal("facts")
    assert done.exit_code == 0
    assert "alembic" in done.stdout and "neovim" in done.stdout and "updated" in done.stdout


def test_get_prints_one_value_exactly_and_set_says_how_it_spelt_the_key(kvchat):
    done = kvchat("facts", "set", "Lang.C++", "  first line\nsecond  ")
    assert done.stderr == "lang.cpp: created (stored as 'lang.cpp': keys are lower-case words joined by dots)\n"
    assert kvchat("facts", "set", "lang.cpp", "gcc").stderr == "lang.cpp: updated\n"
    assert kvchat("facts", "get", "lang.cpp").stdout == "gcc\n"
    assert json.loads(kvchat("facts", "get", "Lang.C++", "--json").stdout)["value"] == "gcc"
    missing = kvchat("facts", "get", "lang.rust")
    assert (missing.exit_code, missing.stdout, missing.stderr) == (1, "", "kvchat: error: no fact with the key 'lang.rust'\n")


def test_a_mistyped_facts_command_is_named_not_taken_for_a_search(kvchat):
    kvchat("facts", "set", "user.editor", "helix")
    done = kvchat("facts", "forgt", "user.editor")
    assert (done.exit_code, done.stderr) == (
        1, "kvchat: error: no facts command is called 'forgt': did you mean `kvchat facts forget`?\n"
    )
    two = kvchat("facts", "editor", "helix")
    assert (two.exit_code, two.stderr) == (
        1, "kvchat: error: a search takes its words as one argument: quote them (kvchat facts 'WORDS')\n"
    )
    # A search with its options, before or after the words, is still a search.
    for args in (["helix", "-k", "1"], ["-k", "1", "helix"], ["--json", "helix"]):
        assert json.loads(kvchat("facts", *args, "--json").stdout)[0]["key"] == "user.editor", args


@pytest.mark.parametrize("key", [
    "note." + "k" * 120,
    "note." + "k" * 90 + "_ab.cdefgh",  # would be cut at the dot
    "note." + "k" * 91 + ".c#",  # "c#" is "csharp": longer than typed
])
def test_a_key_longer_than_kvchat_keeps_is_refused_not_cut(kvchat, tmp_path, key):
    done = kvchat("facts", "set", key, "v")
    assert (done.exit_code, done.stderr) == (1, "kvchat: error: a fact key is at most 100 characters\n")
    lines = tmp_path / "facts.jsonl"
    lines.write_text(json.dumps({"key": key, "value": "v"}) + "\n")
    done = kvchat("facts", "import", str(lines))
    assert (done.exit_code, done.stderr) == (1, "kvchat: error: line 1: a fact key is at most 100 characters\n")
    assert facts_json(kvchat) == {}


def test_a_key_is_measured_as_kvchat_spells_it(kvchat):
    key = "note." + "k" * 93 + "!!"  # 100 characters once the "!!" is dropped
    assert kvchat("facts", "set", key, "v").exit_code == 0
    assert facts_json(kvchat) == {"note." + "k" * 93: "v"}


def test_facts_history_gives_the_action_a_column_of_its_own(kvchat, kvchat_terminal):
    kvchat("facts", "set", "user.q", "(forgotten)")  # a value may be any text
    kvchat("facts", "forget", "user.q")
    piped = [line.split("\t")[1:4] for line in kvchat("facts", "history", "user.q").stdout.splitlines()]
    assert piped == [["set", "(forgotten)", "user"], ["forget", "", "user"]]
    screen = kvchat_terminal("facts", "history", "user.q").stdout
    assert "action" in screen and "forget" in screen


def test_an_import_dates_a_value_by_its_updated_at(kvchat, tmp_path, store):
    """An export's created_at is when the key first got a value; its
    updated_at when it got this one: that is what an import compares."""
    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"key": "user.editor", "value": "helix", "created_at": "2026-01-01T00:00:00Z", '
                     '"updated_at": "2026-03-01T00:00:00Z"}\n')
    older = tmp_path / "older.jsonl"
    older.write_text('{"key": "user.editor", "value": "vim", "created_at": "2026-01-01T00:00:00Z"}\n')
    assert kvchat("facts", "import", str(newer)).exit_code == 0
    [fact] = store.facts()
    assert (fact.created_at.month, fact.updated_at.month) == (1, 3)
    assert json.loads(kvchat("facts", "import", str(older), "--json").stdout) == {
        "imported": 1, "changed": 0, "older_than_stored": 1,
    }
    export = tmp_path / "export.jsonl"
    export.write_text(kvchat("facts", "export").stdout)
    assert json.loads(kvchat("facts", "import", str(export), "--json").stdout) == {
        "imported": 1, "changed": 0, "older_than_stored": 0,
    }
    assert facts_json(kvchat) == {"user.editor": "helix"}


def test_an_old_backup_does_not_bring_back_a_fact_forgotten_since(kvchat, tmp_path):
    kvchat("facts", "set", "user.editor", "vim")
    backup = tmp_path / "backup.jsonl"
    backup.write_text(kvchat("facts", "export").stdout)
    kvchat("facts", "forget", "user.editor")
    assert json.loads(kvchat("facts", "import", str(backup), "--json").stdout) == {
        "imported": 1, "changed": 0, "older_than_stored": 1,
    }
    assert facts_json(kvchat) == {}
    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"key": "user.editor", "value": "zed", "created_at": "2099-01-01T00:00:00Z"}\n')
    assert json.loads(kvchat("facts", "import", str(newer), "--json").stdout)["changed"] == 1

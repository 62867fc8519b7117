from __future__ import annotations

import json
import time

import pytest

from kvchat.extraction import (
    EXTRACTION_SCHEMA,
    MAX_FACTS,
    MAX_VALUE_LENGTH,
    ExtractionError,
    FactChange,
    Skipped,
    extract_by_rules,
    extraction_messages,
    looks_like_secret,
    normalise_key,
    parse_extraction,
    parse_extraction_reply,
    rule_extraction,
)

# Credential-shaped strings are assembled at run time so that no literal in
# this file looks like a real key to secret scanners.
FAKE = {
    "openai": "sk-" + "a1B2c3D4" * 4,
    "openai_project": "sk-proj-" + "Ab3_xY9-" * 6,
    "anthropic": "sk-ant-api03-" + "Zq8" * 10,
    "github_classic": "ghp_" + "aB1" * 12,
    "github_fine_grained": "github_pat_" + "11AB2cd" * 6,
    "slack": "xoxb-" + "1234567890-" + "abcdEFGH" * 2,
    "aws": "AKIA" + "ABCDEFGHIJKLMNOP",
    "google": "AIza" + "Sy" + "B" * 33,
    "gitlab": "glpat-" + "x1Y2z3" * 4,
    "stripe": "sk_" + "live_" + "4eC39HqLyjWDarjt" * 2,
    "huggingface": "hf_" + "aBcD" * 9,
    "jwt": "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


def changes(text: str) -> list[tuple[str, str | None]]:
    return [(change.key, change.value) for change in extract_by_rules(text)]


# ----------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user.name", "user.name"),
        ("User.Name", "user.name"),
        ("  user . name  ", "user.name"),
        ("user.preferred editor", "user.preferred_editor"),
        ("user.preferred-editor", "user.preferred_editor"),
        ("user/editor", "user.editor"),
        ("user::editor", "user.editor"),
        ("project.kvchat.python_version", "project.kvchat.python_version"),
        ("user..name.", "user.name"),
        ("user.__name__", "user.name"),
        ("user.uses.C++", "user.uses.cpp"),
        ("user.uses.C#", "user.uses.csharp"),
        ("user.编辑器", "user.编辑器"),
        ("项目.kvchat.语言", "项目.kvchat.语言"),
        ("ｕｓｅｒ．ｎａｍｅ", "user.name"),  # full-width
        ("user.name!!", "user.name"),
        ("'user.name'", "user.name"),
        ("", None),
        ("   ", None),
        ("...", None),
        ("!!!", None),
        ("😀", None),
    ],
)
def test_normalise_key(raw, expected):
    assert normalise_key(raw) == expected


def test_normalise_key_caps_length():
    key = normalise_key("user." + "x" * 300)
    assert key is not None and len(key) <= 100 and key.startswith("user.x")
    assert not normalise_key("a." * 80).endswith(".")


def test_normalise_key_rejects_non_strings():
    assert normalise_key(None) is None  # type: ignore[arg-type]
    assert normalise_key(42) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- rules

RULES = [
    # names
    ("My name is Ada", [("user.name", "Ada")]),
    ("my name is Ada Lovelace.", [("user.name", "Ada Lovelace")]),
    ("Call me Ada", [("user.name", "Ada")]),
    ("Hi! You can call me Grace.", [("user.name", "Grace")]),
    ("My name is Ada and I use vim.", [("user.name", "Ada"), ("user.uses.vim", "vim")]),
    ("我叫小明", [("user.name", "小明")]),
    ("我的名字是李雷。", [("user.name", "李雷")]),
    ("叫我小明就行", [("user.name", "小明")]),
    ("好的，我叫小明。我平时用Go写后端！", [("user.name", "小明"), ("user.uses.go", "Go")]),
    # uses
    ("I use vim", [("user.uses.vim", "vim")]),
    ("I use Visual Studio Code for Python", [("user.uses.visual_studio_code", "Visual Studio Code")]),
    ("I'm using Python 3.11 on Linux", [("user.uses.python_3_11", "Python 3.11")]),
    ("I mostly use the Fish shell.", [("user.uses.fish_shell", "Fish shell")]),
    ("I use a Mac", [("user.uses.mac", "Mac")]),
    ("I use tmux here too", [("user.uses.tmux", "tmux")]),
    ("I code in Rust", [("user.uses.rust", "Rust")]),
    ("I use C++ at work", [("user.uses.cpp", "C++")]),
    ("I use Neovim, how do I set up LSP?", [("user.uses.neovim", "Neovim")]),
    ("我用vim写代码", [("user.uses.vim", "vim")]),
    ("我平时用 Python 3.11 开发", [("user.uses.python_3_11", "Python 3.11")]),
    ("我使用Neovim", [("user.uses.neovim", "Neovim")]),
    ("我用的是VS Code", [("user.uses.vs_code", "VS Code")]),
    ("我用vim，怎么退出？", [("user.uses.vim", "vim")]),
    ("我用记事本写代码", [("user.uses.记事本", "记事本")]),
    ("我用记事本的时候很方便", [("user.uses.记事本", "记事本")]),
    # prefers / favourite
    ("I prefer tabs over spaces", [("user.prefers.tabs", "tabs over spaces")]),
    ("I prefer Rust", [("user.prefers.rust", "Rust")]),
    ("I prefer to write tests first", [("user.prefers.write_tests_first", "write tests first")]),
    ("我更喜欢用tabs而不是空格", [("user.prefers.tabs", "tabs而不是空格")]),
    ("my favourite language is Rust", [("user.favourite.language", "Rust")]),
    ("My favorite editor is Helix!", [("user.favourite.editor", "Helix")]),
    ("我最喜欢的编辑器是Neovim", [("user.favourite.编辑器", "Neovim")]),
    # remember
    ("remember that my editor is Neovim", [("user.editor", "Neovim")]),
    ("Please remember: my OS is Arch Linux", [("user.os", "Arch Linux")]),
    ("remember that project kvchat's language is Python", [("project.kvchat.language", "Python")]),
    ("remember that kvchat's database is SQLite", [("kvchat.database", "SQLite")]),
    ("Remember: the staging server is db2.internal", [("note.staging_server", "db2.internal")]),
    ("remember that I deploy on Fridays", [("note.i_deploy_on_fridays", "I deploy on Fridays")]),
    ("remember that I use tabs", [("user.uses.tabs", "tabs")]),
    ("remember my name is Ada", [("user.name", "Ada")]),
    ("记住我的编辑器是Neovim", [("user.编辑器", "Neovim")]),
    ("记住项目kvchat的语言是Python", [("project.kvchat.语言", "Python")]),
    ("记住，我每周五部署", [("note.我每周五部署", "我每周五部署")]),
    ("记住我总是用tabs", [("user.uses.tabs", "tabs")]),
    # forget
    ("forget my name", [("user.name", None)]),
    ("Forget that I use vim.", [("user.uses.vim", None)]),
    ("forget that my editor is vim", [("user.editor", None)]),
    ("forget about the staging server", [("note.staging_server", None)]),
    ("forget that I deploy on Fridays", [("note.i_deploy_on_fridays", None)]),
    ("I no longer use vim", [("user.uses.vim", None)]),
    ("I don't use Emacs anymore.", [("user.uses.emacs", None)]),
    ("I've stopped using Atom", [("user.uses.atom", None)]),
    ("I switched from vim to helix", [("user.uses.vim", None), ("user.uses.helix", "helix")]),
    ("忘记我的名字", [("user.name", None)]),
    ("忘掉我用vim", [("user.uses.vim", None)]),
    ("我不再用vim了", [("user.uses.vim", None)]),
    ("我已经不用Emacs了", [("user.uses.emacs", None)]),
    ("我从vim换成了helix", [("user.uses.vim", None), ("user.uses.helix", "helix")]),
    # the last statement about a key wins
    ("My name is Ada. Actually, call me Bob.", [("user.name", "Bob")]),
    ("Forget my name. My name is Bob.", [("user.name", "Bob")]),
    # pasted code is not a statement
    ("Here is my code:\n```python\n# I use a cache\nI use vim\n```\nI use Neovim.", [("user.uses.neovim", "Neovim")]),
    ("Look:\n    I use emacs\n\tI use atom\nI use helix", [("user.uses.helix", "helix")]),
    ("```\ncall me Ada", []),
    # not facts
    ("my name is not important", []),
    ("call me later", []),
    ("call me when it's done", []),
    ("How do I use pandas?", []),
    ("Do I use vim?", []),
    ("Can you remember that my editor is vim?", []),
    ("If I use asyncio, do I need a loop?", []),
    ("When I use git rebase it breaks", []),
    ("remember to buy milk", []),
    ("I use it for everything", []),
    ("I use a dict here for speed", []),
    ("I'm using the wrong version", []),
    ("我用它来写脚本", []),
    ("forget it", []),
    ("I used to write Perl", []),
    ("What is my name?", []),
    ("Write a function that reverses a string.", []),
    ("我用什么编辑器比较好？", []),
    ("我用过vim", []),
    ("我用上海的服务器部署 PostgreSQL 数据库", []),  # a server in Shanghai, not a tool called 上海
    ("我叫他过来", []),
    ("你用什么语言写的？", []),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), RULES)
def test_extract_by_rules(text, expected):
    assert changes(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "remember that my password is hunter2",
        f"remember that my api key is {FAKE['openai']}",
        f"I use {FAKE['github_classic']} for CI",
        f"remember that the token is {FAKE['jwt']}",
        "记住我的密码是abc123",
        "remember that the db url is postgresql://ada:hunter2@localhost/kv",
        "remember that my password manager secret is Tr0ub4dor&3",
    ],
)
def test_rules_never_return_secrets(text):
    assert extract_by_rules(text) == []


def test_rules_keep_other_sentences_next_to_a_secret():
    text = f"My name is Ada. My key is {FAKE['openai']}."
    assert changes(text) == [("user.name", "Ada")]


def test_rules_return_factchanges():
    (change,) = extract_by_rules("call me Ada")
    assert change == FactChange("user.name", "Ada")
    with pytest.raises(AttributeError):
        change.key = "x"  # type: ignore[misc]


def test_rules_cap_the_number_of_changes():
    text = ". ".join(f"I use tool{i}x" for i in range(40))
    assert len(extract_by_rules(text)) == MAX_FACTS


def test_rules_are_fast_on_long_input():
    import time

    text = ("I wonder how this works, and why. " * 2000) + "I use vim."
    started = time.perf_counter()
    assert changes(text) == [("user.uses.vim", "vim")]
    assert time.perf_counter() - started < 2.0


# --------------------------------------------------------------- secrets


@pytest.mark.parametrize("name", sorted(FAKE))
def test_secret_formats(name):
    assert looks_like_secret(FAKE[name])
    assert looks_like_secret(f"here it is: {FAKE[name]} thanks")


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdef0123456789xyz",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA",
        "-----BEGIN PRIVATE KEY-----",
        "my password is hunter2",
        "My Password: hunter2",
        'password = "hunter2"',
        '{"user": "ada", "password": "hunter2"}',
        "DB_PASSWORD=s3cret!",
        "export OPENAI_API_KEY=abc123def456",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFI",
        "my github token is abc123",
        "the passphrase is correct-horse-battery",
        "密码是abc123",
        "我的密码是 hunter2",
        "密码：abc",
        "api key是xyz789",
        "postgresql://ada:hunter2@localhost/kv",
        "wJalrXUtnFI7K7MDENGbPxRfiCYz9AbQ",  # random-looking, no known prefix
        "d41d8cd98f00b204e9800998ecf8427e",  # 32 hex characters
        "user.password",  # a fact key that names a credential
        "user.github_token",
        "User.API-Key",
        "user.密码",
    ],
)
def test_secret_statements_and_random_strings(text):
    assert looks_like_secret(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "I use vim and Python 3.11",
        "my name is Ada",
        "The password is stored in the keychain",
        "I forgot my password, how do I reset it?",
        "the api key is required",
        "the token is counted by tiktoken",
        "the secret sauce is caching",
        "my password manager is 1Password",
        "Ask the user for their API key",
        "bearer of bad news",
        "password: str",
        "password: String",
        "api_key: Optional[str] = None",
        "token: Optional[str]",
        "password = os.environ['PW']",
        "connect(user=u, password=password)",
        "if password == confirm: ok",
        "def get_api_key(self) -> str:",
        "token_count = len(tokens)",
        "getElementByIdAndReturnValue2",
        "TestMessagesTokensAgreesWithCookbook",
        "/usr/local/lib/python3.11/site-packages",
        "https://example.com/path?q=1&page=2",
        "x86_64-unknown-linux-gnu",
        "task-manager-component scikit-learn",
        "2024-05-13T10:20:30Z",
        "550e8400-e29b-41d4-a716-446655440000",
        "密码是什么？",
        "密码保存在钥匙串里",
        "我忘了密码",
        "用 tiktoken 计算 token 数量",
        "def reverse(s: str) -> str:\n    return s[::-1]\n",
        "user.password_manager",
        "project.kvchat.token_budget",
        "password",
    ],
)
def test_not_secrets(text):
    assert not looks_like_secret(text)


# ------------------------------------------------------- model extraction


def test_schema_is_strict_mode_shape():
    def check(node):
        assert node["type"] in {"object", "array", "string"}
        if node["type"] == "object":
            assert node["additionalProperties"] is False
            assert sorted(node["required"]) == sorted(node["properties"])
            for child in node["properties"].values():
                check(child)
        elif node["type"] == "array":
            check(node["items"])

    check(EXTRACTION_SCHEMA)
    assert set(EXTRACTION_SCHEMA["properties"]) == {"facts", "forget"}
    assert set(EXTRACTION_SCHEMA["properties"]["facts"]["items"]["properties"]) == {"key", "value"}
    json.dumps(EXTRACTION_SCHEMA)  # serialisable as a response_format


def test_extraction_messages_shape():
    messages = extraction_messages(
        "I switched to helix. 我叫小明", "Sure! Helix is nice.", [("user.editor", "vim"), ("user.name", "Ada")]
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    assert '"facts"' in system and '"forget"' in system
    assert "USER" in system and "secret" in system.lower()
    assert "- user.editor = vim" in user and "- user.name = Ada" in user
    assert "I switched to helix. 我叫小明" in user
    assert "Sure! Helix is nice." in user
    assert user.index("<user_message>") < user.index("<assistant_answer>")


def test_extraction_messages_without_known_facts_and_long_input():
    messages = extraction_messages("q" * 50_000, "a" * 50_000, [])
    user = messages[1]["content"]
    assert "(none)" in user
    assert len(user) < 10_000
    assert "truncated" in user


GOOD = {"facts": [{"key": "User.Editor", "value": "Neovim"}, {"key": "user.name", "value": "小明"}], "forget": ["user.os"]}
GOOD_CHANGES = [
    FactChange("user.os", None),
    FactChange("user.editor", "Neovim"),
    FactChange("user.name", "小明"),
]


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(GOOD),
        json.dumps(GOOD, ensure_ascii=False, indent=2),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "```\n" + json.dumps(GOOD) + "\n```",
        "Here are the facts:\n" + json.dumps(GOOD) + "\nHope this helps!",
        "Sure. ```json\n" + json.dumps(GOOD) + "```",
    ],
)
def test_parse_good_replies(reply):
    assert parse_extraction_reply(reply) == GOOD_CHANGES


def test_parse_prefers_the_outer_object_in_prose():
    reply = 'Example item {"key": "a", "value": "b"} then {"facts": [{"key": "user.os", "value": "macOS"}], "forget": []}'
    assert parse_extraction_reply(reply) == [FactChange("user.os", "macOS")]


def test_parse_empty_result():
    assert parse_extraction_reply('{"facts": [], "forget": []}') == []


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("I could not find any facts.", "no JSON"),
        ('{"facts": [{"key": "user.name", "value": "Ad', "cut off"),
        ('```json\n{"facts": [{"key": "user.name", "value": "Ada"}], "forg', "cut off"),
        ('{"facts": [{"key": "user.name", "value": "Ada"}', "cut off"),
        ("[1, 2, 3]", "no JSON object"),
        ('{"answer": 42}', "no object"),
        ('{"facts": "user.name=Ada", "forget": "none"}', "not lists"),
        ('{"facts": ' * 5000, "cut off"),  # nesting deeper than the JSON decoder goes
    ],
)
def test_parse_unusable_replies_raise(reply, reason):
    with pytest.raises(ExtractionError) as info:
        parse_extraction_reply(reply)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message


def test_parse_error_does_not_echo_the_reply():
    with pytest.raises(ExtractionError) as info:
        parse_extraction_reply('{"facts": [{"key": "k", "value": "' + FAKE["openai"])
    assert FAKE["openai"] not in str(info.value)


def test_parse_drops_bad_items():
    reply = json.dumps(
        {
            "facts": [
                {"key": "user.name", "value": "Ada"},
                {"key": "user.age", "value": 36},
                {"key": "user.flag", "value": True},
                {"key": "user.none", "value": None},
                {"key": 5, "value": "x"},
                {"key": "!!!", "value": "x"},
                {"key": "user.empty", "value": "   "},
                {"value": "no key"},
                "user.editor=vim",
                ["user.os", "linux"],
                {"key": "user.list", "value": ["a"]},
            ],
            "forget": ["user.old", 7, None, "", {"key": "x"}],
        }
    )
    assert parse_extraction_reply(reply) == [
        FactChange("user.old", None),
        FactChange("user.name", "Ada"),
        FactChange("user.age", "36"),
    ]


def test_parse_accepts_a_mapping_of_facts():
    reply = '{"facts": {"user.name": "Ada", "user.editor": "vim"}, "forget": []}'
    assert parse_extraction_reply(reply) == [FactChange("user.name", "Ada"), FactChange("user.editor", "vim")]


def test_parse_missing_forget_is_fine():
    assert parse_extraction_reply('{"facts": [{"key": "user.name", "value": "Ada"}]}') == [
        FactChange("user.name", "Ada")
    ]


def test_parse_drops_secrets():
    reply = json.dumps(
        {
            "facts": [
                {"key": "user.openai_key", "value": FAKE["openai"]},
                {"key": "user.password", "value": "hunter2"},
                {"key": "user.github_token", "value": "abc"},
                {"key": "user.api_key", "value": "whatever"},
                {"key": "user.密码", "value": "abc"},
                {"key": "user.note", "value": "my password is hunter2"},
                {"key": "user.password_manager", "value": "1Password"},
                {"key": "project.kvchat.token_budget", "value": "4000"},
            ],
            "forget": [FAKE["github_classic"]],
        }
    )
    assert parse_extraction_reply(reply) == [
        FactChange("user.password_manager", "1Password"),
        FactChange("project.kvchat.token_budget", "4000"),
    ]


def test_parse_caps_sizes():
    reply = json.dumps(
        {
            "facts": [{"key": f"user.fact{i}", "value": "v" * 2000} for i in range(50)],
            "forget": [f"user.old{i}" for i in range(50)],
        }
    )
    result = parse_extraction_reply(reply)
    facts = [c for c in result if c.value is not None]
    forgets = [c for c in result if c.value is None]
    assert len(facts) == MAX_FACTS and len(forgets) == MAX_FACTS
    assert all(len(c.value) <= MAX_VALUE_LENGTH for c in facts)
    assert facts[0].key == "user.fact0"


def test_parse_set_beats_forget_of_the_same_key():
    reply = '{"facts": [{"key": "user.editor", "value": "helix"}], "forget": ["user.editor", "user.os"]}'
    assert parse_extraction_reply(reply) == [FactChange("user.os", None), FactChange("user.editor", "helix")]


def test_parse_repeated_key_keeps_the_last_value():
    reply = '{"facts": [{"key": "user.editor", "value": "vim"}, {"key": "User.Editor", "value": "helix"}], "forget": []}'
    assert parse_extraction_reply(reply) == [FactChange("user.editor", "helix")]


def test_parse_collapses_whitespace_in_values():
    reply = '{"facts": [{"key": "user.editor", "value": "  Neovim\\n  0.10 "}], "forget": []}'
    assert parse_extraction_reply(reply) == [FactChange("user.editor", "Neovim 0.10")]


# ------------------------------------------------------- skipped secrets


def test_rules_report_what_they_skipped_without_the_value():
    found = rule_extraction(f"My name is Ada. Remember that my api key is {FAKE['openai']}. I use vim.")
    assert [(c.key, c.value) for c in found.changes] == [("user.name", "Ada"), ("user.uses.vim", "vim")]
    assert found.skipped == [Skipped("user.api_key", "api key")]
    # A redacted question still says what was there.
    assert rule_extraction("remember that my password is [redacted: password]").skipped == [
        Skipped("user.password", "password")
    ]
    assert rule_extraction(f"here is {FAKE['openai']}, thanks").skipped == []  # no fact was stated


def test_model_extraction_reports_what_it_skipped_and_hides_a_secret_key():
    found = parse_extraction(json.dumps({"facts": [
        {"key": "user.password", "value": "hunter2"},
        {"key": "user.note", "value": f"deploy with {FAKE['aws']}"},
        {"key": FAKE["github_classic"], "value": "x"},
        {"key": "user.editor", "value": "vim"},
    ], "forget": [FAKE["github_classic"]]}))
    assert found.changes == [FactChange("user.editor", "vim")]
    assert found.skipped == [
        Skipped("user.password", "a key that names a credential"),
        Skipped("user.note", "api key"),
        Skipped(None, "api key"),
    ]


def test_long_input_is_read_at_its_start_and_its_end():
    filler = "这是一段很长的日志，没有任何事实。" * 70_000  # about a megabyte of statements-free text
    started = time.perf_counter()
    assert changes("I use vim. " + filler + " 我用Emacs。") == [("user.uses.vim", "vim"), ("user.uses.emacs", "Emacs")]
    assert time.perf_counter() - started < 2.0

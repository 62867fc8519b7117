"""Secrets stay secret: after a whole session that handles the API key, a
bearer token, a password and other keys every way kvchat can meet them, none
of them is in the database file or in anything kvchat printed; facts that
looked like secrets were skipped, and `kvchat facts --skipped` says so without
their values."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_KEY
from kvchat.redaction import looks_like_secret, redact, secret_kind
from kvchat.store import Store

# Assembled at run time so that no literal here looks like a real key to
# secret scanners.
SK_KEY = "sk-proj-" + "Ab3xY9q" * 6
BEARER = "tok" + "9f8e7d6c5b4a" * 3
PASSWORD = "Tr0ub4dor" + "&3xq"
GITHUB = "ghp_" + "aB1" * 12
AWS = "AKIA" + "QWERTYUIOPASDFGH"
SECRETS = [TEST_KEY, SK_KEY, BEARER, PASSWORD, GITHUB, AWS]


class Seen:
    """Everything kvchat printed in a test, to be searched at the end."""

    def __init__(self, kvchat):
        self.kvchat = kvchat
        self.text: list[str] = []

    def __call__(self, *args, input=None, expect=0):
        done = self.kvchat(*args, input=input)
        self.text += [done.stdout, done.stderr]
        assert done.exit_code == expect, (args, done.stderr)
        if expect:
            assert done.stderr.count("\n") == 1 and done.stderr.startswith("kvchat: error: ")
        return done


def leaked(data: bytes | str) -> list[str]:
    if isinstance(data, str):
        data = data.encode()
    return [secret for secret in SECRETS if secret.encode() in data]


def everything_stored() -> str:
    """Every row of every table of the store, as text."""
    from sqlalchemy import inspect, text

    with Store() as store, store.engine.connect() as connection:
        return "\n".join(
            repr(row) for table in inspect(connection).get_table_names()
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )


def test_a_whole_session_leaves_no_secret_in_the_database_or_any_output(model, kvchat, home, tmp_path, engine):
    run = Seen(kvchat)
    # Questions that carry secrets; the model only ever sees them blanked.
    run("ask", f"my key is {TEST_KEY}, why does the API say 401?", "--extract", "rules")
    run("ask", f"curl -H 'Authorization: Bearer {BEARER}' https://api.example.com fails, why?",
        "--extract", "rules", "--verbose", "--show-prompt")
    run("ask", f'is DB_PASSWORD="{PASSWORD}" in my .env file safe?', "--extract", "rules")
    # Rules learn the name and skip the key; the model's extraction tries to
    # store secrets, in values and in a key, next to one real fact.
    model.queue_json_reply(json.dumps({
        "facts": [
            {"key": "user.github_token", "value": GITHUB},
            {"key": "user.deploy", "value": f"deploys with the key {AWS}"},
            {"key": GITHUB, "value": "a token used as a key"},
            {"key": "user.editor", "value": "neovim"},
        ],
        "forget": [],
    }))
    run("ask", f"My name is Ada. Remember that my api key is {SK_KEY}. I use neovim.", "--json",
        "--extract", "model")
    # An answer that quotes secrets back is stored (and shown as JSON) redacted.
    model.queue_answer(f"Your keys are {TEST_KEY} and {SK_KEY}; the password is {PASSWORD}.")
    answered = run("ask", "what were my keys?", "--json", "--no-extract")
    assert "[redacted: api key]" in json.loads(answered.stdout)["answer"]
    # A failing request whose error echoes the key: one line, no key, kept so.
    model.queue_error(400, f"invalid request from {TEST_KEY} (also {SK_KEY}, Bearer {BEARER})")
    run("ask", "and now?", "--no-extract", expect=1)
    # Setting or importing a secret is refused, naming what it looked like only.
    refused = run("facts", "set", "user.note", f"deploy key {GITHUB}", expect=1)
    assert "secret (api key)" in refused.stderr
    facts_file = tmp_path / "facts.jsonl"
    facts_file.write_text(json.dumps({"key": "user.aws", "value": AWS}) + "\n")
    assert "line 1: looks like a secret" in run("facts", "import", str(facts_file), expect=1).stderr
    # Imported turns are redacted like asked ones.
    turns_file = tmp_path / "turns.jsonl"
    turns_file.write_text(json.dumps({"session": "imported", "role": "user",
                                      "content": f"export OPENAI_API_KEY={SK_KEY}"}) + "\n")
    run("import", str(turns_file))

    # Every way of reading the data back.
    for args in (
        ("history", "--json"), ("history",), ("history", "-s", "imported", "--json"),
        ("export",), ("export", "--format", "markdown"), ("sessions", "--json"),
        ("facts", "--json"), ("facts", "export"), ("facts", "history", "user.name", "--json"),
        ("facts", "--skipped", "--json"), ("facts", "--skipped"),
        ("recall", "api key password bearer token", "--json", "--memory-tokens", "0"),
        ("recall", "what is my key", "--show-prompt", "--json", "--memory-tokens", "0"),
    ):
        run(*args)

    assert leaked("".join(run.text)) == []
    assert leaked(everything_stored()) == []
    if engine == "sqlite":  # and none in what SQLite keeps on disk, freed pages and logs included
        database = home / "kvchat.db"
        files = [path for path in home.glob("kvchat.db*") if path.is_file()]
        assert database in files
        for path in files:
            assert leaked(path.read_bytes()) == [], path
    # Nor did the model server ever receive one (the key only as the key).
    for body in model.chat_requests + model.json_requests:
        assert leaked(json.dumps(body)) == []

    facts = {fact["key"]: fact["value"] for fact in json.loads(run("facts", "--json").stdout)}
    assert facts == {"user.name": "Ada", "user.uses.neovim": "neovim", "user.editor": "neovim"}
    skipped = json.loads(run("facts", "--skipped", "--json").stdout)
    assert [(s["key"], s["reason"], s["source"]) for s in skipped] == [
        ("user.api_key", "api key", "rules"),
        ("user.github_token", "a key that names a credential", "model"),
        ("user.deploy", "api key", "model"),
        (None, "api key", "model"),
    ]
    assert all(s["turn_id"] for s in skipped)
    assert set(skipped[0]) == {"id", "key", "reason", "source", "turn_id", "created_at"}


def test_skipped_facts_are_listed_as_text_without_values(model, kvchat):
    kvchat("ask", f"remember that my password is {PASSWORD}", "--extract", "rules")
    listed = kvchat("facts", "--skipped")
    assert listed.exit_code == 0
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[1:] == ["user.password", "password", "rules", "1"]
    (item,) = json.loads(kvchat("facts", "--skipped", "--json").stdout)
    assert {k: v for k, v in item.items() if k != "created_at"} == {
        "id": 1, "key": "user.password", "reason": "password", "source": "rules", "turn_id": 1,
    }
    assert PASSWORD not in listed.stdout + json.dumps(item)


def test_nothing_skipped_is_an_empty_list(kvchat):
    assert kvchat("facts", "--skipped", "--json").stdout == "[]\n"
    assert kvchat("facts", "--skipped").stdout == ""


# -------------------------------------------------------- the policy itself


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {SK_KEY} here", "key [redacted: api key] here"),
        ("sk-ant-api03-" + "Zq8" * 10, "[redacted: api key]"),
        (GITHUB, "[redacted: api key]"),
        ("github_pat_" + "11AB2cd" * 6, "[redacted: api key]"),
        (AWS, "[redacted: api key]"),
        ("xoxb-1234567890-" + "abcdEFGH" * 2, "[redacted: token]"),
        ("AIza" + "Sy" + "B" * 33, "[redacted: api key]"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
         "[redacted: token]"),
        (f"Authorization: Bearer {BEARER}", "Authorization: Bearer [redacted: token]"),
        (f'password = "{PASSWORD}"', 'password = "[redacted: password]"'),
        ("DB_PASSWORD=s3cret!", "DB_PASSWORD=[redacted: password]"),
        ("passwd: Hunter22", "passwd: [redacted: password]"),
        ("my password is hunter2.", "my password is [redacted: password]."),
        ("remember my wifi pw is hunter22", "remember my wifi pw is [redacted: password]"),
        ("DB_PW=s3cret!", "DB_PW=[redacted: password]"),
        ("api_key=abc123def456", "api_key=[redacted: api key]"),
        ("postgresql://ada:hunter2@localhost/kv", "postgresql://ada:[redacted: password]@localhost/kv"),
        ("密码是abc123", "密码是[redacted: password]"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7abcdefgh\nqwertyuiopasdfghjkl12345\n"
         "-----END RSA PRIVATE KEY-----\nthanks", "[redacted: private key]\nthanks"),
    ],
)
def test_redact_blanks_common_secret_formats(text, expected):
    assert redact(text) == expected
    assert redact(expected) == expected  # redacting twice changes nothing
    assert looks_like_secret(text) and looks_like_secret(expected)


CODE = '''\
import os
import bcrypt


def check_password(password: str, hashed: bytes) -> bool:
    """Compare a password with its bcrypt hash."""
    return bcrypt.checkpw(password.encode(), hashed)


def connect(user, password=None, api_key: str | None = None):
    password = password or os.environ["DB_PASSWORD"]
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    token = tokenizer.encode(text)
    if password == confirm:
        return Client(user=user, password=password, api_key=api_key)
    LED_PIN = 13
    commit = "d41d8cd98f00b204e9800998ecf8427e"
    print(f"/etc/passwd: Permission denied for {user}")
'''


def test_redact_leaves_code_that_only_names_a_password_alone():
    assert redact(CODE) == CODE
    assert redact("The password is stored in the keychain; I forgot my password, how do I reset it?") == (
        "The password is stored in the keychain; I forgot my password, how do I reset it?"
    )


def test_the_configured_key_is_blanked_when_it_could_be_a_real_key():
    assert redact(f"x {TEST_KEY} y", [TEST_KEY]) == "x [redacted: api key] y"
    assert redact("custom-key-7f3a9 here", ["custom-key-7f3a9"]) == "[redacted: api key] here"
    # Dummy keys for local servers are words a user may type.
    for dummy in ("ollama", "lm-studio", "kvchat-local", "password"):
        assert redact(f"I run {dummy} locally", [dummy]) == f"I run {dummy} locally"


def test_secret_kind_names_what_it_found_never_the_value():
    assert secret_kind("user.password") == "a key that names a credential"
    assert secret_kind("user.pw") == secret_kind("db.wifi_pw") == "a key that names a credential"
    assert secret_kind("project.pwa") is None and secret_kind("user.pwsh") is None
    assert secret_kind("my pin is 4321") == "PIN"
    assert secret_kind("wJalrXUtnFI7K7MDENGbPxRfiCYz9AbQ") == "random-looking string"
    assert secret_kind("note [redacted: token] here") == "token"
    assert secret_kind("I use vim") is None


# Code, config and prose that name credentials without holding one: stored
# turns must keep them exactly, or `kvchat code --last | python` breaks.
NOT_SECRETS = [
    "my pwd is /home/ada/project",  # the working directory, not a password
    "the pw field is required",
    "PASSWORD_MIN_LENGTH = 12\nACCESS_TOKEN_EXPIRE_MINUTES = 30",
    "password_reset_timeout=259200",
    "max_password_length=64 and auth_token_ttl=3600",
    "def login(password: SecretStr, api_key: SecretStr): ...",
    "credentials: HTTPBasicCredentials = Depends(security)",
    '{"username": "string", "password": "string"}',
    'password = "{password}"',
    'api_key="YOUR_API_KEY"',
    "api_key: '${API_KEY}'",
    "The access token is returned in the response body.",
    "The password is hashed using a constant-time function.",
    "The passphrase is 5 words long; the API key is 32 characters.",
    "密码是用户在注册时设置的。",
    "令牌是无状态的，token是一个字符串。",
    "sk_stream_wait_memory(sk, &timeo); rk_iommu_domain_free(domain); gsk_render_node_draw(node)",
    "curl 'http://localhost:8000?email=ada@example.com'",
    "https://host:8443#anchor@x",
    "/etc/passwd: root:x:0:0:root:/root:/bin/bash",
    "git checkout 3f9a2c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39",
    "id = 123e4567-e89b-12d3-a456-426614174000",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_code_and_prose_that_only_name_a_credential_are_stored_unchanged(text):
    assert redact(text) == text


def test_the_configured_key_is_blanked_from_imported_turns_whatever_its_format(kvchat, store, monkeypatch, tmp_path):
    key = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # an Azure-style hex key: no known prefix
    monkeypatch.setenv("OPENAI_API_KEY", key)
    lines = tmp_path / "turns.jsonl"
    lines.write_text('{"session": "s", "role": "user", "content": "AZURE_OPENAI_KEY=' + key + ' is set"}\n')
    assert kvchat("import", str(lines)).exit_code == 0
    [turn] = store.history(store.session("s").id)
    assert key not in turn.content and "[redacted: api key]" in turn.content

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvchat import tokens


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """A kvchat home of this test's own: these tests damage and rewrite the
    cache, so they must not use the cache that other tests share."""
    monkeypatch.setenv("KVCHAT_HOME", str(tmp_path / "tokens-home"))


def _cached_file(name: str) -> Path:
    return tokens._cache_path(tokens._SOURCES[name], tokens._cache_dir())


# --------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("GPT-4O", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("ft:gpt-3.5-turbo:acme::abc123", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("llama3", "o200k_base"),
        ("qwen2.5-coder:7b", "o200k_base"),
        ("deepseek-chat", "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_name_for_model(model, expected):
    assert tokens.encoding_name_for_model(model) == expected


# ------------------------------------------------------------------ counting


def test_reference_token_ids():
    assert tokens.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.count_tokens("hello world", "gpt-4") == 2
    # tiktoken's own README example for o200k_base.
    assert tokens.get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens.count_tokens("hello world", "gpt-4o") == 2


def test_encoding_is_cached_per_process():
    assert tokens.get_encoding("o200k_base") is tokens.get_encoding("o200k_base")


def test_count_tokens_matches_tiktoken_encode_for_cjk():
    text = "记住我的编辑器是 Neovim，项目用 Python 3.11。日本語のテキストも数える。"
    for model, name in (("gpt-4", "cl100k_base"), ("gpt-4o", "o200k_base")):
        ids = tokens.get_encoding(name).encode(text)
        assert tokens.count_tokens(text, model) == len(ids) > 10
        assert tokens.get_encoding(name).decode(ids) == text
    # o200k_base was built for multilingual text: it needs fewer tokens here.
    assert tokens.count_tokens(text, "gpt-4o") < tokens.count_tokens(text, "gpt-4")


def test_special_token_text_is_counted_not_rejected():
    assert tokens.count_tokens("<|endoftext|>", "gpt-4") == 7
    assert tokens.count_tokens("a <|endofprompt|> b", "gpt-4o") > 3


def test_empty_text_is_zero():
    assert tokens.count_tokens("", "gpt-4o") == 0


@pytest.mark.parametrize("role", ["system", "user", "assistant", "developer", "tool"])
def test_roles_are_one_token(role):
    for name in tokens.SUPPORTED_ENCODINGS:
        assert len(tokens.get_encoding(name).encode(role)) == tokens.ROLE_TOKENS


def test_message_tokens():
    assert tokens.MESSAGE_OVERHEAD == 3
    assert tokens.REPLY_PRIMER == 3
    assert tokens.message_tokens(10) == 10 + 3 + 1
    assert tokens.message_tokens(10, has_name=True) == 10 + 3 + 1 + 1


def _cookbook_count(messages, model):
    """OpenAI cookbook's num_tokens_from_messages, restated for the test."""
    encoding = tokens.get_encoding(tokens.encoding_name_for_model(model))
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total + 3


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_messages_tokens_agrees_with_cookbook(model):
    messages = [
        {"role": "system", "content": "You are a helpful coding assistant."},
        {"role": "user", "content": "写一个 Python 函数，反转字符串。"},
        {"role": "assistant", "content": "def rev(s):\n    return s[::-1]\n"},
        {"role": "user", "name": "ada", "content": "Thanks! <|endoftext|>"},
    ]
    assert tokens.messages_tokens(messages, model) == _cookbook_count(messages, model)


def test_messages_tokens_handles_parts_and_none():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]},
        {"role": "assistant", "content": None},
    ]
    assert tokens.messages_tokens(messages, "gpt-4") == 3 + (3 + 1 + 2) + (3 + 1 + 0)


# ----------------------------------------------------------- context windows


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("gpt-4o-2024-08-06", 128_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-5-mini", 400_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-turbo-2024-04-09", 128_000),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4-32k", 32_768),
        ("gpt-3.5-turbo", 16_385),
        ("openai/gpt-4o", 128_000),
        ("deepseek-chat", 65_536),
        ("llama3", tokens.DEFAULT_CONTEXT_WINDOW),
        ("some-unknown-model", 8_192),
    ],
)
def test_context_window(model, expected):
    assert tokens.context_window(model) == expected


# ------------------------------------------------------------ offline loader


def test_pinned_sources_match_tiktoken_openai_public():
    """A tiktoken release that changes a URL or hash must fail here first."""
    spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    assert spec is not None and spec.origin
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name, source in tokens._SOURCES.items():
        strings = {
            node.value
            for node in ast.walk(functions[name])
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert source.url in strings, name
        assert source.sha256 in strings, name
    assert set(tokens._SOURCES) == {"cl100k_base", "o200k_base"}


def test_cache_file_written_under_tiktokens_name():
    tokens._ensure_cached("cl100k_base", tokens._cache_dir())
    path = _cached_file("cl100k_base")
    assert path.name == "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    assert tokens._file_is_valid(path, tokens._SOURCES["cl100k_base"].sha256)
    assert not list(path.parent.glob("*.tmp"))


def test_valid_cache_file_is_not_rewritten():
    cache = tokens._cache_dir()
    path = tokens._ensure_cached("cl100k_base", cache)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    tokens._ensure_cached("cl100k_base", cache)
    assert path.stat().st_mtime_ns == 1_000_000_000


@pytest.mark.parametrize("damage", [b"", b"garbage\n", None])
def test_corrupt_cache_file_is_replaced(damage):
    cache = tokens._cache_dir()
    path = tokens._ensure_cached("cl100k_base", cache)
    if damage is None:  # truncated
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(damage)
    tokens._ensure_cached("cl100k_base", cache)
    assert tokens._file_is_valid(path, tokens._SOURCES["cl100k_base"].sha256)


def test_bundled_data_with_wrong_hash_is_refused(monkeypatch):
    bad = tokens._EncodingSource(
        url=tokens._SOURCES["cl100k_base"].url, sha256="0" * 64, resource="cl100k_base.tiktoken.gz"
    )
    monkeypatch.setitem(tokens._SOURCES, "cl100k_base", bad)
    with pytest.raises(tokens.TokenizerDataError, match="refusing"):
        tokens._ensure_cached("cl100k_base", tokens._cache_dir())
    cache = tokens._cache_dir()
    assert not cache.exists() or not any(cache.iterdir())


def test_unsupported_encoding_is_refused():
    with pytest.raises(tokens.TokenizerDataError, match="unsupported"):
        tokens.get_encoding("p50k_base")


def test_remote_reads_are_refused_while_loading(tmp_path):
    import tiktoken.load

    original = tiktoken.load.read_file
    with tokens._tiktoken_reads_only(tmp_path):
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
        with pytest.raises(tokens.TokenizerDataError, match="offline"):
            tiktoken.load.read_file("https://example.invalid/x.tiktoken")
        local = tmp_path / "f"
        local.write_bytes(b"ok")
        assert tiktoken.load.read_file(str(local)) == b"ok"
    assert tiktoken.load.read_file is original


def test_tiktoken_cache_env_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/somewhere/else")
    with tokens._tiktoken_reads_only(tmp_path):
        pass
    assert os.environ["TIKTOKEN_CACHE_DIR"] == "/somewhere/else"
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    with tokens._tiktoken_reads_only(tmp_path):
        pass
    assert "TIKTOKEN_CACHE_DIR" not in os.environ


_NO_NETWORK_PRELUDE = textwrap.dedent(
    """
    import socket

    def _refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
    """
)


def _run_offline(home: Path, body: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["KVCHAT_HOME"] = str(home)
    # Make sure tiktoken's default cache (in the temp dir) cannot help.
    env["TMPDIR"] = str(home / "tmp")
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    code = _NO_NETWORK_PRELUDE + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_COUNT_BOTH = """
import json, sys
from kvchat import tokens
print(json.dumps({
    "cl100k": tokens.count_tokens("hello world", "gpt-4"),
    "o200k": tokens.get_encoding("o200k_base").encode("hello world"),
    "cjk": tokens.count_tokens("你好，世界", "gpt-4o"),
    "requests_imported": "requests" in sys.modules,
}))
"""


def test_loads_both_encodings_without_network(tmp_path):
    home = tmp_path / "fresh"
    out = _run_offline(home, _COUNT_BOTH)
    assert out["cl100k"] == 2
    assert out["o200k"] == [24912, 2375]
    assert out["cjk"] == tokens.count_tokens("你好，世界", "gpt-4o")
    assert out["requests_imported"] is False  # tiktoken never reached for its downloader
    cache = home / "cache" / "tiktoken"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [tokens._cache_path(s, Path(".")).name for s in tokens._SOURCES.values()]
        + [tokens._RankTable.path(name, s, Path(".")).name for name, s in tokens._SOURCES.items()]
    )


def test_later_processes_load_the_rank_table_not_the_text_file(tmp_path):
    home = tmp_path / "home"
    first = _run_offline(home, _COUNT_BOTH)
    cache = home / "cache" / "tiktoken"
    for source in tokens._SOURCES.values():
        tokens._cache_path(source, cache).unlink()
    # Had the text files been needed, they would have been written back.
    assert _run_offline(home, _COUNT_BOTH) == first
    assert not any(tokens._cache_path(s, cache).exists() for s in tokens._SOURCES.values())


def test_rank_table_holds_exactly_tiktokens_ranks():
    import tiktoken.load

    source = tokens._SOURCES["cl100k_base"]
    cache = tokens._cache_dir()
    tokens._ensure_cached("cl100k_base", cache)
    with tokens._tiktoken_reads_only(cache):
        parsed = tiktoken.load.load_tiktoken_bpe(source.url, expected_hash=source.sha256)
    assert tokens._RankTable.decode(tokens._RankTable.encode(parsed)) == parsed


def test_the_table_of_an_older_kvchat_is_removed_when_the_new_one_is_written(tmp_path):
    home = tmp_path / "upgraded"
    cache = home / "cache" / "tiktoken"
    cache.mkdir(parents=True)
    source = tokens._SOURCES["o200k_base"]
    older = cache / f"o200k_base-{source.sha256[:16]}.ranks"
    older.write_bytes(b"kvchat-ranks-1 little 0 0\n")
    _run_offline(home, _COUNT_BOTH)
    assert not older.exists()
    assert tokens._RankTable.path("o200k_base", source, cache).exists()


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "other format", "other Python"])
def test_damaged_rank_table_is_rebuilt_without_network(tmp_path, damage):
    home = tmp_path / "home"
    first = _run_offline(home, _COUNT_BOTH)
    source = tokens._SOURCES["cl100k_base"]
    table = tokens._RankTable.path("cl100k_base", source, home / "cache" / "tiktoken")
    data = bytearray(table.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[len(data) // 2 :]
    elif damage == "other format":
        data[: len(tokens._RankTable.FORMAT)] = b"kvchat-ranks-0"
    else:  # marshal's format changes between Python versions
        data = bytearray(bytes(data).replace(tokens._RankTable.WRITER, b"cpython-30-marshal9", 1))
    table.write_bytes(bytes(data))
    assert tokens._RankTable.decode(bytes(data)) is None
    assert _run_offline(home, _COUNT_BOTH) == first
    assert tokens._RankTable.decode(table.read_bytes()) is not None


def test_rank_table_is_refused_if_tiktoken_pins_another_file(monkeypatch):
    """The table stands in for the file tiktoken's constructor loads: if that
    constructor now names another file, kvchat must not hand it old ranks."""
    stale = tokens._SOURCES["cl100k_base"]._replace(sha256="0" * 64)
    ranks = {b"a": 0}
    import tiktoken_ext.openai_public as public

    with tokens._constructor_given(ranks, stale), pytest.raises(tokens.TokenizerDataError, match="_SOURCES"):
        public.ENCODING_CONSTRUCTORS["cl100k_base"]()
    assert public.load_tiktoken_bpe is not None and public.load_tiktoken_bpe.__module__ == "tiktoken.load"


def test_corrupt_cache_is_repaired_without_network(tmp_path):
    home = tmp_path / "corrupt"
    source = tokens._SOURCES["cl100k_base"]
    path = tokens._cache_path(source, home / "cache" / "tiktoken")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a bpe file\n")  # tiktoken would delete this and download
    out = _run_offline(
        home,
        """
        import json, sys
        from kvchat import tokens
        print(json.dumps({"ids": tokens.get_encoding("cl100k_base").encode("hello world"),
                          "requests_imported": "requests" in sys.modules}))
        """,
    )
    assert out == {"ids": [15339, 1917], "requests_imported": False}
    assert tokens._file_is_valid(path, source.sha256)


# ----------------------------------------------------------- known models


def test_every_known_model_has_a_supported_encoding_and_a_real_window():
    for name, known in tokens.KNOWN_MODELS.items():
        assert known.encoding in tokens.SUPPORTED_ENCODINGS, name
        assert known.context >= 4_096, name
        # One table answers both questions.
        assert tokens.encoding_name_for_model(name) == known.encoding
        assert tokens.context_window(name) == known.context


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gpt-4o-2024-08-06", tokens.KNOWN_MODELS["gpt-4o"]),
        ("openai/gpt-4-turbo-preview", tokens.KNOWN_MODELS["gpt-4-turbo"]),
        ("o3-mini", tokens.KNOWN_MODELS["o3"]),
        ("text-embedding-3-small", tokens.KNOWN_MODELS["text-embedding-3-small"]),
        ("llama3", None),
        ("qwen2.5-coder:7b", None),
        ("", None),
    ],
)
def test_known_model_matches_the_longest_known_name(model, expected):
    assert tokens.known_model(model) == expected


def test_unknown_models_get_the_defaults():
    assert tokens.context_window("llama3") == tokens.DEFAULT_CONTEXT_WINDOW == 8_192
    assert tokens.encoding_name_for_model("llama3") == tokens.DEFAULT_ENCODING == "o200k_base"

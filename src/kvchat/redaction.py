"""Secrets: what counts as one, and how kvchat blanks them out. One policy for
everything kvchat stores, prints or sends on.

`redact(text, secrets)` is applied to all text that came from a person or a
server before kvchat keeps or shows it: questions and answers before they are
stored (and before a question goes to the model), the errors stored with
turns, the model server's error messages, imported turns. It blanks

* the configured API key(s) given as `secrets`, wherever they occur, when
  they could be a real key (`is_real_key`: local servers take dummy keys such
  as "ollama" or "lm-studio", words a user may well type);
* credentials in a known format: OpenAI, Anthropic, DeepSeek and Groq
  ``sk-``/``gsk_`` keys, Stripe, Hugging Face, GitHub (``ghp_``,
  ``github_pat_``), GitLab, Slack (``xox.-``), AWS access key ids, Google
  ``AIza`` keys, JWTs, the token after ``Bearer`` and after
  ``Authorization: Basic``;
* the value of a password, passphrase, API key, secret or access token that
  is assigned or stated (``password = "hunter2"``, ``DB_PASSWORD=s3cret!``,
  ``"my password is hunter2"``, ``密码是abc123``), and a password inside a URL
  (``postgresql://ada:hunter2@host``);
* PEM private key blocks, whole.

Each is replaced by a marker naming what was there (``[redacted: api key]``),
so the text still reads and the reader knows something was taken out. Code
survives: a name alone is no secret, so ``password: str``,
``password = os.environ["PW"]``, ``connect(password=password)`` and ``if
password == confirm`` are left as they are; only a literal value is blanked.
Long random-looking strings without a known format are *not* redacted from
turns: hashes, ids and base64 in pasted code and logs are ordinary content.

`looks_like_secret(text)` is stricter, since it decides what may become a
fact (a short note, where a missed fact costs little and a stored password a
lot): besides everything `redact` blanks it refuses a PIN, a redaction marker
(the text held a secret), a long random-looking string, and a dotted key that
names a credential (``user.password``). `secret_kind` says which of these it
was, in words that never include the value, for ``kvchat facts --skipped``.

This module only reads text: no I/O, and it never prints.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["MARKER", "LazyPattern", "is_real_key", "looks_like_secret", "names_credential", "redact", "secret_kind"]


class LazyPattern:
    """A regular expression compiled on first use, so that importing the
    modules that hold many of them (this one, kvchat.extraction) stays cheap
    for a command that never needs them."""

    __slots__ = ("_compiled", "_flags", "_source")

    def __init__(self, source: str, flags: int = 0) -> None:
        self._source, self._flags, self._compiled = source, flags, None

    def __getattr__(self, name: str):
        if self._compiled is None:
            self._compiled = re.compile(self._source, self._flags)
        return getattr(self._compiled, name)


MARKER = "[redacted: {kind}]"

# A configured key counts as a secret from this length on, or from
# MIN_KEY_WITH_DIGIT when it has a digit ("ollama", "lm-studio" and
# "kvchat-local" are dummy keys for local servers, and words).
MIN_KEY_LENGTH = 20
MIN_KEY_WITH_DIGIT = 8

_ANY_MARKER = LazyPattern(r"\[redacted(?::\s*(?P<kind>[a-zA-Z ]{1,40}))?\]")

# (what it is, pattern, flags, triggers). Where a pattern has a group
# "value", only that part is blanked (the word "Bearer", the user name in a URL
# stay); otherwise the whole match is. A pattern runs only on text that holds
# one of its triggers (lower-cased): a substring test is some fifty times
# cheaper than the search, and most text holds none.
_FORMATS: list[tuple[str, str, int, tuple[str, ...]]] = [
    (
        "private key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        # A block cut off before its END line loses its base64 lines anyway.
        # The END line is looked for within 16 KB (an RSA-8192 key is about
        # 6 KB): an unbounded search from every BEGIN would take quadratic time.
        r"(?:.{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?:\s*[A-Za-z0-9+/=:,-]{16,})*)",
        re.DOTALL,
        ("private key",),
    ),
    # A real key holds a digit or a long random run; `sk_stream_wait_memory`
    # (Linux kernel C) does not.
    (
        "api key",
        r"(?<![A-Za-z0-9_.-])(?:sk|gsk|rk)[-_](?=[A-Za-z0-9_*-]*(?:[0-9]|[A-Za-z0-9]{16}))"
        r"[A-Za-z0-9][A-Za-z0-9_*-]{14,}",
        0,
        ("sk-", "sk_", "rk-", "rk_"),
    ),
    ("api key", r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}", 0, ("hf_",)),
    (
        "api key",
        r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
        0,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ("api key", r"(?<![A-Za-z0-9])glpat-[0-9A-Za-z_-]{20,}", 0, ("glpat-",)),
    ("token", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}", 0, ("xox",)),
    ("api key", r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", 0, ("akia", "asia")),
    ("api key", r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}", 0, ("aiza",)),
    ("token", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0, ("eyj",)),
    (
        "token",
        r"\bbearer\s+(?!\[redacted)(?P<value>[A-Za-z0-9._~+/=-]{16,}|(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,})",
        re.IGNORECASE,
        ("bearer",),
    ),
    ("password", r"\bauthorization\s*:\s*basic\s+(?P<value>[A-Za-z0-9+/=]{8,})", re.IGNORECASE, ("basic",)),
    # user:password@host; a port (all digits) or a query string is not one.
    (
        "password",
        r"\b[a-z][a-z0-9+.-]*://[^\s/:@\[?#]+:(?![0-9]+@)(?P<value>[^\s/@\[?#]+)(?=@)",
        re.IGNORECASE,
        ("://",),
    ),
]
_FORMAT_PATTERNS = [
    (kind, LazyPattern(source, flags), triggers) for kind, source, flags, triggers in _FORMATS
]
# The words of _SECRET_WORD (and of "my ... token|secret|key") that must occur
# before _STATED, _MY_TOKEN_STATED and _ASSIGNED can match.
_WORD_TRIGGERS = ("pass", "pw", "api", "secret", "access", "auth", "bearer", "private", "credential")
_MY_TRIGGERS = ("token", "secret", "key")
_ZH_TRIGGERS = ("密码", "口令", "密钥", "秘钥", "私钥", "令牌", "验证码", "是", "为")

# Words that name a credential, as a whole name or its last word (DB_PASSWORD,
# not PASSWORD_MIN_LENGTH), and not inside a path (/etc/passwd).
_SECRET_WORD = (
    r"(?<![A-Za-z/])(?P<word>password|passwd|passphrase|passcode|pw|api[\s_-]?key"
    r"|secret(?:[\s_-]?key)?|access[\s_-]?(?:token|key)|auth(?:entication)?[\s_-]?token"
    r"|bearer[\s_-]?token|private[\s_-]?key|credentials?)(?![A-Za-z0-9_])"
)
_NOT_MARKER = r"(?!\[redacted)"
# "my password is hunter2": any value after is/was/are discloses it...
_STATED = LazyPattern(
    _SECRET_WORD + r"[\"']?\s+(?:is|was|are)\s+[\"'`]?" + _NOT_MARKER + r"(?P<value>[^\s\"'`]+)", re.IGNORECASE
)
# ..."my github token is X" as well...
_MY_TOKEN_STATED = LazyPattern(
    r"\bmy\s+(?:[\w-]+\s+)?(?P<word>token|secret|key)\s+(?:is|was)\s+[\"'`]?" + _NOT_MARKER + r"(?P<value>[^\s\"'`]+)",
    re.IGNORECASE,
)
# ...while `password: str` or `password = os.environ["PW"]` (code) do not.
_ASSIGNED = LazyPattern(
    _SECRET_WORD
    + r"[\"']?\s*[:=](?!=)\s*(?:[\"'`](?P<quoted>[^\"'`\s]{3,})[\"'`]|(?P<bare>[A-Za-z0-9][^\s\"'`,;]*))",
    re.IGNORECASE,
)
_STATED_ZH = LazyPattern(
    r"(?:(?P<word>密码|口令|密钥|秘钥|私钥|令牌|验证码)\s*(?:是|为|:|：|=)|(?:api\s*key|token)\s*(?:是|为))"
    r"\s*(?P<value>[!-Z^-~]+)",  # an ASCII run: the rest of a Chinese clause is prose
    re.IGNORECASE,
)
# PIN codes are refused as facts but not blanked in turns: `LED_PIN = 13` is code.
_PIN_STATED = LazyPattern(
    r"(?<![A-Za-z])pin(?:\s+code)?\s*(?:is|was|[:=])\s*[\"'`]?(?P<value>[0-9]{3,})", re.IGNORECASE
)

_NOT_A_SECRET_VALUE = frozenset(
    """not never no the a an in on at to of for by as is stored saved kept set required needed
    missing wrong incorrect invalid expired too hidden empty changed reset correct ok fine weak
    strong long short what which where how why this that it same different managed rotated
    encrypted hashed generated used checked validated sent being still now also only just none
    null nil true false str string int bytes optional any your my our their his her its from
    read loaded provided given passed secret unknown private public here there below above
    available configured specified defined shown printed logged visible exposed leaked
    something anything nothing handled""".split()
)
_NOT_A_SECRET_VALUE_ZH = LazyPattern(r"^(?:什么|多少|啥|错|对|不|空|正确|必须|必需|需要|要|保存|存|放|在|多长|几位)")
_CODE_EXPRESSION = LazyPattern(r"[()\[\]{}$%<>]|^[A-Za-z_]\w*\.[A-Za-z_]")
_TRAILING_PUNCTUATION = ".,;:!?)"

# A dotted fact key whose last words name a credential: user.password, user.github_token.
_DOTTED_KEY = LazyPattern(r"[\w.\-]+")
_SENSITIVE_SEGMENT = LazyPattern(
    r"(?:^|_)(?:password|passwd|passphrase|passcode|pwd|pw|pin|secret|secret_key|api_key|apikey"
    r"|access_key|private_key|token|access_token|auth_token|credentials?)$"
    r"|(?:密码|口令|密钥|秘钥|私钥|令牌)$"
)

_CANDIDATE = LazyPattern(r"[A-Za-z0-9+/=_-]{20,}")
_PIECES = LazyPattern(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_HEX_RUN = LazyPattern(r"(?<![0-9A-Za-z])(?:[0-9a-f]{32,}|[0-9A-F]{32,})(?![0-9A-Za-z])")


def is_real_key(secret: str) -> bool:
    """Whether a configured key is long enough to be a real one (see MIN_KEY_LENGTH)."""
    return len(secret) >= MIN_KEY_LENGTH or (len(secret) >= MIN_KEY_WITH_DIGIT and any(c.isdigit() for c in secret))


def _word_kind(word: str) -> str:
    word = word.lower()
    if word.startswith("pass") or word in ("pw", "密码", "口令", "验证码"):
        return "password"
    if "token" in word or word == "令牌":
        return "token"
    if "key" in word or word in ("密钥", "秘钥", "私钥"):
        return "api key" if "private" not in word and word != "私钥" else "private key"
    return "secret"


def _discloses(value: str) -> bool:
    word = value.strip(_TRAILING_PUNCTUATION).lower()
    return bool(word) and word not in _NOT_A_SECRET_VALUE


# Template and example values: {password}, ${API_KEY}, <token>, YOUR_API_KEY, xxxx.
_PLACEHOLDER = LazyPattern(
    r"[{}$<>]|(?-i:^(?:[A-Z][A-Z0-9]*_)+[A-Z0-9]+$)|^(?:x+|\*+|\.+|string|changeme|example)$", re.IGNORECASE
)


def _bare_discloses(bare: str, *, sure: bool = True) -> bool:
    """An unquoted value assigned to a name that ends in a credential word
    (DB_PASSWORD=, not PASSWORD_MIN_LENGTH=) counts when it does not read like
    code or a placeholder, and holds a digit or a symbol (when `sure`; else
    mixed case is enough: a type name like SecretStr then counts too)."""
    value = bare.strip(_TRAILING_PUNCTUATION)
    if _CODE_EXPRESSION.search(bare) or not _discloses(bare):
        return False
    if re.search(r"[0-9!@#^&*+=~?]", value):
        return not sure or (len(value) >= 4 and not _PLACEHOLDER.search(value))
    return not sure and bool(re.search(r".[A-Z]", value) and re.search(r"[a-z]", value))


def _value_span(match: re.Match, group: str) -> tuple[int, int]:
    start, end = match.span(group)
    while end > start and match.string[end - 1] in _TRAILING_PUNCTUATION:
        end -= 1
    return start, end


def _stated_value(value: str) -> bool:
    """Whether a value stated in words ("my password is hunter2") reads like
    one: letters with a digit or a symbol, not a word ("is hashed"), a number
    ("is 32 characters") or a placeholder."""
    value = value.strip(_TRAILING_PUNCTUATION)
    return (
        len(value) >= 4
        and not _PLACEHOLDER.search(value)
        and any(c.isalpha() for c in value)
        and any(c.isdigit() or not c.isalnum() for c in value)
    )


def _spans(text: str, secrets: Iterable[str] = (), *, sure: bool = True) -> list[tuple[int, int, str]]:
    """(start, end, kind) of everything `redact` blanks, in no particular order.

    `sure` is for stored turns: a value named by a credential word must also
    read like a credential, because rewriting a false alarm would silently
    change a user's code or prose. Facts (`sure=False`) are only refused, so
    any value after a credential word counts there."""
    found: list[tuple[int, int, str]] = []
    for secret in secrets:
        if secret and is_real_key(secret):
            start = text.find(secret)
            while start >= 0:
                found.append((start, start + len(secret), "api key"))
                start = text.find(secret, start + len(secret))
    lowered = text.lower()

    def present(triggers: tuple[str, ...]) -> bool:
        return any(trigger in lowered for trigger in triggers)

    for kind, pattern, triggers in _FORMAT_PATTERNS:
        if present(triggers):
            for match in pattern.finditer(text):
                found.append((*(match.span("value") if match.re.groupindex.get("value") else match.span()), kind))
    stated = [_STATED] if present(_WORD_TRIGGERS) else []
    if "my" in lowered and present(_MY_TRIGGERS):
        stated.append(_MY_TOKEN_STATED)
    for pattern in stated:
        for match in pattern.finditer(text):
            if _discloses(match["value"]) and (not sure or _stated_value(match["value"])):
                found.append((*_value_span(match, "value"), _word_kind(match["word"])))
    for match in _ASSIGNED.finditer(text) if present(_WORD_TRIGGERS) else ():
        if match["quoted"]:
            # A literal assigned to a password is one, however weak, unless
            # it is a placeholder or a plain word ("string" in an API example).
            quoted = match["quoted"]
            if not sure or not _PLACEHOLDER.search(quoted) and _discloses(quoted) and not quoted.isalpha():
                found.append((*match.span("quoted"), _word_kind(match["word"])))
        elif _bare_discloses(match["bare"], sure=sure):
            found.append((*match.span("bare"), _word_kind(match["word"])))
    for match in _STATED_ZH.finditer(text) if present(_ZH_TRIGGERS) else ():
        value = match["value"]
        if not _NOT_A_SECRET_VALUE_ZH.match(value) and (not sure or _stated_value(value)):
            found.append((*_value_span(match, "value"), _word_kind(match["word"] or "token")))
    return [span for span in found if span[1] > span[0]]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret (see the module docstring) replaced by a marker
    naming what it was. Redacting redacted text changes nothing."""
    if not text:
        return text
    spans = sorted(_spans(text, secrets))
    if not spans:
        return text
    pieces: list[str] = []
    position = 0
    for start, end, kind in spans:
        if end <= position:
            continue  # inside a span already blanked
        if start < position:  # overlapping: extend the previous marker's span
            position = end
            continue
        pieces += [text[position:start], MARKER.format(kind=kind)]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _is_random_looking(candidate: str) -> bool:
    """A long run of characters that reads like a key rather than a word.

    Identifiers (``getElementByIdAndReturnValue2``), paths and words split into
    long natural pieces; random keys split into pieces of one or two
    characters on average. Long hex runs (32+) are treated as keys too.
    """
    if _HEX_RUN.search(candidate):
        return True
    core = re.sub(r"[^A-Za-z0-9]", "", candidate)
    if len(core) < 20:
        return False
    has_lower = any(c.islower() for c in core)
    has_upper = any(c.isupper() for c in core)
    has_digit = any(c.isdigit() for c in core)
    if not (has_digit and (has_lower or has_upper)) and not (has_lower and has_upper):
        return False
    mean_piece = len(core) / len(_PIECES.findall(core))
    return mean_piece < 2.6 and _entropy(core) >= 3.0


def names_credential(key: str) -> bool:
    """Whether `key`, a dotted fact key, names a credential (``user.password``,
    ``User.API-Key``, ``user.密码``): whatever is stored under it is a secret."""
    key = key.strip()
    if "." not in key or not _DOTTED_KEY.fullmatch(key):
        return False
    levels = [re.sub(r"[\s-]+", "_", level.lower()) for level in key.split(".")]
    return any(_SENSITIVE_SEGMENT.search(level) for level in levels if level)


def secret_kind(text: str) -> str | None:
    """What secret `text` holds, in words ("api key", "password", "random-looking
    string", ...), or None. Never includes the secret itself."""
    if not text:
        return None
    if names_credential(text):
        return "a key that names a credential"
    marker = _ANY_MARKER.search(text)
    if marker:
        return (marker["kind"] or "secret").strip().lower()
    spans = _spans(text, sure=False)
    if spans:
        return min(spans)[2]
    if _PIN_STATED.search(text):
        return "PIN"
    if any(_is_random_looking(m.group()) for m in _CANDIDATE.finditer(text)):
        return "random-looking string"
    return None


def looks_like_secret(text: str) -> bool:
    """True if `text` holds something that must never be stored as a fact:
    everything `redact` blanks, and more (see the module docstring). Errs on
    the side of caution."""
    return secret_kind(text) is not None

"""kvchat's settings, and where each value comes from.

One table (`SETTINGS`) names every setting with its type, bounds, default and
environment variable; everything else here reads that table. A value is
taken from the first of these layers that has it:

1. a flag on the command (`flags`, None meaning "not given");
2. the session's own settings (stored in the database; only `SESSION_SETTINGS`);
3. the environment variable (an empty variable counts as unset, as in Click);
4. the config file: TOML at $KVCHAT_CONFIG, else config.toml in the config
   directory (see paths.py);
5. the built-in default.

The `endpoint` setting, once resolved, names a server from kvchat.endpoints:
its base URL and model then stand in for the config file's and the defaults
(a flag, the session or the environment still win over them).

Every value is checked whichever layer it comes from, and a bad one is a
`ConfigError` in one line that names where it was written.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import budgets, paths, users

CONFIG_ENV = "KVCHAT_CONFIG"
CONFIG_NAME = "config.toml"

MEMORY_MODES = ("token", "window", "summary")
EXTRACT_MODES = ("model", "rules", "off")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ConfigError(Exception):
    """A setting with a bad value, or a config file that cannot be used, in one line."""


@dataclass(frozen=True)
class Spec:
    """One setting: what it holds and where it is read from."""

    name: str
    kind: type  # str, int, float or bool
    default: object
    env: str
    optional: bool = False  # None ("none") is a value
    minimum: float | None = None
    above: bool = False  # the minimum itself is not allowed
    choices: tuple[str, ...] = ()
    per_session: bool = True  # may be set for one session
    url: bool = False  # a server's base URL: no query string or fragment

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind in (int, float):
            text = "an integer" if self.kind is int else "a number"
            if self.minimum is not None:
                text += f" {'>' if self.above else '>='} {self.minimum:g}"
        else:
            text = "a non-empty string"
        return text + " or none" if self.optional else text


SETTINGS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("model", str, "gpt-4o-mini", "KVCHAT_MODEL"),
        Spec("base_url", str, None, "OPENAI_BASE_URL", optional=True, per_session=False, url=True),
        Spec("timeout", float, 600.0, "KVCHAT_TIMEOUT", minimum=0, above=True, per_session=False),
        # A name from kvchat.endpoints, never an address, so a session (whose
        # settings an import can bring) may name one; "default" means none.
        Spec("endpoint", str, None, "KVCHAT_ENDPOINT", optional=True),
        Spec("session", str, "default", "KVCHAT_SESSION", per_session=False),
        # Whose sessions and facts these are; never a session's own setting,
        # since a session belongs to its user.
        Spec("user", str, users.default_user(), "KVCHAT_USER", per_session=False),
        Spec("memory", str, "token", "KVCHAT_MEMORY", choices=MEMORY_MODES),
        Spec("window", int, budgets.WINDOW_TURNS, "KVCHAT_WINDOW", minimum=1),
        Spec("memory_tokens", int, budgets.MEMORY_TOKENS, "KVCHAT_MEMORY_TOKENS", minimum=0),
        Spec("summary_tokens", int, budgets.SUMMARY_TOKENS, "KVCHAT_SUMMARY_TOKENS", minimum=16),
        Spec("recall_tokens", int, budgets.RECALL_TOKENS, "KVCHAT_RECALL_TOKENS", minimum=0),
        Spec("answer_tokens", int, budgets.ANSWER_TOKENS, "KVCHAT_ANSWER_TOKENS", minimum=16),
        Spec("context_tokens", int, None, "KVCHAT_CONTEXT_TOKENS", optional=True, minimum=256),
        Spec("facts", bool, True, "KVCHAT_FACTS"),
        Spec("vector", bool, False, "KVCHAT_VECTOR"),
        Spec("embedding_model", str, "text-embedding-3-small", "KVCHAT_EMBEDDING_MODEL"),
        Spec("role", str, "code", "KVCHAT_ROLE"),
        Spec("extract", str, "model", "KVCHAT_EXTRACT", choices=EXTRACT_MODES),
    )
}

SESSION_SETTINGS = frozenset(name for name, spec in SETTINGS.items() if spec.per_session)


def _spec(name: str, where: str | None = None) -> Spec:
    spec = SETTINGS.get(name)
    if spec is None:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown setting {name!r} (the settings are: {', '.join(SETTINGS)})")
    return spec


def _check(spec: Spec, value: object, label: str) -> object:
    """`value` as the setting holds it, or ConfigError naming `label`."""
    if spec.optional and (value is None or isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None  # `context_tokens = "none"` in config.toml, as "none" in an environment variable
    ok = False
    if spec.kind is bool:
        ok = isinstance(value, bool)
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        # TOML and JSON write whole numbers as integers: 600 is a fine timeout.
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, str) and bool(value.strip())
        if ok:
            value = value.strip()
    if ok and spec.minimum is not None:
        ok = value > spec.minimum if spec.above else value >= spec.minimum
    if ok and spec.choices:
        ok = value in spec.choices
    if not ok:
        raise ConfigError(f"{label} must be {spec.expected()}, not {value!r}")
    if spec.url and ("?" in value or "#" in value):
        # The value is not repeated: what follows "?" may well be a key.
        raise ConfigError(f"{label} cannot hold a query string or a fragment ('?...', '#...'): "
                          "the client adds its paths after it; store an API key with `kvchat keys set`")
    return value


def shown_url(url: str) -> str:
    """A server's URL as messages and listings show it: a password in it,
    and the values of its query string, are left out."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unreadable (a bad port, a broken [IPv6]): whatever may be a secret goes
        url = re.sub(r"//[^/@]*@", "//[redacted]@", url)
        return url.split("?", 1)[0] + ("?[redacted]" if "?" in url else "")
    if password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{password}@", ":[redacted: password]@", 1))
    if parts.query:
        names = (field.partition("=")[0] for field in parts.query.split("&"))
        parts = parts._replace(query="&".join(f"{name}=[redacted]" for name in names))
    return parts.geturl()


def check(name: str, value: object) -> object:
    """`value` for setting `name` as kvchat uses it (a whole-number timeout
    becomes a float, text is stripped), or ConfigError."""
    return _check(_spec(name), value, name)


def _parse(spec: Spec, text: str, label: str) -> object:
    cleaned = text.strip()
    lowered = cleaned.lower()
    if spec.optional and lowered in ("", "none"):
        return None
    value: object = cleaned
    if spec.kind is bool:
        value = True if lowered in _TRUE else False if lowered in _FALSE else cleaned
        if isinstance(value, str):
            raise ConfigError(f"{label} must be true or false (or yes/no, on/off, 1/0), not {cleaned!r}")
    elif spec.kind in (int, float):
        try:
            value = spec.kind(cleaned)
        except ValueError:
            pass  # _check says what was expected
    return _check(spec, value, label)


def parse_value(name: str, text: str) -> object:
    """A setting's value from text, as typed in an environment variable or on
    a command line: true/false/yes/no/on/off/1/0 for switches, "none" for
    settings that may be unset."""
    return _parse(_spec(name), text, name)


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file: $KVCHAT_CONFIG, else config.toml in the config directory."""
    environ = os.environ if environ is None else environ
    value = environ.get(CONFIG_ENV)
    return Path(value).expanduser() if value else paths.config_dir() / CONFIG_NAME


def load(path: Path) -> dict[str, object]:
    """The checked settings in a config file; {} when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    import tomllib  # deferred: it costs ~10 ms, and most users have no config file

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    settings = {}
    for name, value in data.items():
        settings[name] = _check(_spec(name, str(path)), value, f"{path}: {name}")
    return settings


@dataclass(frozen=True)
class Setting:
    name: str
    value: object
    source: str  # "flag --model", "session 'work'", "env KVCHAT_MODEL", "config PATH", "default"


@dataclass(frozen=True)
class Settings:
    """Every setting's effective value (as an attribute: `settings.model`) and
    where it came from (`settings.source("model")`)."""

    items: dict[str, Setting]

    def __getattr__(self, name: str) -> object:
        # Only reached for names that are not real attributes; copy and pickle
        # probe before `items` exists, so never look it up through self here.
        items = self.__dict__.get("items")
        if items is None or name not in items:
            raise AttributeError(name)
        return items[name].value

    def source(self, name: str) -> str:
        return self.items[name].source

    def values(self) -> dict[str, object]:
        return {name: item.value for name, item in self.items.items()}

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.items.values())


def resolve(
    flags: Mapping[str, object],
    session_settings: Mapping[str, object] | None,
    session_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """The effective settings: flag > session > environment > file > default.

    `flags` maps setting names to what the command line gave (None: not
    given). `session_settings` is `Session.settings` (None or {}: no session
    yet); keys that are not session settings are ignored, so a newer kvchat's
    settings do not break an older one. The config file is always read, so a
    broken one is reported even while flags cover everything it sets."""
    unknown = set(flags) - set(SETTINGS)
    if unknown:
        _spec(min(unknown))  # raises, naming it: a caller's mistake, said plainly
    environ = os.environ if environ is None else environ
    path = default_path(environ) if config_path is None else config_path
    file = load(path)
    session_settings = session_settings or {}
    where = f"session {session_name!r}" if session_name is not None else "session"
    items = {name: _layered(spec, flags.get(name), session_settings, where, environ, file, path)
             for name, spec in SETTINGS.items()}
    _apply_endpoint(items)
    return Settings(items)


def resolve_one(name: str, given: object, environ: Mapping[str, str] | None = None) -> Setting:
    """One setting that no session and no endpoint sets (such as `user`):
    `given` (a flag; None: not given) > environment > file > default.
    Unlike `resolve`, an endpoint setting that names no known server does not
    stand in the way of, say, opening the store."""
    spec = _spec(name)
    if spec.per_session:
        raise ValueError(f"{name} may come from a session: use resolve")
    environ = os.environ if environ is None else environ
    path = default_path(environ)
    return _layered(spec, given, {}, "session", environ, load(path), path)


def _layered(
    spec: Spec, given: object, session_settings: Mapping[str, object], where: str,
    environ: Mapping[str, str], file: Mapping[str, object], path: Path,
) -> Setting:
    """The setting's value from the first layer that has one."""
    name = spec.name
    if given is not None:
        value, source = _check(spec, given, spec.flag), f"flag {spec.flag}"
    elif spec.per_session and name in session_settings:
        value, source = _check(spec, session_settings[name], f"{where}: {name}"), where
    elif environ.get(spec.env):
        value, source = _parse(spec, environ[spec.env], spec.env), f"env {spec.env}"
    elif name in file:
        value, source = file[name], f"config {path}"
    else:
        value, source = spec.default, "default"
    return Setting(name, value, source)


def endpoint_source(name: str) -> str:
    """The source of a value that endpoint `name` gave."""
    return f"endpoint {name!r}"


def _level(source: str) -> int:
    """How specific a setting's source is: flag, session, env, config, default."""
    for level, start in enumerate(("default", "config ", "env ", "session ", "flag ")):
        if source.startswith(start):
            return level
    raise ValueError(source)


def _apply_endpoint(items: dict[str, Setting]) -> None:
    """The chosen endpoint's base URL, unless a base URL was given more
    specifically than the endpoint was chosen (`--endpoint local` beats an
    exported OPENAI_BASE_URL; an endpoint in the config file does not); and
    its model, only when the call goes to its server and no model was given
    more specifically than in the config file."""
    chosen = items["endpoint"]
    if chosen.value is None or chosen.value == "default":
        return
    from . import endpoints  # deferred: only a call that names an endpoint reads its file

    try:
        endpoint = endpoints.get(chosen.value)
    except endpoints.EndpointError as exc:
        raise endpoints.EndpointError(f"{chosen.source}: {exc}") from None
    source = endpoint_source(endpoint.name)
    if _level(items["base_url"].source) > _level(chosen.source):
        return  # another server: the endpoint's model may not exist there
    items["base_url"] = Setting("base_url", endpoint.base_url, source)
    if endpoint.model is not None and _level(items["model"].source) <= _level("config "):
        items["model"] = Setting("model", endpoint.model, source)

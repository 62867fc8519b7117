"""API keys: stored in owner-only files, never in the database, and which one
a call uses.

Each key is a file of its own in the `keys` directory of the config directory
(see paths.py): `keys/default` for the default server (the base_url setting,
else OpenAI), `keys/NAME` for endpoint NAME. The directory is 0700 and each
file 0600, written atomically (kvchat.files), so a key is never readable by
others, not even while it is written. Like ssh with a private key, kvchat
refuses to use a key file that others may read (`chmod 600 PATH` fixes it):
the key may already have been seen, and the user should know.

Which key a call uses follows the server it goes to, so a key is only ever
sent to the server it was given for:

* the default server, or one named by OPENAI_BASE_URL: OPENAI_API_KEY, else
  `keys/default`;
* endpoint NAME: the environment variable it names (`--key-env`), else
  `keys/NAME`. OPENAI_API_KEY is not sent to an endpoint unless the endpoint
  names it with `--key-env OPENAI_API_KEY`;
* either way, a server on this machine needs no key.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .config import ConfigError, endpoint_source
from .endpoints import DEFAULT, check_name, is_loopback

if TYPE_CHECKING:
    from .config import Settings

KEYS_DIR = "keys"
ENV_KEY = "OPENAI_API_KEY"
# Local servers (Ollama, llama.cpp, LM Studio) take any key; the client needs one.
LOCAL_KEY = "kvchat-local"
MAX_KEY_LENGTH = 4096

_PRIVATE_FILE, _PRIVATE_DIR = 0o600, 0o700
# Windows has no owner/group/other mode bits to check.
_POSIX = os.name == "posix"


class KeyFileError(ConfigError):
    """A key that cannot be stored or used, in one line (never holding the key)."""


@dataclass(frozen=True)
class ApiKey:
    value: str
    source: str  # "env OPENAI_API_KEY", "key file PATH", "local server"


def keys_dir() -> Path:
    return paths.config_dir() / KEYS_DIR


def key_path(endpoint: str | None = None) -> Path:
    """The key file of `endpoint` (None or "default": the default server)."""
    if endpoint is None or endpoint == DEFAULT:
        return keys_dir() / DEFAULT
    return keys_dir() / check_name(endpoint)  # a checked name cannot leave the directory


def check_key(text: str) -> str:
    """The key in `text` (surrounding whitespace dropped), or KeyFileError."""
    key = text.strip()
    if not key:
        raise KeyFileError("the API key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise KeyFileError(f"the API key is longer than {MAX_KEY_LENGTH} characters: is that the right text?")
    if any(char.isspace() or not char.isprintable() for char in key):
        raise KeyFileError("the API key holds spaces, line breaks or control characters: give the key alone")
    return key


def mask(key: str) -> str:
    """A key as it may be shown: its last four characters (none of a short key)."""
    return "****" + (key[-4:] if len(key) >= 16 else "")


def _private_dir() -> Path:
    directory = keys_dir()
    directory.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    if _POSIX and stat.S_IMODE(directory.stat().st_mode) != _PRIVATE_DIR:
        directory.chmod(_PRIVATE_DIR)  # mkdir's mode is cut by the umask, or it was made by hand
    return directory


def save_key(key: str, endpoint: str | None = None) -> Path:
    """Store `key` for `endpoint` (checked first), replacing any earlier one."""
    from .files import write_atomically

    key = check_key(key)
    _private_dir()
    path = key_path(endpoint)
    write_atomically(path, (key + "\n").encode("utf-8"))
    return path


def read_key(endpoint: str | None = None) -> str | None:
    """The stored key of `endpoint`, or None when there is none.

    KeyFileError for a file others may read (as ssh refuses such a private
    key), or one that does not hold a key."""
    path = key_path(endpoint)
    try:
        with path.open("rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if _POSIX and mode & 0o077:
                raise KeyFileError(
                    f"the key file {path} may be read by others (mode {mode:04o}); run `chmod 600 {path}`"
                )
            data = handle.read(MAX_KEY_LENGTH * 4 + 2)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    try:
        return check_key(data.decode("utf-8"))
    except (UnicodeDecodeError, KeyFileError):
        raise KeyFileError(f"the key file {path} does not hold an API key; `kvchat keys set` replaces it") from None


def remove_key(endpoint: str | None = None) -> bool:
    """Delete the stored key of `endpoint`; False when there was none."""
    try:
        key_path(endpoint).unlink()
    except FileNotFoundError:
        return False
    return True


def stored() -> list[str]:
    """The names ("default" or an endpoint's) that have a key file, sorted."""
    try:
        entries = list(keys_dir().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    # A leading dot: a temporary file of an interrupted write.
    return sorted(entry.name for entry in entries if not entry.name.startswith(".") and entry.is_file())


def usable_keys() -> list[str]:
    """Every stored key that can be read, to blank out wherever it turns up."""
    keys = []
    for name in stored():
        try:
            key = read_key(name)
        except KeyFileError:
            continue
        if key:
            keys.append(key)
    return keys


def _uses_endpoint(settings: Settings) -> str | None:
    """The endpoint whose server the call goes to, if it goes to one."""
    name = settings.endpoint
    if name is None or name == DEFAULT or settings.source("base_url") != endpoint_source(name):
        return None  # no endpoint, or OPENAI_BASE_URL overrides it
    return name


def find_key(settings: Settings, environ: Mapping[str, str] | None = None) -> ApiKey | None:
    """The key for the server of `settings` (see the module's docstring), or
    None when there is none and the server is not on this machine."""
    from .endpoints import get

    environ = os.environ if environ is None else environ
    endpoint = _uses_endpoint(settings)
    variable = ENV_KEY if endpoint is None else get(endpoint).key_env
    if variable and environ.get(variable, "").strip():
        return ApiKey(environ[variable].strip(), f"env {variable}")
    key = read_key(endpoint)
    if key is not None:
        return ApiKey(key, f"key file {key_path(endpoint)}")
    if is_loopback(settings.base_url):
        return ApiKey(LOCAL_KEY, "local server")
    return None


def missing_key_hint(settings: Settings) -> str:
    """What to do when find_key found none, in a sentence."""
    from .endpoints import get

    endpoint = _uses_endpoint(settings)
    if endpoint is None:
        return ("no API key: run `kvchat keys set` (or set OPENAI_API_KEY, and OPENAI_BASE_URL "
                "for a server other than OpenAI)")
    variable = get(endpoint).key_env
    also = f", or set {variable}" if variable else ""
    return f"no API key for endpoint {endpoint!r}: run `kvchat keys set --endpoint {endpoint}`{also}"

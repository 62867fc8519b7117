"""Named model servers ("endpoints"), so a user can switch between OpenAI and
a local server with `--endpoint local`.

They live in endpoints.json in the config directory (see paths.py). kvchat
writes that file itself (`kvchat endpoints add/remove`), so it is JSON, which
the standard library reads and writes exactly; config.toml stays the user's
own file, which kvchat never rewrites (it would lose their comments). An
endpoint holds no secret: its key is stored apart, by kvchat.credentials, or
read from the environment variable it names.

The name "default" is reserved: it means no endpoint (the base_url setting,
else OpenAI), so `--endpoint default` undoes an endpoint chosen elsewhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths
from .config import ConfigError, check

FILE_NAME = "endpoints.json"
DEFAULT = "default"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class EndpointError(ConfigError):
    """An endpoint that does not exist or cannot be stored, in one line."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str | None = None  # the model to use there, unless one is named elsewhere
    key_env: str | None = None  # the environment variable holding its API key


def path() -> Path:
    return paths.config_dir() / FILE_NAME


def is_loopback(url: str | None) -> bool:
    """Whether `url` is a server on this machine (which needs no API key)."""
    if not url:
        return False
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host in ("localhost", "::1") or host.startswith("127.")


def check_name(name: str) -> str:
    if name.lower() in (DEFAULT, "none"):
        # "none" unsets the endpoint setting, as it does any optional setting.
        raise EndpointError(f"{name!r} is not an endpoint name: it means no endpoint (the base_url setting, else OpenAI)")
    if not _NAME.fullmatch(name):
        raise EndpointError(
            f"bad endpoint name {name!r}: use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_base_url(url: str) -> str:
    from urllib.parse import urlsplit

    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # Not repeated: a URL kvchat cannot read may still hold a password or a key.
        raise EndpointError("the base URL must be an http:// or https:// URL with a host")
    if parts.password is not None or parts.query or parts.fragment or "?" in url:
        # endpoints.json is an ordinary file, not a key file; and the client
        # adds its paths after the URL, so a query string would go astray.
        what = "a password" if parts.password is not None else "a query string or a fragment"
        raise EndpointError(f"the base URL holds {what}: store the key with `kvchat keys set --endpoint NAME` instead")
    return url


def check_key_env(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise EndpointError(f"--key-env must name an environment variable (letters, digits, '_'), not {name!r}")
    return name


def checked(endpoint: Endpoint) -> Endpoint:
    """`endpoint` as kvchat stores it, or EndpointError saying what is wrong."""
    try:
        model = None if endpoint.model is None else check("model", endpoint.model)
    except ConfigError as exc:
        raise EndpointError(str(exc)) from None
    return Endpoint(
        name=check_name(endpoint.name),
        base_url=check_base_url(endpoint.base_url),
        model=model,
        key_env=None if endpoint.key_env is None else check_key_env(endpoint.key_env),
    )


def _from_json(name: str, data: object, where: Path) -> Endpoint:
    fields = ("base_url", "model", "key_env")
    if (not isinstance(data, dict) or not isinstance(data.get("base_url"), str)
            or set(data) - set(fields) or any(not isinstance(data.get(f), (str, type(None))) for f in fields)):
        raise EndpointError(
            f"{where}: endpoint {name!r} must be an object with a \"base_url\" string "
            "and optional \"model\" and \"key_env\" strings"
        )
    try:
        return checked(Endpoint(name, data["base_url"], data.get("model"), data.get("key_env")))
    except EndpointError as exc:
        raise EndpointError(f"{where}: {exc}") from None


def load() -> dict[str, Endpoint]:
    """Every endpoint, by name; {} when none has been added."""
    file = path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise EndpointError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EndpointError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EndpointError(f"{file} must hold a JSON object of endpoints by name")
    return {name: _from_json(name, value, file) for name, value in sorted(data.items())}


def _known(endpoints: dict[str, Endpoint]) -> str:
    names = ", ".join([DEFAULT, *endpoints])
    return f"the endpoints are: {names}; `kvchat endpoints add NAME --base-url URL` adds one"


def get(name: str) -> Endpoint:
    endpoints = load()
    endpoint = endpoints.get(name)
    if endpoint is None:
        raise EndpointError(f"unknown endpoint {name!r} ({_known(endpoints)})")
    return endpoint


def _save(endpoints: dict[str, Endpoint]) -> None:
    from .files import write_atomically

    data = {
        name: {key: value for key, value in asdict(endpoint).items() if key != "name" and value is not None}
        for name, endpoint in sorted(endpoints.items())
    }
    write_atomically(path(), (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def add(endpoint: Endpoint, *, replace: bool = False) -> Endpoint:
    """Store `endpoint` (checked); an existing one of that name only with `replace`."""
    endpoint = checked(endpoint)
    endpoints = load()
    if endpoint.name in endpoints and not replace:
        raise EndpointError(f"there is already an endpoint {endpoint.name!r} (--replace replaces it)")
    endpoints[endpoint.name] = endpoint
    _save(endpoints)
    return endpoint


def remove(name: str) -> Endpoint:
    """Forget endpoint `name` (its stored key is the caller's to remove)."""
    endpoints = load()
    endpoint = endpoints.pop(name, None)
    if endpoint is None:
        raise EndpointError(f"unknown endpoint {name!r} ({_known(endpoints)})")
    _save(endpoints)
    return endpoint

"""Reaching the model server: its address, the API key and the client."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer

from .common import CliError

if TYPE_CHECKING:
    from ..config import Settings
    from ..conversation import Conversation
    from ..store import Store


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def api_key(base_url: str | None) -> str:
    """The API key from OPENAI_API_KEY, asked for at a terminal when missing."""
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if base_url and _is_loopback(base_url):
        # Local servers (Ollama, llama.cpp, LM Studio) take any key; the client needs one.
        return "kvchat-local"
    if sys.stdin.isatty():
        key = typer.prompt("OpenAI API key (input hidden)", hide_input=True).strip()
        if key:
            return key
    raise CliError(
        "no API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for a server other than OpenAI)"
    )


def timeout() -> float:
    """Seconds to wait for the model: KVCHAT_TIMEOUT, the config file, or 600."""
    from ..config import resolve

    return resolve({}, None).timeout


def conversation(store: Store, settings: Settings | None = None) -> Conversation:
    """A conversation over `store` with the model server of `settings`
    (base_url, timeout; by default from the environment and config file)."""
    from ..config import resolve
    from ..conversation import Conversation
    from ..model_client import ModelClient

    settings = resolve({}, None) if settings is None else settings
    key = api_key(settings.base_url)
    client = ModelClient(api_key=key, base_url=settings.base_url, timeout=settings.timeout)
    return Conversation(store, client, secrets=[key])

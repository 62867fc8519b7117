"""Reaching the model server: its address, the API key and the client."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .common import CliError

if TYPE_CHECKING:
    from ..config import Settings
    from ..conversation import Conversation
    from ..model_client import ModelClient
    from ..store import Store

EndpointOption = Annotated[
    Optional[str],
    typer.Option(
        "--endpoint",
        help="A named server from `kvchat endpoints` (default: the session's, KVCHAT_ENDPOINT or the config file's; "
        "`default` means none); it wins over OPENAI_BASE_URL.",
    ),
]


def api_key(settings: Settings) -> str:
    """The API key for the server of `settings` (see kvchat.credentials), asked
    for at a terminal when there is none."""
    from ..credentials import find_key, missing_key_hint

    found = find_key(settings)
    if found is not None:
        return found.value
    if sys.stdin.isatty():
        key = typer.prompt("API key (input hidden; `kvchat keys set` stores one)", hide_input=True).strip()
        if key:
            return key
    raise CliError(missing_key_hint(settings))


def model_client(settings: Settings) -> tuple[ModelClient, str]:
    """A client for the server of `settings`, and the key it uses."""
    from ..endpoints import DEFAULT
    from ..model_client import ModelClient

    if settings.endpoint not in (None, DEFAULT) and settings.source("base_url") == "env OPENAI_BASE_URL":
        typer.echo(f"kvchat: warning: OPENAI_BASE_URL is set and wins over endpoint {settings.endpoint!r}", err=True)

    key = api_key(settings)
    return ModelClient(api_key=key, base_url=settings.base_url, timeout=settings.timeout), key


def warn_if_context_unknown(model: str, context_tokens: int | None) -> None:
    """Say that the default context window applies to a model kvchat does not
    know, unless the user gave one (`context_tokens`): once per conversation
    (see conversation()), and again when chat switches to such a model."""
    from ..tokens import DEFAULT_CONTEXT_WINDOW, known_model

    if context_tokens is not None or known_model(model) is not None:
        return
    typer.echo(
        f"kvchat: warning: kvchat does not know the context window of {model!r} and assumes "
        f"{DEFAULT_CONTEXT_WINDOW} tokens; give it with --context-tokens (or KVCHAT_CONTEXT_TOKENS, "
        "or context_tokens in the config file)",
        err=True,
    )


def conversation(store: Store, settings: Settings | None = None) -> Conversation:
    """A conversation over `store` with the model server of `settings`
    (endpoint, base_url, timeout; by default from the environment and config file)."""
    from ..config import resolve
    from ..conversation import Conversation
    from ..credentials import usable_keys

    settings = resolve({}, None) if settings is None else settings
    client, key = model_client(settings)
    warn_if_context_unknown(settings.model, settings.context_tokens)
    # Every stored key is blanked wherever it turns up, not only the one in use.
    return Conversation(store, client, secrets=[key, *usable_keys()])

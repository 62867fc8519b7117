"""`kvchat models`: the models the configured server offers, or the models
whose context window and encoding kvchat knows."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import JsonOption, on_terminal, print_json, tsv_row
from .connection import EndpointOption


def _known(json_output: bool) -> None:
    from ..tokens import DEFAULT_CONTEXT_WINDOW, DEFAULT_ENCODING, KNOWN_MODELS

    if json_output:
        # A list of objects with `id`, as `kvchat models --json` gives; what
        # any other model gets is in the help and the docs, not an entry here.
        print_json([{"id": name, "context_tokens": known.context, "encoding": known.encoding}
                    for name, known in KNOWN_MODELS.items()])
        return
    if not on_terminal():  # tab-separated, as every listing is when piped
        for name, known in KNOWN_MODELS.items():
            sys.stdout.write(tsv_row(name, known.context, known.encoding))
        return
    width = max(map(len, KNOWN_MODELS))
    for name, known in KNOWN_MODELS.items():
        sys.stdout.write(f"{name:<{width}}  {known.context:>9}  {known.encoding}\n")
    typer.echo(
        f"A name covers its dated versions and variants (gpt-4o-2024-08-06, gpt-4o-mini). "
        f"Any other model: {DEFAULT_CONTEXT_WINDOW} tokens, {DEFAULT_ENCODING}, unless --context-tokens says.",
        err=True,
    )


def models(
    endpoint: EndpointOption = None,
    known: Annotated[
        bool, typer.Option("--known", help="The models whose context window and encoding kvchat knows, instead (no server needed).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """The models the configured server offers (--endpoint, OPENAI_BASE_URL, or base_url in the config file)."""
    if known:
        _known(json_output)
        return
    from ..config import resolve
    from .connection import model_client

    settings = resolve({"endpoint": endpoint}, None)
    client, _ = model_client(settings)
    with client:
        names = client.models()
    if json_output:
        print_json([{"id": name, "default": name == settings.model} for name in names])
        return
    if not names:
        typer.echo("The server lists no models.", err=True)
        return
    for name in names:
        mark = "  (the configured model)" if on_terminal() and name == settings.model else ""
        sys.stdout.write(tsv_row(name + mark))


def register(app: typer.Typer) -> None:
    app.command("models")(models)

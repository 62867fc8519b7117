"""`kvchat models`: the models the configured server offers."""

from __future__ import annotations

import sys

import typer

from .common import JsonOption, on_terminal, print_json


def models(json_output: JsonOption = False) -> None:
    """The models the configured server offers (OPENAI_BASE_URL, or base_url in the config file)."""
    from ..config import resolve
    from ..model_client import ModelClient
    from .connection import api_key

    settings = resolve({}, None)
    with ModelClient(api_key=api_key(settings.base_url), base_url=settings.base_url,
                     timeout=settings.timeout) as client:
        names = client.models()
    if json_output:
        print_json([{"id": name, "default": name == settings.model} for name in names])
        return
    if not names:
        typer.echo("The server lists no models.", err=True)
        return
    for name in names:
        mark = "  (the configured model)" if on_terminal() and name == settings.model else ""
        sys.stdout.write(f"{name}{mark}\n")


def register(app: typer.Typer) -> None:
    app.command("models")(models)

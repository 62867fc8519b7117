"""`kvchat endpoints`: named model servers, to switch between with --endpoint NAME."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import JsonOption, print_json, tsv_row

app = typer.Typer(
    help="Named model servers: `kvchat endpoints add local --base-url http://localhost:11434/v1`, "
    "then `kvchat ask --endpoint local ...`.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArgument = Annotated[str, typer.Argument(help="The endpoint's name.")]


@app.command("add")
def add(
    name: NameArgument,
    base_url: Annotated[str, typer.Option("--base-url", help="The server's OpenAI-compatible API, e.g. http://localhost:11434/v1.")],
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="The model to use there, unless --model, the session or KVCHAT_MODEL names one.")
    ] = None,
    key_env: Annotated[
        Optional[str], typer.Option("--key-env", metavar="VAR", help="Read its API key from this environment variable (before `kvchat keys set --endpoint NAME`).")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an endpoint of that name.")] = False,
) -> None:
    """Add a named server. Its key: `kvchat keys set --endpoint NAME` or --key-env; a server on this machine needs none."""
    from ..endpoints import Endpoint
    from ..endpoints import add as add_endpoint

    endpoint = add_endpoint(Endpoint(name, base_url, model, key_env), replace=replace)
    typer.echo(f"Endpoint {endpoint.name!r}: {endpoint.base_url}; use it with --endpoint {endpoint.name}.", err=True)


def _key_status(endpoint) -> str:
    """How the endpoint gets its key, never the key."""
    from ..credentials import key_path
    from ..endpoints import is_loopback

    ways = []
    if endpoint.key_env:
        ways.append(f"env {endpoint.key_env}")
    if key_path(endpoint.name).exists():
        ways.append("stored")
    if not ways:
        ways.append("none needed" if is_loopback(endpoint.base_url) else "none")
    return ", ".join(ways)


@app.command("list")
def list_endpoints(json_output: JsonOption = False) -> None:
    """The named servers: name, base URL, model and how each gets its key."""
    from ..credentials import key_path
    from ..endpoints import load

    endpoints = load().values()
    if json_output:
        print_json([
            {"name": e.name, "base_url": e.base_url, "model": e.model, "key_env": e.key_env,
             "key_stored": key_path(e.name).exists()}
            for e in endpoints
        ])
        return
    if not endpoints:
        typer.echo("No endpoints yet (`kvchat endpoints add NAME --base-url URL` adds one).", err=True)
        return
    for e in endpoints:
        sys.stdout.write(tsv_row(e.name, e.base_url, e.model or "-", f"key: {_key_status(e)}"))


@app.command("remove")
def remove(name: NameArgument) -> None:
    """Forget a named server, and its stored key."""
    from ..credentials import remove_key
    from ..endpoints import remove as remove_endpoint

    endpoint = remove_endpoint(name)
    also = " and its stored key" if remove_key(endpoint.name) else ""
    typer.echo(f"Removed endpoint {endpoint.name!r}{also}.", err=True)

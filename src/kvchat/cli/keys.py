"""`kvchat keys`: the API keys kvchat stores, one per server, in owner-only files."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from .common import CliError, JsonOption, print_json, tsv_row

app = typer.Typer(
    help="Store API keys in owner-only files (never in the database). OPENAI_API_KEY, when set, wins.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

KeyEndpointOption = Annotated[
    Optional[str],
    typer.Option("--endpoint", help="The endpoint the key is for (see `kvchat endpoints`); default: the default server."),
]


def _endpoint_name(endpoint: str | None) -> str | None:
    """`endpoint` checked against the known ones; None for the default server."""
    from ..endpoints import DEFAULT, get

    if endpoint is None or endpoint == DEFAULT:
        return None
    return get(endpoint).name


def _what(endpoint: str | None) -> str:
    return "the default server" if endpoint is None else f"endpoint {endpoint!r}"


def _read_key() -> str:
    if sys.stdin.isatty():
        return typer.prompt("API key (input hidden)", hide_input=True, prompt_suffix=": ")
    from ..credentials import MAX_KEY_LENGTH

    # Bounded: `kvchat keys set < /dev/zero` must not fill the memory first.
    limit = MAX_KEY_LENGTH * 4 + 2  # UTF-8 takes at most 4 bytes a character, and a line end
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise CliError(f"the API key is longer than {MAX_KEY_LENGTH} characters: is that the right text?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("standard input is not valid UTF-8") from None


@app.command("set")
def set_key(endpoint: KeyEndpointOption = None) -> None:
    """Store an API key: typed (hidden) at a terminal, else read from standard
    input (`echo "$KEY" | kvchat keys set`). Never give it as an argument: it
    would stay in the shell's history."""
    from ..credentials import ENV_KEY, key_path, mask, save_key

    name = _endpoint_name(endpoint)
    key = _read_key()
    path = save_key(key, name)
    typer.echo(f"Stored the API key for {_what(name)} ({mask(key.strip())}) in {path}", err=True)
    if name is None and os.environ.get(ENV_KEY, "").strip():
        typer.echo(f"kvchat: note: {ENV_KEY} is set, and wins over {key_path(name)}", err=True)


@app.command("path")
def path(endpoint: KeyEndpointOption = None) -> None:
    """Print where the key is (or would be) stored."""
    from ..credentials import key_path

    sys.stdout.write(f"{key_path(_endpoint_name(endpoint))}\n")


@app.command("list")
def list_keys(json_output: JsonOption = False) -> None:
    """The stored keys: whose they are, masked to their last four characters,
    or why one cannot be used."""
    from ..credentials import KeyFileError, key_path, mask, read_key, stored

    rows = []
    for name in stored():
        try:
            key, problem = mask(read_key(name) or ""), None
        except KeyFileError as exc:
            key, problem = None, str(exc)
        rows.append({"endpoint": name, "key": key, "path": str(key_path(name)), "problem": problem})
    if json_output:
        print_json(rows)
        return
    if not rows:
        typer.echo("No keys stored (`kvchat keys set` stores one).", err=True)
        return
    for row in rows:
        sys.stdout.write(tsv_row(row["endpoint"], row["key"] or "unusable: " + row["problem"]))


@app.command("remove")
def remove(endpoint: KeyEndpointOption = None) -> None:
    """Delete a stored key."""
    from ..credentials import key_path, remove_key
    from ..endpoints import DEFAULT

    # A key whose endpoint is gone can still be removed.
    name = None if endpoint in (None, DEFAULT) else endpoint
    if not remove_key(name):
        raise CliError(f"no key is stored for {_what(name)} ({key_path(name)})")
    typer.echo(f"Removed the API key for {_what(name)}.", err=True)

"""`kvchat facts`: the key/value memories; list, search, set, forget, history,
import and export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from .common import (
    CliError,
    JsonOption,
    console,
    counted,
    local_time,
    on_terminal,
    open_store,
    print_json,
    read_lines,
    tsv_row,
)
from .terminal_text import safe_text


class _FactsGroup(TyperGroup):
    """`kvchat facts WORDS` is short for `kvchat facts search WORDS`."""

    def parse_args(self, ctx, args):
        first = next((arg for arg in args if not arg.startswith("-")), None)
        if first is not None and first not in self.commands:
            if args[0] == first and args[1:2] and not args[1].startswith("-"):
                # `facts forgt user.x` is a mistyped command, not a search
                # for two words (a search takes its words as one argument).
                import difflib

                close = difflib.get_close_matches(first, list(self.commands), n=1, cutoff=0.7)
                if close:
                    raise CliError(f"no facts command is called {first!r}: did you mean `kvchat facts {close[0]}`?")
                raise CliError("a search takes its words as one argument: quote them (kvchat facts 'WORDS')")
            args = ["search", *args]  # options given before the words go to search too
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_FactsGroup,
    invoke_without_command=True,
    help="The stored key/value memories. `kvchat facts QUERY` searches them.",
    rich_markup_mode=None,
)


def fact_json(fact) -> dict:
    from ..transfer import fact_record

    # The export record leaves out an unset ref; a listing's fields are always there.
    return {"id": fact.id, **fact_record(fact), "ref": fact.ref, "turn_id": fact.turn_id}


def show_facts(found, json_output: bool, scores: dict[int, float] | None = None) -> None:
    if json_output:
        items = []
        for fact in found:
            item = fact_json(fact)
            if scores is not None:
                item["score"] = float(f"{scores[fact.id]:.4g}")
            items.append(item)
        print_json(items)
        return
    if not on_terminal():
        for fact in found:
            sys.stdout.write(tsv_row(fact.key, fact.value))
        return
    if not found:
        console().print("No facts." if scores is None else "No matching facts.")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    # A long key folds rather than squeezing the value out of the table.
    table.add_column("key", style="cyan", overflow="fold")
    table.add_column("value", min_width=12)
    table.add_column("updated", style="dim", no_wrap=True)
    table.add_column("from", style="dim")
    for fact in found:
        # Text, not str: stored text is data, never Rich markup.
        table.add_row(safe_text(fact.key), safe_text(fact.value), local_time(fact.updated_at), fact.source)
    console().print(table)


def _show_skipped(skipped, json_output: bool) -> None:
    if json_output:
        from dataclasses import asdict

        print_json([asdict(item) for item in skipped])  # the record holds no value to leave out
        return
    if not on_terminal():
        for item in skipped:
            turn = item.turn_id if item.turn_id is not None else ""
            sys.stdout.write(tsv_row(local_time(item.created_at), item.key or "(hidden)", item.reason, item.source, turn))
        return
    if not skipped:
        console().print("No facts were skipped.")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("when", style="dim", no_wrap=True)
    table.add_column("key", style="cyan", overflow="fold")
    table.add_column("looked like")
    table.add_column("from", style="dim")
    table.add_column("turn", style="dim")
    for item in skipped:
        table.add_row(
            local_time(item.created_at), safe_text(item.key or "(hidden: the key itself looked secret)"),
            safe_text(item.reason), item.source, str(item.turn_id or ""),
        )
    console().print(table)


@app.callback()
def facts(
    ctx: typer.Context,
    skipped: Annotated[
        bool, typer.Option("--skipped", help="Show the facts left out because they looked like secrets (never their values).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """The stored key/value memories. `kvchat facts QUERY` searches them."""
    if ctx.invoked_subcommand is not None:
        return
    with open_store() as store:
        if skipped:
            _show_skipped(store.skipped_facts(), json_output)
        else:
            show_facts(store.facts(), json_output)


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Words to look for in keys and values.")],
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="At most this many.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Facts whose key or value match the words, best first."""
    from ..textsearch import match_query

    match = match_query(query)
    if match is None:
        raise CliError("the query has no words to search for")
    with open_store() as store:
        hits = store.search_facts(match, limit=limit)
    show_facts([hit.record for hit in hits], json_output, {hit.record.id: hit.score for hit in hits})


def _key(raw: str) -> str:
    from ..extraction import MAX_KEY_LENGTH, normalise_key

    key = normalise_key(raw, cut=False)
    if key is None:
        raise CliError(f"{raw!r} is not a usable fact key")
    if len(key) > MAX_KEY_LENGTH:
        # The model's keys are cut to fit; one typed here would then name,
        # unseen, whatever other key starts the same.
        raise CliError(f"a fact key is at most {MAX_KEY_LENGTH} characters")
    return key


def _stored_as(raw: str, key: str) -> str:
    """A note when KEY was written otherwise: two spellings may be one key."""
    if raw.strip() == key:
        return ""
    return f" (stored as {key!r}: keys are lower-case words joined by dots)"


def _stored_fact(store, key: str):
    """The fact stored under KEY as typed, or as kvchat spells it."""
    found = store.fact(key) or store.fact(_key(key))
    if found is None:
        raise CliError(f"no fact with the key {key!r}")
    return found


@app.command("get")
def get(
    key: Annotated[str, typer.Argument(help="The key whose value to print.")],
    json_output: JsonOption = False,
) -> None:
    """Print the value of KEY, exactly as stored (exit status 1 if there is none)."""
    with open_store() as store:
        found = _stored_fact(store, key)
    if json_output:
        print_json(fact_json(found))
        return
    sys.stdout.write(found.value + "\n")


@app.command("set")
def set_fact(
    key: Annotated[str, typer.Argument(help="A dotted key, e.g. user.editor.")],
    value: Annotated[str, typer.Argument(help="The value to remember.")],
) -> None:
    """Remember VALUE under KEY (the old value stays in the key's history)."""
    from ..extraction import skip_reason

    reason = skip_reason(key, value)
    if reason is not None:
        raise CliError(f"that looks like a secret ({reason}); kvchat does not store secrets")
    raw, key = key, _key(key)
    with open_store() as store:
        outcome = store.set_fact(key, value.strip(), source="user")
    typer.echo(f"{key}: {outcome}{_stored_as(raw, key)}", err=True)


@app.command("forget")
def forget(key: Annotated[str, typer.Argument(help="The key to forget.")]) -> None:
    """Forget a fact (its history is kept)."""
    with open_store() as store:
        stored = _stored_fact(store, key)
        store.forget_fact(stored.key, source="user")
    typer.echo(f"{stored.key}: forgotten", err=True)


@app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="The key whose values to show.")],
    json_output: JsonOption = False,
) -> None:
    """Every value KEY has had: when, from which turn, and by what."""
    with open_store() as store:
        versions = store.fact_history(key) or store.fact_history(_key(key))
    if not versions:
        raise CliError(f"no fact with the key {key!r} has ever been stored")
    if json_output:
        print_json(
            [
                {"key": v.key, "value": v.value, "action": v.action, "source": v.source,
                 "turn_id": v.turn_id, "created_at": v.created_at, "deleted_with_session": v.deleted_with_session}
                for v in versions
            ]
        )
        return
    # "deleted": a value set in a session deleted since with its facts.
    rows = [
        (local_time(v.created_at), "deleted" if v.deleted_with_session else v.action, v.value or "", v.source,
         str(v.turn_id or ""))
        for v in versions
    ]
    if not on_terminal():
        # The action has a column of its own: a value may be any text, "(forgotten)" too.
        sys.stdout.write("".join(tsv_row(*row) for row in rows))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("when", style="dim", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("value", min_width=12)
    table.add_column("by", style="dim")
    table.add_column("turn", style="dim")
    gone = {"forget": "(forgotten)", "deleted": "(deleted with its session)"}
    for when, action, value, source, turn in rows:
        table.add_row(when, action, gone.get(action) or safe_text(value), source, turn)
    console().print(table)


@app.command("import")
def import_facts(
    file: Annotated[Path, typer.Argument(help="JSON lines: key, value, and optionally ref, created_at, updated_at. - reads stdin.")],
    json_output: JsonOption = False,
) -> None:
    """Import facts from a JSON-lines file (all of it, or nothing if a line is bad)."""
    from .. import transfer

    items = transfer.parse_facts(read_lines(file))
    with open_store() as store:
        done = store.import_facts(items)
    if json_output:
        print_json({"imported": len(items), "changed": done.changed, "older_than_stored": done.older})
        return
    older = f"; {done.older} older than the stored value or forget, passed over" if done.older else ""
    typer.echo(f"Imported {counted(len(items), 'fact')} ({done.changed} new or changed{older}).", err=True)


@app.command("export")
def export_facts() -> None:
    """Export every fact as JSON lines to standard output."""
    from ..transfer import fact_record

    with open_store() as store:
        for fact in store.facts():
            sys.stdout.write(json.dumps(fact_record(fact), ensure_ascii=False) + "\n")

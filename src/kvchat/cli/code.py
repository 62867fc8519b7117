"""`kvchat code`: the code blocks of a stored answer; and `--save-code` for
`ask` and `chat`, which writes them to files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .common import (
    CliError, JsonOption, SessionOption, console, counted, find_session, given_or_configured_session, on_terminal,
    open_store,
    print_json,
    tsv_row,
)

if TYPE_CHECKING:
    from ..codeblocks import CodeBlock
    from ..store import Store, Turn


def save_answer(answer: Turn, directory: Path, *, force: bool, quiet: bool) -> list[Path]:
    """--save-code: write the answer's complete code blocks under `directory`
    and say so on stderr (unless `quiet`: --json reports the paths itself)."""
    from ..codeblocks import parse, save

    blocks = parse(answer.content)
    # An answer that ended as the model meant it to, with its last block
    # never closed and running to its end, is a model that left out the
    # fence (small ones often do): that block is all there is, and is saved.
    last = blocks[-1] if blocks else None
    fence_left_out = (
        answer.status == "complete" and last is not None and not last.complete and bool(last.text.strip())
        and answer.content.rstrip().endswith(last.text.rstrip())
    )
    for block in blocks:
        if block.complete:
            continue
        if block is last and fence_left_out:
            typer.echo(f"kvchat: note: code block {block.index} has no closing fence; the answer ended whole, "
                       "so it is saved as it stands", err=True)
        else:
            # A block cut off with the answer is not code to run; it stays in
            # the database for whoever wants to see it.
            typer.echo(
                f"kvchat: warning: code block {block.index} was cut off with the answer and is not saved "
                f"(`kvchat code {answer.id} --index {block.index}` prints it)",
                err=True,
            )
    whole = [block for block in blocks if block.complete or (block is last and fence_left_out)]
    if not whole:
        if not quiet and not blocks:
            typer.echo(f"kvchat: the answer has no code blocks; nothing was saved to {directory}", err=True)
        return []
    paths = save(whole, directory, force=force)
    if not quiet:
        names = ", ".join(str(path.relative_to(directory)) for path in paths)
        count = counted(len(paths), "code block")
        typer.echo(f"kvchat: saved {count} to {directory}: {names}", err=True)
    return paths


def _answer(store: Store, turn_id: int | None, session: str | None) -> Turn:
    """The stored answer `turn_id`, or the answer to the session's last question."""
    if turn_id is not None:
        turn = store.turn(turn_id)
        if turn is None:
            raise CliError(f"no turn {turn_id} (`kvchat history --json` shows the ids)")
        if turn.role != "assistant":
            raise CliError(f"turn {turn_id} is a {turn.role} turn, not an answer")
        if session is not None and turn.session_id != find_session(store, session).id:
            raise CliError(f"turn {turn_id} is not in session {session!r}")
        return turn
    found = given_or_configured_session(store, session)
    name = found.name
    for turn in store.turns_newest_first(found.id):
        if turn.role == "assistant":
            return turn
        if turn.role == "user":
            # Not the answer before it: `kvchat code --last | python` after a
            # failed ask must not run an older answer's code.
            raise CliError(
                f"the last question in session {name!r} has no answer "
                "(`kvchat code TURN_ID` takes an earlier one)"
            )
    raise CliError(f"session {name!r} has no answer yet")


def _block_json(block: CodeBlock, file: str) -> dict:
    return {
        "index": block.index, "language": block.language, "filename": block.filename, "file": file,
        "lines": block.lines, "complete": block.complete, "text": block.text,
    }


def _file_names(blocks: list[CodeBlock]) -> list[str]:
    """The names --save-code would give, or for a name it would refuse, that name."""
    from ..codeblocks import CodeBlockError, default_name, file_names

    try:
        return file_names(blocks)
    except CodeBlockError:
        return [block.filename or default_name(block) for block in blocks]


def code(
    turn_id: Annotated[
        Optional[int],
        typer.Argument(metavar="TURN_ID", help="The answer's turn id (`kvchat history --json`, `ask --json`); default: the last answer."),
    ] = None,
    last: Annotated[bool, typer.Option("--last", help="The answer to the session's last question (the default).")] = False,
    session: SessionOption = None,
    index: Annotated[Optional[int], typer.Option("--index", "-i", help="Only code block N (1-based).")] = None,
    list_blocks: Annotated[bool, typer.Option("--list", help="List the blocks: index, language, file name, lines.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Print the code blocks of a stored answer, code only, so that
    `kvchat code --last | python` runs it. Blocks are separated by a blank line."""
    from ..codeblocks import parse

    if turn_id is not None and last:
        raise CliError("give a TURN_ID or --last, not both")
    with open_store() as store:
        answer = _answer(store, turn_id, session)
    blocks = parse(answer.content)
    if not blocks:
        raise CliError(f"answer {answer.id} has no code blocks")
    if index is not None:
        if not 1 <= index <= len(blocks):
            have = f"only {len(blocks)}" if len(blocks) > 1 else "only one"
            first = " (blocks are numbered from 1)" if index < 1 else ""
            raise CliError(f"no code block {index}: answer {answer.id} has {have}{first}")
        names = [_file_names(blocks)[index - 1]]
        blocks = [blocks[index - 1]]
    else:
        names = _file_names(blocks)
    if json_output:
        print_json({"turn_id": answer.id, "blocks": [_block_json(b, n) for b, n in zip(blocks, names)]})
    elif list_blocks:
        _list(blocks, names)
    else:
        for block in blocks:
            if not block.complete:
                why = "it has no closing fence" if answer.status == "complete" else "the answer was cut off"
                typer.echo(f"kvchat: warning: code block {block.index} is incomplete ({why})", err=True)
        sys.stdout.write("\n".join(b.text if b.text.endswith("\n") or not b.text else b.text + "\n" for b in blocks))
        sys.stdout.flush()


def _list(blocks: list[CodeBlock], names: list[str]) -> None:
    rows = [
        (str(b.index), b.language or "-", name, str(b.lines), "complete" if b.complete else "incomplete")
        for b, name in zip(blocks, names)
    ]
    if not on_terminal():
        sys.stdout.write("".join(tsv_row(*row) for row in rows))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column, justify in (("#", "right"), ("language", "left"), ("file", "left"), ("lines", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(*row[:4], "" if row[4] == "complete" else "incomplete")
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("code")(code)

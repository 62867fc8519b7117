"""The `kvchat` command: Typer parses, the library does the work, we render.

Commands live in modules by group (ask.py: ask; chat.py: chat; code.py: code;
sessions.py: history and sessions; transfer.py: import and export; facts.py;
recall.py; models.py; config.py; roles.py; keys.py; endpoints.py; usage.py); connection.py reaches the model
server. Only what a command needs is imported when it runs, so
`kvchat --help` starts fast; a process builds only the Click command it runs
(`_only`), and converts its option values without pydantic (coercion.py).
"""

from __future__ import annotations

import copy
import os
import sys

import typer
from typer._click.exceptions import ClickException  # Typer vendors Click; usage errors are these
from typer.core import TyperGroup

from . import ask, chat, code, coercion, common, config, db, endpoints, facts, keys, models, recall, roles, sessions, transfer, usage
from .errors import one_line_error


class _OneLineErrors(TyperGroup):
    """Every failure reaches the user as one line and an exit status, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.echo("\nkvchat: interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except BrokenPipeError:
            # The reader went away (`kvchat export | head`): stop quietly, as
            # command-line tools do, and keep Python from complaining at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if os.environ.get("KVCHAT_DEBUG"):
                raise
            line, status = one_line_error(exc)
            typer.echo(line, err=True)
            raise typer.Exit(status) from None


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"kvchat {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="kvchat",
    cls=_OneLineErrors,
    help="A terminal chat assistant for code that remembers: every turn, and "
    "key/value facts about you, in a local SQLite database (or PostgreSQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print kvchat's version and exit."
    ),
    user: str = typer.Option(
        None, "--user",
        help="Whose sessions and facts to use, in a store several people share "
        "(default: KVCHAT_USER, the config file, or your login name).",
    ),
) -> None:
    """A terminal chat assistant for code that remembers: every turn, and key/value
    facts about you, in a local SQLite database (or PostgreSQL)."""
    if user is not None:
        from ..store import check_name

        check_name("a user name", user)
    common.user_flag = user


ask.register(app)
chat.register(app)
code.register(app)
sessions.register(app)
transfer.register(app)
app.add_typer(facts.app, name="facts")
recall.register(app)
models.register(app)
usage.register(app)
app.add_typer(config.app, name="config")
app.add_typer(roles.app, name="roles")
app.add_typer(keys.app, name="keys")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(db.app, name="db")


def _command_named(args: list[str]) -> str | None:
    """The command or group `args` run, when it is plain to see: the first
    argument that is not one of the root options. None otherwise (no command,
    another option, shell completion), and Typer then sees every command."""
    if os.environ.get("_KVCHAT_COMPLETE"):
        return None
    rest = iter(args)
    for arg in rest:
        if arg == "--user":
            next(rest, None)
        elif not arg.startswith("--user="):
            return None if arg.startswith("-") else arg
    return None


def _only(name: str | None) -> typer.Typer:
    """`app` with `name` its only command, or all of `app` if it has none of
    that name. Typer turns every command into a Click command before it runs
    one, which was 20 ms of each kvchat process (docs/performance.md)."""
    commands = [c for c in app.registered_commands
                if (c.name or typer.main.get_command_name(c.callback.__name__)) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    only = copy.copy(app)
    only.registered_commands, only.registered_groups = commands, groups
    return only


def command_for(args: list[str]):
    """The Click command that runs `kvchat ARGS`, as a process builds it."""
    command = typer.main.get_command(_only(_command_named(args)))
    coercion.speed_up(command)
    return command


def main() -> None:
    command_for(sys.argv[1:])()

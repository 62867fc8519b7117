"""How a failure reads to the user: one line and an exit status, never a
traceback. The command group uses it for every command, and `kvchat chat`
for each question or slash command, where the dialog then goes on."""

from __future__ import annotations

from .common import CliError


def _known_errors() -> tuple[type[Exception], ...]:
    # Imported here: each lives in a module a fast command need not load.
    from ..codeblocks import CodeBlockError
    from ..config import ConfigError
    from ..conversation import AskFailed
    from ..database import DatabaseError
    from ..model_client import ModelError
    from ..prompt import PromptTooLarge
    from ..roles import RoleError
    from ..store import StoreError
    from ..tokens import TokenizerDataError
    from ..transfer import TransferError

    return (
        CliError, AskFailed, CodeBlockError, ConfigError, DatabaseError, ModelError, PromptTooLarge, RoleError,
        StoreError, TokenizerDataError, TransferError,
    )


def one_line_error(exc: Exception) -> tuple[str, int]:
    """The line to print for `exc` and the exit status it deserves: 1 for a
    problem the user can act on, 2 for a bug of ours."""
    from typer._click.exceptions import ClickException

    if isinstance(exc, ClickException):
        return f"kvchat: error: {exc.format_message()}", 1
    if isinstance(exc, _known_errors()):
        return f"kvchat: error: {exc}", 1
    if isinstance(exc, OSError):
        return f"kvchat: error: {exc.strerror or exc}", 1
    if isinstance(exc, OverflowError):
        # A number typed beyond what SQLite or a date can hold (`-n 1e30`,
        # `--since 99999999999d`): the user's input, not a bug.
        return "kvchat: error: a number given is too large", 1
    return (
        f"kvchat: internal error: {type(exc).__name__}: {exc} (set KVCHAT_DEBUG=1 to see the traceback)",
        2,
    )

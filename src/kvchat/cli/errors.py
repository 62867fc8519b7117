"""How a failure reads to the user: one line and an exit status, never a
traceback. The command group uses it for every command, and `kvchat chat`
for each question or slash command, where the dialog then goes on."""

from __future__ import annotations

import sys

from .common import CliError


# kvchat's own errors, which read well as they are, by the module defining each.
_KNOWN_ERRORS = {
    "kvchat.codeblocks": "CodeBlockError", "kvchat.config": "ConfigError", "kvchat.conversation": "AskFailed",
    "kvchat.database": "DatabaseError", "kvchat.model_client": "ModelError", "kvchat.prompt": "PromptTooLarge",
    "kvchat.roles": "RoleError", "kvchat.store": "StoreError", "kvchat.tokens": "TokenizerDataError",
    "kvchat.transfer": "TransferError",
}


def _known_errors() -> tuple[type[Exception], ...]:
    # A module that was never imported raised nothing: importing it to find
    # out would cost a failed `kvchat history` SQLAlchemy's 0.25 s.
    loaded = (getattr(sys.modules.get(module), name, None) for module, name in _KNOWN_ERRORS.items())
    return (CliError, *(error for error in loaded if error is not None))


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

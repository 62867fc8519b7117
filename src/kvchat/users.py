"""Whose memories these are: the user every session, fact and role belongs to.

Several people may share one store (one file, or one server); each sees only
their own. The user is --user, else KVCHAT_USER, else the config file's
`user`, else the name the operating system knows them by.
"""

from __future__ import annotations

# When the operating system cannot say who is running kvchat (a container
# with an unnamed uid and no LOGNAME or USER): everyone there is one user.
FALLBACK_USER = "default"


def default_user() -> str:
    """The operating system's name for the user running kvchat."""
    import getpass

    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no name for the uid, or no pwd module
        return FALLBACK_USER
    return name.strip() or FALLBACK_USER


def index_user(name: str) -> str:
    """A user name as one full-text term: "u" and its UTF-8 bytes in hex, so
    that no name (dots, spaces, CJK) is split into several words or found by
    a search for one of its words."""
    return "u" + name.encode("utf-8", "surrogatepass").hex()

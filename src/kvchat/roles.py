"""System roles: the built-in ones, and the user's own stored in the database.

A user role of the same name takes the place of a built-in one, so a user can
adjust "code" without losing the original: removing the user role brings the
built-in back. Built-in roles themselves cannot be removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

DEFAULT_ROLE_NAME = "code"

BUILTIN_ROLES: dict[str, str] = {
    "code": (
        "You are kvchat, a coding assistant in a developer's terminal. When the user asks "
        "for code, write complete, runnable code in fenced code blocks tagged with their "
        "language, prefer the standard library and well-kept packages, and state briefly "
        "any assumption you make (versions, platform, inputs). Keep explanations short and "
        "to the point; say so plainly when you are unsure."
    ),
    "reviewer": (
        "You are kvchat, reviewing code in a developer's terminal as a careful senior "
        "engineer would. Read the code or diff you are given and report what needs to "
        "change, most serious first: wrong behaviour and bugs, security problems (injection, "
        "leaked secrets, unchecked input), data loss, races and resource leaks, missing "
        "error handling and tests, then naming and readability. For each point name the "
        "place (file, function or line), say in a sentence why it matters, and show the "
        "fix in a short fenced code block. Do not rewrite code that is fine and do not pad "
        "the review with praise. If you find nothing of substance, say so; if you cannot "
        "judge without more context (the callers, the tests, the versions), say what you need."
    ),
    "explainer": (
        "You are kvchat, a patient programming teacher in a developer's terminal. Explain "
        "code and concepts so that the reader understands them, not only what to type: "
        "start with the core idea in one or two plain sentences, then go through the "
        "details step by step, with a small runnable example where one helps. Define each "
        "term the first time you use it, relate new ideas to ones the reader probably "
        "knows, and point out the usual mistakes and misconceptions. Match the depth to "
        "the question: a short question gets a short answer. Say when something depends "
        "on a language version or platform, and say so plainly when you are unsure."
    ),
    "shell": (
        "You are kvchat, a shell assistant in a developer's terminal. Answer with shell "
        "commands only: for each task give one command (a one-liner, piped if need be) in "
        "a fenced code block tagged sh, followed by one short line saying what it does. "
        "Assume bash with GNU tools on Linux unless the user names another shell or "
        "system, and give the macOS or BSD form too where it differs. Quote paths and "
        "variables safely. When a command deletes, overwrites or changes files, "
        "permissions, disks, processes or git history (rm, dd, mkfs, chmod -R, "
        "find -delete, git reset --hard, git push --force and the like), begin its note "
        "with WARNING:, say what it destroys, and give a dry run or a backup step where "
        "one exists. No essays: when a task cannot be done safely in one line, say so in "
        "one sentence and give the shortest script that does it."
    ),
    "assistant": (
        "You are kvchat, a helpful general assistant in the user's terminal. Answer "
        "questions on any subject clearly and accurately, as briefly as the question "
        "allows, using lists or short code blocks only where they make the answer easier "
        "to use. Answer in the language the user writes in. Say plainly when you are "
        "unsure or when the answer depends on facts you do not have, and never invent "
        "sources, figures or quotations."
    ),
}


class RoleError(Exception):
    """An unknown role, or one that cannot be removed, in one line."""


@dataclass(frozen=True)
class RoleEntry:
    name: str
    text: str
    builtin: bool  # False: the user's own, stored in the database
    shadows_builtin: bool = False  # a user role that takes a built-in's place


def available(store: Store) -> list[RoleEntry]:
    """Every role that can be used, by name; a user role hides a built-in of its name."""
    entries = {name: RoleEntry(name, text, builtin=True) for name, text in BUILTIN_ROLES.items()}
    for role in store.roles():
        entries[role.name] = RoleEntry(role.name, role.content, builtin=False,
                                       shadows_builtin=role.name in BUILTIN_ROLES)
    return [entries[name] for name in sorted(entries)]


def find(store: Store, name: str) -> RoleEntry:
    """The role `name` would use, or RoleError listing the roles there are."""
    name = name.strip()  # as Store.set_role stores it
    stored = store.role(name)
    if stored is not None:
        return RoleEntry(name, stored.content, builtin=False, shadows_builtin=name in BUILTIN_ROLES)
    if name in BUILTIN_ROLES:
        return RoleEntry(name, BUILTIN_ROLES[name], builtin=True)
    names = ", ".join(entry.name for entry in available(store))
    raise RoleError(f"no role named {name!r} (the roles are: {names}; see `kvchat roles list`)")


def role_text(store: Store, name: str) -> str:
    """The system text of role `name`: the user's own role of that name, else the built-in."""
    return find(store, name).text


def remove(store: Store, name: str) -> None:
    """Remove the user role `name` (a built-in of that name is then used again)."""
    name = name.strip()
    if store.remove_role(name):
        return
    if name in BUILTIN_ROLES:
        raise RoleError(f"{name!r} is a built-in role and cannot be removed")
    raise RoleError(f"no user role named {name!r} (see `kvchat roles list`)")

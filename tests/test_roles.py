"""System roles: the built-in ones, the user's own, a user role that takes a
built-in's place, and `kvchat roles`."""

from __future__ import annotations

import json

import pytest

from kvchat import prompt, roles
from kvchat.roles import BUILTIN_ROLES, RoleError, role_text


def test_the_code_role_is_the_prompts_default():
    assert BUILTIN_ROLES[roles.DEFAULT_ROLE_NAME] == prompt.DEFAULT_ROLE


def test_the_built_in_roles():
    assert set(BUILTIN_ROLES) == {"code", "reviewer", "explainer", "shell", "assistant"}
    assert "WARNING" in BUILTIN_ROLES["shell"]  # destructive commands are flagged
    assert all(text.strip() and text == text.strip() for text in BUILTIN_ROLES.values())


def test_role_text_prefers_a_user_role(store):
    assert role_text(store, "reviewer") == BUILTIN_ROLES["reviewer"]
    store.set_role("reviewer", "Review for typos only.")
    store.set_role("pirate", "Answer as a pirate.")
    assert role_text(store, "reviewer") == "Review for typos only."
    assert role_text(store, "pirate") == "Answer as a pirate."


def test_an_unknown_role_lists_the_roles(store):
    store.set_role("pirate", "Answer as a pirate.")
    with pytest.raises(RoleError) as caught:
        role_text(store, "nope")
    assert str(caught.value) == (
        "no role named 'nope' (the roles are: assistant, code, explainer, pirate, reviewer, shell; "
        "see `kvchat roles list`)"
    )


def test_available_roles(store):
    store.set_role("code", "My code role.")
    store.set_role("mine", "Mine.")
    found = {entry.name: entry for entry in roles.available(store)}
    assert list(found) == sorted(found)
    assert found["code"].text == "My code role." and not found["code"].builtin and found["code"].shadows_builtin
    assert not found["mine"].builtin and not found["mine"].shadows_builtin
    assert found["shell"].builtin and found["shell"].text == BUILTIN_ROLES["shell"]


def test_remove(store):
    store.set_role("code", "My code role.")
    roles.remove(store, "code")
    assert role_text(store, "code") == BUILTIN_ROLES["code"]
    with pytest.raises(RoleError, match=r"^'code' is a built-in role and cannot be removed$"):
        roles.remove(store, "code")
    with pytest.raises(RoleError, match=r"^no user role named 'nope'"):
        roles.remove(store, "nope")


# -- kvchat roles --------------------------------------------------------------


def test_roles_list(kvchat):
    kvchat("roles", "add", "pirate", "Answer as a pirate.\nAlways say arr.")
    done = kvchat("roles", "list")
    assert done.exit_code == 0
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == ["assistant", "code", "explainer", "pirate", "reviewer", "shell"]
    assert dict((name, (kind, first)) for name, kind, first in rows)["pirate"] == ("user", "Answer as a pirate.")
    assert {kind for name, kind, _ in rows if name != "pirate"} == {"built-in"}


def test_roles_list_json(kvchat):
    kvchat("roles", "add", "code", "My code role.")
    data = {item["name"]: item for item in json.loads(kvchat("roles", "list", "--json").stdout)}
    assert data["code"] == {"name": "code", "builtin": False, "shadows_builtin": True, "text": "My code role."}
    assert data["shell"]["builtin"] is True and data["shell"]["text"] == BUILTIN_ROLES["shell"]


def test_roles_list_on_a_terminal(kvchat, kvchat_terminal):
    kvchat("roles", "add", "code", "[bold]mine[/bold]")
    screen = kvchat_terminal("roles", "list").stdout
    assert "[bold]mine[/bold]" in screen  # a role's text is text, not Rich markup
    assert "user, replaces built-in" in screen and "explainer" in screen


def test_roles_show(kvchat):
    assert kvchat("roles", "show", "code").stdout == BUILTIN_ROLES["code"] + "\n"
    kvchat("roles", "add", "code", "Mine.")
    assert kvchat("roles", "show", "code").stdout == "Mine.\n"
    assert json.loads(kvchat("roles", "show", "code", "--json").stdout)["shadows_builtin"] is True


def test_roles_show_unknown(kvchat):
    done = kvchat("roles", "show", "nope")
    assert done.exit_code == 1
    assert done.stderr.startswith("kvchat: error: no role named 'nope' (the roles are: assistant, code,")
    assert done.stderr.count("\n") == 1


def test_roles_add_replace_and_shadow(kvchat, store):
    done = kvchat("roles", "add", "pirate", "Answer as a pirate.")
    assert done.exit_code == 0 and done.stderr == "Added role 'pirate'.\n"
    done = kvchat("roles", "add", "pirate", "-", input="Answer as a polite pirate.\n")
    assert done.stderr == "Replaced your role 'pirate'.\n"
    assert store.role("pirate").content == "Answer as a polite pirate.\n"
    done = kvchat("roles", "add", "shell", "Only fish shell.")
    assert done.stderr == (
        "Added role 'shell'. It takes the place of the built-in role; "
        "`kvchat roles remove shell` brings that back.\n"
    )
    assert role_text(store, "shell") == "Only fish shell."


def test_roles_add_from_a_pipe_without_text(kvchat, store):
    assert kvchat("roles", "add", "terse", input="Be terse.").exit_code == 0
    assert store.role("terse").content == "Be terse."


@pytest.mark.parametrize("args, message", [
    (("roles", "add", "empty", "  "), "kvchat: error: the role text is empty\n"),
    (("roles", "add", " ", "text"), "kvchat: error: a role name must not be empty\n"),
])
def test_roles_add_errors(kvchat, args, message):
    done = kvchat(*args)
    assert done.exit_code == 1 and done.stderr == message


def test_roles_remove(kvchat, store, monkeypatch):
    kvchat("roles", "add", "code", "Mine.")
    kvchat("roles", "add", "pirate", "Arr.")
    done = kvchat("roles", "remove", "code")
    assert done.exit_code == 0
    assert done.stderr == "Removed role 'code'. The built-in role of that name is used again.\n"
    assert kvchat("roles", "remove", "pirate").stderr == "Removed role 'pirate'.\n"
    assert store.roles() == []
    # A session that names a removed role is told of now, not at its next question.
    kvchat("roles", "add", "pirate", "Arr.")
    kvchat("sessions", "set", "sea", "--role", "pirate")
    assert kvchat("roles", "remove", "pirate").stderr == (
        "Removed role 'pirate'. Session 'sea' still names it: `kvchat sessions set NAME --role ROLE` "
        "(or --unset role) gives it another.\n"
    )
    kvchat("roles", "add", "pirate", "Arr.")
    monkeypatch.setenv("KVCHAT_ROLE", "pirate")
    assert kvchat("roles", "remove", "pirate").stderr.endswith(
        " It is the default role (env KVCHAT_ROLE): name another there.\n"
    )

    done = kvchat("roles", "remove", "code")
    assert done.exit_code == 1
    assert done.stderr == "kvchat: error: 'code' is a built-in role and cannot be removed\n"
    done = kvchat("roles", "remove", "pirate")
    assert done.exit_code == 1
    assert done.stderr == "kvchat: error: no user role named 'pirate' (see `kvchat roles list`)\n"

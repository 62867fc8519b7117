"""Shell completion is Typer's own (docs/completion.md): `kvchat
--show-completion` prints the script for the shell it is run from, and that
script, loaded into bash, completes commands and options by asking kvchat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Where pip put the `kvchat` command, next to this Python.
VENV_BIN = Path(sys.executable).parent


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    """Run `script` in bash with the installed kvchat on PATH. Typer finds the
    shell among kvchat's parent processes, so every kvchat here is a child of
    bash (`; true` keeps bash from replacing itself with the last command)."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f"{script}; true"],
        capture_output=True, text=True, env={**os.environ, "PATH": path, **env}, timeout=60,
    )


def completions(words: str) -> list[str]:
    """What pressing Tab after `words` offers, through the script kvchat prints."""
    done = bash(
        'eval "$(kvchat --show-completion)"; '
        f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
        '_kvchat_completion kvchat; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    assert done.stderr == ""
    return done.stdout.split()


def test_show_completion_prints_the_bash_script():
    shown = bash("kvchat --show-completion")
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _kvchat_completion kvchat" in shown.stdout
    assert "_KVCHAT_COMPLETE=complete_bash" in shown.stdout


def test_the_script_completes_commands_subcommands_and_options():
    assert completions("kvchat fa") == ["facts"]
    assert {"set", "forget", "search"} <= set(completions('kvchat facts ""'))
    assert "--session" in completions("kvchat ask --se")


def test_install_completion_writes_the_script_and_loads_it_from_bashrc(tmp_path):
    installed = bash("kvchat --install-completion", HOME=str(tmp_path))
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "kvchat.sh"
    assert "_kvchat_completion" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()

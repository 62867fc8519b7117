"""The fenced code blocks of an answer: found, named, and written to files.

Parsing is markdown-it-py's CommonMark parser (it comes with Rich), so fences
inside list items and block quotes, longer fences around shorter ones, and
indented fences all read as a Markdown viewer shows them. What kvchat adds is
the product's own part: file names from the info string, a block cut off by
an interrupted answer, and writing that never overwrites by accident.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath


class CodeBlockError(Exception):
    """A block that cannot be written where asked, in one line."""


@dataclass(frozen=True)
class CodeBlock:
    language: str | None
    filename: str | None  # as the info string names it; checked only when written
    text: str
    index: int  # 1-based, in the order of the answer
    complete: bool  # False: the answer ended before the closing fence

    @property
    def lines(self) -> int:
        return len(self.text.splitlines())


# Language (as models write it, lower case) -> file extension. Dockerfile and
# Makefile are whole names: those tools look for exactly that name.
EXTENSIONS = {
    "python": "py", "py": "py", "python3": "py", "py3": "py",
    "bash": "sh", "sh": "sh", "shell": "sh", "zsh": "sh", "console": "sh", "shellscript": "sh",
    "powershell": "ps1", "ps1": "ps1", "bat": "bat", "batch": "bat", "cmd": "bat",
    "javascript": "js", "js": "js", "node": "js", "jsx": "jsx", "mjs": "mjs",
    "typescript": "ts", "ts": "ts", "tsx": "tsx",
    "rust": "rs", "rs": "rs", "go": "go", "golang": "go",
    "c": "c", "h": "h", "cpp": "cpp", "c++": "cpp", "cxx": "cpp", "hpp": "hpp",
    "csharp": "cs", "c#": "cs", "cs": "cs", "java": "java", "kotlin": "kt", "kt": "kt",
    "scala": "scala", "swift": "swift", "objectivec": "m", "objc": "m",
    "ruby": "rb", "rb": "rb", "php": "php", "perl": "pl", "lua": "lua", "r": "r",
    "haskell": "hs", "elixir": "ex", "erlang": "erl", "clojure": "clj", "dart": "dart", "zig": "zig",
    "sql": "sql", "sqlite": "sql", "postgresql": "sql", "mysql": "sql",
    "json": "json", "jsonc": "json", "jsonl": "jsonl", "yaml": "yaml", "yml": "yaml", "toml": "toml",
    "ini": "ini", "xml": "xml", "csv": "csv", "html": "html", "css": "css", "scss": "scss",
    "markdown": "md", "md": "md", "diff": "diff", "patch": "diff",
    "dockerfile": "Dockerfile", "docker": "Dockerfile", "makefile": "Makefile", "make": "Makefile",
    "text": "txt", "txt": "txt", "plaintext": "txt", "plain": "txt",
}
WHOLE_NAMES = {"Dockerfile", "Makefile"}
# Info-string attributes that name the block's file (`py title=app.py`).
NAME_KEYS = ("filename", "file", "title", "name", "path")


def parse(markdown: str) -> list[CodeBlock]:
    """Every fenced code block of `markdown`, in order."""
    from markdown_it import MarkdownIt
    from markdown_it.common.utils import unescapeAll

    # The same normalisation markdown-it applies, so its line numbers index `lines`.
    source = markdown.replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    blocks = []
    for token in MarkdownIt("commonmark").parse(source):
        if token.type != "fence":
            continue
        language, filename = _info(unescapeAll(token.info).strip())
        start, end = token.map
        blocks.append(CodeBlock(
            language=language, filename=filename, text=token.content, index=len(blocks) + 1,
            complete=end - 1 > start and _closes(lines[end - 1], token.markup),
        ))
    return blocks


def _closes(line: str, fence: str) -> bool:
    """Whether `line` is a closing fence for `fence`: markdown-it ends an
    unclosed block at the end of its container without saying so, and a
    closing fence is the one thing the last line of a closed block can be.
    Leading spaces and `>` are the containers (list items, block quotes)."""
    match = re.fullmatch(r"[ \t>]*(`{3,}|~{3,})[ \t]*", line)
    return bool(match) and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)


def _info(info: str) -> tuple[str | None, str | None]:
    """(language, file name) from an info string: `python`, `py title=app.py`,
    `python:src/app.py`, `filename="x.sh"`, `python app.py`, `app.py`."""
    if not info:
        return None, None
    try:
        words = shlex.split(info)
    except ValueError:  # an unbalanced quote: take the words as they are
        words = info.split()
    language = filename = None
    first = words[0] if words else ""
    if "=" in first:
        pass  # attributes only
    elif ":" in first and not first.startswith(":"):
        language, filename = first.split(":", 1)
        filename = filename or None
    elif _extension_of(first):
        filename = first  # ```app.py
    else:
        language = first
    for word in words[1:] if language or filename else words:
        key, sep, value = word.partition("=")
        if sep and key.lower().lstrip("{.") in NAME_KEYS and value.strip("}"):
            filename = filename or value.rstrip("}")
        elif not sep and filename is None and _looks_like_file(word):
            filename = word  # ```python app.py
    if language is None and filename is not None:
        language = _extension_of(filename)
    return (language.lower().strip("{}.") or None) if language else None, filename


def _looks_like_file(word: str) -> bool:
    """`app.py`, `src/app.py`, `scripts/run`; not `3.11` or `{linenos}`."""
    return bool(re.fullmatch(r"[\w.-]*/[\w./-]+|[\w./-]*\w\.[A-Za-z]\w*", word))


def _extension_of(name: str) -> str | None:
    """The language a file name's extension is known for, else None."""
    suffix = PurePosixPath(name).suffix.lstrip(".").lower()
    return suffix if suffix and suffix in EXTENSIONS else None


def default_name(block: CodeBlock) -> str:
    """`block-<n>.<ext>` from the language (or Dockerfile, Makefile)."""
    ext = EXTENSIONS.get((block.language or "text").lower(), "txt")
    return ext if ext in WHOLE_NAMES else f"block-{block.index}.{ext}"


def _checked(name: str, block: CodeBlock) -> str:
    """`name` as a path inside the directory, or CodeBlockError."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or PureWindowsPath(name).drive or ".." in parts:
        raise CodeBlockError(
            f"code block {block.index} names the file {name!r}, which is outside the directory; "
            "no file was written"
        )
    if not parts or posix.endswith("/"):
        raise CodeBlockError(f"code block {block.index} names {name!r}, which is not a file; no file was written")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in name):
        # The model chose it: an escape sequence in a file name acts on every terminal that lists it.
        raise CodeBlockError(
            f"code block {block.index} names a file with control characters ({name!r}); no file was written"
        )
    return str(PurePosixPath(*parts))


def file_names(blocks: list[CodeBlock]) -> list[str]:
    """A relative file name for each block: the info string's if it names one,
    else the default; the same name twice gets -2, -3 before its extension
    (compared without case, for case-insensitive file systems)."""
    names, taken = [], set()
    for block in blocks:
        name = _checked(block.filename, block) if block.filename else default_name(block)
        path = PurePosixPath(name)
        unique, n = name, 1
        while unique.casefold() in taken:
            n += 1
            unique = str(path.with_name(f"{path.stem}-{n}{path.suffix}"))
        taken.add(unique.casefold())
        names.append(unique)
    return names


def save(blocks: list[CodeBlock], directory: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write each block to its file under `directory` (created as needed) and
    return the paths. Every name is checked before anything is written: a name
    outside the directory, or an existing file without `force`, writes nothing."""
    root = Path(directory)
    names = file_names(blocks)
    base = root.resolve()
    paths = []
    existing = []
    for block, name in zip(blocks, names):
        path = root / name
        try:
            # resolve() follows symbolic links: a link inside the directory
            # that points out of it is refused like `../x`.
            if not path.resolve().is_relative_to(base):
                raise CodeBlockError(f"{path} leads outside {root} (a symbolic link?); no file was written")
            if path.is_dir():
                raise CodeBlockError(f"{path} is a directory; no file was written")
            if path.exists() or path.is_symlink():  # a link to nothing yet is a file in the way too
                existing.append(name)
        except (OSError, RuntimeError) as exc:  # a name too long, a loop of links
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CodeBlockError(f"cannot write {path}: {why}; no file was written") from None
        paths.append(path)
    if existing and not force:
        raise CodeBlockError(
            f"{_joined(existing)} already {'exists' if len(existing) == 1 else 'exist'} in {root}; "
            "no file was written (--force overwrites)"
        )
    for folder in dict.fromkeys(path.parent for path in paths):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CodeBlockError(f"cannot make the directory {folder}: a file is in the way") from None
        except OSError as exc:
            raise CodeBlockError(f"cannot make the directory {folder}: {exc.strerror or exc}") from None
    created: list[Path] = []
    for block, path in zip(blocks, paths):
        try:
            new = not path.exists()
            _write(path, block.text, force)
        except OSError as exc:
            # Another process made the file since the check, or the disk
            # refused: take back the files this call created (an overwritten
            # one cannot be), so a failed save leaves no half set behind.
            for done in created:
                done.unlink(missing_ok=True)
            why = "it appeared while saving" if isinstance(exc, FileExistsError) else exc.strerror or exc
            raise CodeBlockError(f"cannot write {path}: {why}; no new file was kept") from None
        if new:
            created.append(path)
    return paths


def _write(path: Path, text: str, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
        # Code, not a secret: readable by others as any source file, whatever
        # the umask that guards kvchat's database.
        os.fchmod(out.fileno(), 0o644)
        out.write(text)


def _joined(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")

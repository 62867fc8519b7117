"""Writing files so that no reader, and no crash, ever sees half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step.

    The new file is created owner-only (mkstemp's 0600, whatever the umask)
    and renamed over the old one only once it is complete and on disk, so
    readers see the old file or the new one, and a secret written here is
    never readable by others, not even while it is being written.
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot: a half-written file left by a crash is not taken for one of ours.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

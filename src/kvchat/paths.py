"""Where kvchat keeps its files.

`KVCHAT_HOME`, when set, holds everything (database, config, cache) in one
directory: tests point it at a temporary directory, and so can a user who wants
a portable store. Otherwise the platform's usual locations are used.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "kvchat"


def _home() -> Path | None:
    value = os.environ.get("KVCHAT_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def default_database_path() -> Path:
    return data_dir() / "kvchat.db"

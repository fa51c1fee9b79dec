"""Where the app remembers things between runs: window layout, recent files.

Always an INI file in the user scope, so tests can redirect it with
`QSettings.setPath(IniFormat, UserScope, tmp_dir)` and never touch the
person's real settings.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QSettings

ORGANIZATION = "Sparsort"
APPLICATION = "sparsort"
MAX_RECENT_FILES = 10


def app_settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


def recent_files() -> list[str]:
    value = app_settings().value("recent_files", [])
    # QSettings hands back a bare string when the list had one entry.
    return [value] if isinstance(value, str) else list(value or [])


def remember_recent_file(path: str | Path) -> list[str]:
    path = str(Path(path).resolve())
    files = [path] + [other for other in recent_files() if other != path]
    files = files[:MAX_RECENT_FILES]
    app_settings().setValue("recent_files", files)
    return files

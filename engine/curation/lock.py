"""One writer per curation folder: a lock file that names who holds it.

Two processes appending to one journal give duplicate sequence numbers and
payloads that overwrite each other, so a journal is only opened for writing
under `curation.lock`. The file is created with O_EXCL (atomic on local file
systems: of two processes, one wins) and holds the pid, host and time of its
holder, so the one refused can be told who has the folder. A lock whose
process is gone (same host, pid no longer running) is stale: the next opener
takes it over and says so.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

LOCK_FILENAME = "curation.lock"
# A lock file still empty after this long was left by a process killed while creating it.
EMPTY_LOCK_GRACE_S = 30.0


class FolderLockedError(RuntimeError):
    """Another process (or another curation in this one) holds the folder's lock."""

    def __init__(self, message: str, holder: dict | None) -> None:
        super().__init__(message)
        self.holder = holder  # {"pid", "host", "time"} as the lock file says, or None if unreadable


class FolderLock:
    """A held lock on `folder`; `release()` (or `with`) gives it back."""

    def __init__(self, path: Path, token: str, recovered: str) -> None:
        self.path = path
        self._token = token
        self.recovered = recovered  # what was said about a stale lock taken over, or ""

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> FolderLock:
        path = Path(folder) / LOCK_FILENAME
        recovered = ""
        for _ in range(5):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder, content = _read(path)
                why_stale = _why_stale(holder, path)
                if why_stale is None:
                    raise FolderLockedError(_locked_message(path, holder), holder) from None
                if _remove_if_unchanged(path, content):
                    recovered = f"took over the lock {path} left by {_describe(holder)}, {why_stale}"
                continue
            token = uuid.uuid4().hex
            record = {"pid": os.getpid(), "host": socket.gethostname(), "time": round(time.time(), 3), "token": token}
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            return cls(path, token, recovered)
        raise FolderLockedError(f"{path} keeps changing hands; try again in a moment", None)

    def release(self) -> None:
        """Remove the lock file, if it is still ours."""
        holder, _ = _read(self.path)
        if holder is not None and holder.get("token") == self._token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read(path: Path) -> tuple[dict | None, bytes | None]:
    """(holder, raw content); holder is None when the file is unreadable or half written."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        holder = json.loads(content)
    except ValueError:
        return None, content
    return (holder if isinstance(holder, dict) else None), content


def _why_stale(holder: dict | None, path: Path) -> str | None:
    """Why the lock can be taken over, or None when its holder may still be running."""
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "gone meanwhile"
        return "a lock file never filled in" if age > EMPTY_LOCK_GRACE_S else None
    if holder.get("host") != socket.gethostname():
        return None  # another machine's process list cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return "a lock file without a process id"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "a process that no longer runs"
    except PermissionError:
        return None  # running, under another user
    return None


def _remove_if_unchanged(path: Path, content: bytes | None) -> bool:
    """Delete the stale lock file, unless another process replaced it since we read it."""
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.read_bytes() != content:
        # A fresh lock was taken meanwhile: put it back (link fails if yet another appeared).
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink()
        return False
    aside.unlink()
    return True


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "an unknown process (the lock file is unreadable)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    same = " (this process)" if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname() else ""
    return f"process {holder.get('pid')}{same} on {holder.get('host')} since {since}"


def _locked_message(path: Path, holder: dict | None) -> str:
    return (
        f"{path.parent} is being curated by {_describe(holder)}: only one may change a curation at a time. "
        f"Close it there first; if that process no longer runs, delete {path}."
    )

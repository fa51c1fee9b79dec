"""Append-only JSON-lines journal, so that no curation work is lost to a crash.

Layout inside a session folder:

    curation.jsonl       a header line, then one JSON object per action
    journal/<seq>.npy    big payloads (spike indices, cluster assignments)

The header is written atomically when the journal is created. Each action line
is appended, flushed and fsync'ed at once; its payload, if any, is written
atomically *before* the line that names it, so a line on disk always finds its
payload. A process killed in the middle of an append leaves at worst a torn
last line, which the next `resume` drops with a warning (rewriting the file
without it, so that later appends do not land after garbage).

Every line carries a checksum of its content (format 2), so a line changed
after it was written (by hand, by a faulty disk) is an error naming the line,
never a silent replay to another state. Format 1 journals (no checksums) are
still read, and upgraded when resumed for writing, with a warning.

Only one process writes a journal: `create` and `resume` take the folder's
lock (engine.curation.lock); `read_only` reads without it, for a second viewer.

The journal knows nothing about curation: entries are plain dicts that the
caller writes and replays.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from engine.curation.lock import FolderLock
from engine.io.atomic import write_bytes_atomic, write_npy_atomic

JOURNAL_FILENAME = "curation.jsonl"
PAYLOAD_FOLDER = "journal"
FORMAT_NAME = "sparsort-curation-journal"
# 2: every line carries CHECKSUM_KEY, and the actions "labels" (many units at once) and
# "reject" (a merge suggestion) exist; version 1 journals read unchanged (and are upgraded
# when resumed), and an older Sparsort refuses a version 2 one by name.
FORMAT_VERSION = 2
CHECKSUM_KEY = "sum"
DAMAGED_PREFIX = "curation-damaged-"


class JournalError(ValueError):
    """The journal cannot be replayed: wrong sorting, newer format, or corruption."""


class JournalMismatchError(JournalError):
    """The journal is intact but records the curation of a different sort."""


class JournalCorruptError(JournalError):
    """Part of the journal is damaged; the actions before the damage are intact.

    `path`: the damaged file (the journal, or a payload); `line`: the journal
    line of the first action that cannot be replayed; `intact_actions`: how
    many actions before it can (0 when the header itself is damaged).
    """

    def __init__(self, message: str, path: Path, line: int, intact_actions: int) -> None:
        super().__init__(message)
        self.path, self.line, self.intact_actions = path, line, intact_actions


def journal_path(session_folder: str | os.PathLike) -> Path:
    return Path(session_folder) / JOURNAL_FILENAME


class Journal:
    """An open journal, ready to take new entries. Create with `create` or `resume`."""

    def __init__(self, session_folder: Path, next_seq: int, lock: FolderLock | None) -> None:
        self.session_folder = session_folder
        self.next_seq = next_seq
        self._lock = lock  # None: read-only, nothing may be appended
        # Unbuffered, so that what `append` writes is all that reaches the file.
        self._handle = open(journal_path(session_folder), "ab", buffering=0) if lock is not None else None

    @property
    def read_only(self) -> bool:
        return self._lock is None

    @property
    def lock_note(self) -> str:
        """What was said about a stale lock taken over on opening, or ""."""
        return self._lock.recovered if self._lock is not None else ""

    @classmethod
    def create(
        cls, session_folder: str | os.PathLike, n_spikes: int, metadata: dict | None = None
    ) -> Journal:
        """Start a new journal; refuses to overwrite an existing one.

        Raises engine.curation.lock.FolderLockedError when another holds the folder.
        """
        session_folder = Path(session_folder)
        path = journal_path(session_folder)
        lock = FolderLock.acquire(session_folder)
        try:
            if path.exists():
                raise JournalError(f"{path} already exists; resume it instead")
            header = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "n_spikes": int(n_spikes),
                "created": time.time(),
                "metadata": metadata or {},
            }
            write_bytes_atomic(path, _encode(header))
            return cls(session_folder, next_seq=1, lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def resume(
        cls, session_folder: str | os.PathLike, n_spikes: int, keep_first: int | None = None
    ) -> tuple[Journal, dict, list[dict]]:
        """Read an existing journal and open it for appending.

        Returns the journal, the metadata given to `create`, and the action
        entries in the order they were written. `keep_first`: keep only the
        first so many actions (the person chose to, after a JournalCorruptError);
        the whole journal and the payloads of the dropped actions are first
        moved to a `curation-damaged-<time>/` folder beside it.
        Raises engine.curation.lock.FolderLockedError when another holds the folder.
        """
        session_folder = Path(session_folder)
        path = journal_path(session_folder)
        lock = FolderLock.acquire(session_folder)
        try:
            if keep_first is not None:
                _keep_first_actions(session_folder, keep_first)
            header, entries, repaired = _read_journal(path)
            _check_header(header, path, n_spikes)
            if header.get("version", 0) < FORMAT_VERSION:
                repaired = _upgraded(header, entries, path)
            if repaired is not None:
                # Later appends must not land after a torn fragment or a missing newline.
                write_bytes_atomic(path, repaired)
            return cls(session_folder, next_seq=len(entries) + 1, lock=lock), header["metadata"], entries
        except BaseException:
            lock.release()
            raise

    @classmethod
    def read_only(cls, session_folder: str | os.PathLike, n_spikes: int) -> tuple[Journal, dict, list[dict]]:
        """Read the journal as `resume` does, without its lock and without changing a byte."""
        session_folder = Path(session_folder)
        path = journal_path(session_folder)
        header, entries, _ = _read_journal(path)
        _check_header(header, path, n_spikes)
        return cls(session_folder, next_seq=len(entries) + 1, lock=None), header["metadata"], entries

    def append(self, entry: dict, payload: np.ndarray | None = None) -> dict:
        """Write one action durably; returns the entry as stored (with `seq`)."""
        if self._handle is None:
            raise JournalError(f"the journal in {self.session_folder} is open read-only")
        seq = self.next_seq
        stored = {"seq": seq, "time": round(time.time(), 3), **entry}
        if payload is not None:
            relative = f"{PAYLOAD_FOLDER}/{seq:06d}.npy"
            write_npy_atomic(self.session_folder / relative, payload)
            stored["payload"] = relative
        line = _encode(stored)
        end_before = self._handle.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += self._handle.write(line[written:])
            os.fsync(self._handle.fileno())
        except BaseException:
            # A half-written line (disk full, say) must not stay in front of
            # the lines appended after it.
            self._handle.truncate(end_before)
            raise
        self.next_seq = seq + 1
        return stored

    def load_payload(self, entry: dict) -> np.ndarray:
        path = self.session_folder / entry["payload"]
        seq = entry["seq"]
        action = f"action {seq} ({entry.get('op')}, line {seq + 1} of {JOURNAL_FILENAME})"
        if not path.exists():
            raise JournalCorruptError(f"{path}, the data of {action}, is missing", path, seq + 1, seq - 1)
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise JournalCorruptError(
                f"{path}, the data of {action}, is truncated or damaged ({error})", path, seq + 1, seq - 1
            ) from error

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock is not None:
            self._lock.release()


def _json(obj: dict) -> bytes:
    # ensure_ascii keeps every line pure ASCII: a byte-level cut can then never
    # fall inside a multi-byte character of an earlier line.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _checksum(obj: dict) -> str:
    return f"{zlib.crc32(_json(obj)):08x}"


def _encode(obj: dict) -> bytes:
    """One journal line: `obj` with the checksum of its canonical encoding appended."""
    return _json({**obj, CHECKSUM_KEY: _checksum(obj)}) + b"\n"


def _verified(obj, path: Path, line_number: int, checked: bool, intact_actions: int):
    """`obj` without its checksum; raises JournalCorruptError if the checksum does not match."""
    if not checked or not isinstance(obj, dict):
        return obj
    body = {key: value for key, value in obj.items() if key != CHECKSUM_KEY}
    if obj.get(CHECKSUM_KEY) != _checksum(body):
        what = "has no checksum" if CHECKSUM_KEY not in obj else "does not match its checksum"
        raise JournalCorruptError(
            f"{path} line {line_number} {what}: it was changed after it was written "
            f"(edited, or damaged on disk). The {intact_actions} actions before it are intact.",
            path, line_number, intact_actions,
        )
    return body


def _upgraded(header: dict, entries: list[dict], path: Path) -> bytes:
    warnings.warn(
        f"{path}: upgraded from journal format {header.get('version')} to {FORMAT_VERSION}: each line now "
        f"carries a checksum, so a later change is detected (the {len(entries)} lines written before "
        "could not be checked)",
        RuntimeWarning,
        stacklevel=4,
    )
    header["version"] = FORMAT_VERSION
    return b"".join(_encode(obj) for obj in [header, *entries])


def _keep_first_actions(session_folder: Path, n_actions: int) -> Path:
    """Cut the journal to its header and first `n_actions` lines; the rest is kept in a folder beside it."""
    path = journal_path(session_folder)
    lines = path.read_bytes().split(b"\n")
    kept = b"".join(line + b"\n" for line in lines[: n_actions + 1])
    damaged = session_folder / f"{DAMAGED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while damaged.exists():
        suffix += 1
        damaged = damaged.with_name(f"{DAMAGED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
    (damaged / PAYLOAD_FOLDER).mkdir(parents=True)
    shutil.copy2(path, damaged / JOURNAL_FILENAME)
    # Payloads of dropped actions would be overwritten by the new actions that take their numbers.
    for payload in sorted((session_folder / PAYLOAD_FOLDER).glob("*.npy")):
        if payload.stem.isdigit() and int(payload.stem) > n_actions:
            os.rename(payload, damaged / PAYLOAD_FOLDER / payload.name)
    write_bytes_atomic(path, kept)
    return damaged


def _read_journal(path: Path) -> tuple[dict, list[dict], bytes | None]:
    """Header, entries, and the file's intact bytes when it needs repairing."""
    data = path.read_bytes()
    # The last element is empty for a clean file, or a line whose newline
    # never reached the disk.
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        raise JournalCorruptError(f"{path} is empty: it has no header line", path, 1, 0)
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise JournalCorruptError(f"{path} line 1: the header line is unreadable ({exc})", path, 1, 0) from exc
    _check_not_newer(header, path)
    # Format 1 had no checksums; a header that does not say its format is checked like a new one.
    checked = not (isinstance(header, dict) and isinstance(header.get("version"), int) and header["version"] < 2)
    header = _verified(header, path, 1, checked, 0)

    entries: list[dict] = []
    for line_number, line in enumerate(lines[1:], start=2):
        entry = _parse_entry(line, expected_seq=len(entries) + 1)
        if entry is not None:
            entries.append(_verified(entry, path, line_number, checked, len(entries)))
            continue
        if line_number != len(lines):
            raise JournalCorruptError(
                f"{path} line {line_number} is corrupt and is not the last line, so it is not an "
                f"action cut short by a crash. The {len(entries)} actions before it are intact.",
                path, line_number, len(entries),
            )
        warnings.warn(
            f"{path}: dropped a torn last line ({len(line)} bytes); "
            "the action being written when the process stopped is lost",
            RuntimeWarning,
            stacklevel=3,
        )

    intact = b"".join(line + b"\n" for line in lines[: len(entries) + 1])
    return header, entries, (None if intact == data else intact)


def _parse_entry(line: bytes, expected_seq: int) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("seq") != expected_seq or "op" not in entry:
        return None
    return entry


def _check_not_newer(header, path: Path) -> None:
    # Before the checksum: a newer format may checksum differently.
    version = header.get("version", 0) if isinstance(header, dict) else 0
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise JournalError(
            f"{path} was written by a newer Sparsort (journal format "
            f"{version}, this version reads up to {FORMAT_VERSION})"
        )


def _check_header(header: dict, path: Path, n_spikes: int) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise JournalCorruptError(f"{path} line 1: not the header of a Sparsort curation journal", path, 1, 0)
    _check_not_newer(header, path)
    if header.get("n_spikes") != n_spikes:
        raise JournalMismatchError(
            f"{path} records curation of a sorting with {header.get('n_spikes')} spikes, "
            f"but the sorting given has {n_spikes}; it belongs to a different sort. "
            "Move the journal aside to start curating this sorting afresh."
        )

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

The journal knows nothing about curation: entries are plain dicts that the
caller writes and replays.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from engine.io.atomic import write_bytes_atomic, write_npy_atomic

JOURNAL_FILENAME = "curation.jsonl"
PAYLOAD_FOLDER = "journal"
FORMAT_NAME = "sparsort-curation-journal"
# 2: adds the actions "labels" (many units at once) and "reject" (a merge suggestion);
# version 1 journals read unchanged, and an older Sparsort refuses a version 2 one by name.
FORMAT_VERSION = 2


class JournalError(ValueError):
    """The journal cannot be replayed: wrong sorting, newer format, or corruption."""


def journal_path(session_folder: str | os.PathLike) -> Path:
    return Path(session_folder) / JOURNAL_FILENAME


class Journal:
    """An open journal, ready to take new entries. Create with `create` or `resume`."""

    def __init__(self, session_folder: Path, next_seq: int) -> None:
        self.session_folder = session_folder
        self.next_seq = next_seq
        # Unbuffered, so that what `append` writes is all that reaches the file.
        self._handle = open(journal_path(session_folder), "ab", buffering=0)

    @classmethod
    def create(
        cls, session_folder: str | os.PathLike, n_spikes: int, metadata: dict | None = None
    ) -> Journal:
        """Start a new journal; refuses to overwrite an existing one."""
        session_folder = Path(session_folder)
        path = journal_path(session_folder)
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
        return cls(session_folder, next_seq=1)

    @classmethod
    def resume(
        cls, session_folder: str | os.PathLike, n_spikes: int
    ) -> tuple[Journal, dict, list[dict]]:
        """Read an existing journal and open it for appending.

        Returns the journal, the metadata given to `create`, and the action
        entries in the order they were written.
        """
        session_folder = Path(session_folder)
        path = journal_path(session_folder)
        header, entries, repaired = _read_journal(path)
        _check_header(header, path, n_spikes)
        if repaired is not None:
            # Later appends must not land after a torn fragment or a missing newline.
            write_bytes_atomic(path, repaired)
        return cls(session_folder, next_seq=len(entries) + 1), header["metadata"], entries

    def append(self, entry: dict, payload: np.ndarray | None = None) -> dict:
        """Write one action durably; returns the entry as stored (with `seq`)."""
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
        if not path.exists():
            raise JournalError(f"journal entry {entry['seq']} needs {path}, which is missing")
        return np.load(path, allow_pickle=False)

    def close(self) -> None:
        self._handle.close()


def _encode(obj: dict) -> bytes:
    # ensure_ascii keeps every line pure ASCII: a byte-level cut can then never
    # fall inside a multi-byte character of an earlier line.
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _read_journal(path: Path) -> tuple[dict, list[dict], bytes | None]:
    """Header, entries, and the file's intact bytes when it needs repairing."""
    data = path.read_bytes()
    # The last element is empty for a clean file, or a line whose newline
    # never reached the disk.
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        raise JournalError(f"{path} has no header line")
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise JournalError(f"{path}: the header line is unreadable ({exc})") from exc

    entries: list[dict] = []
    for line_number, line in enumerate(lines[1:], start=2):
        entry = _parse_entry(line, expected_seq=len(entries) + 1)
        if entry is not None:
            entries.append(entry)
            continue
        if line_number != len(lines):
            raise JournalError(
                f"{path}: line {line_number} is corrupt and is not the last line; "
                "refusing to guess what followed it"
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


def _check_header(header: dict, path: Path, n_spikes: int) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise JournalError(f"{path} is not a Sparsort curation journal")
    if header.get("version", 0) > FORMAT_VERSION:
        raise JournalError(
            f"{path} was written by a newer Sparsort (journal format "
            f"{header['version']}, this version reads up to {FORMAT_VERSION})"
        )
    if header.get("n_spikes") != n_spikes:
        raise JournalError(
            f"{path} records curation of a sorting with {header.get('n_spikes')} spikes, "
            f"but the sorting given has {n_spikes}; it belongs to a different sort. "
            "Move the journal aside to start curating this sorting afresh."
        )

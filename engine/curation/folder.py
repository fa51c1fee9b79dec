"""Where a sort's curation journal lives on disk, and the spike units it replays on.

The journal (engine.curation.journal, written through `Curation.open`) replays on top
of the units the curation started from. Saving the curation into a phy folder
replaces spike_clusters.npy, so those starting units are kept beside the
journal, in START_UNITS_FILE: reopening replays on them, whatever the
folder's spike_clusters.npy says by then.

For a saved session (engine.io.session_folder) the journal sits in the session folder,
beside `sorting/`: saving the session again replaces `sorting/` whole, and
the journal must outlive that. For any other phy folder it sits in the folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engine.io.atomic import write_bytes_atomic, write_npy_atomic
from engine.curation.model import Curation
from engine.curation.journal import DAMAGED_PREFIX, PAYLOAD_FOLDER, JournalMismatchError, journal_path
from engine.curation.lock import FolderLockedError
from engine.io.session_folder import SORTING_FOLDER, is_session_folder

START_UNITS_FILE = "curation_start.npy"  # (n_spikes,) int64 unit of each spike when the journal began
SET_ASIDE_PREFIX = "curation-set-aside-"


def journal_folder_of(phy_folder: str | os.PathLike) -> Path:
    """The folder that holds the journal of the curation of `phy_folder`."""
    phy_folder = Path(phy_folder).resolve()
    if phy_folder.name == SORTING_FOLDER and is_session_folder(phy_folder.parent):
        return phy_folder.parent
    return phy_folder


def open_curation(
    folder: str | os.PathLike,
    spike_units: np.ndarray,
    labels: Mapping[int, str] | None = None,
    *,
    min_new_unit_id: int = 0,
    keep_first: int | None = None,
) -> tuple[Curation, str]:
    """Resume the curation journaled in `folder`, or start journaling one there.

    `spike_units` and `labels` are the sort as loaded now; they start a new
    journal. The returned note (otherwise "") says what the person should know:

    - a journal that belongs to another sort (one exported into the same
      folder since) is moved aside, not deleted, and the note says where;
    - when another process or window holds the folder (engine.curation.lock),
      the curation opens read-only, refusing every action, and the note says who;
    - a stale lock of a process that no longer runs is taken over.

    A damaged journal raises JournalCorruptError naming the file, the line and
    how many actions before it are intact; nothing is moved. Called again with
    `keep_first` = that number, it opens those actions and keeps the damaged
    rest in a `curation-damaged-<time>/` folder.
    """
    folder = Path(folder)
    spike_units = np.asarray(spike_units, dtype=np.int64)
    start_units = spike_units
    start_file = folder / START_UNITS_FILE
    if journal_path(folder).exists() and start_file.exists():
        start_units = np.load(start_file, allow_pickle=False)
    try:
        return _open_or_start(folder, spike_units, start_units, labels, min_new_unit_id, keep_first)
    except FolderLockedError as locked:
        curation = Curation.open(
            folder, start_units, labels, min_new_unit_id=min_new_unit_id, read_only_reason=str(locked)
        )
        return curation, f"Opened read-only: {locked}"


def _open_or_start(folder, spike_units, start_units, labels, min_new_unit_id, keep_first) -> tuple[Curation, str]:
    note = ""
    if journal_path(folder).exists():
        try:
            if len(start_units) != len(spike_units):
                raise JournalMismatchError(
                    f"it began on {len(start_units)} spikes and this sort has {len(spike_units)}"
                )
            curation = Curation.open(folder, start_units, min_new_unit_id=min_new_unit_id, keep_first=keep_first)
            if keep_first is not None:
                kept_in = max(folder.glob(f"{DAMAGED_PREFIX}*"), key=lambda path: path.stat().st_mtime)
                note = (
                    f"Opened the first {keep_first} actions of the damaged curation journal in {folder}; "
                    f"the whole journal is kept in {kept_in.name}"
                )
            return curation, _joined(curation.lock_note, note)
        except JournalMismatchError as error:
            aside = set_aside(folder)
            note = (
                f"The curation journal in {folder} belongs to another sort ({error}); "
                f"it was moved to {aside.name} and this curation starts afresh."
            )
    # The starting units go first: a journal is never without the units it replays on.
    write_npy_atomic(folder / START_UNITS_FILE, spike_units)
    curation = Curation.open(folder, spike_units, labels, min_new_unit_id=min_new_unit_id)
    return curation, _joined(curation.lock_note, note)


def _joined(*notes: str) -> str:
    return " ".join(note[:1].upper() + note[1:] + ("" if note.endswith(".") else ".") for note in notes if note)


def copy_journal(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy the journal of `source` into `target`, moving aside one already there.

    The curation journaled in `source` must be closed first.
    """
    source, target = Path(source), Path(target)
    if journal_path(target).exists():
        set_aside(target)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / START_UNITS_FILE, target / START_UNITS_FILE)
    if (source / PAYLOAD_FOLDER).is_dir():
        shutil.copytree(source / PAYLOAD_FOLDER, target / PAYLOAD_FOLDER, dirs_exist_ok=True)
    # The journal itself last, and atomically: it is what makes the copy a curation.
    write_bytes_atomic(journal_path(target), journal_path(source).read_bytes())


def set_aside(folder: str | os.PathLike) -> Path:
    """Move the journal files of `folder` into a new `curation-set-aside-<time>/` there; returns it."""
    folder = Path(folder)
    aside = folder / f"{SET_ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while aside.exists():
        suffix += 1
        aside = aside.with_name(f"{SET_ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
    aside.mkdir()
    for name in (journal_path(folder).name, PAYLOAD_FOLDER, START_UNITS_FILE):
        if (folder / name).exists():
            os.rename(folder / name, aside / name)
    return aside

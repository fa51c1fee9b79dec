"""A damaged journal is named, never replayed to a wrong state; one writer per folder (issue 12 items 2, 4, 5, 6)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from engine.curation.folder import START_UNITS_FILE, open_curation
from engine.curation.journal import JournalCorruptError, JournalError, journal_path
from engine.curation.lock import LOCK_FILENAME, FolderLock, FolderLockedError
from engine.curation.model import Curation, CurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
UNITS = np.arange(300) % 6  # (300,) 6 units of 50 spikes


def curated(folder, n_labels=3):
    """A journal of: a split (with a payload), a merge, then `n_labels` labels."""
    np.save(folder / START_UNITS_FILE, UNITS)
    with Curation.open(folder, UNITS) as curation:
        curation.split(curation.spikes_of(0)[::2])
        curation.merge([1, 2])
        for step in range(n_labels):
            curation.label([3], ("good", "mua", "noise")[step % 3])
        return curation.spike_clusters.copy(), curation.labels


def lines(folder):
    return journal_path(folder).read_text().splitlines(keepends=True)


def test_a_line_edited_to_other_valid_json_is_an_error_naming_it(tmp_path):
    curated(tmp_path)
    text = lines(tmp_path)
    assert '"group":"good"' in text[3]
    text[3] = text[3].replace('"group":"good"', '"group":"noise"')  # still valid JSON, another state
    journal_path(tmp_path).write_text("".join(text))

    with pytest.raises(JournalCorruptError, match="line 4 does not match its checksum") as caught:
        Curation.open(tmp_path, UNITS)
    assert caught.value.line == 4 and caught.value.intact_actions == 2
    assert str(journal_path(tmp_path)) in str(caught.value)


def test_a_journal_without_checksums_is_read_and_upgraded_with_a_warning(tmp_path):
    expected_units, expected_labels = curated(tmp_path)
    old = []
    for number, line in enumerate(lines(tmp_path)):
        entry = json.loads(line)
        entry.pop("sum")
        if number == 0:
            entry["version"] = 1
        old.append(json.dumps(entry, separators=(",", ":")) + "\n")
    journal_path(tmp_path).write_text("".join(old))

    with pytest.warns(RuntimeWarning, match="upgraded from journal format 1 to 2"):
        reopened = Curation.open(tmp_path, UNITS)
    with reopened:
        np.testing.assert_array_equal(reopened.spike_clusters, expected_units)
        assert reopened.labels == expected_labels
    assert all('"sum":' in line for line in lines(tmp_path))
    assert json.loads(lines(tmp_path)[0])["version"] == 2


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_payload_is_a_journal_error_naming_the_file_and_the_action(tmp_path, damage):
    curated(tmp_path)
    payload = tmp_path / "journal" / "000001.npy"
    payload.write_bytes(payload.read_bytes()[: -40 if damage == "truncated" else 0])

    with pytest.raises(JournalCorruptError) as caught:
        Curation.open(tmp_path, UNITS)
    message = str(caught.value)
    assert str(payload) in message and "action 1 (split" in message and "truncated or damaged" in message
    assert caught.value.intact_actions == 0


def test_open_curation_reports_damage_moves_nothing_and_opens_the_intact_prefix_when_asked(tmp_path):
    curated(tmp_path)
    text = lines(tmp_path)
    text[3] = "this line was damaged\n"  # action 3 of 5
    journal_path(tmp_path).write_text("".join(text))
    before = sorted(p.name for p in tmp_path.rglob("*"))

    with pytest.raises(JournalCorruptError, match="line 4 is corrupt") as caught:
        open_curation(tmp_path, UNITS)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing set aside, nothing moved
    assert not (tmp_path / LOCK_FILENAME).exists()

    curation, note = open_curation(tmp_path, UNITS, keep_first=caught.value.intact_actions)
    assert "Opened the first 2 actions" in note
    assert [d.split()[0] for d in curation.undo_descriptions] == ["Split", "Merged"]
    curation.label([3], "mua")  # the journal goes on after the intact prefix
    curation.close()
    damaged = next(tmp_path.glob("curation-damaged-*"))
    assert (damaged / "curation.jsonl").read_text() == "".join(text)

    with Curation.open(tmp_path, UNITS) as reopened:
        assert len(reopened.undo_descriptions) == 3 and reopened.labels[3] == "mua"


def test_a_journal_of_another_sort_is_still_set_aside(tmp_path):
    curated(tmp_path)
    other = np.arange(200) % 5
    curation, note = open_curation(tmp_path, other)
    assert "belongs to another sort" in note and not curation.can_undo
    curation.close()


# ---- one writer per folder ------------------------------------------------------------------------


def test_a_second_curation_in_this_process_opens_read_only_and_says_who_holds_it(tmp_path):
    first, _ = open_curation(tmp_path, UNITS)
    first.merge([0, 1])

    second, note = open_curation(tmp_path, UNITS)
    assert note.startswith("Opened read-only") and f"process {os.getpid()} (this process)" in note
    assert second.read_only_reason is not None
    np.testing.assert_array_equal(second.spike_clusters, first.spike_clusters)  # it sees the work so far
    with pytest.raises(CurationError, match="read-only: .* is being curated by process"):
        second.label([2], "good")
    with pytest.raises(CurationError, match="not saved"):
        second.save_phy(tmp_path)
    second.close()
    first.label([2], "good")  # the holder is unaffected
    first.close()

    third, note = open_curation(tmp_path, UNITS)
    assert note == "" and third.read_only_reason is None and third.labels[2] == "good"
    third.close()
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_a_lock_held_by_another_process_is_refused_then_recovered_after_it_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from engine.curation.lock import FolderLock; "
         f"lock = FolderLock.acquire({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError) as caught:
            Curation.open(tmp_path, UNITS)
        assert f"process {holder.pid} on {socket.gethostname()}" in str(caught.value)
        assert caught.value.holder["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)

    # Killed with the lock held: the lock file stays, and is stale.
    assert (tmp_path / LOCK_FILENAME).exists()
    curation, note = open_curation(tmp_path, UNITS)
    assert "Took over the lock" in note and f"process {holder.pid}" in note and "no longer runs" in note
    assert curation.read_only_reason is None
    curation.close()


def test_two_locks_on_one_folder_exclude_each_other(tmp_path):
    first = FolderLock.acquire(tmp_path)
    with pytest.raises(FolderLockedError):
        FolderLock.acquire(tmp_path)
    first.release()
    FolderLock.acquire(tmp_path).release()


def test_an_empty_lock_file_is_taken_over_only_when_old(tmp_path):
    lock_file = tmp_path / LOCK_FILENAME
    lock_file.write_bytes(b"")
    with pytest.raises(FolderLockedError, match="unknown process"):
        FolderLock.acquire(tmp_path)  # its creator may be writing it right now
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    lock = FolderLock.acquire(tmp_path)
    assert "never filled in" in lock.recovered
    lock.release()

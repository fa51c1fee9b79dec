import inspect
import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from engine.curation.model import Curation, CurationError
from engine.curation.journal import FORMAT_VERSION, Journal, JournalError, journal_path

REPO_ROOT = Path(__file__).resolve().parents[1]
INITIAL_UNITS = np.arange(600) % 12  # (600,) 12 units of 50 spikes, interleaved


def state(curation: Curation) -> tuple:
    """Everything a reopened session must reproduce."""
    return (
        curation.spike_clusters.tolist(),
        curation.labels,
        curation.notes,
        curation.undo_descriptions,
        curation.redo_descriptions,
        curation.next_unit_id,
    )


def scripted_action(curation, step):
    """A deterministic mix of every kind of action, valid for any number of steps."""
    units = curation.unit_ids
    kind = step % 7
    if kind == 0:
        return curation.merge(units[:2])
    if kind == 1:
        largest = int(units[np.argmax([curation.spike_count(u) for u in units])])
        return curation.split(curation.spikes_of(largest)[::2])
    if kind == 2:
        return curation.label(int(units[0]), ("good", "mua", "noise")[step % 3])
    if kind in (3, 4):
        return curation.undo()
    if kind == 5:
        return curation.redo()
    return curation.set_note(int(units[-1]), f"seen at step {step}")


def run_script(curation, n_steps):
    return [scripted_action(curation, step).description for step in range(n_steps)]


def test_reopening_restores_state_and_the_whole_history(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS, {3: "good"}) as curation:
        run_script(curation, 20)
        curation.undo()
        curation.undo()
        before_close = state(curation)

    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert state(reopened) == before_close
        assert reopened.redo_descriptions  # the redo stack came back too
        while reopened.can_undo:
            reopened.undo()
        assert reopened.spike_clusters.tolist() == INITIAL_UNITS.tolist()
        assert reopened.labels == {**{u: "unsorted" for u in range(12)}, 3: "good"}


def test_reopened_session_keeps_journaling(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.label(12, "good")
        expected = state(curation)
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        assert state(curation) == expected


def test_recluster_replays_from_its_stored_assignment(tmp_path):
    features = np.random.default_rng(0).normal(size=(50, 3))  # (n_unit_spikes, n_features)
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        record = curation.recluster(4, 3, features)
        expected = [curation.spikes_of(u).tolist() for u in record.added]
    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert [reopened.spikes_of(u).tolist() for u in record.added] == expected


def test_split_payload_is_on_disk_before_its_line(tmp_path):
    selected = np.array([0, 12, 24])
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.split(selected)
    entry = json.loads(journal_path(tmp_path).read_text().splitlines()[1])
    assert entry["op"] == "split" and entry["payload"] == "journal/000001.npy"
    assert np.load(tmp_path / entry["payload"]).tolist() == selected.tolist()

    (tmp_path / entry["payload"]).unlink()
    with pytest.raises(JournalError, match="missing"):
        Curation.open(tmp_path, INITIAL_UNITS)


def test_a_failed_disk_write_changes_neither_memory_nor_journal(tmp_path, monkeypatch):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
        before = state(curation)

        def disk_full(*args):
            raise OSError("No space left on device")

        monkeypatch.setattr("engine.curation.journal.write_npy_atomic", disk_full)
        with pytest.raises(OSError, match="No space"):
            curation.split(np.array([0, 12]))
        assert state(curation) == before

        monkeypatch.undo()
        curation.split(np.array([0, 12]))
        expected = state(curation)
    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert state(reopened) == expected


def test_a_line_that_failed_to_reach_the_disk_is_taken_back(tmp_path, monkeypatch):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
        before = state(curation)

        def failing_fsync(fd):
            raise OSError("I/O error")

        monkeypatch.setattr("engine.curation.journal.os.fsync", failing_fsync)
        with pytest.raises(OSError, match="I/O error"):
            curation.label(12, "good")
        monkeypatch.undo()
        assert state(curation) == before
        curation.label(12, "noise")
        expected = state(curation)
    assert len(journal_path(tmp_path).read_text().splitlines()) == 3
    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert state(reopened) == expected


def test_torn_last_line_is_dropped_with_a_warning_and_repaired(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
        expected = state(curation)
    with open(journal_path(tmp_path), "ab") as handle:
        handle.write(b'{"seq":2,"op":"lab')

    with pytest.warns(RuntimeWarning, match="torn last line"):
        curation = Curation.open(tmp_path, INITIAL_UNITS)
    with curation:
        assert state(curation) == expected
        curation.label(2, "good")
        expected = state(curation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
            assert state(reopened) == expected


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
        curation.label(12, "mua")
        expected = state(curation)
    path = journal_path(tmp_path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))

    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        assert state(curation) == expected
        curation.undo()
        expected = state(curation)
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        assert state(curation) == expected


def test_a_corrupt_line_before_the_end_is_an_error(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
        curation.merge([2, 3])
    path = journal_path(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match="line 2 is corrupt"):
        Curation.open(tmp_path, INITIAL_UNITS)


def test_a_journal_of_another_sorting_is_refused(tmp_path):
    Curation.open(tmp_path, INITIAL_UNITS).close()
    with pytest.raises(JournalError, match="600 spikes, but the sorting given has 599"):
        Curation.open(tmp_path, INITIAL_UNITS[:599])
    with pytest.raises(JournalError, match="different units"):
        Curation.open(tmp_path, INITIAL_UNITS[::-1])


def test_a_newer_journal_format_is_refused(tmp_path):
    Curation.open(tmp_path, INITIAL_UNITS).close()
    path = journal_path(tmp_path)
    header, *rest = path.read_text().splitlines(keepends=True)
    header = json.loads(header)
    header["version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(header) + "\n" + "".join(rest))
    with pytest.raises(JournalError, match="written by a newer Sparsort"):
        Curation.open(tmp_path, INITIAL_UNITS)


def test_journal_create_will_not_overwrite(tmp_path):
    Journal.create(tmp_path, 10).close()
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(tmp_path, 10)


def test_a_closed_curation_refuses_actions(tmp_path):
    curation = Curation.open(tmp_path, INITIAL_UNITS)
    curation.close()
    with pytest.raises(CurationError, match="closed"):
        curation.merge([0, 1])


CHILD_PROGRAM = """
import sys
import numpy as np
sys.path.insert(0, {repo!r})
from engine.curation.model import Curation

{script}

curation = Curation.open({folder!r}, np.arange(600) % 12)
for step in range(3000):
    print(scripted_action(curation, step).description, flush=True)
    if step == 9:
        print("ready", flush=True)
"""


def test_a_killed_session_reopens_with_every_journaled_action(tmp_path):
    program = CHILD_PROGRAM.format(
        repo=str(REPO_ROOT), script=inspect.getsource(scripted_action), folder=str(tmp_path)
    )
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        printed = []
        for line in child.stdout:
            if line.strip() == "ready":
                break
            printed.append(line.strip())
        # Let it get well into the next actions, then kill it without warning.
        printed += [child.stdout.readline().strip() for _ in range(8)]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # What it printed before dying is still in the pipe.
        printed += child.stdout.read().splitlines()
    finally:
        child.kill()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the kill may or may not have torn a line
        reopened = Curation.open(tmp_path, INITIAL_UNITS)
    with reopened:
        n_journaled = len(journal_path(tmp_path).read_text().splitlines()) - 1
        # An action prints only after its line is on disk; one more may have
        # been journaled but not yet printed when the kill came.
        assert len(printed) <= n_journaled <= len(printed) + 1

        reference = Curation(INITIAL_UNITS)
        assert run_script(reference, n_journaled)[: len(printed)] == printed
        assert state(reopened) == state(reference)

        while reopened.can_undo:
            reopened.undo()
        assert reopened.spike_clusters.tolist() == INITIAL_UNITS.tolist()
        assert set(reopened.labels.values()) == {"unsorted"} and reopened.notes == {}

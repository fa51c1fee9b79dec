"""The curation actions that suggestions need: rejecting a merge suggestion, labelling many units at once."""

from __future__ import annotations

import numpy as np
import pytest

from engine.curation.model import Curation, CurationError

INITIAL_UNITS = np.arange(120) % 6  # (120,) 6 units of 20 spikes


def test_rejecting_a_suggestion_is_remembered_undone_and_redone():
    curation = Curation(INITIAL_UNITS)
    record = curation.reject_suggestion(4, 1)
    assert record.op == "reject" and not record.added and not record.deleted
    assert curation.rejected_pairs == {(1, 4)}
    with pytest.raises(CurationError, match="rejected already"):
        curation.reject_suggestion(1, 4)
    with pytest.raises(CurationError, match="two different units"):
        curation.reject_suggestion(2, 2)
    curation.undo()
    assert curation.rejected_pairs == frozenset()
    curation.redo()
    assert curation.rejected_pairs == {(1, 4)}


def test_set_labels_is_one_undoable_action():
    curation = Curation(INITIAL_UNITS, {0: "good"})
    curation.set_labels({0: "mua", 3: "noise", 5: "good"}, "Accepted suggested labels")
    assert curation.labels == {0: "mua", 1: "unsorted", 2: "unsorted", 3: "noise", 4: "unsorted", 5: "good"}
    assert curation.undo_descriptions == ["Accepted suggested labels"]
    curation.undo()
    assert curation.labels[0] == "good" and curation.labels[3] == "unsorted"
    with pytest.raises(CurationError, match="unknown label"):
        curation.set_labels({1: "great"})


def test_rejections_and_labels_replay_from_the_journal(tmp_path):
    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.reject_suggestion(0, 2)
        curation.reject_suggestion(3, 5)
        curation.set_labels({1: "good", 2: "mua"})
        curation.undo()
        curation.undo()
        curation.redo()
        rejected, labels, history = curation.rejected_pairs, curation.labels, curation.undo_descriptions
    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert reopened.rejected_pairs == rejected == {(0, 2), (3, 5)}
        assert reopened.labels == labels
        assert reopened.undo_descriptions == history
        assert reopened.can_redo


def test_a_version_1_journal_still_replays(tmp_path):
    import json

    from engine.curation.journal import journal_path

    with Curation.open(tmp_path, INITIAL_UNITS) as curation:
        curation.merge([0, 1])
    path = journal_path(tmp_path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["version"] = 1
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with Curation.open(tmp_path, INITIAL_UNITS) as reopened:
        assert reopened.unit_ids.tolist() == [2, 3, 4, 5, 6]

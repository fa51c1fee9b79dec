"""The window and a damaged or locked curation journal: the person is asked, told, and nothing is lost."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from app.main_window import MainWindow
from engine.curation.folder import open_curation
from engine.curation.journal import journal_path
from engine.io.phy import export_phy, load_phy
from engine.io.recording import open_recording
from engine.evaluation.simulator import GroundTruth


@pytest.fixture
def shown_errors(monkeypatch):
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    return errors


@pytest.fixture
def curated_folder(tmp_path, tiny_recording):
    """A phy folder whose journal holds: merge 0+1, label good, label noise."""
    truth = GroundTruth.load(tiny_recording.parent / "ground_truth").to_sorting()
    folder = export_phy(truth, tmp_path / "sort", recording=open_recording(tiny_recording))
    curation, _ = open_curation(folder, load_phy(folder).spike_clusters, min_new_unit_id=truth.n_units)
    merged = curation.merge([0, 1]).added[0]
    curation.label([merged], "good")
    curation.label([merged], "noise")
    curation.close()
    return folder


def open_window(qtbot, folder) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(folder)
    return window


def damage_last_label(folder):
    lines = journal_path(folder).read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"noise"', '"mua"')  # valid JSON, wrong checksum
    journal_path(folder).write_text("".join(lines))
    return "".join(lines)


def test_a_damaged_journal_asks_and_opens_the_intact_actions(qtbot, curated_folder, monkeypatch, shown_errors, tmp_path):
    damaged_text = damage_last_label(curated_folder)
    asked = []

    def answer_open(_parent, error):
        asked.append(error)
        return True

    monkeypatch.setattr("app.curation_controller.ask_to_open_intact_actions", answer_open)
    window = open_window(qtbot, curated_folder)
    qtbot.waitUntil(lambda: window.session.curation is not None, timeout=20_000)

    assert len(asked) == 1 and asked[0].line == 4 and asked[0].intact_actions == 2
    assert "curation.jsonl line 4" in str(asked[0])
    assert window.status_label.text().startswith("Opened the first 2 actions")
    assert window.session.curation.undo_descriptions[-1].startswith("Labelled")
    assert window.session.unit_table.labels == ["good"]  # merged, labelled good; the damaged "mua" left out
    kept = next(curated_folder.glob("curation-damaged-*"))
    assert (kept / "curation.jsonl").read_text() == damaged_text
    window.grab().save(str(tmp_path / "damaged_journal_opened.png"))
    window.close()
    assert not shown_errors


def test_cancelling_leaves_a_damaged_journal_untouched(qtbot, curated_folder, monkeypatch, shown_errors):
    damaged_text = damage_last_label(curated_folder)
    monkeypatch.setattr("app.curation_controller.ask_to_open_intact_actions", lambda _parent, _error: False)
    window = open_window(qtbot, curated_folder)
    qtbot.waitUntil(lambda: "not opened" in window.status_label.text(), timeout=20_000)

    assert "curation.jsonl is damaged at line 4" in window.status_label.text()
    assert window.session.curation is None
    assert journal_path(curated_folder).read_text() == damaged_text
    assert not list(curated_folder.glob("curation-damaged-*")) and not list(curated_folder.glob("curation-set-aside-*"))
    qtbot.keyClick(window, Qt.Key.Key_G)
    assert "not opened" in window.status_label.text()
    window.close()
    assert not shown_errors


def test_a_folder_another_curation_holds_opens_read_only_and_says_who(qtbot, curated_folder, shown_errors):
    holder, _ = open_curation(curated_folder, np.load(curated_folder / "curation_start.npy"))
    try:
        window = open_window(qtbot, curated_folder)
        qtbot.waitUntil(lambda: window.session.curation is not None, timeout=20_000)
        assert window.status_label.text().startswith("Opened read-only:")
        assert "is being curated by process" in window.status_label.text()

        window.session.select_units([int(window.session.unit_table.unit_ids[0])])
        qtbot.keyClick(window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
        assert window.status_label.text().startswith("Read-only:")
        assert len(holder.undo_descriptions) == 3  # the holder's journal was not touched
        window.close()
    finally:
        holder.close()
    assert not shown_errors


def test_a_journal_error_is_not_called_a_bug():
    from pathlib import Path

    from app.errors import describe_error
    from engine.curation.journal import JournalCorruptError

    error = JournalCorruptError("journal/000001.npy, the data of action 1 (split), is truncated", Path("x"), 2, 0)
    assert "bug" not in describe_error(error, "Opening the curation").advice

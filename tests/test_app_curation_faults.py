"""What the person sees when the disk fails a curation action, and Save into a folder that does not exist yet."""

from __future__ import annotations

import errno

import numpy as np
from PyQt6.QtCore import Qt

from engine.curation.journal import Journal
from tests.test_curation_gui import current_units, open_for_curation, phy_folder, press, shown_errors  # noqa: F401


def test_a_full_disk_during_an_action_shows_a_dialog_and_says_nothing_changed(
    qtbot, phy_folder, shown_errors, monkeypatch  # noqa: F811
):
    window = open_for_curation(qtbot, phy_folder)
    session = window.session
    clusters_before = session.curation.spike_clusters.copy()

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Journal, "append", disk_full)
    session.select_units([1])
    press(qtbot, window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)

    assert len(shown_errors) == 1
    assert "No space left on device" in shown_errors[0].message
    assert "disk is full" in shown_errors[0].advice
    status = window.status_label.text()
    assert status.startswith("Labelling unit 1 as good failed, nothing changed")
    assert "Labelled" not in status
    assert session.unit_table.labels[current_units(window).index(1)] == ""
    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)
    assert len(shown_errors) == 2 and "Merging units 1, 2 failed" in window.status_label.text()
    assert current_units(window) == [0, 1, 2]
    np.testing.assert_array_equal(session.curation.spike_clusters, clusters_before)
    window.close()


def test_save_into_a_folder_that_does_not_exist_yet_creates_it(window, qtbot, tmp_path):
    from PyQt6.QtWidgets import QFileDialog, QLineEdit

    target = tmp_path / "new_session"
    press(qtbot, window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    dialog = window.findChild(QFileDialog, "save_folder_dialog")
    assert dialog is not None and dialog.isVisible()
    dialog.setDirectory(str(tmp_path))
    name_edit = dialog.findChild(QLineEdit, "fileNameEdit")
    name_edit.setText(target.name)
    with qtbot.waitSignal(window.saved, timeout=20_000):
        qtbot.keyClick(name_edit, Qt.Key.Key_Return)
    assert (target / "settings.json").is_file()
    assert window.status_label.text() == f"Session saved in {target}"


def test_a_journal_that_cannot_be_moved_into_the_new_session_is_kept(
    window, qtbot, tmp_path, tiny_recording, shown_errors, monkeypatch  # noqa: F811
):
    from app.unit_table import build_unit_table
    from tests.test_curation_gui import choose_save_folder, tiny_sorting

    session = window.session
    sorting = tiny_sorting(tiny_recording)  # as training would leave it: no folder behind it
    session.set_sorting(sorting, build_unit_table(sorting, session.recording))
    qtbot.waitUntil(lambda: session.curation is not None, timeout=20_000)
    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("app.curation_controller.copy_journal", read_only)
    press(qtbot, window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    choose_save_folder(qtbot, window, tmp_path / "session")
    qtbot.waitUntil(lambda: len(shown_errors) == 1, timeout=20_000)
    assert "Read-only file system" in shown_errors[0].message and "read-only" in shown_errors[0].advice
    qtbot.waitUntil(lambda: session.curation is not None and window.curation_controller.busy is None, timeout=20_000)
    assert current_units(window) == [0, 3], "the merge survived"
    assert session.curation.undo_descriptions == ["Merged 1 + 2 → 3"]

"""Curating faster in the window: merge suggestions by key, rejections, suggested labels, SpikeInterface files."""

from __future__ import annotations

import json
import os

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QPushButton

from app.curation_aids import saved_rules
from engine.curation.journal import journal_path
from engine.curation.labels import DEFAULT_RULES
from tests.test_curation_gui import curating, current_units, phy_folder, press, shown_errors  # noqa: F401

SHOTS = os.environ.get("SPARSORT_SCREENSHOTS")  # a folder to save the views' screenshots in, if set


def wait_for_suggestions(qtbot, window):
    qtbot.waitUntil(lambda: window.session.merge_suggestions is not None, timeout=20_000)


def top_partner(window, unit):
    view = window.views["similarity"]
    view.refresh()
    return view.rows[0].partner_of(unit) if view.rows else None


def test_merge_the_top_suggestion_by_key_reject_one_and_undo_both(curating, qtbot, phy_folder):  # noqa: F811
    window, session = curating, curating.session
    wait_for_suggestions(qtbot, window)
    window.docks["similarity"].raise_()
    session.select_units([1])
    # Unit 1 was cut in two at half time (units 1 and 2): its other half comes first.
    assert top_partner(window, 1) == 2
    view = window.views["similarity"]
    assert "templates" in view.table.item(0, 3).text()
    if SHOTS:
        view.grab().save(os.path.join(SHOTS, "similarity.png"))
        units_view = window.views["units"]
        units_view.resize(1200, units_view.height())
        units_view.grab().save(os.path.join(SHOTS, "units.png"))
        window.grab().save(os.path.join(SHOTS, "window.png"))

    press(qtbot, window, Qt.Key.Key_G, Qt.KeyboardModifier.ShiftModifier)
    assert current_units(window) == [0, 3]
    assert session.selected_units == (3,)
    assert session.curation.spike_count(3) == len(session.curation.spikes_of(3))

    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current_units(window) == [0, 1, 2]

    session.select_units([1])
    press(qtbot, window, Qt.Key.Key_X, Qt.KeyboardModifier.ShiftModifier)
    assert session.curation.rejected_pairs == {(1, 2)}
    assert session.selected_units == (1,)
    assert top_partner(window, 1) != 2, "a rejected suggestion is not shown again"
    lines = journal_path(phy_folder).read_text().splitlines()
    assert json.loads(lines[-1])["op"] == "reject" and json.loads(lines[-1])["units"] == [1, 2]

    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert session.curation.rejected_pairs == frozenset()
    assert top_partner(window, 1) == 2


def test_clicking_a_similar_unit_selects_the_pair(curating, qtbot):  # noqa: F811
    window, session = curating, curating.session
    wait_for_suggestions(qtbot, window)
    window.docks["similarity"].raise_()
    session.select_units([2])
    view = window.views["similarity"]
    view.refresh()
    rect = view.table.visualItemRect(view.table.item(0, 0))
    qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert session.selected_units == (2, 1)
    press(qtbot, window, Qt.Key.Key_G)
    assert current_units(window) == [0, 3]


def test_accept_suggested_labels_for_all_units_and_undo(curating, qtbot):  # noqa: F811
    window, session = curating, curating.session
    table = session.unit_table
    assert table.suggested_labels is not None and len(table.suggested_labels) == 3
    suggested = dict(zip(table.unit_ids.tolist(), table.suggested_labels))
    # The tiny sort's units have ~80 spikes: fewer than bombcell's 300, so multi-unit activity.
    assert set(suggested.values()) == {"mua"}
    assert "n_spikes" in table.suggested_reasons[0]
    window.curation_controller.aids.accept_all_action.trigger()
    assert session.curation.labels == suggested
    assert session.unit_table.labels == ["mua"] * 3
    assert session.curation.undo_descriptions[-1] == "Accepted suggested labels of 3 units"
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert set(session.curation.labels.values()) == {"unsorted"}


def test_accept_suggested_labels_for_the_selection_by_key(curating, qtbot):  # noqa: F811
    window, session = curating, curating.session
    session.select_units([2])
    press(qtbot, window, Qt.Key.Key_A, Qt.KeyboardModifier.AltModifier)
    assert session.curation.labels == {0: "unsorted", 1: "unsorted", 2: "mua"}


def test_edited_rules_change_the_suggested_column(curating, qtbot):  # noqa: F811
    window, session = curating, curating.session
    aids = window.curation_controller.aids
    aids.edit_rules()
    dialog = aids.rules_dialog
    for rule, enabled, _threshold, _label in dialog.rows:
        enabled.setChecked(rule.metric != "n_spikes")
    if SHOTS:
        dialog.grab().save(os.path.join(SHOTS, "rules.png"))
    dialog.accept()
    assert all(rule.enabled == (rule.metric != "n_spikes") for rule in aids.rules)
    # Without the spike count rule, unit 0 is good; units 1 and 2, each half of one unit in time, are not.
    assert session.unit_table.suggested_labels == ["good", "mua", "mua"]
    assert session.unit_table.suggested_reasons[1:] == ["presence_ratio 0.5 < 0.7"] * 2
    assert aids.rules == saved_rules(), "the rules are remembered for the next session"

    aids.edit_rules()
    again = aids.rules_dialog
    assert not [enabled for rule, enabled, *_ in again.rows if rule.metric == "n_spikes"][0].isChecked()
    [button for button in again.findChildren(QPushButton) if button.text() == "Bombcell defaults"][0].click()
    again.accept()
    assert aids.rules == DEFAULT_RULES


def test_export_and_reimport_the_spikeinterface_curation(curating, qtbot, tmp_path):  # noqa: F811
    window, session = curating, curating.session
    aids = window.curation_controller.aids
    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)
    session.select_units([0])
    press(qtbot, window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
    merged_spikes = session.curation.spikes_of(3).copy()
    path = tmp_path / "curation.json"
    aids.export_spikeinterface(path)
    exported = json.loads(path.read_text())
    steps = exported if isinstance(exported, list) else [exported]
    assert any(merge["unit_ids"] == [1, 2] for step in steps for merge in step["merges"])

    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current_units(window) == [0, 1, 2]
    aids.import_spikeinterface(path)
    assert "Imported curation.json" in window.status_label.text()
    new = [u for u in current_units(window) if u not in (0, 1, 2)]
    assert len(new) == 1
    np.testing.assert_array_equal(session.curation.spikes_of(new[0]), merged_spikes)
    assert session.curation.labels[0] == "good"

    (tmp_path / "bad.json").write_text(json.dumps({"format_version": "2", "unit_ids": [77]}))
    aids.import_spikeinterface(tmp_path / "bad.json")
    assert "77" in window.status_label.text()

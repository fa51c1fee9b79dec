"""The lasso's outline goes when what it selected goes: after K, after an undo, after Space."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt

from tests.test_curation_gui import curating, lasso_around_time, phy_folder, press, shown_errors  # noqa: F401


def outline_drawn(view) -> bool:
    xs = view.lasso._outline.xData
    return xs is not None and len(xs) > 0


def lasso_on_amplitudes(window, qtbot):
    window.session.select_units([int(window.session.unit_table.unit_ids[1])])
    window.views["amplitudes"].refresh()
    sorting = window.session.sorting
    lasso_around_time(window, "amplitudes", 0.0, sorting.spike_times[-1] / sorting.sampling_rate / 4)
    assert outline_drawn(window.views["amplitudes"]) and window.session.selected_spikes is not None


def test_k_undo_and_space_erase_the_lasso(curating, qtbot):  # noqa: F811
    window = curating
    amplitudes = window.views["amplitudes"]

    lasso_on_amplitudes(window, qtbot)
    press(qtbot, window, Qt.Key.Key_K)
    assert window.status_label.text().startswith("Split")
    assert not outline_drawn(amplitudes), "outline left after K"

    lasso_on_amplitudes(window, qtbot)
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.status_label.text().startswith("Undid")
    assert not outline_drawn(amplitudes) and window.session.selected_spikes is None, "outline left after undo"

    lasso_on_amplitudes(window, qtbot)
    press(qtbot, window, Qt.Key.Key_Space)
    assert window.session.selected_units == (int(window.session.unit_table.unit_ids[2]),)
    assert window.session.selected_spikes is None, "K would split the lasso of a unit no longer selected"
    assert not outline_drawn(amplitudes), "outline left after Space"


def test_an_embedding_lasso_is_erased_after_k(curating, qtbot):  # noqa: F811
    window = curating
    window.docks["embedding"].raise_()  # curating, a tab behind the Probe
    embedding = window.views["embedding"]
    embedding.refresh()
    qtbot.waitUntil(lambda: embedding.embedding is not None and embedding._grouping_is_current(), timeout=30_000)
    qtbot.waitUntil(lambda: embedding._job is None, timeout=60_000)
    window.session.select_units([0])
    layout = embedding.embedding.layout
    points = layout[embedding.unit_rows[0]]
    low, high = layout.min(axis=0) - 1, layout.max(axis=0) + 1
    middle = np.median(points[:, 0])  # half of unit 0's points
    embedding.lasso.set_polygon([(low[0], low[1]), (middle, low[1]), (middle, high[1]), (low[0], high[1])])
    qtbot.waitUntil(lambda: window.session.selected_spikes is not None, timeout=5_000)
    if window.session.selected_spikes.complete is not None:
        qtbot.waitUntil(lambda: window.curation_controller.busy is None, timeout=10_000)
    assert outline_drawn(embedding)
    units_before = len(window.session.unit_table.unit_ids)
    press(qtbot, window, Qt.Key.Key_K)
    qtbot.waitUntil(lambda: len(window.session.unit_table.unit_ids) != units_before, timeout=20_000)
    qtbot.waitUntil(lambda: not outline_drawn(embedding), timeout=2_000)
    assert np.isfinite(layout).all()

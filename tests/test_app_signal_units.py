"""Views say what their voltages are in: µV for our folders; for another tool's folder, whose params.py gives no
gain to µV, the data file's raw units (Traces, Waveforms) and the tool's own template units (Units table)."""

from __future__ import annotations

from PyQt6.QtCore import Qt

from tests.test_app_probe_scale import show_view
from tests.test_curation_gui import open_for_curation, phy_folder, shown_errors  # noqa: F401  (fixtures)
from tests.test_phy_io import without_params


def peak_to_peak_header(window) -> str:
    model = window.views["units"].model
    headers = [model.headerData(column, Qt.Orientation.Horizontal) for column in range(model.columnCount())]
    return next(header for header in headers if header.startswith("Ptp"))


def scale_bar_labels(qtbot, window) -> tuple[str, str]:
    """(Waveforms', Traces') µV scale bar labels, once unit 0's waveforms are drawn."""
    waveforms = show_view(qtbot, window, "waveforms")
    window.session.select_units([0])
    qtbot.waitUntil(lambda: set(waveforms.means) == {0} and waveforms.scale_bar.microvolts is not None, timeout=10_000)
    traces = window.views["traces"]
    qtbot.waitUntil(lambda: traces.scale_bar.microvolts is not None, timeout=10_000)
    return waveforms.scale_bar.label.textItem.toPlainText(), traces.scale_bar.label.textItem.toPlainText()


def test_our_folders_views_are_in_microvolts(qtbot, phy_folder, shown_errors):  # noqa: F811
    window = open_for_curation(qtbot, phy_folder)
    assert peak_to_peak_header(window) == "Ptp\n(µV)"
    waveforms_label, traces_label = scale_bar_labels(qtbot, window)
    assert waveforms_label.endswith(" µV") and traces_label.endswith(" µV")
    window.close()
    assert not shown_errors


def test_another_tools_folder_labels_raw_data_and_templates_as_what_they_are(qtbot, phy_folder, shown_errors):  # noqa: F811
    without_params(phy_folder, "amplitude_unit", "gain_to_uv")  # as Kilosort and SpikeInterface write params.py
    window = open_for_curation(qtbot, phy_folder)
    assert window.session.signal_units.data == "raw units"
    header = peak_to_peak_header(window)
    assert header == "Ptp\n(tmpl.)", header
    waveforms_label, traces_label = scale_bar_labels(qtbot, window)
    assert waveforms_label.endswith(" raw units"), waveforms_label
    assert traces_label.endswith(" raw units"), traces_label
    window.close()
    assert not shown_errors

"""The Amplitudes view's title says what its y axis is in: µV for our sorts, a template scaling for Kilosort's."""

from __future__ import annotations

from tests.test_app_probe_scale import show_view
from tests.test_curation_gui import open_for_curation, phy_folder, shown_errors  # noqa: F401  (fixtures)
from tests.test_phy_io import without_params


def curating_amplitudes(qtbot, folder):
    """A window curating `folder`, its Amplitudes view drawing unit 0."""
    window = open_for_curation(qtbot, folder)
    view = show_view(qtbot, window, "amplitudes")
    window.session.select_units([0])
    qtbot.waitUntil(lambda: bool(view.scatters), timeout=5_000)
    return window


def amplitudes_title(qtbot, folder) -> str:
    window = curating_amplitudes(qtbot, folder)
    title = window.docks["amplitudes"].windowTitle()
    window.close()
    return title


def test_our_folders_amplitudes_are_titled_in_microvolts(qtbot, phy_folder, shown_errors):  # noqa: F811
    assert amplitudes_title(qtbot, phy_folder) == "Amplitudes (µV)"
    # A folder we wrote before params.py named the unit: its gain_to_uv says it is ours.
    without_params(phy_folder, "amplitude_unit")
    assert amplitudes_title(qtbot, phy_folder) == "Amplitudes (µV)"
    assert not shown_errors


def test_a_kilosort_folders_amplitudes_are_titled_as_template_scalings(
    qtbot, phy_folder, shown_errors, tiny_recording  # noqa: F811
):
    without_params(phy_folder, "amplitude_unit", "gain_to_uv")  # as Kilosort writes params.py
    window = curating_amplitudes(qtbot, phy_folder)
    dock = window.docks["amplitudes"]
    assert dock.windowTitle() == "Amplitudes (template scaling)"
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(tiny_recording)  # nothing sorted: no unit to name
    assert dock.windowTitle() == "Amplitudes"
    window.close()
    assert not shown_errors

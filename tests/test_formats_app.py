"""File > Open on what labs record: no questions when the files say everything, only the stream when they do not."""

from __future__ import annotations

import numpy as np
from PyQt6.QtWidgets import QDialog

from format_files import ramp, samples_of, write_openephys, write_spikeglx


def test_a_spikeglx_file_opens_without_asking_and_says_what_was_read(window, qtbot, tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(36_000, 5), saved_ids=[0, 1, 2, 3, 8])
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(bin_path)
    assert window.findChild(QDialog, "raw_parameters_dialog") is None
    assert window.session.recording.n_channels == 4
    shown = window.status_label.text()
    assert "SpikeGLX imec0.ap" in shown and "30000 Hz" in shown and "sync channel 4 of 5 left out" in shown


def test_an_open_ephys_folder_with_two_probes_asks_only_which_stream(window, qtbot, tmp_path):
    folder = write_openephys(tmp_path, [
        ("ProbeA-AP", 30_000.0, samples_of(36_000, 3), None),
        ("ProbeB-AP", 30_000.0, samples_of(36_000, 2), None),
    ])
    window.open_path(folder)
    dialog = window.findChild(QDialog, "raw_parameters_dialog")
    assert dialog is not None and dialog.isVisible()
    # The rate, channels and sample type are in structure.oebin: only the stream is asked for.
    assert dialog.stream.isVisible() and not dialog.sampling_rate.isVisible() and not dialog.n_channels.isVisible()
    assert [dialog.stream.itemText(i) for i in range(dialog.stream.count())] == [
        "ProbeA-AP (30000 Hz, 3 channels)", "ProbeB-AP (30000 Hz, 2 channels)"]
    dialog.stream.setCurrentIndex(1)
    with qtbot.waitSignal(window.opened, timeout=20_000):
        dialog.accept()
    assert window.session.recording.n_channels == 2
    assert window.session.source.stream == "ProbeB-AP"
    assert "Open Ephys ProbeB-AP" in window.status_label.text()


def test_a_probe_file_given_at_launch_places_the_channels(window, qtbot, tmp_path):
    from probeinterface import ProbeGroup, generate_linear_probe, write_probeinterface

    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(36_000, 3), None)])
    probe = generate_linear_probe(num_elec=3, ypitch=40)
    probe.set_device_channel_indices([0, 1, 2])
    group = ProbeGroup()
    group.add_probe(probe)
    write_probeinterface(tmp_path / "probe.json", group)
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(folder, probe=str(tmp_path / "probe.json"))
    np.testing.assert_array_equal(window.session.recording.channel_positions[:, 1], [0, 40, 80])
    assert window.session.source.probe == str(tmp_path / "probe.json")

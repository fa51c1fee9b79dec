"""Open Ephys binary folders and probe files (probeinterface JSON, .prb), written here by hand."""

from __future__ import annotations

import numpy as np
import pytest

from engine.io.recording import RecordingError, open_recording

from format_files import samples_of, write_openephys


def test_open_ephys_rate_channels_and_bit_volts(tmp_path):
    samples = samples_of(3000, 6)
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples, ["uV"] * 4 + ["V", "V"])])
    recording = open_recording(folder)
    assert recording.sampling_rate == 30_000.0
    assert recording.n_channels == 4  # the two ADC inputs are not electrodes
    np.testing.assert_allclose(recording.get_traces(5, 8), samples[5:8, :4] * 0.195, rtol=1e-6)
    assert "2 of 6 channels left out" in recording.describe()
    # The structure file, a stream's continuous.dat and the Record Node folder open the same stream.
    for path in (folder / "structure.oebin", tmp_path / "Record Node 101",
                 folder / "continuous" / "Acquisition_Board-100.ProbeA" / "continuous.dat"):
        assert open_recording(path).path == recording.path


def test_the_ap_band_is_chosen_and_other_streams_by_name(tmp_path):
    folder = write_openephys(tmp_path, [
        ("ProbeA-LFP", 2500.0, samples_of(100, 3), None),
        ("ProbeA-AP", 30_000.0, samples_of(1200, 3), None),
    ])
    assert open_recording(folder).sampling_rate == 30_000.0
    assert open_recording(folder, stream="ProbeA-LFP").sampling_rate == 2500.0


def test_ambiguous_streams_are_listed(tmp_path):
    folder = write_openephys(tmp_path, [
        ("ProbeA-AP", 30_000.0, samples_of(100, 3), None),
        ("ProbeB-AP", 30_000.0, samples_of(100, 2), None),
    ])
    with pytest.raises(RecordingError, match=r"'ProbeA-AP' \(30000 Hz, 3 channels\); 'ProbeB-AP' .*--stream NAME"):
        open_recording(folder)
    assert open_recording(folder, stream="ProbeB-AP").n_channels == 2


def test_oebin_naming_a_missing_stream_folder(tmp_path):
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(10, 2), None)])
    (folder / "continuous" / "Acquisition_Board-100.ProbeA" / "continuous.dat").unlink()
    with pytest.raises(RecordingError, match=r"names stream 'ProbeA' .*continuous\.dat does not exist: copy the whole"):
        open_recording(folder)


def test_unknown_stream_name_lists_the_streams(tmp_path):
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(10, 2), None)])
    with pytest.raises(RecordingError, match=r"no stream 'ProbeZ'; it has: 'ProbeA' \(30000 Hz, 2 channels\)"):
        open_recording(folder, stream="ProbeZ")


# -- probe files ---------------------------------------------------------------

def write_probe_json(path, positions, device_channels):
    from probeinterface import Probe, ProbeGroup, write_probeinterface

    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=np.asarray(positions, dtype=float), shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(device_channels)
    group = ProbeGroup()
    group.add_probe(probe)
    write_probeinterface(path, group)


def test_probe_json_places_each_channel_by_its_wiring(tmp_path):
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(100, 4), None)])
    contacts = [[0, 0], [0, 25], [30, 0], [30, 25]]
    wiring = [2, 0, 3, 1]  # contact i is recorded on channel wiring[i]
    write_probe_json(tmp_path / "probe.json", contacts, wiring)
    recording = open_recording(folder, probe=tmp_path / "probe.json")
    expected = np.empty((4, 2))
    for contact, channel in enumerate(wiring):
        expected[channel] = contacts[contact]
    np.testing.assert_array_equal(recording.channel_positions, expected)
    assert "probe file probe.json" in recording.describe()


def test_prb_with_two_tetrodes_applies_to_a_raw_binary(tmp_path):
    from engine.io.recording import write_recording

    path = write_recording(tmp_path / "raw.bin", np.zeros((100, 8), np.float32), 20_000.0)
    # Both tetrodes drawn at the origin, as .prb files usually do.
    (tmp_path / "tetrodes.prb").write_text(
        "channel_groups = {\n"
        " 0: {'channels': [0, 1, 2, 3], 'geometry': {0: [0, 0], 1: [20, 0], 2: [0, 20], 3: [20, 20]}},\n"
        " 1: {'channels': [4, 5, 6, 7], 'geometry': {4: [0, 0], 5: [20, 0], 6: [0, 20], 7: [20, 20]}},\n"
        "}\n"
    )
    recording = open_recording(path, probe=tmp_path / "tetrodes.prb")
    np.testing.assert_array_equal(recording.channel_positions[:4], [[0, 0], [20, 0], [0, 20], [20, 20]])
    second = recording.channel_positions[4:]
    np.testing.assert_array_equal(second - second[0], [[0, 0], [20, 0], [0, 20], [20, 20]])  # same shape
    assert second[:, 0].min() - 20 >= 500  # set apart, so no channel of one tetrode neighbours the other


def test_probe_with_another_channel_count_is_refused_before_any_work(tmp_path):
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(100, 4), None)])
    write_probe_json(tmp_path / "probe.json", [[0, 0], [0, 25], [0, 50]], [0, 1, 2])
    with pytest.raises(RecordingError, match=r"probe file probe\.json places 3 channels, but the recording has 4"):
        open_recording(folder, probe=tmp_path / "probe.json")


def test_unreadable_probe_file_is_named(tmp_path):
    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(100, 4), None)])
    (tmp_path / "probe.json").write_text("{not json")
    with pytest.raises(RecordingError, match=r"probe\.json is not a readable probeinterface JSON"):
        open_recording(folder, probe=tmp_path / "probe.json")


# -- from the command line -----------------------------------------------------

def test_cli_lists_the_streams_when_ambiguous_and_starts_nothing(tmp_path, capsys):
    from engine.cli import main

    folder = write_openephys(tmp_path, [
        ("ProbeA-AP", 30_000.0, samples_of(100, 3), None),
        ("ProbeB-AP", 30_000.0, samples_of(100, 2), None),
    ])
    assert main(["sort", str(folder), "--out", str(tmp_path / "sorted")]) == 2
    message = capsys.readouterr().err
    assert "'ProbeA-AP' (30000 Hz, 3 channels); 'ProbeB-AP' (30000 Hz, 2 channels)" in message
    assert "--stream NAME" in message
    assert not (tmp_path / "sorted").exists()


def test_cli_refuses_a_probe_of_another_channel_count(tmp_path, capsys):
    from engine.cli import main

    folder = write_openephys(tmp_path, [("ProbeA", 30_000.0, samples_of(100, 4), None)])
    write_probe_json(tmp_path / "probe.json", [[0, 0], [0, 25]], [0, 1])
    assert main(["sort", str(folder), "--probe", str(tmp_path / "probe.json"), "--out", str(tmp_path / "o")]) == 2
    assert "places 2 channels, but the recording has 4" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

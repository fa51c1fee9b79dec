"""SpikeGLX: .bin + .meta written here by hand, read back with the right rate, channels, µV and geometry."""

from __future__ import annotations

import numpy as np
import pytest

from engine.io.recording import BinaryRecording, RecordingError, open_recording

from format_files import AP_GAINS, GEOMETRY, MAX_INT, RANGE_MAX, RATE, ramp, write_spikeglx


def test_rate_channels_gain_and_geometry_come_from_the_meta(tmp_path):
    samples = ramp(3000, 5)
    bin_path = write_spikeglx(tmp_path, samples, saved_ids=[0, 1, 2, 3, 8])
    recording = open_recording(bin_path)
    assert isinstance(recording, BinaryRecording)
    assert recording.sampling_rate == RATE
    assert recording.n_channels == 4  # the sync word is not sorted
    assert recording.n_samples == 3000
    traces = recording.get_traces(10, 12)
    for channel, gain in enumerate(AP_GAINS):
        microvolts_per_bit = RANGE_MAX / MAX_INT / gain * 1e6  # e.g. 2.34375 µV at gain 500
        np.testing.assert_allclose(traces[:, channel], samples[10:12, channel] * microvolts_per_bit, rtol=1e-6)
    np.testing.assert_array_equal(recording.channel_positions, [[43, 0], [11, 0], [59, 20], [27, 20]])
    assert "sync" in recording.describe() and "snsGeomMap" in recording.describe()


def test_the_meta_path_and_the_folder_open_the_same_stream(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(100, 5), saved_ids=[0, 1, 2, 3, 8])
    from_meta = open_recording(bin_path.with_suffix(".meta"))
    from_folder = open_recording(tmp_path)
    assert from_meta.path == from_folder.path == bin_path
    np.testing.assert_array_equal(from_meta.get_traces(0, 50), from_folder.get_traces(0, 50))


def test_a_saved_subset_maps_each_column_to_its_channel_gain_and_place(tmp_path):
    samples = ramp(200, 3)
    bin_path = write_spikeglx(tmp_path, samples, saved_ids=[1, 3, 8])
    recording = open_recording(bin_path)
    assert recording.n_channels == 2
    np.testing.assert_allclose(recording.get_traces(0, 5)[:, 1], samples[:5, 1] * RANGE_MAX / MAX_INT / 2000 * 1e6,
                               rtol=1e-6)
    np.testing.assert_array_equal(recording.channel_positions, [[11, 0], [27, 20]])
    # Reading one channel reads the right column of the file.
    np.testing.assert_allclose(recording.get_traces(0, 5, channels=[1])[:, 0],
                               recording.get_traces(0, 5)[:, 1])


def test_without_a_geometry_map_positions_come_from_the_probe_type(tmp_path):
    n = 384
    imro = "(0,384)" + "".join(f"({c} 0 0 500 250 1)" for c in range(n))
    extra = {"~imroTbl": imro, "~snsChanMap": f"({n},{n},1)", "snsSaveChanSubset": f"0:{n - 1},{2 * n}"}
    bin_path = write_spikeglx(tmp_path, np.zeros((10, n + 1)), saved_ids=list(range(n + 1)), geometry=False,
                              extra={**extra, "nSavedChans": str(n + 1)})
    recording = open_recording(bin_path)
    assert recording.n_channels == n
    electrodes = np.arange(n)  # bank 0: electrode = channel
    # Neuropixels 1.0: two electrodes per 20 µm row, 32 µm apart, every other row shifted by 16 µm.
    expected_x = np.array([16, 48, 0, 32])[electrodes % 4]
    np.testing.assert_array_equal(recording.channel_positions[:, 1], 20 * (electrodes // 2))
    np.testing.assert_array_equal(recording.channel_positions[:, 0], expected_x)
    assert "probe type" in recording.positions_source


def test_lf_band_uses_the_lf_gains(tmp_path):
    samples = ramp(100, 5)
    bin_path = write_spikeglx(tmp_path, samples, saved_ids=[4, 5, 6, 7, 8], name="run_g0_t0.imec0.lf",
                              extra={"imSampRate": "2500", "snsApLfSy": "0,4,1"})
    recording = open_recording(bin_path)
    assert recording.sampling_rate == 2500 and recording.n_channels == 4
    np.testing.assert_allclose(recording.get_traces(0, 3)[:, 0], samples[:3, 0] * RANGE_MAX / MAX_INT / 250 * 1e6,
                               rtol=1e-6)


def test_nidq_neural_channels_use_the_mn_gain_and_digital_words_are_left_out(tmp_path):
    samples = ramp(100, 3)
    bin_path = tmp_path / "run_g0_t0.nidq.bin"
    samples.tofile(bin_path)
    bin_path.with_suffix(".meta").write_text(
        "niSampRate=25000\nnSavedChans=3\nsnsSaveChanSubset=all\nsnsMnMaXaDw=2,0,0,1\nniAiRangeMax=5\n"
        "niMaxInt=32768\nniMNGain=200\ntypeThis=nidq\n"
    )
    recording = open_recording(bin_path)
    assert recording.sampling_rate == 25000 and recording.n_channels == 2
    np.testing.assert_allclose(recording.get_traces(0, 3), samples[:3, :2] * 5 / 32768 / 200 * 1e6, rtol=1e-6)


def test_a_folder_with_several_streams_names_them(tmp_path):
    write_spikeglx(tmp_path, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8], name="run_g0_t0.imec0.ap")
    write_spikeglx(tmp_path, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8], name="run_g0_t0.imec1.ap")
    with pytest.raises(RecordingError, match=r"imec0\.ap.*imec1\.ap.*--stream"):
        open_recording(tmp_path)
    assert open_recording(tmp_path, stream="imec1.ap").path.name == "run_g0_t0.imec1.ap.bin"


def test_a_run_folder_opens_its_probe_ap_band_not_the_nidq(tmp_path):
    (tmp_path / "run_g0").mkdir()
    (tmp_path / "run_g0" / "run_g0_t0.nidq.bin").write_bytes(np.zeros((10, 2), np.int16).tobytes())
    (tmp_path / "run_g0" / "run_g0_t0.nidq.meta").write_text(
        "niSampRate=25000\nnSavedChans=2\nsnsMnMaXaDw=0,0,1,1\nniAiRangeMax=5\ntypeThis=nidq\n")
    probe_folder = tmp_path / "run_g0" / "run_g0_imec0"
    write_spikeglx(probe_folder, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8], name="run_g0_t0.imec0.ap")
    write_spikeglx(probe_folder, ramp(10, 5), saved_ids=[4, 5, 6, 7, 8], name="run_g0_t0.imec0.lf",
                   extra={"imSampRate": "2500", "snsApLfSy": "0,4,1"})
    recording = open_recording(tmp_path / "run_g0")
    assert recording.path.name == "run_g0_t0.imec0.ap.bin" and recording.sampling_rate == RATE
    assert open_recording(tmp_path / "run_g0", stream="nidq").sampling_rate == 25_000


# -- bad input -----------------------------------------------------------------

def test_meta_without_its_bin_names_the_missing_file(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8])
    bin_path.unlink()
    with pytest.raises(RecordingError, match=r"run_g0_t0\.imec0\.ap\.meta has no run_g0_t0\.imec0\.ap\.bin beside it"):
        open_recording(bin_path.with_suffix(".meta"))


def test_bin_without_its_meta_says_how_to_fix_it(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8])
    bin_path.with_suffix(".meta").unlink()
    with pytest.raises(RecordingError, match=r"has no run_g0_t0\.imec0\.ap\.meta beside it.*copy it next to the \.bin"):
        open_recording(bin_path)
    # With its parameters given, it is a raw binary like any other.
    assert open_recording(bin_path, sampling_rate=RATE, n_channels=5, dtype="int16").n_channels == 5


def test_bin_size_disagreeing_with_the_meta_gives_both_numbers(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(100, 5), saved_ids=[0, 1, 2, 3, 8], file_size=2000)
    with pytest.raises(RecordingError, match=r"is 1,000 bytes .* fileSizeBytes=2,000 .*Copy the \.bin again"):
        open_recording(bin_path)


def test_bin_not_a_whole_number_of_frames(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(100, 5), saved_ids=[0, 1, 2, 3, 8])
    with open(bin_path, "ab") as handle:
        handle.write(b"\0\0")
    meta = bin_path.with_suffix(".meta")
    meta.write_text(meta.read_text().replace("fileSizeBytes=1000", "fileSizeBytes=1002"))
    with pytest.raises(RecordingError, match=r"nSavedChans=5 .*2 bytes left over"):
        open_recording(bin_path)


def test_raw_flags_on_a_self_describing_file_are_refused(tmp_path):
    bin_path = write_spikeglx(tmp_path, ramp(10, 5), saved_ids=[0, 1, 2, 3, 8])
    with pytest.raises(RecordingError, match=r"leave out --sampling-rate"):
        open_recording(bin_path, sampling_rate=20_000)


# -- sorting it ----------------------------------------------------------------

TINY_SORT = ["--n-filters", "4", "--n-iterations", "10", "--batch-size", "2", "--window-ms", "50", "--epochs", "0.1"]


@pytest.mark.slow
def test_sparsort_sort_on_a_spikeglx_folder_writes_a_phy_folder_pointing_at_the_bin(tmp_path, capsys):
    from engine.cli import main
    from engine.evaluation.simulator import simulate
    from engine.io.phy import load_phy

    positions = np.array([[x, z] for _s, x, z in GEOMETRY], dtype=float)
    traces, _truth = simulate(duration_s=4, n_units=2, sampling_rate=10_000.0, n_channels=4, firing_rates=20.0,
                              seed=3, channel_positions=positions)
    microvolts_per_bit = RANGE_MAX / MAX_INT / 1000 * 1e6
    samples = np.hstack([np.rint(traces / microvolts_per_bit), np.zeros((len(traces), 1))])
    imro = "(0,4)" + "".join(f"({c} 0 0 1000 250 1)" for c in range(4))
    write_spikeglx(tmp_path / "run", samples, saved_ids=[0, 1, 2, 3, 8], extra={"imSampRate": "10000", "~imroTbl": imro})

    assert main(["sort", str(tmp_path / "run"), "--out", str(tmp_path / "sorted"), *TINY_SORT]) == 0
    assert "SpikeGLX imec0.ap" in capsys.readouterr().err
    folder = load_phy(tmp_path / "sorted")
    # Kilosort's layout: the whole file (sync included) with channel_map naming the sorted columns.
    assert folder.params["n_channels_dat"] == 5
    assert folder.params["gain_to_uv"] == pytest.approx(microvolts_per_bit)
    np.testing.assert_array_equal(folder.channel_map, [0, 1, 2, 3])
    np.testing.assert_array_equal(folder.channel_positions, positions)
    assert len(folder.spike_times) > 0
    sorted_channels = folder.sorted_recording()
    assert sorted_channels.n_channels == 4
    np.testing.assert_allclose(sorted_channels.get_traces(0, 100), samples[:100, :4] * microvolts_per_bit, rtol=1e-5)

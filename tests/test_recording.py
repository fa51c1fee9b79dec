import json
import os
import pickle

import numpy as np
import pytest

from engine.io import recording as recording_module
from engine.io.recording import (
    BinaryRecording,
    NumpyRecording,
    RecordingError,
    check_min_duration,
    open_recording,
    write_recording,
    write_recording_blocks,
)

FS = 20_000.0


def _microvolts(n_samples=500, n_channels=3, seed=0):
    """(n_samples, n_channels) float64 µV test signal."""
    return np.random.default_rng(seed).normal(0, 50, size=(n_samples, n_channels))


def _write_raw(path, stored, header=b""):
    path.write_bytes(header + np.ascontiguousarray(stored).tobytes())
    return path


# -- BinaryRecording: dtypes, offset, gain -----------------------------------

@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32", "float64"])
def test_binary_recording_reads_each_dtype_with_offset_and_gain(tmp_path, dtype):
    gain = 0.25
    values = np.rint(_microvolts() / gain)  # (500, 3) stored units, centred on zero
    stored = (values + 32768 if dtype == "uint16" else values).astype(dtype)
    path = _write_raw(tmp_path / "rec.bin", stored, header=b"H" * 16)

    rec = BinaryRecording(path, FS, 3, dtype, offset=16, gain_to_uv=gain)

    assert (rec.n_samples, rec.n_channels, rec.source_dtype) == (500, 3, np.dtype(dtype))
    traces = rec.get_traces(100, 200)
    assert traces.dtype == np.float32 and traces.shape == (100, 3)
    np.testing.assert_allclose(traces, values[100:200] * gain, atol=1e-3)
    np.testing.assert_allclose(rec.get_traces(5, 9, channels=[2, 0]), values[5:9][:, [2, 0]] * gain, atol=1e-3)
    assert (rec.dtype, rec.offset, rec.gain_to_uv) == (np.dtype(dtype), 16, gain)


def test_binary_recording_is_memory_mapped_and_pickles_without_its_data(tmp_path):
    values = np.arange(20_000, dtype=np.int16).reshape(10_000, 2)
    rec = BinaryRecording(_write_raw(tmp_path / "rec.bin", values), FS, 2, "int16", gain_to_uv=0.5)
    assert isinstance(rec._samples, np.memmap)
    pickled = pickle.dumps(rec)
    assert len(pickled) < values.nbytes / 10
    copy = pickle.loads(pickled)
    assert isinstance(copy._samples, np.memmap)
    np.testing.assert_array_equal(copy.get_traces(5000, 5002), values[5000:5002] * 0.5)


def test_get_traces_clips_stop_and_rejects_bad_ranges():
    rec = NumpyRecording(_microvolts(100, 2).astype(np.float32), FS)
    assert rec.get_traces(90, 1000).shape == (10, 2)
    assert rec.get_traces(100).shape == (0, 2)
    with pytest.raises(RecordingError, match="start must be >= 0, got -1"):
        rec.get_traces(-1, 10)
    with pytest.raises(RecordingError, match="start 20 is after stop 10"):
        rec.get_traces(20, 10)
    with pytest.raises(RecordingError, match=r"start 150 is past the end .*100 samples"):
        rec.get_traces(150)
    with pytest.raises(RecordingError, match="whole sample index"):
        rec.get_traces(1.5, 10)
    with pytest.raises(RecordingError, match=r"channel 2 does not exist.*2 channels, numbered 0 to 1"):
        rec.get_traces(0, 10, channels=[0, 2])


def test_iter_chunks_covers_the_recording_in_order():
    values = _microvolts(1000, 2).astype(np.float32)
    rec = NumpyRecording(values, FS)
    chunks = list(rec.iter_chunks(300))
    assert [(start, stop) for start, stop, _ in chunks] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    np.testing.assert_array_equal(np.concatenate([traces for _, _, traces in chunks]), values)


def test_repr_tells_size_rate_channels_duration(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((40_000, 4), np.int16))
    text = repr(BinaryRecording(path, FS, 4, "int16"))
    assert "40,000 samples" in text and "4 channels" in text and "20000 Hz" in text and "2.00 s" in text
    assert "rec.bin" in text and "int16" in text


# -- non-finite samples ---------------------------------------------------------

def test_nan_in_float_file_is_reported_at_open_with_sample_and_channel(tmp_path):
    values = _microvolts(200, 3).astype(np.float32)
    values[123, 1] = np.nan
    path = _write_raw(tmp_path / "rec.bin", values)
    with pytest.raises(RecordingError, match=r"sample 123, channel 1 is nan.*nan_to_num"):
        BinaryRecording(path, FS, 3, "float32")


def test_large_files_skip_the_open_scan_but_get_traces_still_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(recording_module, "NONFINITE_SCAN_MAX_BYTES", 0)
    values = _microvolts(200, 2).astype(np.float64)
    values[150, 0] = np.inf
    rec = BinaryRecording(_write_raw(tmp_path / "rec.bin", values), FS, 2, "float64")
    assert rec.get_traces(0, 150).shape == (150, 2)
    with pytest.raises(RecordingError, match=r"sample 150, channel 0 is inf"):
        rec.get_traces(140, 160)
    with pytest.raises(RecordingError, match=r"sample 150, channel 0"):
        rec.get_traces(100, 200, channels=[1, 0])


def test_numpy_recording_rejects_nan_bad_shapes_and_dtypes():
    values = _microvolts(50, 2).astype(np.float32)
    values[7, 1] = np.nan
    with pytest.raises(RecordingError, match="sample 7, channel 1"):
        NumpyRecording(values, FS)
    with pytest.raises(RecordingError, match=r"2-D \(n_samples, n_channels\).*traces\[:, None\]"):
        NumpyRecording(np.zeros(10, np.float32), FS)
    with pytest.raises(RecordingError, match="empty"):
        NumpyRecording(np.zeros((0, 2), np.float32), FS)
    with pytest.raises(RecordingError, match="int16, uint16, float32, float64"):
        NumpyRecording(np.zeros((10, 2), np.int32), FS)


# -- open_recording errors --------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(RecordingError, match=r"not found: .*nothing\.bin"):
        open_recording(tmp_path / "nothing.bin", FS, 2, "int16")


def test_empty_file(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(RecordingError, match=r"empty \(0 bytes\)"):
        open_recording(tmp_path / "empty.bin", FS, 2, "int16")


def test_size_not_whole_frames_names_sizes_and_channel_counts_that_fit(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros(3000, np.int16), header=b"x" * 10)  # 6010 bytes
    with pytest.raises(RecordingError) as error:
        open_recording(path, FS, 7, "int16", offset=10)
    message = str(error.value)
    assert "6000 bytes of data (6010 bytes minus offset 10)" in message
    assert "7 channels x 2 bytes (int16) = 14 bytes" in message
    assert "8 bytes left over" in message  # 6000 % 14
    assert "divide evenly: " in message and "6, 8" in message  # 3000 values divide by 6 and 8


def test_size_not_whole_samples_points_at_dtype_and_offset(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros(10, np.int16), header=b"x")
    with pytest.raises(RecordingError, match=r"not even a whole number of float32 samples: check dtype and offset"):
        open_recording(path, FS, 1, "float32")


def test_missing_parameters_say_which_argument_flag_and_sidecar_key(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    with pytest.raises(RecordingError) as error:
        open_recording(path, n_channels=2)
    message = str(error.value)
    assert "missing sampling rate, sample type" in message
    assert "sampling_rate=..., dtype=..." in message and "--sampling-rate, --dtype" in message
    assert 'rec.json beside it with the keys "sampling_rate", "dtype"' in message


def test_missing_parameter_message_mentions_unknown_sidecar_keys(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    (tmp_path / "rec.json").write_text(json.dumps({"sample_rate": 30000, "n_channels": 2, "dtype": "int16"}))
    with pytest.raises(RecordingError, match=r"missing sampling rate.*does not know: sample_rate"):
        open_recording(path)


@pytest.mark.parametrize("rate, expected", [(0, "must be a positive number of Hz, got 0"),
                                            (-5.0, "must be a positive number of Hz, got -5"),
                                            ("fast", "must be a number in Hz, got 'fast'")])
def test_bad_sampling_rate(tmp_path, rate, expected):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    with pytest.raises(RecordingError, match=f"sampling rate {expected}"):
        open_recording(path, rate, 2, "int16")


@pytest.mark.parametrize("n_channels, expected", [(0, "at least 1, got 0"), (-2, "at least 1"),
                                                  (2.5, "a whole number, got 2.5")])
def test_bad_channel_count(tmp_path, n_channels, expected):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    with pytest.raises(RecordingError, match=f"channel count must be {expected}"):
        open_recording(path, FS, n_channels, "int16")


def test_unsupported_dtype_lists_supported(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros(10, np.int8))
    supported = r"unsupported sample type 'int8': supported are int16, uint16, float32, float64"
    with pytest.raises(RecordingError, match=supported):
        open_recording(path, FS, 1, "int8")


def test_invalid_sidecar_json(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    (tmp_path / "rec.json").write_text("{sampling_rate: 3")
    with pytest.raises(RecordingError, match=r"sidecar .*rec\.json is not valid JSON"):
        open_recording(path)


def test_offset_past_end(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros(10, np.int16))
    with pytest.raises(RecordingError, match="offset 20 bytes leaves no data.*20 bytes"):
        open_recording(path, FS, 1, "int16", offset=20)


def test_opening_the_sidecar_itself_is_explained(tmp_path):
    (tmp_path / "rec.json").write_text("{}")
    with pytest.raises(RecordingError, match="parameter sidecar, not a recording"):
        open_recording(tmp_path / "rec.json")


# -- where parameters come from ---------------------------------------------------

def _phy_folder(folder, dat_name="rec.bin", sample_rate=20000.0, n_channels=2):
    folder.mkdir(exist_ok=True)
    (folder / "params.py").write_text(
        f"dat_path = r'/old/machine/{dat_name}'\n"
        f"n_channels_dat = {n_channels}\n"
        "dtype = 'int16'\n"
        "offset = 0\n"
        f"sample_rate = {sample_rate}\n"
        "hp_filtered = False\n"
    )


def test_params_py_supplies_parameters(tmp_path):
    _phy_folder(tmp_path)
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    rec = open_recording(path)
    assert (rec.sampling_rate, rec.n_channels, rec.dtype) == (20000.0, 2, np.dtype("int16"))


def test_sidecar_beats_params_py_and_arguments_beat_sidecar(tmp_path):
    _phy_folder(tmp_path)  # says 20 kHz, 2 channels
    path = _write_raw(tmp_path / "rec.bin", (np.arange(40).reshape(10, 4) + 32768).astype(np.uint16))
    (tmp_path / "rec.json").write_text(json.dumps({"sampling_rate": 25000, "n_channels": 4, "dtype": "uint16"}))

    from_sidecar = open_recording(path)
    assert (from_sidecar.sampling_rate, from_sidecar.n_channels, from_sidecar.dtype.name) == (25000, 4, "uint16")
    np.testing.assert_array_equal(from_sidecar.get_traces(0, 1), [[0, 1, 2, 3]])

    from_arguments = open_recording(path, sampling_rate=30000, gain_to_uv=2.0)
    assert (from_arguments.sampling_rate, from_arguments.n_channels) == (30000, 4)  # channels still from sidecar
    np.testing.assert_array_equal(from_arguments.get_traces(0, 1), [[0, 2, 4, 6]])


def test_sidecar_keys_merge_with_params_py_key_by_key(tmp_path):
    _phy_folder(tmp_path, n_channels=2)
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    (tmp_path / "rec.json").write_text(json.dumps({"sampling_rate": 32000}))
    rec = open_recording(path)
    assert (rec.sampling_rate, rec.n_channels) == (32000, 2)


def test_params_py_for_another_file_is_not_used_and_the_error_says_so(tmp_path):
    _phy_folder(tmp_path, dat_name="other.dat")
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    with pytest.raises(RecordingError, match=r"describes other\.dat, not rec\.bin"):
        open_recording(path)


def test_params_py_is_parsed_never_executed(tmp_path):
    marker = tmp_path / "executed"
    (tmp_path / "params.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import os\n"
        "dat_path = 'rec.bin'\nn_channels_dat = 1\ndtype = 'int16'\nsample_rate = 1000.\n"
        "extra = os.getcwd()\n"  # not a value we read: ignored
    )
    path = _write_raw(tmp_path / "rec.bin", np.zeros(10, np.int16))
    assert open_recording(path).sampling_rate == 1000.0
    assert not marker.exists()

    (tmp_path / "params.py").write_text("sample_rate = float('30000')\n")
    with pytest.raises(RecordingError, match=r"params\.py line 1: sample_rate is not a plain value"):
        open_recording(path, n_channels=1, dtype="int16")


def test_phy_folder_or_params_py_opens_its_data_file_with_channel_map_positions(tmp_path):
    _phy_folder(tmp_path, n_channels=3)
    _write_raw(tmp_path / "rec.bin", np.zeros((10, 3), np.int16))
    np.save(tmp_path / "channel_map.npy", np.array([0, 2]))
    np.save(tmp_path / "channel_positions.npy", np.array([[5.0, 0.0], [5.0, 40.0]]))

    for target in (tmp_path, tmp_path / "params.py"):
        rec = open_recording(target)
        assert rec.path == tmp_path / "rec.bin" and rec.n_channels == 3
        np.testing.assert_array_equal(rec.channel_positions[[0, 2]], [[5.0, 0.0], [5.0, 40.0]])


def test_phy_folder_without_raw_data_is_explained(tmp_path):
    (tmp_path / "params.py").write_text("dat_path = ''\nsample_rate = 30000.\n")
    with pytest.raises(RecordingError, match=r"names no raw data file \(dat_path is missing or empty\)"):
        open_recording(tmp_path)


def test_sidecar_channel_positions_are_used_and_checked(tmp_path):
    path = _write_raw(tmp_path / "rec.bin", np.zeros((10, 2), np.int16))
    (tmp_path / "rec.json").write_text(json.dumps(
        {"sampling_rate": FS, "n_channels": 2, "dtype": "int16", "channel_positions": [[0, 0], [0, 25]]}))
    np.testing.assert_array_equal(open_recording(path).channel_positions, [[0, 0], [0, 25]])
    with pytest.raises(RecordingError, match=r"shape \(2, 2\).*got shape \(3, 2\)"):
        open_recording(path, channel_positions=np.zeros((3, 2)))


# -- .npy ----------------------------------------------------------------------------

def test_npy_is_memory_mapped_and_needs_a_sampling_rate(tmp_path):
    values = _microvolts(300, 2).astype(np.float32)
    np.save(tmp_path / "rec.npy", values)
    with pytest.raises(RecordingError, match=r"missing sampling rate.*--sampling-rate.*rec\.json"):
        open_recording(tmp_path / "rec.npy")

    rec = open_recording(tmp_path / "rec.npy", sampling_rate=FS)
    assert isinstance(rec, NumpyRecording) and isinstance(rec._samples, np.memmap)
    np.testing.assert_array_equal(rec.get_traces(10, 20), values[10:20])

    (tmp_path / "rec.json").write_text(json.dumps({"sampling_rate": 12345.0}))
    assert open_recording(tmp_path / "rec.npy").sampling_rate == 12345.0


def test_npy_channel_count_must_match_its_shape(tmp_path):
    np.save(tmp_path / "rec.npy", np.zeros((30, 2), np.int16))
    with pytest.raises(RecordingError, match=r"has 2 channels .*n_channels 4 was given"):
        open_recording(tmp_path / "rec.npy", FS, n_channels=4)


# -- writing -------------------------------------------------------------------------

def test_write_recording_int16_roundtrip_with_automatic_gain(tmp_path):
    values = _microvolts(2000, 3)
    positions = np.array([[0, 0], [10, 0], [0, 10]], float)
    path = write_recording(tmp_path / "out.bin", values, FS, channel_positions=positions)

    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["dtype"] == "int16" and sidecar["n_channels"] == 3 and sidecar["sampling_rate"] == FS
    stored = np.fromfile(path, np.int16)
    assert 16000 <= np.abs(stored).max() <= 16384  # headroom: half the int16 range
    rec = open_recording(path)
    np.testing.assert_allclose(rec.get_traces(), values, atol=sidecar["gain_to_uv"] / 2 + 1e-4)
    np.testing.assert_array_equal(rec.channel_positions, positions)
    assert sorted(os.listdir(tmp_path)) == ["out.bin", "out.json"]  # no temporary files left


@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64"])
def test_write_recording_other_dtypes_roundtrip(tmp_path, dtype):
    values = _microvolts(100, 2)
    rec = open_recording(write_recording(tmp_path / "out.dat", values, FS, dtype=dtype, gain_to_uv=0.5))
    assert rec.dtype == np.dtype(dtype)
    np.testing.assert_allclose(rec.get_traces(), values, atol=0.25 + 1e-3 if dtype == "uint16" else 1e-3)


def test_write_recording_with_too_small_gain_suggests_one(tmp_path):
    with pytest.raises(RecordingError, match=r"beyond the int16 range.*gain_to_uv >= 0\.0305"):
        write_recording(tmp_path / "out.bin", np.full((10, 1), 1000.0), FS, gain_to_uv=0.01)


def test_a_recording_written_block_by_block_reads_back_whole(tmp_path):
    values = _microvolts(1000, 3)
    positions = np.array([[0, 0], [10, 0], [0, 10]], float)
    blocks = (values[start:start + 300] for start in range(0, 1000, 300))  # last block shorter
    path = write_recording_blocks(tmp_path / "long.bin", blocks, FS, 3, channel_positions=positions)
    rec = open_recording(path)
    assert rec.n_samples == 1000 and rec.dtype == np.float32
    np.testing.assert_allclose(rec.get_traces(), values, atol=1e-3)
    np.testing.assert_array_equal(rec.channel_positions, positions)
    stored = write_recording_blocks(tmp_path / "int.bin", [values[:500], values[500:]], FS, 3, "int16", 0.5)
    np.testing.assert_allclose(open_recording(stored).get_traces(), values, atol=0.25 + 1e-6)


def test_a_bad_block_leaves_no_file_and_says_where(tmp_path):
    values = _microvolts(100, 2)
    broken = values.copy()
    broken[7, 1] = np.inf
    with pytest.raises(RecordingError, match="sample 107, channel 1"):
        write_recording_blocks(tmp_path / "out.bin", [values, broken], FS, 2)
    with pytest.raises(RecordingError, match=r"every block must be \(n_samples, 2\)"):
        write_recording_blocks(tmp_path / "out.bin", [values, values[:, :1]], FS, 2)
    with pytest.raises(RecordingError, match="needs gain_to_uv"):
        write_recording_blocks(tmp_path / "out.bin", [values], FS, 2, dtype="int16")
    assert os.listdir(tmp_path) == []  # neither a binary, a sidecar nor a temporary file


def test_write_recording_rejects_npy_names_and_nan(tmp_path):
    with pytest.raises(RecordingError, match=r"name it e\.g\. out\.bin"):
        write_recording(tmp_path / "out.npy", np.zeros((10, 1)), FS)
    values = np.zeros((10, 2))
    values[3, 1] = np.nan
    with pytest.raises(RecordingError, match="sample 3, channel 1"):
        write_recording(tmp_path / "out.bin", values, FS)


def test_check_min_duration():
    rec = NumpyRecording(np.zeros((50, 1), np.float32), 10_000.0)
    check_min_duration(rec, 50, "one filter")
    with pytest.raises(RecordingError, match=r"recording has 50 samples .*shorter than one filter \(80 samples"):
        check_min_duration(rec, 80, "one filter")


def test_params_py_with_a_numpy_dtype_opens_like_a_quoted_one(tmp_path):
    """Kilosort writes `dtype = np.int16`; phy folders and recordings read params.py with one parser."""
    from engine.io.phy import read_params

    data = (np.arange(400, dtype=np.int16) % 50).reshape(100, 4)
    data.tofile(tmp_path / "raw.bin")
    (tmp_path / "params.py").write_text(
        "dat_path = 'raw.bin'\nn_channels_dat = 4\ndtype = np.int16\noffset = 0\nsample_rate = 30000.\n"
    )
    recording = open_recording(tmp_path / "params.py")
    assert recording.n_channels == 4 and recording.n_samples == 100
    assert read_params(tmp_path / "params.py")["dtype"] == "int16"


def _resident_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident set from /proc (Linux)")
@pytest.mark.parametrize("suffix", [".bin", ".npy"])
def test_reading_a_file_through_leaves_its_pages_out_of_the_resident_set(tmp_path, suffix):
    """Every block read from a memory-mapped file is dropped from the process's resident memory once
    copied (the file cache keeps it): reading a 128 MB file through must not grow it by the file's size,
    and what is read again is what was read first. Without the release it grew by 139 MB."""
    traces = np.random.default_rng(0).standard_normal((2_000_000, 16)).astype(np.float32)
    if suffix == ".bin":
        path = write_recording(tmp_path / "big.bin", traces, 30_000.0, dtype="float32")
    else:
        path = tmp_path / "big.npy"
        np.save(path, traces)
        (tmp_path / "big.json").write_text(json.dumps({"sampling_rate": 30_000.0}))
    expected = traces[123_456:130_000].copy()
    del traces
    before = _resident_mb()
    recording = open_recording(path)
    for start in range(0, recording.n_samples, 100_000):
        recording.get_traces(start, start + 100_000)
    assert _resident_mb() - before < 64.0
    np.testing.assert_array_equal(recording.get_traces(123_456, 130_000), expected)
    np.testing.assert_array_equal(recording.get_traces(123_456, 130_000), expected)

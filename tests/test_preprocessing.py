import numpy as np
import pytest

from engine.pipeline.preprocessing import (
    PreprocessedRecording,
    bandpass_filter,
    common_median_reference,
    default_freq_max,
    estimate_noise_levels,
    filter_margin,
)
from engine.io.recording import NumpyRecording, RecordingError, write_recording, open_recording

FS = 10_000.0


def _sine(frequency_hz, n_samples=20_000, amplitude=1.0):
    time_s = np.arange(n_samples) / FS
    return (amplitude * np.sin(2 * np.pi * frequency_hz * time_s))[:, None]  # (n_samples, 1)


def _test_signal(n_samples=12_000, n_channels=3, seed=0):
    """(n_samples, n_channels) float32 µV: noise, a slow wave, a common-mode hum and sharp spikes."""
    rng = np.random.default_rng(seed)
    traces = rng.normal(0, 10, (n_samples, n_channels))
    traces += 200 * np.sin(np.arange(n_samples) / 700)[:, None]
    traces += 20 * np.sin(2 * np.pi * 1000 * np.arange(n_samples) / FS)[:, None]
    traces[rng.integers(0, n_samples, 40), rng.integers(0, n_channels, 40)] -= 150
    return traces.astype(np.float32)


def test_default_freq_max():
    assert default_freq_max(30_000) == 6000
    assert default_freq_max(10_000) == 4500


def test_bandpass_removes_slow_waves_keeps_the_band_and_shifts_nothing():
    slow = bandpass_filter(_sine(5, amplitude=100) + 500, FS)
    assert np.abs(slow[2000:-2000]).max() < 0.5
    kept = bandpass_filter(_sine(1000), FS)
    assert kept.dtype == np.float32
    assert 0.95 < np.abs(kept[2000:-2000]).max() <= 1.01
    # Zero phase: a symmetric pulse stays centred where it was.
    pulse = np.zeros((2001, 1))
    pulse[995:1006, 0] = np.hanning(11)
    assert np.abs(bandpass_filter(pulse, FS)).argmax() == 1000


def test_bandpass_ends_have_no_transient():
    # An in-band sine through the very first and last samples keeps its amplitude.
    filtered = bandpass_filter(_sine(1000, n_samples=4000, amplitude=1.0), FS)
    np.testing.assert_allclose(filtered[:50, 0], _sine(1000, 50)[:, 0], atol=0.1)


@pytest.mark.parametrize("freq_min, freq_max, expected", [
    (300.0, 6000.0, r"300-6000 Hz is not possible at 10000 Hz.*< 5000 Hz"),
    (3000.0, 2000.0, r"0 < freq_min < freq_max"),
    (0.0, 2000.0, r"0 < freq_min"),
])
def test_impossible_bands_are_refused(freq_min, freq_max, expected):
    with pytest.raises(RecordingError, match=expected):
        bandpass_filter(np.zeros((100, 1)), FS, freq_min, freq_max)
    with pytest.raises(RecordingError, match=expected):
        PreprocessedRecording(NumpyRecording(np.zeros((100, 1), np.float32), FS), freq_min, freq_max)


def test_common_median_reference():
    one_channel = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(common_median_reference(one_channel), one_channel)
    rng = np.random.default_rng(0)
    own = rng.normal(0, 1, (500, 5))
    shared = 100 * np.sin(np.arange(500) / 10)[:, None]
    referenced = common_median_reference(own + shared)
    assert referenced.dtype == np.float32
    assert np.abs(referenced).max() < 5  # the shared 100 µV wave is gone
    np.testing.assert_allclose(np.median(referenced, axis=1), 0, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [37, 1000, 4999])
def test_chunked_preprocessing_matches_whole_array(chunk_size):
    traces = _test_signal()
    whole = common_median_reference(bandpass_filter(traces, FS))
    rec = PreprocessedRecording(NumpyRecording(traces, FS), common_reference=True)
    assert rec.common_reference and rec.margin == filter_margin(FS, 300.0, 4500.0)
    chunked = np.concatenate([block for _, _, block in rec.iter_chunks(chunk_size)])
    assert chunked.shape == whole.shape
    assert np.abs(chunked - whole).max() < 1e-5 * whole.std()


def test_chunked_preprocessing_matches_for_a_channel_subset_without_reference():
    traces = _test_signal()
    whole = bandpass_filter(traces, FS, 500.0, 3000.0)
    rec = PreprocessedRecording(NumpyRecording(traces, FS), 500.0, 3000.0, common_reference=False)
    block = rec.get_traces(2500, 2600, channels=[2, 0])
    assert np.abs(block - whole[2500:2600][:, [2, 0]]).max() < 1e-5 * whole.std()


def test_preprocessing_an_int16_file(tmp_path):
    traces = _test_signal(n_channels=2)
    path = write_recording(tmp_path / "rec.bin", traces, FS)
    rec = PreprocessedRecording(open_recording(path), common_reference=True)
    whole = common_median_reference(bandpass_filter(open_recording(path).get_traces(), FS))
    assert np.abs(rec.get_traces(3000, 3500) - whole[3000:3500]).max() < 1e-5 * whole.std()
    assert rec.source_dtype == np.int16 and rec.parent.path == path


def test_common_reference_is_automatic_on_probes_only():
    # On 2 channels the median reference makes them exact opposites, and on a
    # tetrode it eats the spikes every wire shares: it is for probes.
    for n_channels, expected in [(1, False), (2, False), (4, False), (8, True)]:
        rec = PreprocessedRecording(NumpyRecording(_test_signal(1000, n_channels), FS))
        assert rec.common_reference is expected, n_channels
    forced = PreprocessedRecording(NumpyRecording(_test_signal(1000, 2), FS), common_reference=True)
    assert "300-4500 Hz band-pass, common median reference" in repr(forced)


def test_noise_estimate_matches_true_sigma_despite_spikes():
    rng = np.random.default_rng(1)
    sigma = np.array([5.0, 10.0, 20.0])
    traces = rng.normal(0, 1, (200_000, 3)) * sigma
    traces[rng.integers(0, 200_000, 2000)] -= 200  # spikes barely move a median
    levels = estimate_noise_levels(NumpyRecording(traces.astype(np.float32), FS), chunk_duration_s=0.2)
    assert levels.dtype == np.float32 and levels.shape == (3,)
    np.testing.assert_allclose(levels, sigma, rtol=0.05)


def test_noise_estimate_reads_a_short_recording_whole_and_is_seeded():
    traces = np.random.default_rng(2).normal(0, 7, (3000, 1)).astype(np.float32)
    rec = NumpyRecording(traces, FS)
    whole = np.median(np.abs(traces - np.median(traces))) / 0.6745
    np.testing.assert_allclose(estimate_noise_levels(rec), [whole], rtol=1e-5)
    long = NumpyRecording(np.random.default_rng(3).normal(0, 7, (100_000, 1)).astype(np.float32), FS)
    first = estimate_noise_levels(long, n_chunks=3, chunk_duration_s=0.1, seed=5)
    assert first == estimate_noise_levels(long, n_chunks=3, chunk_duration_s=0.1, seed=5)
    assert first != estimate_noise_levels(long, n_chunks=3, chunk_duration_s=0.1, seed=6)


def test_noise_levels_of_a_preprocessed_recording_are_cached():
    rec = PreprocessedRecording(NumpyRecording(_test_signal(), FS))
    assert rec.noise_levels is rec.noise_levels
    np.testing.assert_array_equal(rec.noise_levels, estimate_noise_levels(rec))


def test_many_channels_are_filtered_as_each_one_alone():
    """The band-pass runs a block of channels at a time (for speed): each channel's result is its own."""
    traces = np.random.default_rng(2).standard_normal((3000, 37)).astype(np.float32) * 50
    filtered = bandpass_filter(traces, 30_000.0)
    assert filtered.dtype == np.float32 and filtered.shape == traces.shape
    for channel in (0, 15, 16, 36):
        np.testing.assert_allclose(filtered[:, channel], bandpass_filter(traces[:, channel], 30_000.0), atol=1e-5)


@pytest.mark.parametrize("n_channels", [2, 5, 6, 384])
def test_medians_are_numpys(n_channels):
    from engine.pipeline.preprocessing import median_absolute_deviations, median_of_rows

    traces = np.random.default_rng(n_channels).standard_normal((1001, n_channels)).astype(np.float32)
    np.testing.assert_array_equal(median_of_rows(traces), np.median(traces, axis=1))
    np.testing.assert_allclose(median_absolute_deviations(traces),
                               np.median(np.abs(traces - np.median(traces, axis=0)), axis=0), rtol=1e-6)
    np.testing.assert_allclose(median_absolute_deviations(traces[:1000]),
                               np.median(np.abs(traces[:1000] - np.median(traces[:1000], axis=0)), axis=0), rtol=1e-6)


@pytest.mark.parametrize("n_snippets", [3, 300, 301])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_median_snippet_is_numpys(n_snippets, dtype):
    from engine.pipeline.preprocessing import median_of_columns

    snippets = np.random.default_rng(n_snippets).standard_normal((n_snippets, 90, 7)).astype(dtype)
    median = median_of_columns(snippets)
    assert median.shape == (90, 7) and median.dtype == dtype
    np.testing.assert_array_equal(median, np.median(snippets, axis=0))
    np.testing.assert_array_equal(median_of_columns(snippets[:, 30:60]), np.median(snippets[:, 30:60], axis=0))

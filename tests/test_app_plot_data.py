"""The min/max envelope and channel stacking behind the Traces, Codes and Filters views."""

from __future__ import annotations

import numpy as np

from app.plot_data import minmax_envelope, read_envelope, stack_channels
from engine.io.recording import NumpyRecording


def test_envelope_keeps_every_extreme_and_bounds_the_points():
    values = np.random.default_rng(1).standard_normal((100_003, 3)).astype(np.float32)
    values[54_321, 1] = 40.0  # one spike that decimation would likely skip
    index, reduced = minmax_envelope(values, 2000)
    assert len(index) <= 2000 and reduced.shape[1] == 3
    np.testing.assert_array_equal(reduced.max(axis=0), values.max(axis=0))
    np.testing.assert_array_equal(reduced.min(axis=0), values.min(axis=0))
    assert np.all(np.diff(index) > 0) and index[-1] < len(values)


def test_short_windows_are_drawn_sample_by_sample():
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    index, reduced = minmax_envelope(values, 100)
    np.testing.assert_array_equal(index, np.arange(6))
    assert reduced is values


def test_reading_in_chunks_gives_the_same_envelope_as_reading_at_once():
    traces = np.random.default_rng(2).standard_normal((250_000, 4)).astype(np.float32)
    recording = NumpyRecording(traces, 30_000.0)
    start, stop = 1_234, 240_000
    whole = minmax_envelope(traces[start:stop], 3000)
    chunked = read_envelope(recording, start, stop, 3000, chunk_values=50_000)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_stacked_channels_are_one_curve_broken_between_channels():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=np.float32)
    xs, ys, connect = stack_channels(np.arange(3.0), values, offsets=np.array([0.0, -100.0]), scale=2.0)
    np.testing.assert_array_equal(xs, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(ys, [2, 4, 6, -80, -60, -40])
    np.testing.assert_array_equal(connect, [True, True, False, True, True, False])


def test_laying_out_channels_puts_each_snippet_at_its_channel_place():
    from app.plot_data import lay_out_channels

    values = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # 2 snippets, 3 samples, 2 channels
    xs, ys, connect = lay_out_channels(np.array([0.0, 1.0, 2.0]), values, np.array([0.0, 10.0]), np.array([100.0, 200.0]))
    # Segment order: snippet 0 channel 0, snippet 0 channel 1, snippet 1 channel 0, ...
    np.testing.assert_array_equal(xs[3:6], [10.0, 11.0, 12.0])
    np.testing.assert_array_equal(ys[3:6], values[0, :, 1] + 200.0)
    np.testing.assert_array_equal(ys[6:9], values[1, :, 0] + 100.0)
    assert connect.tolist() == [True, True, False] * 4

"""Probe geometry: neighbourhoods by distance, and positions that cannot describe a probe."""

import numpy as np
import pytest

from engine.io.geometry import GeometryError, channel_neighbourhoods, linear_positions
from engine.io.recording import NumpyRecording, RecordingError


def test_neighbourhoods_follow_the_distance_on_a_two_column_probe():
    # Two columns 32 µm apart, 20 µm pitch (Neuropixels-like).
    positions = np.array([[0.0, 20.0 * (i // 2)] if i % 2 == 0 else [32.0, 20.0 * (i // 2)] for i in range(12)])
    neighbours = channel_neighbourhoods(positions, radius_um=45.0)
    assert neighbours.shape == (12, 12) and np.all(np.diag(neighbours))
    assert np.array_equal(neighbours, neighbours.T)
    assert neighbours[0, 1]  # across the columns, 32 µm
    assert neighbours[0, 4] and not neighbours[0, 6]  # 40 µm yes, 60 µm no


def test_a_radius_that_isolates_a_channel_names_the_distance_and_the_fix():
    with pytest.raises(GeometryError, match=r"radius of 10 µm.*nearest is 20\.0 µm.*at least 20 µm"):
        channel_neighbourhoods(linear_positions(4), radius_um=10.0)


def test_duplicated_positions_are_refused():
    positions = linear_positions(4)
    positions[3] = positions[1]
    with pytest.raises(GeometryError, match="1 and 3"):
        channel_neighbourhoods(positions)
    with pytest.raises(RecordingError, match="1 and 3"):
        NumpyRecording(np.zeros((100, 4), np.float32), 30_000.0, channel_positions=positions)


def test_nan_positions_are_refused():
    positions = linear_positions(3)
    positions[2, 0] = np.nan
    with pytest.raises(RecordingError, match="NaN"):
        NumpyRecording(np.zeros((100, 3), np.float32), 30_000.0, channel_positions=positions)

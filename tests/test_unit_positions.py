"""Unit positions on the probe and the channels around them (engine, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.curation.unit_positions import neighbourhood, unit_positions


def two_column_probe(n_channels: int = 64, pitch_um: float = 20.0) -> np.ndarray:
    rows = np.arange(n_channels) // 2
    return np.column_stack([np.where(np.arange(n_channels) % 2, 32.0, 0.0), rows * pitch_um])


def spike_template(peak_to_peak_per_channel: np.ndarray, n_taps: int = 30) -> np.ndarray:
    shape = -np.exp(-0.5 * ((np.arange(n_taps) - 10) / 2.0) ** 2)  # ptp 1
    return shape[:, None] * peak_to_peak_per_channel[None, :]


def test_a_unit_sits_at_the_amplitude_weighted_centre_of_its_channels():
    positions = two_column_probe()
    amplitudes = np.zeros(64)
    amplitudes[[20, 22]] = [300.0, 100.0]  # same column, y 200 and 220 µm
    templates = spike_template(amplitudes)[None]
    assert unit_positions(templates, positions)[0] == pytest.approx([0.0, 205.0])


def test_far_channels_do_not_pull_the_position():
    positions = two_column_probe()
    amplitudes = np.full(64, 5.0)  # noise everywhere, up to 630 µm away
    amplitudes[10] = 200.0
    position = unit_positions(spike_template(amplitudes)[None], positions)[0]
    # Only the channels within 100 µm count: the position stays near channel 10 (y = 100).
    assert abs(position[1] - 100.0) < 10.0
    everywhere = unit_positions(spike_template(amplitudes)[None], positions, radius_um=1e6)[0]
    assert abs(everywhere[1] - 100.0) > 50.0, "without the radius the noise would pull it to the middle"


def test_a_flat_template_sits_on_a_channel_and_bad_shapes_are_named():
    positions = two_column_probe()
    assert unit_positions(np.zeros((1, 30, 64)), positions)[0] == pytest.approx(positions[0])
    assert unit_positions(np.zeros((0, 30, 64)), positions).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\(64, 2\)"):
        unit_positions(np.zeros((1, 30, 64)), positions[:10])


def test_the_neighbourhood_is_the_nearest_channels_within_the_radius():
    positions = two_column_probe()
    channels = neighbourhood(positions, 30, radius_um=45.0, max_channels=16)
    assert channels[0] == 30
    distances = np.linalg.norm(positions[channels] - positions[30], axis=1)
    assert np.all(distances <= 45.0) and np.all(np.diff(distances) >= 0)
    # Every channel within the radius is there (4 rows up and down in the same column reach 40 µm).
    assert set(channels.tolist()) == set(np.flatnonzero(np.linalg.norm(positions - positions[30], axis=1) <= 45.0).tolist())
    assert len(neighbourhood(positions, 30, radius_um=1000.0, max_channels=16)) == 16

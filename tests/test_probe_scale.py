"""A probe, not a tetrode: filters live on neighbourhoods, the initial dictionary is clustered per channel."""

import numpy as np
import pytest

from engine.evaluation.scoring import compare_to_ground_truth
from engine.evaluation.simulator import simulate
from engine.io.geometry import GeometryError, linear_positions
from engine.io.recording import NumpyRecording
from engine.pipeline.params import FOOTPRINT_MAX_RADIUS_FACTOR
from engine.pipeline.run import SortPipeline
from engine.pipeline.training import TrainingConfig


@pytest.fixture(scope="module")
def probe_recording():
    positions = linear_positions(16)  # 20 µm pitch: 300 µm of probe
    traces, truth = simulate(duration_s=10.0, n_units=5, sampling_rate=10_000.0, n_channels=16,
                             channel_positions=positions, seed=11, firing_rates=20.0)
    return NumpyRecording(traces, 10_000.0, channel_positions=positions), truth


@pytest.mark.slow
def test_a_probe_is_sorted_with_filters_on_their_neighbourhoods(probe_recording):
    recording, truth = probe_recording
    config = TrainingConfig(n_iterations=40, n_epochs=0.2, batch_size=4, window_ms=100.0, radius_um=60.0)
    pipeline = SortPipeline(recording, config)
    pipeline.prepare()
    filters = pipeline.model.filters.detach().numpy()  # (n_filters, n_channels, n_taps)
    mask = pipeline.model.channel_mask.numpy() > 0  # (n_filters, n_channels)
    main = np.linalg.norm(filters, axis=2).argmax(axis=1)
    # Each filter has its neighbourhood, and beyond it only channels where its neuron is still big,
    # within FOOTPRINT_MAX_RADIUS_FACTOR radii (engine/pipeline/footprint.py).
    assert np.all(mask[pipeline.neighbourhoods[main]])
    distance = np.abs(recording.channel_positions[main, 1][:, None] - recording.channel_positions[None, :, 1])
    assert np.all(distance[mask] <= FOOTPRINT_MAX_RADIUS_FACTOR * config.radius_um)
    assert np.all(filters[~mask] == 0)
    assert (~mask).any()  # 60 µm on a 300 µm probe: every filter leaves channels out
    pipeline.train()
    filters = pipeline.model.filters.detach().numpy()
    assert np.all(filters[~mask] == 0)  # training keeps them local
    # A saved dictionary, opened again, keeps each filter's channels.
    reopened = SortPipeline(recording, config)
    reopened.prepare(initial_dictionary=filters)
    assert np.array_equal(reopened.model.channel_mask.numpy() > 0, mask | np.any(filters != 0, axis=2))
    assert np.all(np.any(filters != 0, axis=2) <= mask)
    sorting = pipeline.sort()
    comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, sorting.spike_times,
                                         sorting.spike_units, recording.sampling_rate)
    assert comparison.n_well_detected >= 3, comparison.accuracy


def test_a_radius_leaving_a_channel_alone_is_refused_before_any_work(probe_recording):
    recording, _ = probe_recording
    with pytest.raises(GeometryError, match="at least 20 µm"):
        SortPipeline(recording, TrainingConfig(radius_um=5.0))


def test_spikes_at_once_on_far_apart_channels_are_all_detected():
    """Local detection: a big spike hides a smaller one only on its own neighbourhood."""
    from engine.pipeline.initialization import detect_peaks, detect_peaks_locally

    signal = np.zeros((8, 200), dtype=np.float32)
    signal[0, 100] = -30.0  # big spike on channel 0
    signal[1, 101] = -20.0  # its own footprint on the neighbouring channel: not a second spike
    signal[7, 102] = -8.0   # a smaller neuron far away on the probe, at the same moment
    neighbourhoods = np.abs(np.subtract.outer(np.arange(8), np.arange(8))) <= 2
    times, channels = detect_peaks_locally(signal, 5.0, 10, neighbourhoods)
    assert list(zip(times.tolist(), channels.tolist())) == [(100, 0), (102, 7)]
    global_times, _ = detect_peaks(signal, 5.0, 10)
    assert global_times.tolist() == [100]  # the probe-wide dead time loses the far spike

"""Flat channels (engine/pipeline/bad_channels.py): found, filled from their neighbours on every read, carried
to a cluster's workers, refused when every channel is flat, and no longer able to wreck a sort."""

import numpy as np
import pytest

from engine.evaluation.scoring import compare_to_ground_truth
from engine.evaluation.simulator import simulate
from engine.io.geometry import linear_positions
from engine.io.recording import NumpyRecording, RecordingError
from engine.pipeline.bad_channels import FLAT_FRACTION, FlatChannelsFilled, find_flat_channels, with_flat_channels_filled
from engine.pipeline.preprocessing import PreprocessedRecording

RATE = 10_000.0


def noise_with_flat_channels(flat, n_channels: int = 16, seconds: float = 3.0) -> NumpyRecording:
    rng = np.random.default_rng(0)
    traces = 10.0 * rng.standard_normal((int(seconds * RATE), n_channels)).astype(np.float32)
    traces[:, 5] *= 0.3  # quieter, but recording: not flat
    for channel in flat:
        traces[:, channel] = 0.0
    if flat:
        traces[:, flat[-1]] = 250.0  # a constant offset is flat too once band-passed
    return NumpyRecording(traces, RATE, channel_positions=linear_positions(n_channels))


def test_flat_channels_are_found_and_filled_from_their_neighbours_on_every_read():
    recording = noise_with_flat_channels([0, 9])
    flat = find_flat_channels(recording)
    assert flat.channels.tolist() == [0, 9]
    assert flat.noise_uv[5] > FLAT_FRACTION * np.median(flat.noise_uv)
    assert "2 flat channels (0, 9" in flat.describe()
    assert not np.isin(flat.sources, flat.channels).any()
    np.testing.assert_allclose(flat.weights.sum(axis=0), 1.0, atol=1e-5)  # a copy of the neighbours, not faded
    filled, found = with_flat_channels_filled(recording)
    assert isinstance(filled, FlatChannelsFilled) and found.channels.tolist() == [0, 9]
    whole = filled.get_traces(1000, 1500)
    original = recording.get_traces(1000, 1500)
    kept = np.setdiff1d(np.arange(16), [0, 9])
    np.testing.assert_array_equal(whole[:, kept], original[:, kept])
    # Channel 9 is mostly its two neighbours; channel 0 (the end) mostly channel 1.
    expected_9 = original[:, flat.sources] @ flat.weights[:, 1]
    np.testing.assert_allclose(whole[:, 9], expected_9, rtol=1e-5, atol=1e-4)
    assert np.corrcoef(whole[:, 9], original[:, 8] + original[:, 10])[0, 1] > 0.9
    assert np.corrcoef(whole[:, 0], original[:, 1])[0, 1] > 0.9
    # A few channels read alone agree with the whole read.
    np.testing.assert_allclose(filled.get_traces(1000, 1500, [9, 3, 0]), whole[:, [9, 3, 0]], rtol=1e-6)
    # The common median reference is taken over the working channels only: a fill would count its
    # neighbours twice.
    referenced = PreprocessedRecording(filled, common_reference=True)
    assert referenced.reference_channels.tolist() == kept.tolist()
    band = referenced.band_passed(1000, 1500, np.arange(16))
    np.testing.assert_allclose(referenced.get_traces(1000, 1500), band - np.median(band[:, kept], axis=1)[:, None],
                               atol=1e-3)
    # A preprocessed recording is filled underneath and preprocessed as it was.
    preprocessed = PreprocessedRecording(recording, freq_min=300.0, common_reference=False)
    again, _ = with_flat_channels_filled(preprocessed)
    assert isinstance(again, PreprocessedRecording) and isinstance(again.parent, FlatChannelsFilled)
    assert (again.freq_min, again.freq_max, again.common_reference) == (300.0, preprocessed.freq_max, False)


def test_nothing_flat_leaves_the_recording_as_it_was_and_all_flat_is_refused():
    rng = np.random.default_rng(1)
    working = NumpyRecording(rng.standard_normal((20_000, 8)).astype(np.float32), RATE)
    filled, flat = with_flat_channels_filled(working)
    assert filled is working and len(flat.channels) == 0 and flat.describe() == "no flat channel"
    dead = NumpyRecording(np.full((20_000, 8), 3.0, np.float32), RATE)
    with pytest.raises(RecordingError, match=r"every one of the 8 channels is flat.*--n-channels"):
        find_flat_channels(dead)


def test_a_clusters_workers_read_the_flat_channels_filled(tmp_path):
    from engine.pipeline.distributed import RecordingSource

    recording = noise_with_flat_channels([0, 9])
    path = tmp_path / "traces.npy"
    np.save(path, recording.get_traces())
    on_file = NumpyRecording(np.load(path, mmap_mode="r"), RATE, path=path, channel_positions=linear_positions(16))
    filled, _ = with_flat_channels_filled(on_file)
    client = PreprocessedRecording(filled)
    source = RecordingSource.of(client)
    assert source.flat_channels is not None and list(source.flat_channels[0]) == [0, 9]
    worker = source._open_uncached()
    np.testing.assert_allclose(worker.get_traces(2000, 2600), client.get_traces(2000, 2600), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_a_probe_with_dead_channels_sorts_as_well_as_without_them():
    # Measured before the fill: these four channels zeroed sorted 0.000 (the median reference left on a
    # flat channel, scaled to noise level), and filled but still in the reference median 0.19.
    from engine.pipeline.run import run_sort
    from engine.pipeline.training import TrainingConfig

    rate, n_channels = 30_000.0, 16
    positions = linear_positions(n_channels)
    traces, truth = simulate(duration_s=20.0, n_units=8, sampling_rate=rate, n_channels=n_channels,
                             channel_positions=positions, seed=3, firing_rates=10.0)
    accuracies = []
    for dead in ([], [0, 1, 14, 15]):
        damaged = traces.copy()
        damaged[:, dead] = 0.0
        sorting, pipeline = run_sort(NumpyRecording(damaged, rate, channel_positions=positions),
                                     TrainingConfig(whiten=True))
        assert pipeline.flat_channels.channels.tolist() == dead
        assert pipeline.recording_notes() == ([pipeline.flat_channels.describe()] if dead else [])
        comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, sorting.spike_times,
                                             sorting.spike_units, rate)
        accuracies.append(float(np.mean(comparison.accuracy)))
    assert accuracies[1] >= accuracies[0] - 0.05, accuracies


def test_another_recording_sorted_with_a_learned_dictionary_has_its_own_flat_channels_filled():
    from engine.pipeline.run import SortPipeline
    from engine.pipeline.training import TrainingConfig

    pipeline = SortPipeline(noise_with_flat_channels([]), TrainingConfig(whiten=False))
    assert len(pipeline.flat_channels.channels) == 0
    other = noise_with_flat_channels([4, 12])
    target, noise = pipeline._sorting_target(other)  # what sort(recording=other) reads
    assert isinstance(target.parent, FlatChannelsFilled) and target.parent.flat.channels.tolist() == [4, 12]
    assert noise.min() > 0.1 * np.median(noise)  # nothing left flat to be scaled up

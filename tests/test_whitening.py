"""Spatial whitening: the matrices, the whitened reads, and a sort whose outputs stay in the recording's µV."""

import numpy as np
import pytest

from engine.evaluation.scoring import compare_to_ground_truth
from engine.evaluation.simulator import simulate
from engine.io.geometry import linear_positions
from engine.io.recording import NumpyRecording
from engine.pipeline.distributed import RecordingSource
from engine.pipeline.preprocessing import PreprocessedRecording, common_median_reference
from engine.pipeline.run import SortPipeline
from engine.pipeline.training import ConfigError, TrainingConfig
from engine.pipeline.sorting import Sorting
from engine.pipeline.whitening import (WHITENING_MAX_CHANNELS, WHITENING_MIN_CHANNELS, WHITENING_MIN_DURATION_S,
                                       WhitenedRecording,
                                       estimate_whitening, local_whitening, unwhitened_sorting, whitening_matrices,
                                       whitens)


def correlated_covariance(n_channels: int, seed: int = 0) -> np.ndarray:
    """A covariance dominated by one direction shared by every channel, as a probe's big spikes make it."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=n_channels)
    return 50.0 * np.outer(shared, shared) + np.diag(rng.uniform(0.5, 2.0, n_channels))


def test_the_whitening_turns_down_the_largest_direction_and_its_inverse_undoes_it():
    covariance = correlated_covariance(12)
    whitening, unwhitening = whitening_matrices(covariance, regularisation=3.0)
    np.testing.assert_allclose(whitening @ unwhitening, np.eye(12), atol=1e-9)
    np.testing.assert_allclose(whitening, whitening.T, atol=1e-12)
    before = np.linalg.eigvalsh(covariance)
    after = np.linalg.eigvalsh(whitening @ covariance @ whitening.T)
    # The shared direction weighs far less against the others: the spread of the variances shrinks
    # four-fold and more, the small directions keeping their order (regularised, not flattened).
    assert before[-1] / before[0] > 100
    assert after[-1] / after[0] < (before[-1] / before[0]) / 4
    assert np.all(np.diff(after) >= 0) and after[-1] / after[0] > 2
    # A regulariser of 0 is the full ZCA: the whitened covariance is the mean eigenvalue times the identity.
    full, _ = whitening_matrices(covariance, regularisation=0.0)
    np.testing.assert_allclose(full @ covariance @ full.T, before.mean() * np.eye(12), rtol=1e-6, atol=1e-6)


def test_probes_are_whitened_by_default_and_tetrodes_neuropixels_and_short_recordings_are_not():
    long = WHITENING_MIN_DURATION_S
    assert not whitens(4, long, None)
    assert whitens(WHITENING_MIN_CHANNELS, long, None) and whitens(32, 600.0, None)
    assert whitens(WHITENING_MAX_CHANNELS, long, None)
    assert not whitens(WHITENING_MAX_CHANNELS + 1, long, None) and not whitens(384, long, None)
    assert not whitens(32, 10.0, None) and whitens(32, 60.0, None)  # the module's docstring: 10-s probes lost neurons
    assert not whitens(16, 600.0, None)  # SpikeInterface's 16-channel probes lost a neuron on 2 of 4
    assert whitens(4, 10.0, True) and not whitens(32, long, False)
    assert not whitens(1, long, True)  # one channel has nothing to decorrelate
    with pytest.raises(ConfigError, match="whiten must be True, False or None"):
        TrainingConfig(whiten="yes").validate()


@pytest.fixture(scope="module")
def probe():
    positions = linear_positions(16)
    # 16 channels: whitened when asked (the automatic choice starts at WHITENING_MIN_CHANNELS).
    traces, truth = simulate(duration_s=120.0, n_units=5, sampling_rate=10_000.0, n_channels=16,
                             channel_positions=positions, seed=11, firing_rates=20.0)
    return NumpyRecording(traces, 10_000.0, channel_positions=positions), truth


def test_a_whitened_recording_reads_the_band_passed_channels_mixed_then_common_referenced(probe):
    recording, _ = probe
    preprocessed = PreprocessedRecording(recording)
    assert preprocessed.common_reference  # 16 channels
    whitened = WhitenedRecording(preprocessed, *estimate_whitening(preprocessed))
    every = np.arange(16)
    band_passed = preprocessed.band_passed(2_000, 5_000, every)
    mixed = band_passed @ whitened.whitening.T
    np.testing.assert_allclose(whitened.get_traces(2_000, 5_000), common_median_reference(mixed), atol=1e-3)
    # Any channels asked for are those of the whole mix, not a mix of those channels alone.
    np.testing.assert_allclose(whitened.get_traces(2_000, 5_000, [3, 9]), common_median_reference(mixed)[:, [3, 9]],
                               atol=1e-3)
    np.testing.assert_allclose(whitened.band_passed(2_000, 5_000, np.array([5])), mixed[:, [5]], atol=1e-3)
    snippets = whitened.snippets(np.array([2_000, 3_000]), 40, np.array([0, 7]))
    assert snippets.shape == (2, 40, 2)
    np.testing.assert_allclose(snippets[1], mixed[1_000:1_040][:, [0, 7]], atol=0.05 * np.abs(mixed).max())
    # What the sort reads is decorrelated: neighbouring channels share far less than before.
    def neighbour_correlation(traces):
        return float(np.mean([np.corrcoef(traces[:, c], traces[:, c + 1])[0, 1] for c in range(15)]))
    assert neighbour_correlation(mixed) < 0.6 * neighbour_correlation(band_passed)
    np.testing.assert_allclose(whitened.unwhiten(whitened.whiten(band_passed[:50])), band_passed[:50], atol=1e-2)


def test_a_cluster_worker_reopens_the_whitened_recording_the_client_sorts(probe, tmp_path):
    recording, _ = probe
    path = tmp_path / "probe.npy"
    np.save(path, recording.get_traces())
    from engine.io.recording import open_recording

    preprocessed = PreprocessedRecording(open_recording(path, sampling_rate=10_000.0))
    whitened = WhitenedRecording(preprocessed, *estimate_whitening(preprocessed))
    reopened = RecordingSource.of(whitened)._open_uncached()
    assert isinstance(reopened, WhitenedRecording)
    np.testing.assert_array_equal(reopened.whitening, whitened.whitening)
    np.testing.assert_array_equal(reopened.get_traces(100, 900), whitened.get_traces(100, 900))


@pytest.mark.slow
def test_a_whitened_sort_finds_the_units_and_gives_templates_and_traces_in_the_recordings_microvolts(probe):
    recording, truth = probe
    config = TrainingConfig(n_iterations=40, n_epochs=0.2, batch_size=4, window_ms=100.0, radius_um=60.0,
                            whiten=True)
    pipeline = SortPipeline(recording, config)
    assert isinstance(pipeline.recording, WhitenedRecording)
    assert not isinstance(pipeline.preprocessed, WhitenedRecording)
    pipeline.prepare()
    pipeline.train()
    sorting = pipeline.sort()
    comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, sorting.spike_times,
                                         sorting.spike_units, recording.sampling_rate)
    assert comparison.n_well_detected >= 3, comparison.accuracy
    # Each template is its unit's mean spike in the band-passed recording (not whitened): measured there.
    preprocessed = pipeline.preprocessed
    n_taps = sorting.templates.shape[1]
    matched = 0
    for unit in range(len(sorting.templates)):
        times = sorting.spike_times[sorting.spike_units == unit]
        starts = times - sorting.template_peak_taps[unit]
        starts = starts[(starts >= 0) & (starts + n_taps <= recording.n_samples)][:200]
        if len(starts) < 20:
            continue
        mean = preprocessed.snippets(starts, n_taps, np.arange(16)).mean(axis=0)
        template = sorting.templates[unit]
        similarity = np.sum(mean * template) / (np.linalg.norm(mean) * np.linalg.norm(template))
        matched += similarity > 0.9  # (a residual unit's template is no spike's mean)
    assert matched >= 3
    # The live views draw the recording as the person sees it, and the reconstruction in the same µV.
    window = pipeline.reconstruct(1_000, 3_000)
    np.testing.assert_array_equal(window.traces, preprocessed.get_traces(1_000, 3_000))
    residual = np.linalg.norm(window.traces - window.reconstruction)
    assert residual < 0.9 * np.linalg.norm(window.traces)


def test_a_whitened_sortings_templates_are_unwhitened_and_its_amplitudes_follow_their_peaks():
    covariance = correlated_covariance(6)
    whitening, unwhitening = whitening_matrices(covariance)
    recording = WhitenedRecording(NumpyRecording(np.zeros((100, 6), np.float32), 10_000.0), whitening, unwhitening)
    rng = np.random.default_rng(1)
    recorded = rng.normal(size=(2, 20, 6)).astype(np.float32)  # two units' templates as recorded
    recorded[:, 8, 2] = [-30.0, -12.0]  # each one's peak: tap 8 of channel 2
    seen = recording.whiten(recorded)
    sorting = Sorting(spike_times=np.array([10, 40, 70]), spike_units=np.array([0, 1, 0]),
                      amplitudes=np.array([5.0, 2.0, 6.0]), templates=seen, sampling_rate=10_000.0,
                      template_peak_taps=np.array([8, 8]))
    result = unwhitened_sorting(sorting, recording)
    np.testing.assert_allclose(result.templates, recorded, atol=1e-4)
    # Each spike's amplitude is rescaled by its unit's peak as recorded over its peak as seen.
    def peak(shapes, unit):
        return abs(shapes[unit, 8, np.ptp(shapes[unit], axis=0).argmax()])
    ratio = np.array([peak(recorded, 0) / peak(seen, 0), peak(recorded, 1) / peak(seen, 1)])
    np.testing.assert_allclose(result.amplitudes, sorting.amplitudes * ratio[[0, 1, 0]], rtol=1e-4)
    np.testing.assert_array_equal(result.spike_times, sorting.spike_times)
    np.testing.assert_array_equal(result.template_peak_taps, sorting.template_peak_taps)


def test_a_sort_told_not_to_whiten_reads_the_preprocessed_recording(probe):
    recording, _ = probe
    pipeline = SortPipeline(recording, TrainingConfig(whiten=False))
    assert pipeline.recording is pipeline.preprocessed
    assert isinstance(SortPipeline(recording, TrainingConfig(whiten=True)).recording, WhitenedRecording)


def test_a_checkpoint_reopens_in_the_space_its_dictionary_was_learned_in(probe, tmp_path):
    import torch

    from engine.io.checkpoints import load_checkpoint, save_checkpoint

    recording, _ = probe
    config = TrainingConfig(n_iterations=10, n_epochs=0.05, batch_size=4, window_ms=100.0, radius_um=60.0,
                            whiten=True)
    pipeline = SortPipeline(recording, config)
    pipeline.prepare()
    path = tmp_path / "model.pt"
    save_checkpoint(pipeline, path)
    reopened = load_checkpoint(path, recording)
    assert isinstance(reopened.recording, WhitenedRecording)
    np.testing.assert_array_equal(reopened.recording.whitening, pipeline.recording.whitening)
    # The same dictionary, to float32's last bits (the model scales the filters it is given to unit norm again).
    np.testing.assert_allclose(reopened.filters(), pipeline.filters(), rtol=0, atol=1e-6)
    # Saved before whitening existed (no "whiten" in its config): its dictionary was learned unwhitened.
    state = torch.load(path, weights_only=False)
    del state["config"]["whiten"]
    torch.save(state, tmp_path / "old.pt")
    assert not isinstance(load_checkpoint(tmp_path / "old.pt", recording).recording, WhitenedRecording)
    # The views draw a whitened dictionary as recorded: unit norm, and whitened again it is the filter's shape.
    shown = pipeline.shown(pipeline.filters())
    np.testing.assert_allclose(np.linalg.norm(shown, axis=(1, 2)), 1.0, rtol=1e-5)
    again = pipeline.recording.whiten(shown * pipeline.preprocessed.noise_levels) / pipeline.noise_levels
    cosine = np.sum(again * pipeline.filters(), axis=(1, 2)) / np.linalg.norm(again, axis=(1, 2))
    np.testing.assert_allclose(cosine, 1.0, atol=1e-4)


def test_on_a_long_probe_each_channel_is_whitened_with_its_nearest_channels_only():
    positions = linear_positions(40)
    covariance = correlated_covariance(40, seed=2)
    whitening, unwhitening = local_whitening(covariance, positions, n_nearest=8)
    np.testing.assert_allclose(whitening @ unwhitening, np.eye(40), atol=1e-8)
    for channel in (0, 17, 39):
        near = np.argsort(np.abs(positions[:, 1] - positions[channel, 1]), kind="stable")[:8]
        assert set(np.flatnonzero(whitening[channel])) == set(near.tolist())
        local, _ = whitening_matrices(covariance[np.ix_(near, near)])
        row = list(near).index(channel)
        np.testing.assert_allclose(whitening[channel, near], local[row], atol=1e-10)
    # With no more channels than the neighbourhood, it is the ZCA of the whole covariance.
    whole, _ = whitening_matrices(covariance[:8, :8])
    np.testing.assert_allclose(local_whitening(covariance[:8, :8], positions[:8], n_nearest=8)[0], whole)


def test_a_few_channels_snippets_read_only_the_channels_they_mix():
    positions = linear_positions(40)
    traces, _ = simulate(duration_s=2.0, n_units=3, sampling_rate=10_000.0, n_channels=40,
                         channel_positions=positions, seed=5, firing_rates=20.0)
    preprocessed = PreprocessedRecording(NumpyRecording(traces, 10_000.0, channel_positions=positions),
                                         common_reference=False)
    covariance = np.cov(preprocessed.get_traces(0, 10_000).T)
    whitened = WhitenedRecording(preprocessed, *local_whitening(covariance, positions, n_nearest=8))
    asked = []
    band_passed = preprocessed.band_passed

    def counted(start, stop, channels):
        asked.append(len(channels))
        return band_passed(start, stop, channels)

    preprocessed.band_passed = counted
    part = whitened.band_passed(1_000, 2_000, np.array([20]))
    assert asked == [8]
    everything = band_passed(1_000, 2_000, np.arange(40)) @ whitened.whitening.T
    np.testing.assert_allclose(part[:, 0], everything[:, 20], atol=1e-3)
    np.testing.assert_allclose(whitened.get_traces(1_000, 2_000, [20]), part, atol=1e-5)


def test_each_whitening_row_is_cut_to_the_channels_holding_nearly_all_of_it_and_unwhitened_exactly():
    from engine.pipeline.whitening import truncated_rows

    rng = np.random.default_rng(9)
    positions = linear_positions(32)
    # A probe whose channels share what is near: covariance falling with distance, plus noise.
    distance = np.abs(positions[:, None, 1] - positions[None, :, 1])
    covariance = np.exp(-distance / 40.0) + 0.3 * np.eye(32)
    whole, _ = whitening_matrices(covariance)
    cut, inverse = truncated_rows(whole, energy=0.9999)
    kept = np.count_nonzero(cut, axis=1)
    assert kept.max() < 32 and np.all(np.diag(cut) == np.diag(whole))  # each row keeps itself, not every channel
    held = (cut**2).sum(axis=1) / (whole**2).sum(axis=1)
    assert np.all(held >= 0.9999) and np.all(held <= 1.0)
    np.testing.assert_allclose(cut @ inverse, np.eye(32), atol=1e-9)  # the unwhitening is the cut one's inverse
    traces = rng.standard_normal((1000, 32))
    assert np.abs(traces @ cut.T - traces @ whole.T).max() < 0.05 * np.abs(traces @ whole.T).std()
    same, _ = truncated_rows(whole, energy=1.0)
    np.testing.assert_array_equal(same, whole)

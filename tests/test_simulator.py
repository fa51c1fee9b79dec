import itertools
import json
import os

import numpy as np
import pytest

from engine.evaluation import simulator
from engine.pipeline.preprocessing import bandpass_filter, filter_margin
from engine.io.recording import RecordingError, open_recording
from engine.evaluation.simulator import (
    DEMO,
    TETRODE,
    GroundTruth,
    demo_recording_path,
    simulate,
    tetrode_positions,
    write_simulation,
)


def _isolated(truth, gap):
    """(n_spikes,) bool: no other spike within `gap` samples either side."""
    times = truth.spike_times
    before = np.diff(times, prepend=-10**9)
    after = np.diff(times, append=10**9)
    return (before > gap) & (after > gap)


def _windows(traces, truth, unit):
    """(n_unit_spikes, n_taps, n_channels): the samples each spike of `unit` occupies."""
    n_taps = truth.waveforms.shape[1]
    onsets = truth.spike_times[truth.spike_units == unit] - truth.peak_taps[unit]
    return traces[onsets[:, None] + np.arange(n_taps)]


def test_noiseless_spike_times_are_the_extremum_on_the_main_channel():
    traces, truth = simulate(duration_s=10.0, n_units=3, noise_uv=0.0, lfp_uv=0.0, firing_rates=5.0, seed=3)
    n_taps = truth.waveforms.shape[1]
    isolated = _isolated(truth, n_taps)
    main = truth.main_channels()
    for unit in range(truth.n_units):
        mine = truth.spike_units == unit
        windows = _windows(traces, truth, unit)[isolated[mine]]
        assert len(windows) > 10
        # Exactly the unit's waveform, scaled by the spike's jitter, was added.
        scales = truth.amplitude_scales[mine][isolated[mine]]
        np.testing.assert_allclose(windows, scales[:, None, None] * truth.waveforms[unit], atol=1e-3)
        extremum_taps = np.abs(windows[:, :, main[unit]]).argmax(axis=1)
        assert np.all(extremum_taps == truth.peak_taps[unit])


def test_spike_times_stay_extrema_on_top_of_the_slow_wave_at_30khz():
    traces, truth = simulate(duration_s=5.0, n_units=2, sampling_rate=30_000.0, noise_uv=0.0,
                             firing_rates=5.0, seed=1)
    isolated = _isolated(truth, truth.waveforms.shape[1])
    for unit in range(truth.n_units):
        windows = _windows(traces, truth, unit)[isolated[truth.spike_units == unit]]
        main = truth.main_channels()[unit]
        assert np.all(np.abs(windows[:, :, main]).argmax(axis=1) == truth.peak_taps[unit])


def test_refractory_period_and_firing_rates():
    rates = [5.0, 20.0, 60.0]
    _, truth = simulate(duration_s=60.0, n_units=3, firing_rates=rates, refractory_ms=3.0, seed=2)
    refractory_samples = 30  # 3 ms at 10 kHz
    for unit, rate in enumerate(rates):
        times = truth.spike_times[truth.spike_units == unit]
        assert np.diff(times).min() >= refractory_samples
        assert abs(len(times) / 60.0 - rate) < 0.15 * rate
    assert np.all(np.diff(truth.spike_times) >= 0)


def test_units_overlap_each_other_at_the_default_rates():
    _, truth = simulate(duration_s=20.0)
    n_taps = truth.waveforms.shape[1]
    close = np.diff(truth.spike_times) < n_taps
    different_units = np.diff(truth.spike_units) != 0
    assert np.sum(close & different_units) > 50


def test_default_is_the_crsae_experiment():
    traces, truth = simulate(duration_s=2.0)
    assert traces.shape == (20_000, 1) and traces.dtype == np.float32
    assert truth.n_units == 3 and truth.sampling_rate == 10_000.0
    troughs = -truth.waveforms.min(axis=(1, 2))
    assert np.all((troughs >= 50) & (troughs <= 150))
    assert np.all(truth.waveforms.max(axis=(1, 2)) > 0)  # a positive lobe: biphasic or triphasic


def test_noise_level_and_slow_wave():
    traces, _ = simulate(duration_s=10.0, n_units=0, lfp_uv=0.0, noise_uv=10.0)
    assert abs(traces.std() - 10.0) < 0.3
    with_wave, _ = simulate(duration_s=10.0, n_units=0, lfp_uv=30.0, noise_uv=10.0)
    assert with_wave.std() > 15
    # The band-pass removes the slow wave: what is left is the (coloured) noise.
    filtered = bandpass_filter(with_wave, 10_000.0)[5000:-5000]
    assert 8.0 < filtered.std() < 10.0


def test_units_are_distinguishable_on_one_channel_after_the_band_pass():
    noise_uv = 10.0
    _, truth = simulate(duration_s=1.0, **{k: v for k, v in DEMO.items() if k != "duration_s"}, noise_uv=noise_uv)
    shapes = truth.bandpassed_waveforms(300.0, 4500.0)[:, :, 0]  # (3, n_taps) µV
    for first, second in itertools.combinations(range(3), 2):
        # Apart in µV (template matching) and in shape up to shift and scale (dictionary learning).
        assert np.linalg.norm(shapes[first] - shapes[second]) > 4 * noise_uv
        unit_a, unit_b = (shapes[u] / np.linalg.norm(shapes[u]) for u in (first, second))
        assert np.correlate(unit_a, unit_b, "full").max() < 0.95


def test_bandpassed_waveforms_match_an_isolated_filtered_spike():
    traces, truth = simulate(duration_s=5.0, n_units=1, firing_rates=2.0, noise_uv=0.0, lfp_uv=0.0,
                             amplitude_jitter=0.0)
    filtered = bandpass_filter(traces, truth.sampling_rate)
    margin = filter_margin(truth.sampling_rate, 300.0, 4500.0)
    isolated = _isolated(truth, 2 * margin + truth.waveforms.shape[1])
    windows = _windows(filtered, truth, 0)[isolated]
    assert len(windows) > 3
    np.testing.assert_allclose(windows, np.broadcast_to(truth.bandpassed_waveforms(), windows.shape), atol=1e-2)


def test_multichannel_amplitude_decays_with_distance_from_the_unit():
    _, truth = simulate(duration_s=1.0, n_units=6, n_channels=8, seed=4)
    for unit in range(truth.n_units):
        offsets = truth.channel_positions - truth.unit_positions[unit, :2]
        distance = np.hypot(*offsets.T)
        depth = -truth.waveforms[unit].min(axis=0)  # (n_channels,) trough depth µV
        assert depth.argmax() == distance.argmin()
        assert depth.argmin() == distance.argmax()
        assert depth.min() < 0.5 * depth.max()


def test_tetrode_preset_and_positions():
    positions = tetrode_positions()
    assert positions.shape == (4, 2)
    assert sorted(np.round(np.linalg.norm(positions[0] - positions[1:], axis=1), 1)) == [25.0, 25.0, 35.4]
    rates = np.asarray(TETRODE["firing_rates"])
    assert len(rates) == TETRODE["n_units"] and rates.min() >= 3 and rates.max() <= 20
    traces, truth = simulate(**{**TETRODE, "duration_s": 1.0})
    assert traces.shape == (30_000, 4) and truth.waveforms.shape == (8, 120, 4)


def test_deterministic_by_seed_and_shapes_independent_of_duration():
    first, truth = simulate(duration_s=1.0, seed=7)
    again, truth_again = simulate(duration_s=1.0, seed=7)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(truth.spike_times, truth_again.spike_times)
    other, _ = simulate(duration_s=1.0, seed=8)
    assert not np.array_equal(first, other)
    _, longer = simulate(duration_s=3.0, seed=7)
    np.testing.assert_array_equal(truth.waveforms, longer.waveforms)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(firing_rates=600.0), r"below 500 Hz \(1 / refractory period of 2 ms\)"),
    (dict(firing_rates=[1.0, 2.0]), "one number or 3"),
    (dict(duration_s=0.001), "not longer than one spike"),
    (dict(n_channels=2, channel_positions=np.zeros((3, 2))), r"shape \(2, 2\)"),
    (dict(noise_uv=-1.0), "must be >= 0"),
])
def test_bad_simulation_parameters(kwargs, expected):
    with pytest.raises(RecordingError, match=expected):
        simulate(**{"duration_s": 1.0, **kwargs})


def test_ground_truth_save_load_and_sorting(tmp_path):
    _, truth = simulate(duration_s=1.0, n_units=2, n_channels=3)
    folder = truth.save(tmp_path / "truth")
    loaded = GroundTruth.load(folder)
    for name in ("spike_times", "spike_units", "waveforms", "peak_taps", "amplitude_scales",
                 "channel_positions", "unit_positions"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(truth, name))
    assert loaded.sampling_rate == truth.sampling_rate
    assert json.loads((folder / "ground_truth.json").read_text())["n_spikes"] == truth.n_spikes

    sorting = truth.to_sorting()
    np.testing.assert_array_equal(sorting.template_peak_taps, truth.peak_taps)
    np.testing.assert_array_equal(sorting.main_channels(), truth.main_channels())
    assert np.all(sorting.amplitudes > 0)

    with pytest.raises(RecordingError, match="not a ground-truth folder"):
        GroundTruth.load(tmp_path)


def test_write_simulation_roundtrips_through_open_recording(tmp_path):
    paths = write_simulation(tmp_path / "sim", duration_s=2.0, n_channels=2, seed=5)
    traces, _ = simulate(duration_s=2.0, n_channels=2, seed=5)
    recording = open_recording(paths.recording)
    assert recording.dtype == np.int16 and recording.sampling_rate == 10_000.0
    assert np.abs(recording.get_traces() - traces).max() <= recording.gain_to_uv / 2 + 1e-3
    assert recording.gain_to_uv < 0.05  # quantisation far below the 10 µV noise
    truth = GroundTruth.load(paths.truth)
    assert truth.n_spikes > 0


def test_demo_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSORT_CACHE", str(tmp_path))
    path = demo_recording_path()
    assert path.parent == tmp_path / simulator.DEMO_FOLDER
    written_ns = path.stat().st_mtime_ns
    assert demo_recording_path() == path and path.stat().st_mtime_ns == written_ns
    assert os.listdir(tmp_path) == [simulator.DEMO_FOLDER]  # no staging folder left behind

    recording = open_recording(path)
    assert (recording.sampling_rate, recording.n_channels, recording.duration) == (10_000.0, 1, 120.0)
    assert GroundTruth.load(path.parent / "ground_truth").n_units == 3

    (path.parent / "ground_truth" / "ground_truth.json").unlink()  # damaged by hand
    assert demo_recording_path() == path
    assert (path.parent / "ground_truth" / "ground_truth.json").is_file()

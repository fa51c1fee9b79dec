"""Motion correction (engine/pipeline/motion.py): bad requests refused before any work, the drift undone in
the direction it happened, and nothing moved where there was none. Skipped without SpikeInterface."""

import numpy as np
import pytest

from engine.io.recording import NumpyRecording, RecordingError
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.pipeline.training import ConfigError, TrainingConfig

RATE = 30_000.0
PITCH = 20.0  # µm between the channels of the linear probe below
N_CHANNELS = 16


def linear_probe() -> np.ndarray:
    return np.column_stack([np.zeros(N_CHANNELS), PITCH * np.arange(N_CHANNELS)])


def constant_motion(displacement_um: float, seconds: float):
    """SpikeInterface's Motion: the whole probe displaced by `displacement_um` in every 1-s bin."""
    from spikeinterface.core.motion import Motion

    bins = np.arange(0.5, seconds, 1.0)
    return Motion([np.full((len(bins), 1), displacement_um)], [bins], np.array([PITCH * N_CHANNELS / 2]), direction="y")


def a_spike_on(channel: int, seconds: float = 4.0) -> PreprocessedRecording:
    """A recording of noise and one big 1-ms spike every 50 ms on `channel` alone (its neighbours at a third)."""
    rng = np.random.default_rng(0)
    traces = rng.standard_normal((int(seconds * RATE), N_CHANNELS)).astype(np.float32)
    shape = -100.0 * np.exp(-0.5 * ((np.arange(30) - 15) / 4.0) ** 2)
    for start in range(1000, len(traces) - 100, 1500):
        traces[start:start + 30, channel] += shape
        traces[start:start + 30, channel - 1] += shape / 3
        traces[start:start + 30, channel + 1] += shape / 3
    return PreprocessedRecording(NumpyRecording(traces, RATE, channel_positions=linear_probe()), common_reference=False)


def test_an_unknown_motion_word_and_a_probe_with_one_depth_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="motion must be one of off, rigid, nonrigid"):
        TrainingConfig(motion="sideways").validate()
    pytest.importorskip("spikeinterface.preprocessing")
    from engine.pipeline.motion import check_motion_correction

    flat = NumpyRecording(np.zeros((3000, 4), np.float32), RATE, channel_positions=[[0, 0], [20, 0], [40, 0], [60, 0]])
    with pytest.raises(RecordingError, match=r"all 4 channels sit at one depth.*--motion off"):
        check_motion_correction(flat, "rigid")
    check_motion_correction(flat, "off")  # nothing asked, nothing checked


def test_a_probe_displaced_by_one_channel_is_read_one_channel_back():
    # The probe displaced by one pitch all along (SpikeInterface's convention: a displacement d shows a
    # neuron d µm further along the probe than it is): a corrected channel reads the recording d µm further
    # on, so the spikes recorded on channel 8 sit on channel 7, the drift undone in the direction it went.
    pytest.importorskip("spikeinterface.preprocessing")
    from engine.pipeline.motion import MotionCorrectedRecording

    recording = a_spike_on(8)
    still = MotionCorrectedRecording(recording, constant_motion(0.0, recording.duration), "none")
    moved = MotionCorrectedRecording(recording, constant_motion(PITCH, recording.duration), "one channel")
    window = (1000, 1030)
    original = recording.get_traces(*window)
    np.testing.assert_allclose(still.get_traces(*window), original, atol=1e-3 * np.abs(original).max())
    corrected = moved.get_traces(*window)
    assert np.argmin(original.min(axis=0)) == 8
    assert np.argmin(corrected.min(axis=0)) == 7
    np.testing.assert_allclose(corrected[:, 7], original[:, 8], atol=0.05 * np.abs(original).max())
    # Snippets and band-passed reads of a few channels agree with the whole-probe read.
    np.testing.assert_allclose(moved.band_passed(*window, np.array([6, 7, 8])), corrected[:, 6:9], atol=0.01)
    np.testing.assert_allclose(moved.snippets(np.array([1000]), 30, np.array([7]))[0, :, 0], corrected[:, 7], atol=0.5)


def test_the_kernels_are_spikeinterfaces_kriging_and_channels_moved_off_the_probe_are_filled():
    # The engine inverts kriging's contact side once and computes only the columns a read asks for; each
    # must still be SpikeInterface's kernel (get_spatial_interpolation_kernel, extrapolating past the ends),
    # less the weights under WEIGHT_FLOOR, on a two-column probe drifting 13 µm.
    pytest.importorskip("spikeinterface.preprocessing")
    from spikeinterface.core.motion import Motion
    from spikeinterface.preprocessing import get_spatial_interpolation_kernel

    from engine.pipeline.kriging import WEIGHT_FLOOR
    from engine.pipeline.motion import MotionCorrectedRecording

    n_rows = 24
    positions = np.column_stack([np.tile([0.0, 32.0], n_rows), np.repeat(PITCH * np.arange(n_rows), 2)])
    rng = np.random.default_rng(1)
    traces = rng.standard_normal((int(2 * RATE), 2 * n_rows)).astype(np.float32)
    recording = PreprocessedRecording(NumpyRecording(traces, RATE, channel_positions=positions), common_reference=False)
    drift = Motion([np.array([[0.0, 0.0], [13.0, 13.0]])], [np.array([0.5, 1.5])], np.array([100.0, 400.0]),
                   direction="y")
    moved = MotionCorrectedRecording(recording, drift, "13 µm")
    every = np.arange(2 * n_rows)
    kernel = moved._weights(1, every)
    shifted = positions.copy()
    shifted[:, 1] += 13.0
    expected = get_spatial_interpolation_kernel(positions, shifted, method="kriging", sigma_um=20.0, p=1,
                                                force_extrapolate=True).astype(np.float64)
    kept = np.abs(expected) >= WEIGHT_FLOOR * np.abs(expected).max(axis=0, keepdims=True)
    # The top row, moved past the probe's end, is filled from the rows that stay on it (not faded, and out of
    # the reference's median); every other channel is read where the drift moved it, as SpikeInterface would.
    assert moved.moved_out.tolist() == [46, 47]
    assert not np.isin([46, 47], moved.reference_channels).any() and len(moved.reference_channels) == 46
    np.testing.assert_allclose(kernel[:, :46], np.where(kept, expected, 0.0)[:, :46], atol=1e-5)
    np.testing.assert_allclose(kernel[:, 46:].sum(axis=0), 1.0, atol=5e-3)
    assert np.all(expected[:, 46:].sum(axis=0) < 0.9)  # (SpikeInterface's extrapolation fades)
    assert np.count_nonzero(kernel) < 0.3 * kernel.size  # a few channels' reads need only a few channels
    # A few channels' columns alone are the same columns; the whole-probe read is the band-passed traces
    # times the kernel, and a few channels' read agrees with it.
    np.testing.assert_allclose(moved._weights(1, np.array([3, 47, 40])), kernel[:, [3, 47, 40]], atol=1e-6)
    window = (int(1.2 * RATE), int(1.2 * RATE) + 300)
    dense = recording.band_passed(*window, every) @ kernel
    np.testing.assert_allclose(moved.get_traces(*window), dense, atol=1e-4)
    np.testing.assert_allclose(moved.band_passed(*window, np.array([3, 47, 40])), dense[:, [3, 47, 40]], atol=1e-4)


def a_drifting_probe(seconds: float = 30.0) -> NumpyRecording:
    """SpikeInterface's drifting generator: 16 channels in two columns, 6 neurons, a ±15 µm zig-zag."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.generation import generate_drifting_recording

    probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=8, xpitch=32, ypitch=20)
    probe.set_device_channel_indices(np.arange(16))
    drift = dict(displacement_sampling_frequency=5.0, drift_start_um=[0, 15], drift_stop_um=[0, -15], drift_step_um=1,
                 motion_list=[dict(drift_mode="zigzag", non_rigid_gradient=None, t_start_drift=5.0,
                                   t_end_drift=None, period_s=20)])
    _, drifting, _ = generate_drifting_recording(num_units=6, duration=seconds, seed=1, probe=probe,
                                                 generate_displacement_vector_kwargs=drift)
    return NumpyRecording(np.ascontiguousarray(drifting.get_traces(), dtype=np.float32), RATE,
                          channel_positions=np.asarray(drifting.get_channel_locations())[:, :2])


def test_the_drift_estimated_twice_is_the_same_drift():
    """A sort is repeatable with motion correction too: the estimate draws nothing at random."""
    pytest.importorskip("spikeinterface.generation")
    from engine.pipeline.motion import estimate_motion

    recording = PreprocessedRecording(a_drifting_probe(20.0))
    first, second = (estimate_motion(recording, "nonrigid", n_jobs=n_jobs) for n_jobs in (1, 2))
    assert np.ptp(np.concatenate([np.ravel(d) for d in first.displacement])) > 5.0  # it found the drift
    for one, other in zip(first.displacement, second.displacement):
        np.testing.assert_array_equal(one, other)


@pytest.mark.slow
def test_a_sort_asked_to_correct_motion_estimates_it_first_and_sorts_through_it(capfd):
    pytest.importorskip("spikeinterface.generation")
    from spikeinterface.core import get_global_job_kwargs

    from engine.pipeline.motion import MotionCorrectedRecording
    from engine.pipeline.run import run_sort

    recording = a_drifting_probe()

    capfd.readouterr()
    progress_bars_before = get_global_job_kwargs()["progress_bar"]
    sorting, pipeline = run_sort(recording, TrainingConfig(motion="rigid", n_epochs=0.2))
    # SpikeInterface's own progress bars stay off the terminal, and its global setting is left as it was.
    assert "noise_level" not in capfd.readouterr().err
    assert get_global_job_kwargs()["progress_bar"] == progress_bars_before
    assert [cost.name for cost in pipeline.stage_log.costs][:3] == ["flat channels", "motion correction", "preprocessing"]
    assert isinstance(pipeline.preprocessed, MotionCorrectedRecording)
    assert "rigid motion correction" in pipeline.preprocessed.description
    assert sorting.n_units > 0 and sorting.n_spikes > 0

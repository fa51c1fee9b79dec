"""Through SpikeInterface (the `formats` extra): an NWB file sorted, and the adapter both ways.

Skipped when spikeinterface or pynwb is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.io.recording import open_recording
from format_files import write_nwb

TINY = dict(n_filters=4, n_iterations=10, batch_size=2, window_ms=50.0, n_epochs=0.1)
MICROVOLTS_PER_BIT = 0.195


def test_nwb_file_reads_with_its_rate_gain_and_positions(tmp_path):
    pytest.importorskip("spikeinterface.extractors")
    samples = np.random.default_rng(0).integers(-2000, 2000, size=(2000, 3)).astype(np.int16)
    positions = [[0, 0], [0, 20], [16, 40]]
    path = write_nwb(tmp_path / "session.nwb", samples, 20_000.0, MICROVOLTS_PER_BIT * 1e-6, positions)
    recording = open_recording(path)
    assert recording.sampling_rate == 20_000.0 and recording.n_channels == 3 and recording.n_samples == 2000
    np.testing.assert_allclose(recording.get_traces(7, 9), samples[7:9] * MICROVOLTS_PER_BIT, rtol=1e-5)
    np.testing.assert_allclose(recording.get_traces(7, 9, channels=[2])[:, 0], samples[7:9, 2] * MICROVOLTS_PER_BIT,
                               rtol=1e-5)
    np.testing.assert_array_equal(recording.channel_positions, positions)
    assert "NWB" in recording.describe()


@pytest.mark.slow
def test_an_nwb_file_is_sorted(tmp_path):
    pytest.importorskip("spikeinterface.extractors")
    from engine.evaluation.simulator import simulate
    from engine.sorter import CRsAESorter

    positions = np.array([[0, 0], [0, 25], [25, 0], [25, 25]], dtype=float)
    traces, truth = simulate(duration_s=4, n_units=2, sampling_rate=10_000.0, n_channels=4, firing_rates=20.0,
                             seed=3, channel_positions=positions)
    samples = np.rint(traces / MICROVOLTS_PER_BIT).astype(np.int16)
    path = write_nwb(tmp_path / "session.nwb", samples, 10_000.0, MICROVOLTS_PER_BIT * 1e-6, positions)
    sorting = CRsAESorter(**TINY).fit_predict(open_recording(path))
    assert sorting.n_units >= 1
    # Most spikes found lie within 1 ms of a true spike: the file was read in the right units and order.
    nearest = np.abs(truth.spike_times[np.clip(np.searchsorted(truth.spike_times, sorting.spike_times), 0,
                                                len(truth.spike_times) - 1)] - sorting.spike_times)
    assert np.mean(nearest <= 10) > 0.5


@pytest.mark.slow
def test_a_spikeinterface_recording_is_sorted_and_scored_as_a_base_sorting():
    si = pytest.importorskip("spikeinterface.core")
    comparison = pytest.importorskip("spikeinterface.comparison")
    from engine.io.spikeinterface_adapter import from_spikeinterface, to_spikeinterface_sorting
    from engine.sorter import CRsAESorter

    si_recording, si_truth = si.generate_ground_truth_recording(durations=[6.0], sampling_frequency=10_000.0,
                                                                num_channels=4, num_units=2, seed=7)
    recording = from_spikeinterface(si_recording)
    assert recording.n_channels == 4 and recording.sampling_rate == 10_000.0
    np.testing.assert_allclose(recording.channel_positions, si_recording.get_channel_locations()[:, :2])
    sorting = CRsAESorter(**TINY).fit_predict(recording)

    si_sorting = to_spikeinterface_sorting(sorting)
    assert isinstance(si_sorting, si.BaseSorting)
    assert si_sorting.get_sampling_frequency() == 10_000.0
    assert sum(len(si_sorting.get_unit_spike_train(u)) for u in si_sorting.get_unit_ids()) == sorting.n_spikes
    scores = comparison.compare_sorter_to_ground_truth(si_truth, si_sorting, exhaustive_gt=True)
    accuracy = scores.get_performance()["accuracy"]  # one row per true unit
    assert accuracy.min() > 0.8  # measured: 1.0 and 1.0


def test_a_saved_float32_spikeinterface_recording_reads_in_microvolts(tmp_path):
    # A float32 binary folder hands back its read-only memory map: the adapter scaled it in place and
    # failed ("output array is read-only") on the first chunk of a motion-corrected, saved recording.
    pytest.importorskip("spikeinterface.core")
    from spikeinterface.core import NumpyRecording

    from engine.io.spikeinterface_adapter import from_spikeinterface

    values = np.random.default_rng(1).standard_normal((3000, 4)).astype(np.float32)
    source = NumpyRecording([values], 30_000.0)
    source.set_channel_gains(np.full(4, 2.0))
    source.set_channel_offsets(np.zeros(4))
    saved = source.save(folder=tmp_path / "binary", format="binary", progress_bar=False, verbose=False)
    recording = from_spikeinterface(saved)
    np.testing.assert_allclose(recording.get_traces(100, 120), 2.0 * values[100:120], rtol=1e-6)
    np.testing.assert_allclose(recording.get_traces(0, 5, channels=[3])[:, 0], 2.0 * values[:5, 3], rtol=1e-6)


def test_engine_imports_and_reads_native_formats_without_spikeinterface(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # A fresh interpreter in which importing spikeinterface fails, as on a base install.
    code = (
        "import sys; sys.modules['spikeinterface'] = None; sys.modules['neo'] = None; sys.modules['pynwb'] = None\n"
        "import engine.io.recording, engine.io.formats, engine.io.spikeinterface_adapter, engine.sorter, engine.cli\n"
        "from engine.io.recording import open_recording, RecordingError\n"
        f"open(r'{tmp_path / 'x.nwb'}', 'wb').write(b'0')\n"
        "try:\n"
        f"    open_recording(r'{tmp_path / 'x.nwb'}')\n"
        "except RecordingError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert "pip install 'sparsort[formats]'" in result.stdout

"""The training pool reads its pieces a core at a time, and holds what one read of them gives."""

import numpy as np
import pytest

from engine.io.recording import NumpyRecording
from engine.pipeline import pool as pool_module
from engine.pipeline.pool import build_training_pool, spread_pieces
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.pipeline.stages import SortStopped


def _recording(seconds=25.0, n_channels=3, rate=2000.0):
    traces = np.random.default_rng(0).standard_normal((int(seconds * rate), n_channels)).astype(np.float32) * 20
    return PreprocessedRecording(NumpyRecording(traces, rate), freq_min=100.0, freq_max=800.0)


def test_the_pool_is_the_recording_read_in_order_whatever_the_pieces_read_at_once():
    recording = _recording()  # 25 s: read 10 s at a time, three pieces
    noise = np.array([2.0, 4.0, 5.0], dtype=np.float32)
    pool = build_training_pool(recording, noise, window=200)
    one_by_one = [recording.get_traces(start, min(start + 20_000, recording.n_samples)) for start in (0, 20_000, 40_000)]
    np.testing.assert_array_equal(pool.data, np.concatenate(one_by_one).T / noise[:, None])


def test_a_capped_pool_holds_its_spread_pieces_in_order(monkeypatch):
    recording = _recording()
    monkeypatch.setattr(pool_module, "MAX_POOL_VALUES", 3 * 10_000)  # 10,000 samples of 3 channels
    monkeypatch.setattr(pool_module, "MIN_POOL_SECONDS", 0.0)
    noise = np.ones(3, dtype=np.float32)
    pool = build_training_pool(recording, noise, window=200)
    pieces = spread_pieces(recording.n_samples, 10_000, int(pool_module.POOL_PIECE_S * 2000.0))
    assert len(pieces) > 1
    np.testing.assert_array_equal(pool.data, np.concatenate([recording.get_traces(a, b) for a, b in pieces]).T)


def test_a_wide_probes_pool_is_never_shorter_than_its_floor(monkeypatch):
    """A cap that would leave a few seconds (a 384-channel probe's) gives way to MIN_POOL_SECONDS: a 2-Hz
    neuron needs that many seconds to fire often enough for the first dictionary and pruning to count it."""
    recording = _recording()  # 25 s at 2 kHz
    monkeypatch.setattr(pool_module, "MAX_POOL_VALUES", 3 * 10_000)  # 5 s of 3 channels
    monkeypatch.setattr(pool_module, "MIN_POOL_SECONDS", 12.0)
    assert pool_module.pool_samples(3, 2000.0) == 24_000
    pool = build_training_pool(recording, np.ones(3, dtype=np.float32), window=200)
    assert 22_000 <= pool.n_samples <= 24_000  # whole pieces, spread over the recording
    monkeypatch.setattr(pool_module, "MAX_POOL_VALUES", 3 * 40_000)  # a narrow probe's cap is longer: kept
    assert pool_module.pool_samples(3, 2000.0) == 40_000


def test_stop_while_the_pool_is_read_stops_it():
    with pytest.raises(SortStopped, match="training pool"):
        build_training_pool(_recording(), np.ones(3, np.float32), window=200, should_stop=lambda: True)

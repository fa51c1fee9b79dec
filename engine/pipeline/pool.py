"""The training pool: preprocessed, noise-normalised data that training and pruning draw from.

Built once per sort. Its size is capped (MAX_POOL_VALUES), so a long or wide
recording contributes evenly spaced pieces rather than all of its samples.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from engine.cpu import adapt_threads, in_order
from engine.io.recording import NumpyRecording, Recording
from engine.pipeline.params import (HELDOUT_WINDOWS, MAX_POOL_VALUES, MIN_POOL_SECONDS, POOL_PIECE_S, POOL_READ_S,
                                    PRUNE_SECONDS)
from engine.pipeline.stages import SortStopped


class TrainingPool:
    """(n_channels, n_samples) float32 noise-normalised data, and windows drawn from it."""

    def __init__(self, data: np.ndarray, sampling_rate: float, window: int) -> None:
        self.data = data  # (n_channels, n_samples) float32, each channel divided by its noise σ
        self.sampling_rate = float(sampling_rate)
        self.window = int(window)  # samples per training window
        # The last HELDOUT_WINDOWS windows are held out (when the pool is long enough to spare
        # them): training never draws them, so their reconstruction error measures learning.
        spare = self.n_samples >= 4 * HELDOUT_WINDOWS * self.window
        self.training_samples = self.n_samples - HELDOUT_WINDOWS * self.window if spare else self.n_samples

    @property
    def n_channels(self) -> int:
        return self.data.shape[0]

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    @property
    def epoch_samples(self) -> int:
        """The samples an epoch of training passes over: at most `capped_samples` of the pool. A wide probe's
        pool is longer than that (MIN_POOL_SECONDS, so that sparse neurons fire in it); training's steps need
        not grow with it."""
        return min(self.n_samples, capped_samples(self.n_channels))

    def sample_batch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> torch.Tensor:
        """(batch_size, n_channels, window) windows at random starts."""
        starts = rng.integers(0, self.training_samples - self.window + 1, size=batch_size)
        return self._windows(starts, device)

    def heldout_batch(self, device: torch.device) -> torch.Tensor:
        """(HELDOUT_WINDOWS, n_channels, window): the same windows every call, from the end of the pool."""
        last = self.n_samples - self.window
        starts = np.maximum(last - self.window * np.arange(HELDOUT_WINDOWS), 0)
        return self._windows(starts, device)

    def _windows(self, starts: np.ndarray, device: torch.device) -> torch.Tensor:
        index = starts[:, None] + np.arange(self.window)[None, :]
        batch = self.data[:, index].transpose(1, 0, 2)
        return torch.from_numpy(np.ascontiguousarray(batch)).to(device)

    def prune_segment(self) -> np.ndarray:
        """(n_channels, n) the first PRUNE_SECONDS: what pruning and the split step code."""
        return self.data[:, : min(self.n_samples, int(PRUNE_SECONDS * self.sampling_rate))]

    def prune_recording(self) -> NumpyRecording:
        """The prune segment as a recording (already noise-normalised: code it with unit noise levels)."""
        return NumpyRecording(self.prune_segment().T, self.sampling_rate)


def spread_pieces(n_samples: int, budget: int, piece: int, whole_step: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) pieces of a recording of `n_samples` to read at most `budget` samples of: all of it, in
    steps of `whole_step` (default `piece`), when it fits; else as many `piece`-long pieces as fit, spread
    evenly from its start to its end (the training pool and the search for faint neurons read so)."""
    if n_samples <= budget:
        step = whole_step or piece
        return [(start, min(start + step, n_samples)) for start in range(0, n_samples, step)]
    piece = min(piece, n_samples)
    starts = np.linspace(0, n_samples - piece, max(budget // piece, 1)).astype(np.int64)
    return [(int(start), int(start) + piece) for start in starts]


def capped_samples(n_channels: int) -> int:
    """MAX_POOL_VALUES over `n_channels`: the pool's length before its MIN_POOL_SECONDS floor, and what an
    epoch of training passes over."""
    return MAX_POOL_VALUES // max(n_channels, 1)


def pool_samples(n_channels: int, sampling_rate: float) -> int:
    """How many samples of a recording the pool holds at most: `capped_samples`, and never under
    MIN_POOL_SECONDS (a wide probe's sparse neurons need that many spikes in it)."""
    return max(capped_samples(n_channels), int(MIN_POOL_SECONDS * sampling_rate))


def build_training_pool(
    recording: Recording,
    noise_levels: np.ndarray,
    window: int,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingPool:
    """Read the pool from a preprocessed `recording`, piece by piece (each piece reports progress)."""
    n_channels, n_samples = recording.n_channels, recording.n_samples
    sampling_rate = float(recording.sampling_rate)
    # All of it when it fits, read a few seconds at a time: the band-pass of one read holds several float64
    # copies of it (a 5-minute tetrode's pool of 144 MB took the process up by 820 MB at once).
    pieces = spread_pieces(n_samples, pool_samples(n_channels, sampling_rate),
                           max(int(POOL_PIECE_S * sampling_rate), window),
                           whole_step=max(int(POOL_READ_S * sampling_rate), window))
    offsets = np.cumsum([0] + [stop - start for start, stop in pieces])
    total = int(offsets[-1])
    data = np.empty((n_channels, total), dtype=np.float32)

    def read(index: int) -> int:
        # Each piece is written into the pool by the thread that read it: the copy turns (samples, channels)
        # into (channels, samples), a strided pass that took 1.9 s of one core for a 32-channel pool when the
        # caller's thread made every piece's.
        start, stop = pieces[index]
        data[:, offsets[index] : offsets[index + 1]] = (recording.get_traces(start, stop) / noise_levels).T
        return stop - start

    # A piece per free core at a time: the band-pass and numpy's copies leave the GIL (engine/pipeline/sos_filter.py).
    filled = 0
    for length in in_order(read, list(range(len(pieces))), min(adapt_threads(), len(pieces))):
        if should_stop is not None and should_stop():
            raise SortStopped("stopped while reading the training pool")
        filled += length
        if progress is not None:
            progress(filled / total)
    return TrainingPool(data, sampling_rate, window)

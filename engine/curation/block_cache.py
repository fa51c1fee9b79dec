"""Reads assembled from cached blocks, so that scrolling reads only what is new (numpy only).

Scrolling the Traces view by half a window asks again for half of what it
just read; at 384 channels a second of preprocessed data costs most of a
second to filter. `BlockCachedRecording` cuts time into aligned blocks of
BLOCK_S, reads (and filters) each block once per channel set, and keeps the
most recent ones up to a bound on their size, so memory stays fixed however
long the recording.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from engine.io.recording import Recording

BLOCK_S = 0.25
MAX_CACHED_VALUES = 24_000_000  # samples × channels kept: 96 MB of float32 (2 s of 384 channels at 30 kHz)


class BlockCachedRecording(Recording):
    """`recording`'s reads, each made of whole blocks of `block_s` seconds read once and kept while they fit."""

    def __init__(self, recording: Recording, block_s: float = BLOCK_S, max_values: int = MAX_CACHED_VALUES) -> None:
        super().__init__(recording.sampling_rate, recording.n_channels, recording.n_samples,
                         recording.channel_positions, recording.path, recording.source_dtype)
        self.recording = recording
        self.block = max(int(round(block_s * recording.sampling_rate)), 1)  # samples per block
        self.max_values = max_values
        self._blocks: OrderedDict = OrderedDict()  # (block index, channels key) -> (block, k) float32
        self._values = 0
        self._lock = threading.Lock()

    @property
    def noise_levels(self) -> np.ndarray:
        return self.recording.noise_levels

    def _read_block(self, start, stop, channel_index):
        key = None if channel_index is None else channel_index.tobytes()
        pieces = []
        for index in range(start // self.block, (stop - 1) // self.block + 1):
            block_start = index * self.block
            block = self._cached(index, key, channel_index)
            pieces.append(block[max(start, block_start) - block_start: min(stop, block_start + self.block) - block_start])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _cached(self, index: int, key, channel_index) -> np.ndarray:
        with self._lock:
            block = self._blocks.get((index, key))
            if block is not None:
                self._blocks.move_to_end((index, key))
                return block
        start = index * self.block
        block = self.recording.get_traces(start, min(start + self.block, self.n_samples), channel_index)
        with self._lock:
            self._blocks[(index, key)] = block
            self._values += block.size
            while self._values > self.max_values and len(self._blocks) > 1:
                _, dropped = self._blocks.popitem(last=False)
                self._values -= dropped.size
        return block

    def __repr__(self) -> str:
        return f"BlockCachedRecording({self.block} samples a block; {self.recording!r})"

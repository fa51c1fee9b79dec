"""What the sort's other spikes put in a spike's window: the sort's own model of its neighbours.

A spike that another neuron's spike overlaps is explained by no one template:
comparing templates on it compares them on the neighbour too. The sort has
already coded that neighbour: its filter at its code is the CRsAE decoder's
model of it. Taking that out of the window leaves the spike as if it were
alone, which is what a template fit can judge. (Kilosort peels templates off
the data the same way while it matches; here only the sort's own events are
taken out, after the sort.)
"""

from __future__ import annotations

import numpy as np

from engine.pipeline.sorting import Sorting, peak_taps

# Windows modelled at once: bounds the (windows × samples × channels) sums held.
WINDOWS_PER_STEP = 256


class NeighbourSpikes:
    """The sort's events as filters × codes, in noise σ, to be subtracted around chosen spikes.

    sorting: a Sparsort sort (filter_index, code_amplitudes and template_peak_taps set); filters:
    (n_filters, n_taps, n_channels) the dictionary its units came from, in noise σ per unit of code."""

    def __init__(self, sorting: Sorting, filters: np.ndarray) -> None:
        self.times = sorting.spike_times
        self.units = sorting.spike_units.astype(np.int64)
        self.codes = np.asarray(sorting.code_amplitudes, dtype=np.float32)
        self.shapes = np.asarray(filters, dtype=np.float32)[np.asarray(sorting.filter_index, dtype=np.int64)]
        peaks = sorting.template_peak_taps
        self.peaks = np.asarray(peak_taps(sorting.templates) if peaks is None else peaks, dtype=np.int64)
        self.n_taps = self.shapes.shape[1]
        self._on_channels: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def around(self, times: np.ndarray, unit: int, channels: np.ndarray, before: int, length: int) -> np.ndarray:
        """(len(times), length, len(channels)) float32: every event of the sort except unit's own at each
        of `times`, summed over the window [time - before, time - before + length) on `channels`.
        An event at time t of unit u covers [t - peak tap of u, + n_taps) (Sorting's convention)."""
        out = np.zeros((len(times), length, len(channels)), dtype=np.float32)
        shapes, index = self._shapes_on(np.asarray(channels))
        for first in range(0, len(times), WINDOWS_PER_STEP):
            part = slice(first, first + WINDOWS_PER_STEP)
            out[part] = self._summed(times[part], unit, shapes, index, before, length)
        return out

    def _shapes_on(self, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the shapes on `channels` of the units whose filters reach them, each unit's row there or -1).
        On a probe most units are far from a window's channels; a unit's windows are read block by block
        on the same channels, so this is worked out once per channel set (thousands of calls on a long
        recording)."""
        key = channels.tobytes()
        found = self._on_channels.get(key)
        if found is None:
            shapes = self.shapes[:, :, channels]
            touching = np.any(shapes != 0, axis=(1, 2))
            index = np.full(len(shapes), -1, dtype=np.int64)
            index[touching] = np.arange(int(touching.sum()))
            found = self._on_channels[key] = (shapes[touching], index)  # threads may both make it: alike
        return found

    def _summed(self, times, unit, shapes, index, before, length) -> np.ndarray:
        taps = self.n_taps
        padded = length + 2 * taps  # a filter's length each side: an event reaching past the window needs no clipping
        first = np.searchsorted(self.times, times - before - taps)
        counts = np.searchsorted(self.times, times - before + length + taps) - first
        window = np.repeat(np.arange(len(times)), counts)
        event = np.arange(len(window)) + np.repeat(first - (np.cumsum(counts) - counts), counts)
        units = self.units[event]
        starts = self.times[event] - self.peaks[units] - (times[window] - before) + taps
        # Events that reach into the window (start within (-taps, length) of it), on these channels, not the
        # spike itself.
        kept = ((starts > 0) & (starts < length + taps) & (index[units] >= 0)
                & ~((units == unit) & (self.times[event] == times[window])))
        window, event, rows, starts = window[kept], event[kept], index[units[kept]], starts[kept]
        # Each event's taps land at flat positions of the (windows × padded) samples; two events can
        # land on one sample, so they are summed by bincount, one channel at a time.
        at = ((window * padded + starts)[:, None] + np.arange(taps)[None, :]).ravel()
        values = (self.codes[event, None, None] * shapes[rows]).reshape(-1, shapes.shape[2])
        summed = np.stack([np.bincount(at, weights=values[:, column], minlength=len(times) * padded)
                           for column in range(shapes.shape[2])], axis=1)
        return summed.reshape(len(times), padded, -1)[:, taps:taps + length]

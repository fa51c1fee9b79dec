"""Turning multi-channel arrays into few, cheap-to-draw points (Qt-free, numpy only).

Two ideas carry the Traces, Codes and Filters views:
- a min/max envelope: when a window holds more samples than the screen has
  pixels, draw each pixel column's minimum and maximum instead of every
  sample; spikes stay visible (a plain decimation would skip them);
- stacking: every channel becomes one segment of a single curve, offset
  vertically, with the joins between channels left unconnected, so a
  32-channel view is one draw call instead of 32.
"""

from __future__ import annotations

import numpy as np


def minmax_envelope(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (n, c) values to at most `max_points` rows per channel, keeping extremes.

    Returns (index, reduced): index (m,) float64 sample position of each row
    (relative to the first sample) and reduced (m, c) float32. Short inputs
    come back unchanged.
    """
    n = values.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.float64), values
    return envelope_with_bins(values, envelope_bin_size(n, max_points))


def envelope_bin_size(n_samples: int, max_points: int) -> int:
    """Samples per envelope bin so that n_samples make at most max_points points (two per bin)."""
    return int(np.ceil(n_samples / max(max_points // 2, 1)))


def envelope_with_bins(values: np.ndarray, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The min and max of every `bin_size` samples, interleaved; see minmax_envelope."""
    n = values.shape[0]
    n_bins = int(np.ceil(n / bin_size))
    padded_length = n_bins * bin_size
    if padded_length != n:
        # Repeating the last sample pads without adding a new extreme.
        values = np.concatenate([values, np.repeat(values[-1:], padded_length - n, axis=0)])
    bins = values.reshape(n_bins, bin_size, -1)
    low, high = bins.min(axis=1), bins.max(axis=1)  # (n_bins, c) each
    reduced = np.empty((2 * n_bins, values.shape[1]), dtype=np.float32)
    reduced[0::2], reduced[1::2] = low, high
    starts = np.arange(n_bins, dtype=np.float64) * bin_size
    index = np.repeat(starts, 2)
    # The max half-way through its bin; the last bin may be shorter than the others.
    index[1::2] += (np.minimum(starts + bin_size, n) - starts) / 2
    return index, reduced


def stack_channels(x: np.ndarray, values: np.ndarray, offsets: np.ndarray, scale: float = 1.0):
    """One curve for many channels: channel j drawn at `offsets[j] + scale * values[:, j]`.

    x: (m,) shared by every channel; values: (m, c). Returns (xs, ys, connect),
    each (m * c,), with connect False at the last point of every channel so
    pyqtgraph does not draw a line from one channel's end to the next one's start.
    """
    m, c = values.shape
    xs = np.tile(x, c)
    ys = (values.T * np.float32(scale) + np.asarray(offsets, dtype=np.float32)[:, None]).ravel()
    connect = np.ones(m * c, dtype=bool)
    connect[m - 1 :: m] = False
    return xs, ys, connect


def read_envelope(recording, start: int, stop: int, max_points: int, chunk_values: int = 1 << 22, channels=None):
    """Read samples [start, stop) of `recording` chunk by chunk and reduce them to an envelope.

    Runs in a worker: long windows are read in chunks of about `chunk_values`
    values (so memory stays bounded), each chunk a whole number of envelope
    bins so the result equals `minmax_envelope` of the whole window.
    `channels`: the (k,) channels to read, or None for all.
    Returns (index, reduced) like `minmax_envelope`, index relative to `start`.
    """
    n = stop - start
    if n <= max_points:
        return minmax_envelope(recording.get_traces(start, stop, channels), max_points)
    bin_size = envelope_bin_size(n, max_points)
    n_read = recording.n_channels if channels is None else len(channels)
    chunk = max(chunk_values // (n_read * bin_size), 1) * bin_size
    indices, pieces = [], []
    for chunk_start in range(start, stop, chunk):
        traces = recording.get_traces(chunk_start, min(chunk_start + chunk, stop), channels)
        index, reduced = envelope_with_bins(traces, bin_size)
        indices.append(index + (chunk_start - start))
        pieces.append(reduced)
    return np.concatenate(indices), np.concatenate(pieces)


def signed_extremes(index: np.ndarray, reduced: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """One value per envelope bin for a heat map: the bin's min or max, whichever is farther from zero.

    index, reduced: an envelope of `n_samples` samples (see minmax_envelope); a
    short window (every sample kept) comes back as it is. Returns (starts, values):
    (m,) sample position of each column and (m, c) float32, so a spike shows at
    its full height, with its sign, however far the view is zoomed out.
    """
    if len(index) >= n_samples:
        return index, reduced
    low, high = reduced[0::2], reduced[1::2]
    return index[0::2], np.where(-low > high, low, high)


def lay_out_channels(x: np.ndarray, values: np.ndarray, x_offsets: np.ndarray, y_offsets: np.ndarray):
    """One curve for many snippets on many channels, each channel at its own (x, y) place.

    x: (m,) shared time axis; values: (n, m, k) n snippets on k channels;
    x_offsets, y_offsets: (k,) where channel j's snippets are drawn. Returns
    (xs, ys, connect), each (n * k * m,), unconnected between snippets.
    """
    n, m, k = values.shape
    xs = (np.asarray(x, dtype=np.float32)[None, None, :] + np.asarray(x_offsets, dtype=np.float32)[None, :, None])
    xs = np.broadcast_to(xs, (n, k, m)).ravel()
    ys = (values.transpose(0, 2, 1) + np.asarray(y_offsets, dtype=np.float32)[None, :, None]).ravel()
    connect = np.ones(n * k * m, dtype=bool)
    connect[m - 1 :: m] = False
    return xs, ys, connect

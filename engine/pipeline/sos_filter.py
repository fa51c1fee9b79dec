"""Zero-phase filtering by second-order sections, compiled, across channels at once.

scipy's `sosfiltfilt` runs each channel's filter on its own, sample after sample: every
section's output waits for the one before, so the CPU does one multiply-add at a time.
A sort band-passes the recording several times over (inference reads all of it; the
waveform split, the spike reassignment and the hollow-event check read blocks of it
again), and on a 32-channel probe that filter was the largest single cost of a whole
sort on one core (9 of 68 s, measured with cProfile on a 5-minute recording).

Here the loop over channels is innermost: the channels of one sample are independent,
so the CPU filters several of them with each vector instruction. The arithmetic is
scipy's, in the same order and precision (the odd extension in the input's precision,
the sections' states and the pass between the two directions in float64), so the
output is the same bit for bit (tested). benchmarks/bench_bandpass.py, 8 s on the 2-core
machine, against scipy 16 channels at a time: 4 channels 1.9× sooner, 32 and 384 channels 2.8×.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.signal import sosfilt_zi

# Channels filtered together: their float64 pass between the directions is (samples, this), not
# (samples, channels), which for an 8 s batch of 384 channels would be 0.75 GB.
_GROUP = 32


def sos_filtfilt(sos: np.ndarray, traces: np.ndarray, padlen: int) -> np.ndarray:
    """scipy.signal.sosfiltfilt(sos, traces, axis=0, padtype="odd", padlen=padlen) as float32, for
    float32 or float64 `traces` (n_samples,) or (n_samples, n_channels); other dtypes are taken
    as float32 first. `padlen` must be below n_samples, as scipy requires."""
    traces = np.asarray(traces)
    if traces.dtype not in (np.float32, np.float64):
        traces = traces.astype(np.float32)
    one_channel = traces.ndim == 1
    columns = traces[:, None] if one_channel else traces
    n_samples = columns.shape[0]
    if not 0 <= padlen < max(n_samples, 1):
        raise ValueError(f"padlen {padlen} must be in [0, {n_samples}) for {n_samples} samples")
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    zi = np.ascontiguousarray(sosfilt_zi(sos))
    n_columns = columns.shape[1]
    filtered = np.empty(columns.shape, dtype=np.float32)
    if n_samples == 0:
        return filtered[:, 0] if one_channel else filtered
    if n_columns <= _GROUP and columns.flags.c_contiguous:
        _filtfilt_columns(columns, sos, zi, int(padlen), filtered)
    else:
        # A group at a time, each copied whole (the compiled loop reads whole rows): the pass between
        # the directions is then (samples, 32) float64, not (samples, channels).
        for first in range(0, n_columns, _GROUP):
            group = np.ascontiguousarray(columns[:, first : first + _GROUP])
            out = np.empty(group.shape, dtype=np.float32)
            _filtfilt_columns(group, sos, zi, int(padlen), out)
            filtered[:, first : first + group.shape[1]] = out
    return filtered[:, 0] if one_channel else filtered


# nogil: inference and the snippet readers band-pass blocks in several threads at once. (It filters
# the whole rows of one group: with the loop over groups inside it too, LLVM vectorised it half as
# well, 0.072-0.084 s against 0.045 s for 8 s × 32 channels.)
@numba.njit(nogil=True, cache=True)
def _filtfilt_columns(x, sos, zi, padlen, out):
    n, n_columns = x.shape
    n_sections = sos.shape[0]
    total = n + 2 * padlen
    forward = np.empty((total, n_columns), dtype=np.float64)  # the first direction's output, as scipy keeps it
    state = np.empty((n_sections, 2, n_columns), dtype=np.float64)
    value = np.empty(n_columns, dtype=np.float64)
    # Forward over the odd extension: 2·x[0] − x[padlen − i] before, 2·x[n−1] − x[n−2−j] after, computed
    # in the input's precision as scipy's odd_ext does (x + x is 2·x exactly).
    for c in range(n_columns):
        start = x[0, c] + x[0, c] - x[padlen, c]
        for s in range(n_sections):
            state[s, 0, c] = zi[s, 0] * start
            state[s, 1, c] = zi[s, 1] * start
    for i in range(total):
        if i < padlen:
            for c in range(n_columns):
                value[c] = x[0, c] + x[0, c] - x[padlen - i, c]
        elif i < padlen + n:
            for c in range(n_columns):
                value[c] = x[i - padlen, c]
        else:
            j = i - padlen - n
            for c in range(n_columns):
                value[c] = x[n - 1, c] + x[n - 1, c] - x[n - 2 - j, c]
        _through_sections(sos, state, value, n_columns)
        for c in range(n_columns):
            forward[i, c] = value[c]
    # Backward from the far end, started where the forward pass ended, as scipy's second pass is; the
    # left extension's outputs are not needed.
    for c in range(n_columns):
        for s in range(n_sections):
            state[s, 0, c] = zi[s, 0] * forward[total - 1, c]
            state[s, 1, c] = zi[s, 1] * forward[total - 1, c]
    for i in range(total - 1, padlen - 1, -1):
        for c in range(n_columns):
            value[c] = forward[i, c]
        _through_sections(sos, state, value, n_columns)
        if i < padlen + n:
            for c in range(n_columns):
                out[i - padlen, c] = value[c]


@numba.njit(nogil=True, cache=True, inline="always")
def _through_sections(sos, state, value, n_columns):
    """One sample of every column through every section, in place in `value`: transposed direct form II,
    as scipy's sections compute it. (Inlined: called as a function it ran 1.2-1.8× slower.)"""
    for s in range(sos.shape[0]):
        b0 = sos[s, 0]
        b1 = sos[s, 1]
        b2 = sos[s, 2]
        a1 = sos[s, 4]
        a2 = sos[s, 5]
        for c in range(n_columns):
            v = value[c]
            y = b0 * v + state[s, 0, c]
            state[s, 0, c] = b1 * v - a1 * y + state[s, 1, c]
            state[s, 1, c] = b2 * v - a2 * y
            value[c] = y

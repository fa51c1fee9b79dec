"""Where a batch of codes' values peak above their filter's bar: the working set's screening, compiled.

The working-set encoder starts from, and grows by, the coordinates whose correlation (or
gradient) exceeds their filter's bar and is the largest of their filter's within a radius.
In numpy that took a pass over the whole batch for the bar, another to leave W's coordinates
out, one to list the survivors, then a gather of each survivor's window: 12 % of inference on
a 32-channel probe, most of it on the flanks of big spikes, where a coordinate is outdone by
its immediate neighbour. Here one compiled pass tests each coordinate against its bar and then
walks outwards from it, stopping at the first bigger neighbour.
"""

from __future__ import annotations

import numba
import numpy as np


def peaks_above(values: np.ndarray, thresholds: np.ndarray, radius: int,
                excluded: np.ndarray | None = None) -> np.ndarray:
    """(batch, K, m) bool: where `values` (batch, K, m) exceed their filter's threshold (`thresholds`,
    one per filter, any shape that holds K values) and are at least every value of their filter's row
    within `radius` samples, `excluded` coordinates neither counting nor competing (ties are peaks)."""
    n_chunks, n_filters, n_codes = values.shape
    bars = np.ascontiguousarray(np.asarray(thresholds, dtype=np.float32).reshape(-1))
    if bars.size != n_filters:
        raise ValueError(f"thresholds hold {bars.size} values, expected one per filter ({n_filters})")
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(n_chunks * n_filters, n_codes)
    skip = (np.zeros((0, 0), dtype=np.bool_) if excluded is None
            else np.ascontiguousarray(excluded, dtype=np.bool_).reshape(n_chunks * n_filters, n_codes))
    peaks = np.zeros(flat.shape, dtype=np.bool_)
    _mark_peaks(flat, bars, skip, excluded is not None, int(radius), peaks)
    return peaks.reshape(values.shape)


# nogil: inference encodes two batches at once in threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _mark_peaks(values, bars, excluded, has_excluded, radius, peaks):
    n_rows, n_codes = values.shape
    n_filters = bars.size
    for row in range(n_rows):
        bar = bars[row % n_filters]
        for t in range(n_codes):
            value = values[row, t]
            if not value > bar or (has_excluded and excluded[row, t]):
                continue
            peak = True
            # Outwards from t, nearest first: on a spike's flank the next sample is already bigger.
            for distance in range(1, radius + 1):
                before, after = t - distance, t + distance
                if before >= 0 and values[row, before] > value and not (has_excluded and excluded[row, before]):
                    peak = False
                    break
                if after < n_codes and values[row, after] > value and not (has_excluded and excluded[row, after]):
                    peak = False
                    break
            peaks[row, t] = peak

"""Spikes grouped by unit, in one pass that stays fast at millions of spikes (numpy only).

A stable argsort of 2.1 M int64 unit ids takes 0.3-0.6 s (numpy merges); the
same ids as uint16, when every id fits, are sorted by radix in 0.05-0.1 s with
the same result. Opening a probe sort groups its spikes several times (the
curation, its metrics, the samples behind the spike map and the L-ratios).
"""

from __future__ import annotations

import numpy as np

_RADIX_MAX = np.iinfo(np.uint16).max


def order_by_unit(spike_units: np.ndarray) -> np.ndarray:
    """(n_spikes,) int64 spike indices grouped by unit, ascending ids, ascending indices within a unit
    (what np.argsort(spike_units, kind="stable") returns)."""
    spike_units = np.asarray(spike_units)
    if spike_units.size and np.issubdtype(spike_units.dtype, np.integer):
        low, high = int(spike_units.min()), int(spike_units.max())
        if 0 <= low and high <= _RADIX_MAX:
            return np.argsort(spike_units.astype(np.uint16), kind="stable").astype(np.int64, copy=False)
    return np.argsort(spike_units, kind="stable").astype(np.int64, copy=False)


def group_by_unit(spike_units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, units, bounds): `order` as order_by_unit; `units` (u,) the distinct ids, ascending;
    unit units[i]'s spikes are order[bounds[i]:bounds[i + 1]] (bounds (u + 1,))."""
    order = order_by_unit(spike_units)
    sorted_units = np.asarray(spike_units)[order]
    starts = np.flatnonzero(np.diff(sorted_units)) + 1 if len(order) else np.zeros(0, dtype=np.int64)
    bounds = np.concatenate([[0], starts, [len(order)]]).astype(np.int64) if len(order) else np.zeros(1, np.int64)
    units = sorted_units[bounds[:-1]] if len(order) else sorted_units[:0]
    return order, units.astype(np.int64), bounds

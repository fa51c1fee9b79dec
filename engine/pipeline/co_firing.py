"""One neuron coded as the sum of two filters: filters that fire at the same sample become one.

Measured on SpikeInterface's 32-channel probe (5 min): a 7-SNR unit's spikes
were coded by two filters 0.90 alike, each at its usual size, 63 % of each
one's spikes within 3 samples of the other's. Neither is a duplicate of the
other (0.90 is far from one shape) nor a shadow (they are the same size), so
the pruning kept both and the unit's spikes went to two sorted units. Two
neurons do not fire within 0.1 ms of each other most of the time: such a pair
is one neuron, and its shape is the two filters added at their usual sizes
and offset.

A filter that holds two neurons of one shape at two sizes may co-fire with a
neighbour for one of them only (measured there: 51 % of such a filter's
spikes, all of its smaller neuron's): a filter whose spikes fall into two
amplitude groups is never joined, and co-firing spikes must be of their
filters' usual sizes.
"""

from __future__ import annotations

import numpy as np

from engine.pipeline.amplitude_split import groups_of
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import (AMPLITUDE_SPLIT_MIN_FRACTION, CO_FIRING_FRACTION, CO_FIRING_SIZE_RATIO,
                                    MIN_SPLIT_SPIKES)
from engine.pipeline.sorting import spikes_of_each_filter


def find_co_firing(events: SpikeEvents, candidates: list[int], window: int, sharing: np.ndarray,
                   min_fraction: float = CO_FIRING_FRACTION, size_ratio: float = CO_FIRING_SIZE_RATIO) -> dict[int, int]:
    """{absorbed filter: filter it joins} for pairs of `candidates` sharing a channel (`sharing`,
    (n_filters, n_filters) bool) of which at least `min_fraction` of each one's spikes have one of the
    other's within `window` samples, at the usual size of both (within `size_ratio` of each filter's
    median), neither filter's spikes being two amplitude groups. The busier filter of a pair stays; a filter is in one pair at most."""
    spikes = _spikes_of_each_filter(events, candidates)
    times = {k: events.times[spikes[k]] for k in candidates}
    amplitudes = {k: events.amplitudes[spikes[k]] for k in candidates}
    usual = {k: _usual_size(amplitudes[k]) for k in candidates}
    pairs = []
    for a_index, first in enumerate(candidates):
        for second in candidates[a_index + 1:]:
            if not sharing[first, second] or usual[first] is None or usual[second] is None:
                continue
            near_first = _has_neighbour(times[first], times[second], window)
            near_second = _has_neighbour(times[second], times[first], window)
            joint = min(near_first.mean(), near_second.mean())
            if joint < min_fraction:
                continue
            if not (_typical(amplitudes[first][near_first], usual[first], size_ratio)
                    and _typical(amplitudes[second][near_second], usual[second], size_ratio)):
                continue
            pairs.append((joint, first, second))
    absorbed: dict[int, int] = {}
    taken: set[int] = set()
    for _, first, second in sorted(pairs, reverse=True):
        if first in taken or second in taken:
            continue
        kept, gone = (first, second) if len(times[first]) >= len(times[second]) else (second, first)
        absorbed[gone] = kept
        taken.update((first, second))
    return absorbed


def combine_co_firing(filters: np.ndarray, events: SpikeEvents, absorbed: dict[int, int], window: int,
                      peaks: np.ndarray) -> np.ndarray:
    """`filters` (n_filters, n_taps, n_channels) with each kept filter of a co-firing pair replaced by
    the unit-norm sum of both at their median sizes and code offset over their co-firing spikes.
    peaks: (n_filters,) each filter's extremum tap (events' times are extremum times)."""
    combined = np.array(filters, dtype=np.float32, copy=True)
    n_taps = filters.shape[1]
    spikes = _spikes_of_each_filter(events, [*absorbed, *absorbed.values()])
    for gone, kept in absorbed.items():
        kept_times, kept_sizes = events.times[spikes[kept]], events.amplitudes[spikes[kept]]
        gone_times, gone_sizes = events.times[spikes[gone]], events.amplitudes[spikes[gone]]
        partner = _nearest(kept_times, gone_times)  # index into gone_times per kept spike
        close = np.abs(gone_times[partner] - kept_times) <= window
        if not close.any():
            continue
        # Where the absorbed filter's code sits relative to the kept one's, in taps.
        code_offset = int(np.round(np.median((gone_times[partner[close]] - peaks[gone])
                                             - (kept_times[close] - peaks[kept]))))
        shifted = np.zeros_like(filters[gone])
        if abs(code_offset) < n_taps:
            if code_offset >= 0:
                shifted[code_offset:] = filters[gone][:n_taps - code_offset]
            else:
                shifted[:code_offset] = filters[gone][-code_offset:]
        shape = (np.median(kept_sizes[close]) * filters[kept]
                 + np.median(gone_sizes[partner[close]]) * shifted)
        combined[kept] = shape / max(float(np.linalg.norm(shape)), 1e-12)
    return combined


def describe_co_firing(absorbed: dict[int, int]) -> str:
    return "joined co-firing " + ", ".join(f"{gone}+{kept}" for gone, kept in sorted(absorbed.items()))


def _spikes_of_each_filter(events: SpikeEvents, filters: list[int]) -> list[np.ndarray]:
    """Each filter's spike indices (time order), for every filter up to the highest of `filters`
    and of the events: one sort of the spikes, not one pass over them per filter."""
    n_filters = max(max(filters, default=-1), int(events.filters.max(initial=-1))) + 1
    return spikes_of_each_filter(events.filters, n_filters)


def _usual_size(amplitudes: np.ndarray) -> float | None:
    """The median size of a filter's spikes; None when too few to tell or when they are two sizes."""
    if len(amplitudes) < MIN_SPLIT_SPIKES:
        return None
    one_size = len(groups_of(amplitudes, MIN_SPLIT_SPIKES, AMPLITUDE_SPLIT_MIN_FRACTION)) == 1
    return float(np.median(amplitudes)) if one_size else None


def _typical(sizes: np.ndarray, usual: float, ratio: float) -> bool:
    middle = float(np.median(sizes)) if len(sizes) else 0.0
    return usual / ratio <= middle <= usual * ratio


def _nearest(times: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Index into `others` (sorted, non-empty) of the nearest to each of `times`."""
    after = np.clip(np.searchsorted(others, times), 1, max(len(others) - 1, 1))
    before = after - 1
    if len(others) == 1:
        return np.zeros(len(times), dtype=np.int64)
    return np.where(np.abs(others[after] - times) < np.abs(others[before] - times), after, before)


def _has_neighbour(times: np.ndarray, others: np.ndarray, window: int) -> np.ndarray:
    if len(others) == 0 or len(times) == 0:
        return np.zeros(len(times), dtype=bool)
    return np.abs(others[_nearest(times, others)] - times) <= window

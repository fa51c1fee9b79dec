"""Count each spike once across filters: an event two filters explain is kept by the bigger one.

Runs on the events of the whole recording (after inference), so that it also
settles pairs that straddle the edge between two chunks.
"""

from __future__ import annotations

import numpy as np

from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import COINCIDENT_MIN_FRACTION, MIN_AMPLITUDE_SPIKES, RESIDUAL_FRACTION


def group_medians(values: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups,) float32 median of `values` per label 0..n_groups-1; 0 for an empty group.

    The values are sorted by label once and each group's median taken over its run: a mask of every
    event per group cost groups × events (a 2-hour sort's millions of events, hundreds of units)."""
    labels = np.asarray(labels)
    grouped = np.asarray(values)[np.argsort(labels, kind="stable")]
    ends = np.cumsum(np.bincount(labels, minlength=n_groups)[:n_groups]) if labels.size else np.zeros(n_groups, int)
    starts = np.concatenate([[0], ends[:-1]])
    return np.array([np.median(grouped[start:end]) if end > start else 0.0 for start, end in zip(starts, ends)],
                    dtype=np.float32)


def resolve_coincidences(events: SpikeEvents, window: int, min_fraction: float = COINCIDENT_MIN_FRACTION,
                         sharing: np.ndarray | None = None, usual_of_lone_events: bool = True,
                         residual_fraction: float = RESIDUAL_FRACTION) -> SpikeEvents:
    """Count an event explained by two filters once.

    When a spike's shape differs slightly from its filter, the residual is
    picked up by a similar filter at the same time, as a weak extra event.
    Measured on the simulator, every false positive was such an event, within
    3 samples of another filter's spike and at ~55 % of its own filter's usual
    amplitude; genuine overlaps of two neurons keep their full amplitudes.
    So an event within `window` samples of a bigger event of a filter it shares
    a channel with (`sharing`, (n_filters, n_filters) bool; None: every pair
    does, as on a tetrode) is dropped when it is weaker than `min_fraction` of
    its filter's usual amplitude. Still needed after the explain-away step:
    without it the 20 s tetrode fell from 0.985 to 0.952 (one unit 1.0 -> 0.78,
    false positives 6 -> 35); the demo moved by less than 0.001 either way.

    A filter's usual amplitude is the median of its events that no bigger event of a filter
    sharing a channel overlaps: residuals come only beside bigger spikes, and where they
    outnumber a small unit's own spikes (on SpikeInterface's 384-channel probe a 6 σ unit's
    filter fired 533 times at ~12 beside 49–55 σ neighbours, against its unit's 302 spikes) a
    median over every event sits among them and keeps them. Some residuals are as big as the
    unit's own spikes, though (a 4 σ unit on the 32-channel probe: 4,700 false events beside
    bigger ones at 7–30, its own spikes at 11–16), so an overlapped event under
    `residual_fraction` of the bigger one goes too: residuals there were a median 0.09 of it,
    real spikes on big ones 0.17. That bar was 0.15 with the median of all events, and then cost
    a small unit's real spikes on big ones (474 of 3,434 drops on 60 s of the 32-channel probe).
    Measured on sorts' events before this step (one run each; old rule → lone medians alone →
    lone medians and 5 %): 32 channels 5 min 0.839 → 0.821 → 0.844, 60 s 0.787 → 0.799 →
    0.799; 384 channels 20 s 0.863 → 0.866 → 0.866; SpikeInterface's tetrode 60 s
    0.810 → 0.815 → 0.815; the tetrode preset 0.989 throughout.

    `usual_of_lone_events` False and `residual_fraction` 0: the median of all a filter's events and
    no bar beside bigger ones, as pruning reads the pool (SortPipeline._events_of_pool says why).
    """
    keep = coincidence_survivors(events, window, min_fraction, sharing, usual_of_lone_events, residual_fraction)
    return SpikeEvents(events.times[keep], events.filters[keep], events.amplitudes[keep])


def coincidence_survivors(events: SpikeEvents, window: int, min_fraction: float = COINCIDENT_MIN_FRACTION,
                          sharing: np.ndarray | None = None, usual_of_lone_events: bool = True,
                          residual_fraction: float = RESIDUAL_FRACTION) -> np.ndarray:
    """(n,) bool: the events resolve_coincidences keeps (it says which and why)."""
    if len(events) < 2:
        return np.ones(len(events), dtype=bool)
    n_filters = int(events.filters.max()) + 1
    losers, winners = _coincident_pairs(events, window, sharing)
    overlapped = np.zeros(len(events), dtype=bool)
    overlapped[losers] = True
    usual = group_medians(events.amplitudes, events.filters, n_filters)
    if usual_of_lone_events:
        # A filter whose events nearly all overlap bigger ones has no usual amplitude of its own: all its events'.
        alone = np.bincount(events.filters[~overlapped], minlength=n_filters)
        usual = np.where(alone >= MIN_AMPLITUDE_SPIKES,
                         group_medians(events.amplitudes[~overlapped], events.filters[~overlapped], n_filters), usual)
    relative = events.amplitudes / np.maximum(usual[events.filters], 1e-6)
    drop = np.zeros(len(events), dtype=bool)
    weak = (relative[losers] < min_fraction) | (events.amplitudes[losers] < residual_fraction * events.amplitudes[winners])
    drop[losers[weak]] = True
    return ~drop


def coded_with_another(events: SpikeEvents, window: int, sharing: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: the events with an event of another filter (sharing a channel, when `sharing` is
    given) within `window` samples: spikes the lasso coded as two filters' sum."""
    paired = np.zeros(len(events), dtype=bool)
    first, second = _coincident_pairs(events, window, sharing)
    paired[first] = True
    paired[second] = True
    return paired


def _coincident_pairs(events: SpikeEvents, window: int, sharing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(weaker, bigger): every pair of events of two filters (sharing a channel, when `sharing` is
    given) within `window` samples. The events are sorted by time, so a few shifted comparisons
    cover all pairs."""
    losers, winners = [], []
    for offset in range(1, 8):
        a = np.arange(len(events) - offset)
        b = a + offset
        close = (events.times[b] - events.times[a] <= window) & (events.filters[a] != events.filters[b])
        if not close.any():
            break
        a, b = a[close], b[close]
        if sharing is not None:
            shared = sharing[events.filters[a], events.filters[b]]
            a, b = a[shared], b[shared]
        weaker_b = events.amplitudes[b] < events.amplitudes[a]
        losers.append(np.where(weaker_b, b, a))
        winners.append(np.where(weaker_b, a, b))
    if not losers:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(losers), np.concatenate(winners)

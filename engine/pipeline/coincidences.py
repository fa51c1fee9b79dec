"""Count each spike once across filters: an event two filters explain is kept by the bigger one.

Runs on the events of the whole recording (after inference), so that it also
settles pairs that straddle the edge between two chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.pipeline.amplitude_split import groups_of
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import (AMPLITUDE_SPLIT_MIN_FRACTION, COINCIDENT_MIN_FRACTION, MIN_AMPLITUDE_SPIKES,
                                    MIN_SPLIT_SPIKES, RESIDUAL_FRACTION, SPLIT_SHARE_SIMILARITY)
from engine.pipeline.sorting import spikes_of_each_filter


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
                         residual_fraction: float = RESIDUAL_FRACTION, same_spike: int | None = None,
                         own_spike_bar: np.ndarray | None = None) -> SpikeEvents:
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

    With `same_spike` (samples), an event farther than that from the bigger one is a spike of its own
    that overlaps it, and is weighed against the median of the smallest amplitude group of its filter's
    lone events instead (`smallest_group_medians`: a filter may code two neurons of its shape at two sizes).

    `usual_of_lone_events` False and `residual_fraction` 0: the median of all a filter's events and
    no bar beside bigger ones, as pruning reads the pool (SortPipeline._events_of_pool says why).

    With `own_spike_bar` ((n_filters,), the sort passes OWN_SPIKE_LAMBDAS × each filter's λ), an
    overlapped event at least its filter's bar is kept whatever its fraction of the usual amplitude
    (still not under `residual_fraction` of the bigger one); coincidence_survivors says why.
    """
    keep = coincidence_survivors(events, window, min_fraction, sharing, usual_of_lone_events, residual_fraction,
                                 same_spike, own_spike_bar=own_spike_bar)
    return SpikeEvents(events.times[keep], events.filters[keep], events.amplitudes[keep])


def coincidence_survivors(events: SpikeEvents, window: int, min_fraction: float = COINCIDENT_MIN_FRACTION,
                          sharing: np.ndarray | None = None, usual_of_lone_events: bool = True,
                          residual_fraction: float = RESIDUAL_FRACTION, same_spike: int | None = None,
                          coincidences: Coincidences | None = None, own_spike_bar: np.ndarray | None = None,
                          ) -> np.ndarray:
    """(n,) bool: the events resolve_coincidences keeps (it says which and why); `coincidence_drops` says
    for which reason each other one goes."""
    short, residue = coincidence_drops(events, window, min_fraction, sharing, usual_of_lone_events,
                                       residual_fraction, same_spike, coincidences, own_spike_bar)
    return ~(short | residue)


def coincidence_drops(events: SpikeEvents, window: int, min_fraction: float = COINCIDENT_MIN_FRACTION,
                      sharing: np.ndarray | None = None, usual_of_lone_events: bool = True,
                      residual_fraction: float = RESIDUAL_FRACTION, same_spike: int | None = None,
                      coincidences: Coincidences | None = None, own_spike_bar: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """((n,) bool short, (n,) bool residue): the events resolve_coincidences drops beside a bigger one, as
    short of their filter's usual amplitude (`min_fraction`, under `own_spike_bar`) and as under
    `residual_fraction` of the bigger one; an event in two pairs may be both. `coincidences`: the
    pairs find_coincidences already found with this `window` and `sharing` (the sort reads them twice).
    Either may still be a small neuron's spike read short beside a big one's: the sort asks the recording
    about both at its end (engine/pipeline/overlapped_spikes.py).

    `own_spike_bar`: (n_filters,) an amplitude at and above which an overlapped event is a spike of its
    own, not judged against its filter's usual amplitude. Beside a bigger spike a neuron's amplitude is
    read short: on SpikeInterface's 32-channel probe (recording seed 0, sorter seed 0) the lone spikes of
    three neurons of SNR 14-22 came out at 0.89-1.05 of their filters' usual amplitude (5th-95th
    percentile), their overlapped ones at 0.58-1.06, and the rule dropped 86, 117 and 56 of them at
    0.53-0.69, every one a real spike; the residuals it drops are 1.3-3 λ, on small filters. Each
    measured on the same fitted dictionary and inference, the stages after it run again (before ->
    after, 4 λ): 32 channels, recording seeds 0, 2, 6: 0.897 -> 0.900, 0.945 -> 0.953, 0.980 -> 0.987;
    384 channels 0.915 -> 0.915; SpikeInterface's tetrode, recording seeds 0 and 2: 0.950 -> 0.952,
    0.847 -> 0.849; the tetrode preset 0.988 -> 0.989. At 3 λ the same within 0.001, at 6 λ a little
    less on the probes; with the bar at 0.5 of the usual amplitude instead of 0 above 4 λ, less."""
    short_drop, residue_drop = np.zeros(len(events), dtype=bool), np.zeros(len(events), dtype=bool)
    if len(events) < 2:
        return short_drop, residue_drop
    if usual_of_lone_events:
        found = coincidences if coincidences is not None else find_coincidences(events, window, sharing)
        losers, winners, usual = found.losers, found.winners, found.usual
    else:
        losers, winners = _coincident_pairs(events, window, sharing)
        usual = group_medians(events.amplitudes, events.filters, int(events.filters.max()) + 1)
    reference = usual[events.filters[losers]]
    if usual_of_lone_events and same_spike is not None:
        # A loser farther than `same_spike` samples from the bigger event is a spike of its own overlapping it.
        lone = found.lone
        smallest = np.where(found.enough, smallest_group_medians(events.amplitudes[lone], events.filters[lone],
                                                                 len(usual)), usual)
        apart = np.abs(events.times[losers] - events.times[winners]) > same_spike
        reference = np.where(apart, smallest[events.filters[losers]], reference)
    relative = events.amplitudes[losers] / np.maximum(reference, 1e-6)
    short = relative < min_fraction
    if own_spike_bar is not None:
        short &= events.amplitudes[losers] < np.asarray(own_spike_bar)[events.filters[losers]]
    short_drop[losers[short]] = True
    residue_drop[losers[events.amplitudes[losers] < residual_fraction * events.amplitudes[winners]]] = True
    return short_drop, residue_drop


@dataclass
class Coincidences:
    """Every pair of events of two filters (sharing a channel) within a window, and each filter's usual
    amplitude: what the coincidence step's rules read, found once (find_coincidences)."""

    losers: np.ndarray  # (n_pairs,) the weaker event of each pair
    winners: np.ndarray  # (n_pairs,) the bigger one
    lone: np.ndarray  # (n,) bool: the events no bigger event overlaps
    enough: np.ndarray  # (n_filters,) bool: filters with MIN_AMPLITUDE_SPIKES lone events or more
    usual: np.ndarray  # (n_filters,) the median of a filter's lone events; of all its events without enough


def find_coincidences(events: SpikeEvents, window: int, sharing: np.ndarray | None = None) -> Coincidences:
    """The pairs within `window` samples (of filters sharing a channel, when `sharing` is given) and each
    filter's usual amplitude. A filter whose events nearly all overlap bigger ones has no usual amplitude
    of its own: the median of all its events stands in."""
    n_filters = int(events.filters.max()) + 1 if len(events) else 0
    losers, winners = _coincident_pairs(events, window, sharing)
    lone = np.ones(len(events), dtype=bool)
    lone[losers] = False
    enough = np.bincount(events.filters[lone], minlength=n_filters) >= MIN_AMPLITUDE_SPIKES
    usual = np.where(enough, group_medians(events.amplitudes[lone], events.filters[lone], n_filters),
                     group_medians(events.amplitudes, events.filters, n_filters))
    return Coincidences(losers, winners, lone, enough, usual)


def join_split_shares(events: SpikeEvents, coincidences: Coincidences, same_spike: int, alike: np.ndarray,
                      min_similarity: float = SPLIT_SHARE_SIMILARITY) -> tuple[np.ndarray, np.ndarray]:
    """((n,) float32 amplitudes, (n,) bool shares joined): one spike the lasso split between two
    look-alike filters, made one event again.

    A smaller event within `same_spike` samples of a bigger one of a filter at least `min_similarity`
    alike (`alike`: (n_filters, n_filters) shift-invariant similarity) is joined to it when the two
    together come nearer the bigger one's usual amplitude (the median of its filter's lone events) than
    it alone: its amplitude, seen through the similarity, is added to the bigger one's, and it is marked
    to go. `coincidences`: the pairs of `events` (find_coincidences). Two neurons of look-alike shapes
    firing at once each keep about their usual size, and stay two.

    Traced on SpikeInterface's tetrode (recording seed 0): a 5-SNR neuron (usual ~18) and a 3-SNR one
    (~12) of shapes 0.97 alike had two filters, 0.82 alike. 376 of the bigger neuron's spikes were
    coded as ~10 on its filter plus ~9 on the other's, 1 sample apart. Both events stayed, and both
    counted among the smaller neuron's spikes, its unit's precision 0.77. Measured on whole sorts, one
    run each (before → after): SpikeInterface's tetrode, recording seeds 0 (sorter seeds 0, 1), 1, 2,
    3, 4: 0.913 / 0.932, 0.991, 0.847, 0.893, 0.786 → 0.925 / 0.934, 0.991, 0.847, 0.948, 0.787; the
    tetrode preset 0.988 / 0.989 → 0.988 / 0.989; 32 channels 0.896 → 0.897 (recording seed 6: 0.980 →
    0.979); 384 channels 0.915 → 0.916. Without the usual-amplitude condition, real overlaps of the
    preset's look-alike neurons were joined: 0.988 → 0.982. At 0.9 alike the two filters above were
    not joined, and nothing was gained.

    A share whose bigger event is itself a share of a third is joined to it all the same, and what it
    added is then lost with it: three-way splits were too few to matter."""
    amplitudes = events.amplitudes.astype(np.float32, copy=True)
    joined = np.zeros(len(events), dtype=bool)
    if len(events) < 2:
        return amplitudes, joined
    shares, bigger, usual = coincidences.losers, coincidences.winners, coincidences.usual
    similarity = np.asarray(alike)[events.filters[shares], events.filters[bigger]]
    share_size, big_size = events.amplitudes[shares].astype(np.float64), events.amplitudes[bigger].astype(np.float64)
    big_usual = usual[events.filters[bigger]]
    one_spike = ((np.abs(events.times[shares] - events.times[bigger]) <= same_spike) & (similarity >= min_similarity)
                 & (np.abs(big_size + similarity * share_size - big_usual) < np.abs(big_size - big_usual)))
    shares, bigger, similarity = shares[one_spike], bigger[one_spike], similarity[one_spike]
    shares, first = np.unique(shares, return_index=True)  # a share joins one event: its nearest pair's
    bigger, similarity = bigger[first], similarity[first]
    added = np.zeros(len(events), dtype=np.float64)
    np.add.at(added, bigger, similarity * events.amplitudes[shares])
    amplitudes += added.astype(np.float32)
    joined[shares] = True
    return amplitudes, joined


def smallest_group_medians(amplitudes: np.ndarray, filters: np.ndarray, n_filters: int) -> np.ndarray:
    """(n_filters,) float32: the median of the smallest of the amplitude groups each filter's events fall
    into (amplitude_split.groups_of, with the amplitude split's smallest group); of all of them when they
    are one group; 0 for a filter without events.

    What an overlapped spike of a filter that codes two neurons of its shape at two sizes (the
    amplitude split makes them two units) is judged against. Against the median over both, the smaller
    neuron's spikes that overlapped another neuron's looked like residuals and went: on SpikeInterface's
    32-channel probe (recording seed 0, sorter seed 0) a filter coded an 18-SNR neuron at ~155 and a
    bigger one at ~400 (median 335), and 399 of the smaller one's 4,617 spikes were dropped, each beside
    a spike of another neuron 1-15 samples away (its unit's accuracy 0.913). Only for overlaps more than
    SAME_SPIKE_MS apart: within it, the same reading cost a tetrode neuron's unit 1,000 events of a
    look-alike neuron whose spikes the lasso split between two filters (SpikeInterface's tetrode,
    recording seed 2: 0.94 -> 0.79)."""
    usual = np.zeros(n_filters, dtype=np.float32)
    amplitudes = np.asarray(amplitudes)
    for k, mine in enumerate(spikes_of_each_filter(np.asarray(filters), n_filters)):
        if mine.size:
            values = amplitudes[mine]
            usual[k] = np.median(values[groups_of(values, MIN_SPLIT_SPIKES, AMPLITUDE_SPLIT_MIN_FRACTION)[0]])
    return usual


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

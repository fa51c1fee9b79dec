"""A neuron's spikes seen again by another unit: events locked at a fixed lag to another unit's spikes go.

Each filter lives on its main channel's neighbourhood. A neuron whose spikes
reach further, onto a smaller neuron's channels, leaves there a waveform its
own filter does not model, and the smaller neuron's filter codes it: the
smaller unit then holds a copy of some of the bigger neuron's spikes, always
at the same lag to them. Measured on SpikeInterface's 32-channel probe
(recording seed 3, sorter seed 3): the 5-SNR neuron gt5's unit held 586
events of other neurons (gt19 218, gt20 154, gt6 107, gt12 43), far from any
gt5 spike, which with every other event taken out still held gt5's shape at
its size (precision 0.881, accuracy 0.846). In the pair's lag histogram, 218
of them fell within 3 samples where 7 were due.

Chance coincidences of two independent trains spread over every lag; a copy
sits at one. So for each pair of units sharing channels, the lags of one's
events to the other's within LOCK_WINDOW_MS are counted, and a peak (the
events within LOCK_HALF_WIDTH samples of the most frequent lag) is a lock
when it holds at least LOCK_MIN_EVENTS events, LOCK_MIN_RATIO times what the
flanks (LOCK_FLANK_MS away) give, at a chance of LOCK_P_VALUE or less. A
copy's lag jitters by a few samples (each unit places its event where its
own filter fits), so the lock then takes in each lag beside the peak, out to
LOCK_REACH_MS, that still holds LOCK_EXTEND_RATIO times the flanks' count
(recording seed 4, sorter seed 4: a unit's copies of a neighbour's spikes
held 118 events at the peak lag and 20-59 at each of the two either side,
2-3 a lag by chance: the 1-sample peak left 135 of them; gt21 0.948 ->
0.964, the sort 0.9474 -> 0.9481; recording seeds 0, 1, 3 and 6 +0.0002 to
0, 384 channels and the tetrodes unchanged). The
pair's locked events are one spike coded twice; which unit holds the copy is
read from the recording: at LOCK_SAMPLE of the locked pairs, each unit's
median snippet (of its unlocked spikes, on both units' main channels) is
fitted to the window at its own event, and the unit that explains its windows
worse in most of them loses its locked events. Template size does not tell:
gt20's unit and gt5's coded the same gt20 spikes at lag 0, and gt5's
template is the bigger.

Units labelled noise by the sort are left as they are (they are residue by
their label, kept for the person to see), and so are their locks.

A lock's lags also hold the copying unit's own spikes that fell there by
chance (the flanks' count per lag, times the lock's lags), and until stop 54
they went with the copies (recording seed 7: 19 of the 5-SNR gt6's spikes).
So each locked event of the unit that holds the copies is asked of the
recording as the overlapped stage asks a dropped event (overlapped_spikes.py:
its unit's median fitted beside the sort's other events, the copies taken
out), and one that holds the unit's spike at its usual size stays. Sorts
before -> after (recording seeds 0-7, one each): 0.9083 -> 0.9084, 0.9926
-> 0.9932 (gt5 0.957 -> 0.966), 0.9549 -> 0.9550, 0.8700 -> 0.8701, 0.9536
-> 0.9539, 0.9125 -> 0.9133 (gt23 0.922 -> 0.939), 0.9962 -> 0.9963,
0.9900 -> 0.9904; 7-225 of 36-5,172 locked events kept on each.

Measured on the benchmark's recordings (the sort's stages run once, this one
after them; mean accuracy before -> after): 32 channels, recording seed 3
0.8643 -> 0.8672 (gt5 0.846 -> 0.918), seed 0 0.9016 -> 0.9023, seed 1
0.9435 -> 0.9444, seed 6 (sorter seeds 6-9) +0.0002 to 0; 384 channels
(60 s) 0.9162 -> 0.9164; both tetrodes unchanged (nothing locked). Choosing
the copy by template size instead: seed 3 0.8654 (gt20 0.974 -> 0.950);
with units labelled noise in it (their copies dropped, noise units never
chosen as the original) the same figures within 0.0001, thousands of their
events gone. Cost: 0.01-2.2 s (32 channels, 5 min; 3.6 s when each lock read its units again), 0.2 s at 384 channels;
asking the recording about the locked events adds ~0.2 s (recording seed 0: 1.37 -> 1.57 s).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import poisson

from engine.model.pairs import pairs_in_runs
from engine.pipeline.hollow_events import sampled_medians
from engine.pipeline.main_channels import main_channels
from engine.pipeline.overlapped_spikes import holds_its_spike, relative_sizes
from engine.pipeline.residual_units import labelled_residual
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.unit_merge import SnippetMeans, read_snippets
from engine.pipeline.waveform_split import SNIPPET_MS

LOCK_WINDOW_MS = 1.0
LOCK_HALF_WIDTH = 1  # samples either side of the peak lag
LOCK_FLANK_MS = (5.0, 15.0)
LOCK_MIN_EVENTS = 20
LOCK_MIN_RATIO = 5.0
LOCK_P_VALUE = 1e-6
LOCK_SAMPLE = 200
# A copy's lag to its original jitters by a few samples (each unit places its events where its own filter
# fits): the lock reaches out from the peak, lag by lag, while each holds LOCK_EXTEND_RATIO times the flanks'
# count per lag, up to LOCK_REACH_MS either side of the most frequent lag.
LOCK_EXTEND_RATIO = 3.0
LOCK_REACH_MS = 0.17


@dataclass(frozen=True)
class Lock:
    """Two units' events `a_events`, `b_events` (indices into the sorting, pairwise) at b - a within
    `lags` (samples, inclusive) around the most frequent lag `lag`."""

    lag: int
    lags: tuple[int, int]
    a_events: np.ndarray
    b_events: np.ndarray


def drop_locked_events(sorting: Sorting, recording, noise_levels: np.ndarray, channel_mask: np.ndarray) -> Sorting:
    """`sorting` without the events that copy another unit's spikes (see the module's docstring).
    recording: what was sorted (preprocessed); noise_levels (n_channels,) its σ; channel_mask
    (n_filters, n_channels) bool: where each of the dictionary's filters lives."""
    if sorting.n_units < 2 or sorting.filter_index is None or sorting.n_spikes == 0:
        return sorting
    noise_levels = np.asarray(noise_levels, dtype=np.float64)
    rate = sorting.sampling_rate
    samples = lambda ms: max(int(round(ms * 1e-3 * rate)), 1)  # noqa: E731
    residual = labelled_residual(sorting)
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)
    mask = np.asarray(channel_mask, dtype=bool)[np.asarray(sorting.filter_index, dtype=np.int64)]
    units = [u for u in range(sorting.n_units) if u not in residual and len(of_unit[u]) >= LOCK_MIN_EVENTS]
    locks: list[tuple[int, int, Lock]] = []
    on = mask[units].astype(np.int32)
    # Only the pairs that share a channel (a few per unit on a probe of hundreds), as unit_merge pairs them.
    for i, j in zip(*np.nonzero(np.triu(on @ on.T, k=1))):
        a, b = units[i], units[j]
        lock = find_lock(sorting.spike_times, of_unit[a], of_unit[b], samples(LOCK_WINDOW_MS),
                         (samples(LOCK_FLANK_MS[0]), samples(LOCK_FLANK_MS[1])), samples(LOCK_REACH_MS))
        if lock is not None:
            locks.append((a, b, lock))
    if not locks:
        return _noted(sorting, "no events dropped")
    before, length = samples(SNIPPET_MS[0]), samples(SNIPPET_MS[0]) + samples(SNIPPET_MS[1])
    locked = np.zeros(sorting.n_spikes, dtype=bool)
    for _, _, lock in locks:
        locked[lock.a_events] = True
        locked[lock.b_events] = True
    main = {unit: main_channels(sorting.templates[unit], noise_levels, mask[unit])
            for a, b, _ in locks for unit in (a, b)}
    # Each unit's median snippet (of its unlocked spikes) is read once, on every channel its locks compare it
    # on, as unit_merge.find_merges reads its units' snippets.
    reach: dict[int, np.ndarray] = {}
    for a, b, _ in locks:
        both = np.union1d(main[a], main[b])
        for unit in (a, b):
            reach[unit] = np.union1d(reach.get(unit, both), both)
    reader = SnippetMeans(recording, noise_levels, length, before)
    medians = {}
    for unit, channels in reach.items():
        unlocked = of_unit[unit][~locked[of_unit[unit]]]
        median = reader.median(sorting.spike_times[unlocked], channels)
        medians[unit] = None if median is None else median[0]
    drop = np.zeros(sorting.n_spikes, dtype=bool)
    copied: list[tuple[int, int, np.ndarray]] = []  # (the unit holding the copies, the owner, the copies)
    for a, b, lock in locks:
        if medians[a] is None or medians[b] is None:
            continue
        channels = np.union1d(main[a], main[b])
        templates = [medians[unit][:, np.searchsorted(reach[unit], channels)] for unit in (a, b)]
        a_copies = _a_holds_the_copies(sorting.spike_times, recording, noise_levels, lock, templates, channels,
                                       before, length)
        if a_copies is None:
            continue
        (copy, events), owner = ((a, lock.a_events), b) if a_copies else ((b, lock.b_events), a)
        drop[events] = True
        copied.append((copy, owner, events))
    if not drop.any():
        return _noted(sorting, "no events dropped")
    held = _own_spikes_among(drop, sorting, of_unit, recording, noise_levels, mask,
                             sorted({copy for copy, _, _ in copied}))
    drop &= ~held
    counts: dict[tuple[int, int], int] = {}
    for copy, owner, events in copied:
        counts[(copy, owner)] = counts.get((copy, owner), 0) + int(np.count_nonzero(drop[events]))
    note = (f"{int(drop.sum())} events dropped: each a copy of another unit's spike at a fixed lag ("
            + ", ".join(f"{n} of {a} copying {b}" for (a, b), n in sorted(counts.items(), key=lambda kv: -kv[1])[:8]
                        if n)
            + (", ..." if np.count_nonzero(list(counts.values())) > 8 else "") + ")")
    if held.any():
        note += f"; {int(held.sum())} locked events kept: the recording holds their unit's spike there"
    return _noted(sorting.with_spikes(~drop), note)


def _own_spikes_among(drop: np.ndarray, sorting: Sorting, of_unit: list[np.ndarray], recording,
                      noise_levels: np.ndarray, masks: np.ndarray, copying: list[int]) -> np.ndarray:
    """(n_spikes,) bool: the events to drop (`drop`) of the `copying` units whose window, with the sort's
    other events taken out, holds the unit's own spike at its usual size (overlapped_spikes' test,
    `holds_its_spike`). `masks`: (n_units,
    n_channels) where each unit's filter lives; `of_unit`: each unit's spike indices in `sorting`."""
    held = np.zeros(sorting.n_spikes, dtype=bool)
    kept = sorting.with_spikes(~drop)  # the medians, and the events fitted beside, without the copies
    sample = sampled_medians(kept, recording, noise_levels, masks, copying,
                             spikes_of_each_filter(kept.spike_units, kept.n_units))
    if sample is None:
        return held
    for unit in copying:
        if unit not in sample.medians:
            continue
        events = of_unit[unit][drop[of_unit[unit]]]  # its copies, in time order
        sizes, t = relative_sizes(sample, unit, kept, recording, noise_levels, sorting.spike_times[events])
        held[events[holds_its_spike(sizes, t)]] = True
    return held


def find_lock(times: np.ndarray, a: np.ndarray, b: np.ndarray, window: int, flank: tuple[int, int],
              reach: int = LOCK_HALF_WIDTH) -> Lock | None:
    """The lock of unit b's events (indices `b` into `times`, in time order) to unit a's (`a`), or None:
    the lag within ±window (samples) where, with LOCK_HALF_WIDTH either side, b's events fall after a's
    far more often than the flanks (`flank`, samples either side) say two independent trains would; the
    lock holds the lags around it, up to `reach` samples away, that each still do (LOCK_EXTEND_RATIO)."""
    times_a, times_b = times[a], times[b]
    # Every (a, b) pair within the window, without a loop over events: each a's run of b's.
    rows, columns = pairs_in_runs(np.searchsorted(times_b, times_a - window),
                                  np.searchsorted(times_b, times_a + window, side="right"))
    if len(rows) < LOCK_MIN_EVENTS:
        return None
    lags = times_b[columns] - times_a[rows]
    histogram = np.bincount(lags + window, minlength=2 * window + 1)
    near = np.convolve(histogram, np.ones(2 * LOCK_HALF_WIDTH + 1, dtype=np.int64), mode="same")
    ties = np.flatnonzero(near == near.max())
    peak = int(ties[np.argmax(histogram[ties])])  # centred on the most frequent lag
    observed = int(near[peak])
    in_flanks = (np.searchsorted(times_b, times_a + flank[1]) - np.searchsorted(times_b, times_a + flank[0])).sum() \
        + (np.searchsorted(times_b, times_a - flank[0]) - np.searchsorted(times_b, times_a - flank[1])).sum()
    per_lag = float(in_flanks) / (2 * (flank[1] - flank[0]))
    expected = per_lag * (2 * LOCK_HALF_WIDTH + 1)
    if (observed < LOCK_MIN_EVENTS or observed < LOCK_MIN_RATIO * expected
            or float(poisson.sf(observed - 1, expected)) > LOCK_P_VALUE):
        return None
    # Out from the peak while each lag still holds far more than chance (and more than one event).
    above = histogram >= max(LOCK_EXTEND_RATIO * per_lag, 2.0)
    low, high = peak - LOCK_HALF_WIDTH, peak + LOCK_HALF_WIDTH
    while low - 1 >= max(peak - reach, 0) and above[low - 1]:
        low -= 1
    while high + 1 <= min(peak + reach, 2 * window) and above[high + 1]:
        high += 1
    pairs = (lags + window >= low) & (lags + window <= high)
    return Lock(peak - window, (low - window, high - window), a[rows[pairs]], b[columns[pairs]])


def _a_holds_the_copies(times: np.ndarray, recording, noise_levels: np.ndarray, lock: Lock,
                        templates: list[np.ndarray], channels: np.ndarray, before: int, length: int) -> bool | None:
    """Whether the lock's first unit holds the copies: whether its median snippet (`templates`: the two
    units', on `channels`) explains worse than the other's, in most of LOCK_SAMPLE locked pairs, the
    recording at its own event. None where no pair can be read whole."""
    pick = np.linspace(0, len(lock.a_events) - 1, min(len(lock.a_events), LOCK_SAMPLE)).astype(np.int64)
    starts = [times[lock.a_events[pick]] - before, times[lock.b_events[pick]] - before]
    readable = np.ones(len(pick), dtype=bool)
    for begin in starts:
        readable &= (begin >= 0) & (begin + length <= recording.n_samples)
    if not readable.any():
        return None
    misfits = []
    for begin, template in zip(starts, templates):
        windows = read_snippets(recording, begin[readable], length, channels).astype(np.float64)
        windows /= noise_levels[channels]
        size = np.clip(np.einsum("slc,lc->s", windows, template) / max(float((template ** 2).sum()), 1e-12), 0.0, None)
        misfits.append(((windows - size[:, None, None] * template) ** 2).sum(axis=(1, 2)))
    return float(np.mean(misfits[0] < misfits[1])) <= 0.5


def _noted(sorting: Sorting, note: str) -> Sorting:
    provenance = sorting.provenance
    return sorting if provenance is None else replace(sorting, provenance=replace(provenance, locked_events=note))

"""One neuron, two units: merge units whose spikes are one neuron's.

A dictionary can code one neuron in more than one way: with its own filter,
and, on some of its spikes, with a look-alike neighbour's filter at part of
that one's size (the rest of the spike left to a companion filter). Each way
becomes a unit, and the neuron's spikes are shared between them. Measured on
SpikeInterface's 32-channel probe (recording seed 6, 5 min): a 12-SNR neuron's
4,468 spikes lay in three units (2,814, 1,113 and 1,062 spikes) coded by three
filters, so its best unit scored 0.61.

Two tests, both on what was recorded rather than on the codes, the way phy's
users and Kilosort's merge step judge a pair:

- Refractoriness. One neuron cannot fire twice within its refractory period,
  so the two units' spikes almost never come 0.5-1.5 ms apart (closer than
  DEAD_TIME_MS they are one spike coded twice, and are not counted); two
  neurons fire there at the rate their cross-correlogram's flanks (10-50 ms)
  give. The three units above: 4-5 pairs where 12-32 were due; every other
  pair of units of that sort near its expectation (0.8-1.2 of it).
- One waveform. The recording's median snippet at each unit's spikes (up to
  MERGE_SPIKES of them, noise taken out of the norms, best of a few samples'
  shift) must be MERGE_SIMILARITY alike and of one size (MAX_SIZE_RATIO): a
  spike coded partly by a companion filter still holds its whole neuron in
  the data. Two neurons of one shape and different sizes, which the amplitude
  split made two units of, stay two. The three units above: 0.984-0.995 alike,
  sizes within 1.09; the most alike pair of different neurons 0.951. The median, not
  the mean: a few spikes overlapped by big neighbours move a mean far (same
  probe, sorter seed 9: one neuron's two units 0.946 alike by their means,
  0.991 by their medians; merged now, the sort 0.981 -> 0.993). The
  snippets are compared on both units' main channels (where either holds
  its neuron: engine/pipeline/main_channels.py), not on every channel their
  filters reach: there a small neuron's median holds the residue of whatever
  else its events overlap, which differs between two units of it. Recording
  seed 7, sorter seed 7: a 3.8-SNR neuron's two units (3,221 and 924 of its
  spikes; 0 pairs within the period where 19 were due) were 0.916 alike on
  the 19 channels their filters reach (0.912-0.916 from 200 to 3,000 spikes
  each: not the medians' noise) and 0.977 on their main channels.

Where the two trains are too sparse for the count to judge (a 60-s recording of 2-8 Hz neurons: 1-3 pairs
due by chance, so even none is no dip), neither passes nor fails, the waveforms decide alone, at a stricter
bar: UNTESTED_MERGE_SIMILARITY alike, within MAX_SIZE_RATIO. On SpikeInterface's drifting generator's
384-channel probe (static, 60 s) seven neurons lay in two units each, 0.993-1.000 alike and 1.00-1.22 in
size, with 0-1 pairs in the window where 0.9-5.1 were due; the most alike two neurons were 0.960.

On a motion-corrected recording one more way: one neuron that the drift split by size (it looks smaller
where the drift leaves it between two rows of contacts) lies in two units whose spikes seldom come near
each other, so the refractory test has nothing to count, and whose waveforms differ in size. Such a pair
is merged when which of the two a spike is in follows where the probe was and their summed rate does not
(engine/pipeline/drift_phase.py), their waveforms DRIFT_MERGE_SIMILARITY alike within DRIFT_MAX_SIZE_RATIO,
and they never fire inside each other's refractory period more than one neuron could.

Pairs are tried most alike first, and each merge tests the refractoriness of
the two groups as merged so far, between them and within each: a group whose
own train breaks the period holds more than one neuron, and merging it would
hand the others' spikes to a neuron's unit. Where one spike was coded in both
units, the merged unit keeps the bigger event.

The sort asks twice (`merge_units`, then `merge_cleaned_units` at its end). At
the first asking, a small neuron's unit may still hold the copies of its
neighbours' spikes that the later stages drop (locked and hollow events), and
those break its own train's period: on SpikeInterface's 32-channel probe
(recording seed 5) a 6-SNR neuron lay in two units, 0.995 alike, 7 pairs in
the period between them where 45 were due, but one held 600 copies of three
neighbours' spikes (42 pairs in its own period where 77 were due) and was
merged into neither. Once those are dropped the same tests merge them (the
neuron 0.52 -> 0.87; the sort 0.895 -> 0.909). Units the sort labelled noise
are not merged at the second asking: they hold no neuron of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy.stats import poisson

from engine.pipeline.params import (
    BASELINE_MS, DRIFT_MAX_SIZE_RATIO, DRIFT_MERGE_SIMILARITY,
    MAX_COUNTED_SPIKES, MAX_REFRACTORY_RATIO, MAX_SHIFT_MS, MAX_SIZE_RATIO, MERGE_SIMILARITY, MERGE_SPIKES,
    MIN_FILTER_SIMILARITY, REFRACTORY_MS, REFRACTORY_P_VALUE, REFRACTORY_SPLIT_MIN_EXPECTED, UNTESTED_MERGE_SIMILARITY,
)
from engine.pipeline.drift_phase import drift_evidence
from engine.pipeline.main_channels import main_channels
from engine.pipeline.sorting import Sorting, spikes_of_each_filter

# mean_snippet(unit, channels) -> ((n_samples, n_channels) mean, (n_samples, n_channels) variance
# of that mean (the spikes' variance over their count)), or None when the unit has too few spikes
# in reach; the snippets are centred on the unit's spike times.
MeanSnippet = Callable[[int, np.ndarray], "tuple[np.ndarray, np.ndarray] | None"]


@dataclass(frozen=True)
class Windows:
    """The refractory test's windows, in samples."""

    dead: int  # spikes of two units closer than this are one spike coded twice
    refractory: int
    baseline: tuple[int, int]

    @classmethod
    def at(cls, sampling_rate: float, dead_time: int) -> "Windows":
        samples = lambda ms: max(int(round(ms * 1e-3 * sampling_rate)), 1)  # noqa: E731
        return cls(dead_time, max(samples(REFRACTORY_MS), dead_time + 1),
                   (samples(BASELINE_MS[0]), samples(BASELINE_MS[1])))


def pairs_within(times_a: np.ndarray, times_b: np.ndarray, low: int, high: int) -> int:
    """How many (a, b) pairs, sorted times each, lie low < |b - a| <= high samples apart."""
    after = np.searchsorted(times_b, times_a + high, side="right") - np.searchsorted(times_b, times_a + low, side="right")
    before = np.searchsorted(times_b, times_a - low, side="left") - np.searchsorted(times_b, times_a - high, side="left")
    return int(after.sum() + before.sum())


def refractory_dip(times_a: np.ndarray, times_b: np.ndarray, windows: Windows) -> tuple[int, float]:
    """(observed, expected): pairs of spikes of a and b inside the refractory window (beyond the dead
    time), and the count two independent trains would give there, from the cross-correlogram's flanks."""
    times_a = _thinned(times_a)
    observed = pairs_within(times_a, times_b, windows.dead, windows.refractory)
    flank = pairs_within(times_a, times_b, *windows.baseline)
    expected = flank * (windows.refractory - windows.dead) / (windows.baseline[1] - windows.baseline[0])
    return observed, float(expected)


def _thinned(times: np.ndarray) -> np.ndarray:
    if len(times) <= MAX_COUNTED_SPIKES:
        return times
    return times[np.linspace(0, len(times) - 1, MAX_COUNTED_SPIKES).astype(np.int64)]


def is_refractory(times_a: np.ndarray, times_b: np.ndarray, windows: Windows) -> bool:
    """Whether a and b together keep a refractory period (`dip_is_refractory` of their `refractory_dip`)."""
    return dip_is_refractory(*refractory_dip(times_a, times_b, windows))


def dip_is_refractory(observed: int, expected: float) -> bool:
    """Whether (observed, expected) pairs in the refractory window show one refractory period: at most
    MAX_REFRACTORY_RATIO of the chance count, and a count that two independent trains would leave with
    probability at most REFRACTORY_P_VALUE (Poisson at the chance count: 0 pairs needs 4.2 expected, 2 needs 8)."""
    return (observed <= MAX_REFRACTORY_RATIO * expected
            and float(poisson.cdf(observed, expected)) <= REFRACTORY_P_VALUE)


def refractory_excess(times_a: np.ndarray, times_b: np.ndarray, windows: Windows) -> bool:
    """Whether a and b fire inside each other's refractory window more than one neuron could
    (`dip_in_excess` of their `refractory_dip`)."""
    return dip_in_excess(*refractory_dip(times_a, times_b, windows))


def dip_in_excess(observed: int, expected: float) -> bool:
    """More pairs in the refractory window than MAX_REFRACTORY_RATIO of the chance count (where none are
    due by chance, any pair is one too many)."""
    return observed > MAX_REFRACTORY_RATIO * expected


def breaks_refractory(train: np.ndarray, windows: Windows) -> bool:
    """Whether a spike train (sorted times) breaks the refractory period: more than MAX_REFRACTORY_RATIO
    of the chance count of pairs in its window, with at least REFRACTORY_SPLIT_MIN_EXPECTED due."""
    observed, expected = refractory_dip(train, train, windows)
    return expected >= REFRACTORY_SPLIT_MIN_EXPECTED and observed > MAX_REFRACTORY_RATIO * expected


def waveform_match(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], max_shift: int
                   ) -> tuple[float, float]:
    """(similarity, size ratio >= 1) of two mean snippets (mean, variance of the mean), best over shifts
    of b by up to `max_shift` samples; each mean's noise is taken out of its squared norm.
    (0, inf) when either holds no more than its noise."""
    (mean_a, var_a), (mean_b, var_b) = a, b
    n = mean_a.shape[0] - 2 * max_shift
    core_a, noise_a = mean_a[max_shift:max_shift + n], var_a[max_shift:max_shift + n].sum()
    energy_a = float((core_a * core_a).sum() - noise_a)
    best = (0.0, np.inf)
    for shift in range(-max_shift, max_shift + 1):
        part = slice(max_shift + shift, max_shift + shift + n)
        core_b = mean_b[part]
        energy_b = float((core_b * core_b).sum() - var_b[part].sum())
        if energy_a <= 0 or energy_b <= 0:
            continue
        similarity = float((core_a * core_b).sum()) / np.sqrt(energy_a * energy_b)
        if similarity > best[0]:
            best = (similarity, float(np.sqrt(max(energy_a, energy_b) / min(energy_a, energy_b))))
    return best


@dataclass
class UnitMerges:
    """Which units became one (each group in ascending unit order, the first keeps its number), and which
    pairs of them the drift joined (engine/pipeline/drift_phase.py) or their waveforms alone (trains too
    sparse for the refractory count) rather than a refractory dip."""

    groups: list[list[int]]
    by_drift: list[tuple[int, int]] = field(default_factory=list)
    by_waveform: list[tuple[int, int]] = field(default_factory=list)

    def describe(self, after_cleaning: bool = False) -> str:
        if not self.groups:
            return "no units merged after cleaning" if after_cleaning else "no units merged"
        pairs = ", ".join("+".join(map(str, group)) for group in self.groups)
        if self.by_drift:
            pairs += (" (" + ", ".join(f"{a}+{b}" for a, b in self.by_drift) + " by the drift instead of a refractory "
                      "dip: which of the two a spike was in followed where the probe was)")
        if self.by_waveform:
            pairs += (" (" + ", ".join(f"{a}+{b}" for a, b in self.by_waveform) + " by their waveforms alone: too few "
                      "spikes close enough to count a refractory period, none inside it)")
        if after_cleaning:
            # The notes of the stages before name units by their numbers then: say that these change.
            return (f"merged units after their events were cleaned (one neuron: refractory and one waveform): {pairs} "
                    "(numbered as in the notes before; the units after each merged one move down)")
        return f"merged units (one neuron: refractory and one waveform): {pairs}"


def find_merges(trains: list[np.ndarray], candidates: list[tuple[int, int]], mean_snippet: MeanSnippet,
                channels_of: Callable[[int], np.ndarray], windows: Windows, max_shift: int,
                drift_split: Callable[[int, int], bool] | None = None) -> UnitMerges:
    """The units to merge, among `candidates` (pairs of units that could be one neuron, e.g. sharing
    channels with alike filters); `trains` each unit's sorted spike times, `channels_of(unit)` the
    channels its snippets are read on. `drift_split(a, b)`, on a motion-corrected recording: whether
    the drift decides which of the two a spike is in (engine/pipeline/drift_phase.py); such a pair
    needs no refractory dip (its spikes seldom come close enough to show one), only none broken,
    and waveforms DRIFT_MERGE_SIMILARITY alike within DRIFT_MAX_SIZE_RATIO. A pair whose count
    neither shows a dip nor breaks the period (too few pairs due) merges on waveforms
    UNTESTED_MERGE_SIMILARITY alike within MAX_SIZE_RATIO."""
    dips = {(a, b): refractory_dip(trains[a], trains[b], windows) for a, b in candidates}  # each pair's count once
    refractory = {pair for pair, dip in dips.items() if dip_is_refractory(*dip)}
    untested = {pair for pair, dip in dips.items() if pair not in refractory and not dip_in_excess(*dip)}
    passed = [pair for pair in candidates if pair in refractory or pair in untested]
    # Each unit's snippets are read once, on every channel its pairs compare it on.
    reach: dict[int, np.ndarray] = {}
    for a, b in passed:
        both = np.union1d(channels_of(a), channels_of(b))
        for unit in (a, b):
            reach[unit] = np.union1d(reach.get(unit, both), both)
    means = {unit: mean_snippet(unit, channels) for unit, channels in reach.items()}
    alike = []
    for a, b in passed:
        if means[a] is None or means[b] is None:
            continue
        both = np.union1d(channels_of(a), channels_of(b))
        on_a, on_b = np.searchsorted(reach[a], both), np.searchsorted(reach[b], both)
        similarity, size_ratio = waveform_match((means[a][0][:, on_a], means[a][1][:, on_a]),
                                                (means[b][0][:, on_b], means[b][1][:, on_b]), max_shift)
        if (a, b) in refractory and similarity >= MERGE_SIMILARITY and size_ratio <= MAX_SIZE_RATIO:
            alike.append((similarity, a, b, "refractory"))
        elif (a, b) in untested and similarity >= UNTESTED_MERGE_SIMILARITY and size_ratio <= MAX_SIZE_RATIO:
            alike.append((similarity, a, b, "waveform"))
        elif (drift_split is not None and similarity >= DRIFT_MERGE_SIMILARITY and size_ratio <= DRIFT_MAX_SIZE_RATIO
              and drift_split(a, b)):
            alike.append((similarity, a, b, "drift"))
    root = list(range(len(trains)))

    def find(unit: int) -> int:
        while root[unit] != unit:
            unit = root[unit]
        return unit

    members = {unit: [unit] for unit in range(len(trains))}
    joined = {"drift": [], "waveform": []}  # pairs joined without a refractory dip, by route
    for _, a, b, route in sorted(alike, reverse=True):
        group_a, group_b = find(a), find(b)
        if group_a == group_b:
            continue
        merged_a = np.sort(np.concatenate([trains[u] for u in members[group_a]]))
        merged_b = np.sort(np.concatenate([trains[u] for u in members[group_b]]))
        if (not is_refractory(merged_a, merged_b, windows) if route == "refractory"
                else refractory_excess(merged_a, merged_b, windows)):
            continue
        # Nor may either side break the period on its own: it holds more than one neuron, and merging it
        # would hand the others' spikes to this one.
        if breaks_refractory(merged_a, windows) or breaks_refractory(merged_b, windows):
            continue
        keep, gone = min(group_a, group_b), max(group_a, group_b)
        root[gone] = keep
        members[keep] = sorted(members[keep] + members.pop(gone))
        if route in joined:
            joined[route].append((min(a, b), max(a, b)))
    return UnitMerges([group for group in members.values() if len(group) > 1], sorted(joined["drift"]),
                      sorted(joined["waveform"]))


def _trains(sorting: Sorting) -> list[np.ndarray]:
    """Each unit's spike times, sorted (the spikes are in time order)."""
    return [sorting.spike_times[mine] for mine in spikes_of_each_filter(sorting.spike_units, sorting.n_units)]


def apply_merges(sorting: Sorting, merges: UnitMerges, dead_time: int, after_cleaning: bool = False) -> Sorting:
    """`sorting` with each group of `merges` one unit: the group's first number, the template,
    filter and peak tap of its unit with the most spikes, and one event (the bigger) where the
    group's units coded one spike within `dead_time` samples of each other. Units are numbered
    again in their order, without gaps, and their groups and the sort's labels with them (a group's
    first unit's). What was merged goes to the provenance's `unit_merges`, or with `after_cleaning`
    to its `cleaned_unit_merges`."""
    if not merges.groups:
        return sorting
    counts = sorting.spike_counts()
    into = np.arange(sorting.n_units)
    representative = np.arange(sorting.n_units)
    for group in merges.groups:
        into[group] = group[0]
        representative[group[0]] = group[int(np.argmax(counts[group]))]
    survivors = np.flatnonzero(into == np.arange(sorting.n_units))
    renumber = np.full(sorting.n_units, -1, dtype=np.int64)
    renumber[survivors] = np.arange(len(survivors))
    units = renumber[into[sorting.spike_units]]
    keep = _one_event_per_spike(sorting.spike_times, units, np.abs(sorting.amplitudes), dead_time,
                                merged=renumber[[group[0] for group in merges.groups]])
    chosen = representative[survivors]
    provenance = sorting.provenance
    if provenance is not None:
        provenance = (replace(provenance, cleaned_unit_merges=merges.describe(after_cleaning=True)) if after_cleaning
                      else replace(provenance, unit_merges=merges.describe()))

    def renumbered(labels: dict[int, str]) -> dict[int, str]:
        return {int(renumber[unit]): label for unit, label in labels.items() if renumber[unit] >= 0}

    return replace(
        sorting,
        spike_times=sorting.spike_times[keep],
        spike_units=units[keep].astype(np.int32),
        amplitudes=sorting.amplitudes[keep],
        templates=sorting.templates[chosen],
        template_peak_taps=None if sorting.template_peak_taps is None else sorting.template_peak_taps[chosen],
        features=None if sorting.features is None else sorting.features[keep],
        filter_index=None if sorting.filter_index is None else sorting.filter_index[chosen],
        code_amplitudes=None if sorting.code_amplitudes is None else sorting.code_amplitudes[keep],
        provenance=provenance,
        unit_groups=renumbered(sorting.unit_groups),
        sort_labels=None if sorting.sort_labels is None else renumbered(sorting.sort_labels),
    )


def _one_event_per_spike(times: np.ndarray, units: np.ndarray, sizes: np.ndarray, dead_time: int,
                         merged: np.ndarray) -> np.ndarray:
    """(n_spikes,) bool: every event, except the smaller of two events of a merged unit less than
    `dead_time` samples apart (one spike its old units both coded)."""
    keep = np.ones(len(times), dtype=bool)
    mine = np.flatnonzero(np.isin(units, merged))
    mine = mine[np.argsort(units[mine], kind="stable")]  # by unit, each in time order (times are sorted)
    close = np.flatnonzero((np.diff(units[mine]) == 0) & (np.diff(times[mine]) < dead_time))
    first, second = mine[close], mine[close + 1]
    keep[np.where(sizes[first] >= sizes[second], second, first)] = False
    return keep


def merge_units(sorting: Sorting, recording, noise_levels: np.ndarray, filters: np.ndarray,
                channel_mask: np.ndarray, dead_time: int, motion=None) -> Sorting:
    """`sorting` with the units that are one neuron merged (see the module's docstring).

    recording: what was sorted (preprocessed), read for the units' mean snippets; filters
    (n_filters, n_taps, n_channels) and channel_mask (n_filters, n_channels) bool: the dictionary
    the units came from (`sorting.filter_index`); motion: the drift `recording` was corrected for
    (SpikeInterface's Motion), or None."""
    merges = _merges_of(sorting, recording, noise_levels, filters, channel_mask, dead_time, excluded=set(), motion=motion)
    return sorting if merges is None else apply_merges(sorting, merges, dead_time)


def merge_cleaned_units(sorting: Sorting, recording, noise_levels: np.ndarray, filters: np.ndarray,
                        channel_mask: np.ndarray, dead_time: int, motion=None) -> Sorting:
    """`merge_units` asked again at the end of the sort, once the events that are not their unit's
    neuron have been dropped (the module's docstring says why); units the sort labelled (residual
    units, "noise") take no part. What was merged is noted in the provenance's `cleaned_unit_merges`."""
    merges = _merges_of(sorting, recording, noise_levels, filters, channel_mask, dead_time,
                        excluded=set((sorting.sort_labels or {}).keys()), motion=motion)
    # Nothing merged: the provenance's default already says so.
    return sorting if merges is None else apply_merges(sorting, merges, dead_time, after_cleaning=True)


def _merges_of(sorting: Sorting, recording, noise_levels: np.ndarray, filters: np.ndarray, channel_mask: np.ndarray,
               dead_time: int, excluded: set[int], motion=None) -> UnitMerges | None:
    """The merges `find_merges` finds among the pairs of units (none of them `excluded`) that share a channel
    and whose filters are alike; None when no pair is a candidate."""
    if sorting.n_units < 2 or sorting.filter_index is None:
        return None
    from engine.model.similarity import shift_invariant_similarity

    unit_filters = np.asarray(sorting.filter_index, dtype=np.int64)
    mask = np.asarray(channel_mask, dtype=bool)[unit_filters]  # (n_units, n_channels)
    filter_similarity = shift_invariant_similarity(filters)[np.ix_(unit_filters, unit_filters)]
    sharing = (mask.astype(np.int32) @ mask.T.astype(np.int32)) > 0
    taking_part = ~np.isin(np.arange(sorting.n_units), sorted(excluded))
    candidates = sharing & (filter_similarity >= MIN_FILTER_SIMILARITY) & np.outer(taking_part, taking_part)
    a, b = np.nonzero(np.triu(candidates, k=1))
    if len(a) == 0:
        return None
    n_taps = filters.shape[1]
    max_shift = max(int(round(MAX_SHIFT_MS * 1e-3 * sorting.sampling_rate)), 1)
    trains = _trains(sorting)
    reader = SnippetMeans(recording, noise_levels, n_taps + 2 * max_shift, n_taps // 2 + max_shift)
    main = {unit: main_channels(sorting.templates[unit], noise_levels, mask[unit]) for unit in np.union1d(a, b).tolist()}
    drift_split = None
    if motion is not None:
        depths = np.asarray(recording.channel_positions, dtype=np.float64)[:, 1]

        def drift_split(unit_a: int, unit_b: int) -> bool:
            depth = float(np.mean(depths[np.union1d(main[unit_a], main[unit_b])]))
            return drift_evidence(motion, *(_thinned(trains[u]) / sorting.sampling_rate for u in (unit_a, unit_b)),
                                  depth).one_neuron
    return find_merges(trains, list(zip(a.tolist(), b.tolist())),
                       lambda unit, channels: reader.median(trains[unit], channels),
                       main.__getitem__, Windows.at(sorting.sampling_rate, dead_time), max_shift, drift_split=drift_split)


class SnippetMeans:
    """Mean snippets of the recording at spike times, in noise σ: up to MERGE_SPIKES spikes spread
    over the recording, `length` samples from `before` samples ahead of each."""

    def __init__(self, recording, noise_levels: np.ndarray, length: int, before: int) -> None:
        self.recording, self.noise_levels = recording, np.asarray(noise_levels, dtype=np.float64)
        self.length, self.before = length, before

    def mean(self, times: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        snippets = self._snippets(times, channels)
        if snippets is None:
            return None
        return snippets.mean(axis=0), snippets.var(axis=0) / len(snippets)

    def median(self, times: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The median snippet and its variance (π/2 σ²/n, σ from the median absolute deviation): a few
        spikes overlapped by big neighbours move a mean far, not a median."""
        snippets = self._snippets(times, channels)
        if snippets is None:
            return None
        centre = np.median(snippets, axis=0)
        spread = 1.4826 * np.median(np.abs(snippets - centre), axis=0)
        return centre, 0.5 * np.pi * spread ** 2 / len(snippets)

    def _snippets(self, times: np.ndarray, channels: np.ndarray) -> np.ndarray | None:
        starts = times - self.before
        starts = starts[(starts >= 0) & (starts + self.length <= self.recording.n_samples)]
        if len(starts) < 2:
            return None
        starts = starts[np.linspace(0, len(starts) - 1, min(len(starts), MERGE_SPIKES)).astype(np.int64)]
        snippets = read_snippets(self.recording, starts, self.length, channels).astype(np.float64)
        return snippets / self.noise_levels[channels]


def read_snippets(recording, starts: np.ndarray, length: int, channels: np.ndarray) -> np.ndarray:
    """(n_starts, length, n_channels) float32 snippets: band-passed in one batch where the recording
    can (a preprocessed one), else read one by one."""
    if hasattr(recording, "snippets"):
        return recording.snippets(starts, length, channels)
    return np.stack([recording.get_traces(int(start), int(start) + length, channels) for start in starts])

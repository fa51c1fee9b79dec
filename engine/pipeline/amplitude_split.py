"""Two neurons, one shape: split a filter's spikes when their amplitudes form two groups.

The dictionary holds unit-norm shapes, so two neurons whose waveforms differ
mainly in size (the same cell type at two distances from the probe) share one
filter, and the lasso cannot tell them apart. Measured on SpikeInterface's
generated recording: two units 0.98 alike in shape, one about three times the
other's size, were sorted as one unit (agreement 0.49 with each).

Their codes still tell them apart: the code amplitude is the spike's size. A
filter's spikes are split in two when their log-amplitudes fall into two
groups well apart: the best two-group split (Otsu's threshold, which maximises
the between-group variance) must leave the groups' means at least
`MIN_SEPARATION` pooled standard deviations apart. Splitting one normal
distribution at its mean gives 2.65, so a single neuron with amplitude jitter
is never split; a real second mode with a gap is. The two units keep the same
filter (the same shape) with different amplitudes, as Kilosort's templates do,
and phy shows them as each other's most similar unit.

Each group's standard deviation is taken over its central 90 % (`spread`):
a few percent of stray events hid two neurons. Measured on SpikeInterface's
32-channel probe: one filter held units of SNR 62 and 22 (code amplitudes
~408 and ~135, nothing between them) and 2 % of small events (~14); those
events, in the lower group, tripled its spread and the groups were 4.6 SDs
apart, so one unit held both neurons (30 SDs with the trimmed spread). On a
single neuron the trimmed spread gives what the plain one does (2.6-2.7 on
normal and skewed jitter, ≤ 3.9 in 40 draws of 100 spikes; 2.5 on heavy
tails, where the plain one gives 1.7-2.2).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engine.pipeline.params import AMPLITUDE_SPLIT_SEPARATION as MIN_SEPARATION
from engine.pipeline.params import (MAX_REFRACTORY_RATIO, MAX_SIZE_RATIO, MIN_FILTER_SIMILARITY,
                                    REFRACTORY_SPLIT_CROSS_RATIO, REFRACTORY_SPLIT_MAX_GROUP_RATIO,
                                    REFRACTORY_SPLIT_MIN_EXPECTED)
from engine.pipeline.sorting import spikes_of_each_filter
from engine.pipeline.unit_merge import Windows, breaks_refractory, refractory_dip

# one_waveform(filter, (low, high) of the smaller group's amplitudes, (low, high) of the bigger's,
# the largest size ratio of the data at the two that still counts as one size) -> bool
OneWaveform = Callable[[int, tuple[float, float], tuple[float, float], float], bool]


def amplitude_groups(amplitudes: np.ndarray, min_spikes: int, min_separation: float = MIN_SEPARATION
                     ) -> tuple[float, float] | None:
    """(threshold, separation) of a worthwhile two-group split of these amplitudes (Otsu's, its groups'
    means at least `min_separation` pooled SDs apart), or None.

    The threshold is on the amplitude itself; spikes above it form the second group.
    """
    positive = np.sort(np.log(amplitudes[amplitudes > 0]))
    if len(positive) < 2 * min_spikes:
        return None
    split = otsu_split(positive, min_spikes)
    if split is None:
        return None
    low, high = positive[:split], positive[split:]
    pooled = np.sqrt(0.5 * (spread(low) ** 2 + spread(high) ** 2))
    separation = float((high.mean() - low.mean()) / max(pooled, 1e-12))
    if separation < min_separation:
        return None
    return float(np.exp(0.5 * (low[-1] + high[0]))), separation


def otsu_split(values: np.ndarray, min_count: int = 1) -> int | None:
    """Where Otsu's threshold splits sorted `values`: the i for which "values[:i] | values[i:]" has the
    most between-group variance, each side at least `min_count` long; None when no split is."""
    n = len(values)
    counts_low = np.arange(1, n)
    sums = np.cumsum(values)[:-1]  # every split's group means from cumulative sums
    mean_low = sums / counts_low
    mean_high = (values.sum() - sums) / (n - counts_low)
    between = counts_low * (n - counts_low) * (mean_high - mean_low) ** 2
    allowed = (counts_low >= min_count) & (n - counts_low >= min_count)
    if not allowed.any():
        return None
    return int(np.argmax(np.where(allowed, between, -np.inf))) + 1


# The standard deviation of the standard normal's central 90 %: a trimmed spread divided by it
# is the standard deviation on normal data.
CENTRAL_90_SD = 0.78929


def spread(values: np.ndarray) -> float:
    """The standard deviation of sorted `values`, from their central 90 % (5 % off each end, normal-consistent),
    so that a few strays do not count."""
    cut = int(0.05 * len(values))
    central = values[cut : len(values) - cut]
    return float(central.std() / CENTRAL_90_SD) if len(central) > 1 else float(values.std())


def split_by_amplitude(amplitudes: np.ndarray, filters: np.ndarray, n_filters: int, min_spikes: int,
                       min_fraction: float = 0.0, shared: np.ndarray | None = None,
                       one_waveform: OneWaveform | None = None, times: np.ndarray | None = None,
                       windows: Windows | None = None, confirmed: dict[int, str] | None = None,
                       shapes: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, dict[int, list[float]]]:
    """(units, unit_filters, splits): a unit label per spike, the filter of each unit, and
    {filter: [separation of each split made]} for the filters that were split.

    Each group must hold at least `min_spikes` spikes and `min_fraction` of the filter's.

    `shared` (n_spikes,) bool: the spikes the lasso coded with another filter beside them
    (coincidences.coded_with_another, before the coincidence step dropped the weaker one), and
    `one_waveform(filter, lower, upper, largest_size_ratio)`: whether the data hold one waveform at the
    filter's spikes in the amplitude ranges `lower` and `upper` ((low, high) each). A spike coded beside another
    filter holds only part of its neuron in its own filter's code, so one neuron's spikes coded
    that way form a smaller group of their own: on SpikeInterface's 384-channel probe (60 s,
    seed 2) two neurons (SNR 9 and 12) were each cut in two units by amplitude (5.4 and 6.0 SDs),
    every spike of the smaller group shared against 2-3 % of the bigger one's. But a different
    neuron, always coded with a companion, looks the same in amplitudes and sharing (the
    32-channel probe: a 12-SNR unit's spikes on a 14-SNR unit's filter, 98 % shared against 16 %).
    So a smaller group mostly shared (SHARED_GROUP_FRACTION) beside a bigger one mostly not is
    joined back to it only when `one_waveform` says the data at both are one shape of one size
    (that 384-channel sort 0.854 -> 0.867, seeds 0 and 1 0.873 and 0.863 as before; the 32-channel
    probe's true splits kept, 0.958 and 0.848 as before; of one shape alone joined two neurons of
    one shape on another 32-channel draw, 0.867 -> 0.809). Any other smaller group is joined back
    when the data at both are one shape and nearer one size than the codes are
    (`_join_groups_of_one_neuron`).

    A split group is tested again, so a filter holding three sizes becomes three units:
    measured on SpikeInterface's 32-channel probe, one filter held two neurons (code
    amplitudes about 346 and 136) and a crowd of small events (about 14); the one split
    took the small events off and left the two neurons in one unit.

    With the spikes' `times` (samples) and the refractory `windows`, a filter that the amplitudes
    alone leave whole is still split in two when its spike train says it holds two sources
    (`refractory_confirmed_groups`); `confirmed`, when given, receives {filter: what the trains showed}.
    With the filters' `shapes` ((n_filters, n_taps, n_channels)), two such filters alike in shape, one of
    whose trains breaks the refractory period (`twin_filters`), are first tried as one: the lasso may
    have spread the same two neurons over both. Their spikes pooled are split at one threshold into the
    two filters' units, kept when in each unit the two filters' spikes are one neuron's (their
    cross-correlogram dips: `_one_neuron_per_group`).

    Units are numbered by filter: the smallest spikes of a split filter keep its unit,
    each larger group gets a new unit after all the filters' own, smallest first (so unit k
    is still filter k where nothing was split); two filters split as one keep their two units,
    one group each.
    """
    units = filters.astype(np.int64).copy()
    unit_filters = list(range(n_filters))
    splits: dict[int, list[float]] = {}
    confirmed = {} if confirmed is None else confirmed
    members = spikes_of_each_filter(filters, n_filters)
    smallest = [max(min_spikes, int(min_fraction * len(mine))) for mine in members]
    whole = []  # the filters the amplitudes alone leave whole
    for k, mine in enumerate(members):
        groups = amplitude_group_members(amplitudes, mine, smallest[k], splits.setdefault(k, []))
        if one_waveform is not None and len(groups) > 1:
            groups = _join_groups_of_one_neuron(k, groups, amplitudes, shared, one_waveform)
            del splits[k][len(groups) - 1:]
        if len(groups) == 1:
            whole.append(k)
        for group in groups[1:]:  # ascending amplitude; the first keeps unit k
            units[group] = len(unit_filters)
            unit_filters.append(k)
    if times is not None and windows is not None:
        pairs = [] if shapes is None else twin_filters(shapes, whole, members, times, windows)
        done = set()
        for k, j in pairs:
            if k in done or j in done:
                continue
            pooled = np.sort(np.concatenate([members[k], members[j]]))
            groups, evidence = refractory_confirmed_groups(amplitudes, times, pooled, min(smallest[k], smallest[j]),
                                                           windows)
            if evidence and _one_neuron_per_group(groups, members[k], members[j], times, windows):
                # The smaller spikes become the unit of the filter that gave the larger share of its own
                # spikes to them, the bigger spikes the other's: each unit keeps a filter of its shape.
                low, high = groups
                low_share = [np.isin(members[f], low).mean() for f in (k, j)]
                small_unit = k if low_share[0] >= low_share[1] else j
                units[low], units[high] = small_unit, k + j - small_unit
                splits[k].append(evidence[0])
                confirmed[k] = f"with filter {j}'s spikes, {evidence[1]}"
                done.update((k, j))
        for k in whole:
            if k in done:
                continue
            groups, evidence = refractory_confirmed_groups(amplitudes, times, members[k], smallest[k], windows)
            if evidence:
                units[groups[1]] = len(unit_filters)
                unit_filters.append(k)
                splits[k].append(evidence[0])
                confirmed[k] = evidence[1]
    splits = {k: separations for k, separations in splits.items() if separations}
    return units, np.asarray(unit_filters, dtype=np.int64), splits


def _one_neuron_per_group(groups: list[np.ndarray], first: np.ndarray, second: np.ndarray, times: np.ndarray,
                          windows: Windows) -> bool:
    """Whether, in the amplitude groups of two filters' pooled spikes, the spikes of the `first` filter
    and of the `second` are one neuron's: their cross-correlogram dips in the refractory window in
    some group (at most MAX_REFRACTORY_RATIO of its chance count) and stays below TWIN_MAX_CROSS_RATIO
    in every group where enough pairs are due to tell. Without it, a third neuron on the second
    filter, of the bigger neuron's size, joined that neuron's unit: the pooled groups alone kept the
    split's bars with two neurons in one (0.4 of the chance count, a 15-Hz and a 4-Hz neuron)."""
    ratios = []
    for group in groups:
        of_first, of_second = (np.sort(times[np.intersect1d(group, own)]) for own in (first, second))
        observed, expected = refractory_dip(of_first, of_second, windows)
        if expected >= REFRACTORY_SPLIT_MIN_EXPECTED:
            ratios.append(observed / expected)
    return bool(ratios) and min(ratios) <= MAX_REFRACTORY_RATIO and max(ratios) <= TWIN_MAX_CROSS_RATIO


# Two filters, one of whose spike trains breaks the refractory period, are tried as one when at
# least this alike (best shift, unit norm): the SpikeInterface tetrode's two filters that shared a
# 5-SNR and a 3-SNR neuron were 0.83 alike (one train at 0.50 of its chance count, the other at
# 0.24, just inside the bar). The merge's bar for filters that can hold one neuron.
TWIN_SIMILARITY = MIN_FILTER_SIMILARITY
# In each group of their pooled spikes, the two filters' spikes fire within the refractory period of
# each other at most this fraction of the chance count. Measured on that tetrode, sorter seeds 0-2,
# 0.00-0.14 in one group and 0.05-0.51 in the other (a filter's smaller spikes still a mixture);
# two independent neurons give about 1 (0.8-1.2 between the units of a 32-channel sort).
TWIN_MAX_CROSS_RATIO = 0.75


def twin_filters(shapes: np.ndarray, candidates: list[int], members: list[np.ndarray], times: np.ndarray,
                 windows: Windows) -> list[tuple[int, int]]:
    """Pairs of `candidates` (filters) at least TWIN_SIMILARITY alike in `shapes`, of which at least
    one's spike train breaks the refractory period, most alike first (two clean units, two neurons of
    one shape each with a filter of its own, are apart already)."""
    breaking = [k for k in candidates if breaks_refractory(np.sort(times[members[k]]), windows)]
    if not breaking or len(candidates) < 2:
        return []
    from engine.model.similarity import shift_invariant_similarity

    similarity = shift_invariant_similarity(shapes[candidates])
    a, b = np.nonzero(np.triu(similarity >= TWIN_SIMILARITY, k=1))
    pairs = [(similarity[i, j], candidates[i], candidates[j]) for i, j in zip(a, b)
             if candidates[i] in breaking or candidates[j] in breaking]
    return [(k, j) for _, k, j in sorted(pairs, key=lambda pair: -pair[0])]


# A smaller amplitude group with at least this fraction of its spikes coded with another filter,
# beside a bigger group with less, is the bigger group's neuron shared with a companion (split_by_amplitude).
SHARED_GROUP_FRACTION = 0.5


def _join_groups_of_one_neuron(k: int, groups: list[np.ndarray], amplitudes: np.ndarray, shared: np.ndarray | None,
                               one_waveform: OneWaveform) -> list[np.ndarray]:
    """Filter `k`'s `groups` (ascending amplitude), each joined to the next bigger group when the data at
    both hold one neuron's waveform: one shape, and a size that the codes do not explain.

    A group mostly coded beside another filter (`shared`), next to a bigger one mostly coded alone, is
    that neuron with part of it in a companion's code: one size up to MAX_SIZE_RATIO. Any other group
    must be closer to the bigger one's size in the data than in the codes: within the square root of the
    ratio of their median codes. Two neurons of one shape coded by one filter have codes in the ratio of
    their sizes; one neuron coded smaller on some spikes does not grow smaller in the data. Measured on
    SpikeInterface's 384-channel probe (60 s, sorter seed 0): a 17-SNR neuron's 879 spikes in two groups
    5.4 SDs apart, 137 coded 1.20 times smaller and only 7 % of them shared, while the data at both
    were 1.00 alike and 1.02 in size; the other three splits there were 0.05-0.25 alike."""
    joined = [groups[-1]]
    for group in reversed(groups[:-1]):
        bigger = joined[0]
        if shared is not None and (shared[group].mean() >= SHARED_GROUP_FRACTION
                                   and shared[bigger].mean() < SHARED_GROUP_FRACTION):
            largest_size_ratio = MAX_SIZE_RATIO
        else:
            code_ratio = float(np.median(amplitudes[bigger]) / max(float(np.median(amplitudes[group])), 1e-12))
            largest_size_ratio = min(MAX_SIZE_RATIO, float(np.sqrt(max(code_ratio, 1.0))))
        if one_waveform(k, _span(amplitudes[group]), _span(amplitudes[bigger]), largest_size_ratio):
            joined[0] = np.sort(np.concatenate([group, bigger]))
        else:
            joined.insert(0, group)
    return joined


def _span(values: np.ndarray) -> tuple[float, float]:
    return float(values.min()), float(values.max())


def refractory_confirmed_groups(amplitudes: np.ndarray, times: np.ndarray, members: np.ndarray, min_spikes: int,
                                windows: Windows) -> tuple[list[np.ndarray], tuple[float, str] | None]:
    """`members` (spike indices) as two amplitude groups when the spike trains say they are two sources,
    else [members]; and (the groups' separation, what the trains showed) for a split, else None.

    Otsu's split at any separation (AMPLITUDE_SPLIT_SEPARATION keeps a single neuron whole from the
    amplitudes alone; here the spike trains decide), kept when, with at least
    REFRACTORY_SPLIT_MIN_EXPECTED pairs due by chance in each count:
    - the whole breaks the refractory period: more than MAX_REFRACTORY_RATIO of the chance count of
      pairs 0.5-1.5 ms apart (one neuron leaves that window all but empty);
    - the two groups' cross-correlogram has no dip there: at least REFRACTORY_SPLIT_CROSS_RATIO of
      the chance count, so they are not one neuron's bigger and smaller spikes (drift, bursts);
    - one group keeps the refractory period (at most MAX_REFRACTORY_RATIO, its count judged): a neuron
      comes out clean; and the other nearly does (at most REFRACTORY_SPLIT_MAX_GROUP_RATIO): a second
      neuron, not a neuron's smaller spikes among stray events (which that would cut off from its
      bigger ones). The other group's own count need not have pairs enough due to be judged: a
      neuron firing a few times a second has few, and the whole's excess pairs, all between the
      groups (the cross-correlogram at chance) and none in the clean one, are the evidence. The
      simulator's tetrode (recording seed 2): a 13-Hz neuron and a 2.9-Hz one 0.97 alike at 0.74 of
      its size on one filter, Otsu's groups 3.3 SDs apart (868 and 3,869 spikes), 62 of 148 pairs due
      in the whole, 29 of 22 between the groups, 2 of 98 in the bigger; the smaller, 2 of 5.9 due, was
      under the bar of 8 and kept every sorter's unit mixed (Sparsort, tridesclous2, spykingcircus2).
    Measured on SpikeInterface's tetrode (5 min): one filter held a 5-SNR neuron and two fifths of a
    3-SNR one 0.94 alike (code amplitudes ~16 and ~12, 3.6 SDs apart, under the 5 SDs of the
    amplitudes-alone bar): 116 pairs of 230 due in the window; split, 51 of 53 between the groups,
    the groups 0.20 and 0.09 of their counts. The whole sort, sorter seeds 0-3: 0.823 / 0.822 / 0.744 /
    0.811 -> 0.840 / 0.848 / 0.828 / 0.946 (seed 3 found the 3-SNR neuron at 0.72); the 32- and
    384-channel recordings, the tetrode preset and the demo sorted exactly as before.
    """
    found = amplitude_groups(amplitudes[members], min_spikes, min_separation=0.0)
    if found is None:
        return [members], None
    threshold, separation = found
    above = amplitudes[members] > threshold
    low, high = members[~above], members[above]
    all_times, low_times, high_times = (np.sort(times[indices]) for indices in (members, low, high))
    whole = refractory_dip(all_times, all_times, windows)
    cross = refractory_dip(low_times, high_times, windows)
    own = [refractory_dip(group, group, windows) for group in (low_times, high_times)]
    counted = lambda count: count[1] >= REFRACTORY_SPLIT_MIN_EXPECTED  # noqa: E731
    ratio = lambda count: count[0] / count[1] if count[1] > 0 else 0.0  # noqa: E731
    two_sources = (counted(whole) and ratio(whole) > MAX_REFRACTORY_RATIO
                   and counted(cross) and ratio(cross) >= REFRACTORY_SPLIT_CROSS_RATIO
                   and all(ratio(count) <= REFRACTORY_SPLIT_MAX_GROUP_RATIO for count in own)
                   and any(counted(count) and ratio(count) <= MAX_REFRACTORY_RATIO for count in own))
    if not two_sources:
        return [members], None
    evidence = (f"{whole[0]} of {whole[1]:.0f} pairs due in the refractory window, "
                f"{cross[0]} of {cross[1]:.0f} between its groups")
    return [low, high], (separation, evidence)


def amplitude_group_members(amplitudes: np.ndarray, members: np.ndarray, min_spikes: int,
                            separations: list[float] | None = None) -> list[np.ndarray]:
    """`members` (spike indices) split again and again while a part has two amplitude groups,
    as a list of index arrays in ascending amplitude; each split's separation is appended to
    `separations` when given."""
    found = amplitude_groups(amplitudes[members], min_spikes)
    if found is None:
        return [members]
    threshold, separation = found
    if separations is not None:
        separations.append(separation)
    above = amplitudes[members] > threshold
    return (amplitude_group_members(amplitudes, members[~above], min_spikes, separations)
            + amplitude_group_members(amplitudes, members[above], min_spikes, separations))


def groups_of(amplitudes: np.ndarray, min_spikes: int, min_fraction: float = 0.0) -> list[np.ndarray]:
    """The groups one filter's spike amplitudes fall into (index arrays, ascending amplitude), each
    of at least `min_spikes` and `min_fraction` of them."""
    return amplitude_group_members(amplitudes, np.arange(len(amplitudes)),
                                   max(min_spikes, int(min_fraction * len(amplitudes))))


def main_amplitude_group(amplitudes: np.ndarray, min_spikes: int, min_fraction: float = 0.0) -> np.ndarray:
    """The amplitudes of the biggest of the groups these amplitudes fall into (all of them when one)."""
    return amplitudes[max(groups_of(amplitudes, min_spikes, min_fraction), key=len)]


def describe_amplitude_splits(splits: dict[int, list[float]], confirmed: dict[int, str] | None = None) -> str:
    """`confirmed`: {filter: what its spike train showed} for the splits the trains decided."""
    if not splits:
        return "no filter split by amplitude"
    confirmed = confirmed or {}
    parts = [f"{k} in {len(separations) + 1} (groups {', '.join(f'{s:.1f}' for s in separations)} SD apart"
             + (f"; {confirmed[k]}" if k in confirmed else "") + ")"
             for k, separations in sorted(splits.items())]
    return "split by amplitude: filter " + ", ".join(parts)

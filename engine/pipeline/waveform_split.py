"""Two neurons in one unit: split it along the direction its recorded spikes differ most.

Two neurons whose waveforms are nearly the same shape and size share one
filter, and neither their codes' amplitudes (engine/pipeline/amplitude_split.py)
nor the lasso can tell them apart. Measured on SpikeInterface's tetrode
(recording seed 3): two neurons of SNR ~20, mean waveforms 0.99 alike and
sizes within 3 %, were one unit of 8,909 spikes (precision 0.51 against each).

Their recorded spikes still differ: 0.99 alike at ~90 σ of norm leaves a
difference of ~13 σ, far above the noise. Collisions hide it: the unit's
spikes that other spikes overlap vary far more (the first principal components
of all its snippets, 340 and 317 σ², were the overlaps'). So the direction is
sought among its clean spikes only, the CLEAN_FRACTION closest to the unit's
median snippet: there the first component stood out (62 σ² against 4.6 for
the next, the noise).
The split is made when the unit's spike train breaks the refractory period
(unit_merge.breaks_refractory: more than MAX_REFRACTORY_RATIO of the chance count of pairs 0.5-1.5 ms apart,
with REFRACTORY_SPLIT_MIN_EXPECTED due: one neuron leaves that window all but
empty) and the clean spikes' projections on that direction fall into two groups
at least WAVEFORM_SPLIT_SEPARATION pooled SDs apart (Otsu's threshold; one
normal distribution split this way gives 2.65). There: 9.2 SDs, groups 93 %
one neuron each. Every spike of the unit then goes to the side of the threshold
its snippet projects to; each group keeps at least AMPLITUDE_SPLIT_MIN_FRACTION
of the unit's spikes.

Only the unit's main channels (engine/pipeline/main_channels.py) are read, in blocks band-passed
once for all the units that need them: the direction from the spikes in
FIT_BLOCKS blocks spread over the recording, then every spike of a unit that
is split. On SpikeInterface's 32-channel probe (5 min), five units' trains
broke the period and none of them split: 0.6 s.

A unit whose train is too sparse for the period to judge (fewer than REFRACTORY_SPLIT_MIN_EXPECTED pairs
due) is tried too (since stop 66), by two clusters of its snippets (`_cluster_direction`): neurons firing
a few times a second leave too few pairs for the count, and on SpikeInterface's drifting 384-channel
probe (2-8 Hz neurons) units held two neurons, or a neuron
and hundreds of events of none, that no other stage told apart (unit 37: 949 events, 130 of one
neuron, 79 of another, 476 of none). A 2-means of the unit's clean snippets' first principal components
gives the two groups, their discriminant the direction; one neuron's spikes, size drifting or not, stood
3.5-4.9 SDs apart along it, the mixed units 5.5-18 (CLUSTER_SPLIT_SEPARATION 5.5). Should one neuron
be cut, the merge that follows (engine/pipeline/unit_merge.py) can join its halves again on their waveform.
There: static 0.853 -> 0.858, drifting 0.830 -> 0.850; on the drifting 48-channel probe seed 0 0.843 -> 0.881
static, 0.829 -> 0.849 drifting; the 32-channel probes and tetrodes as before. A train that keeps the period
is tried too while fewer than CLUSTER_TRY_MAX_EXPECTED pairs are due (since stop 67): a neuron and as many
events of none, at chance against each other, leave about 3/4 of the chance count in the window, and with a
few pairs due a draw can fall under the bar (the static probe's 2.4-SNR gt41, 232 spikes beside 182 events
of none: 2 pairs of 8.7 due; split, 0 -> 0.955).

The groups' own refractory counts cannot confirm the split: the spikes that
break the period are, by definition, those that overlap another spike of the
unit within 1.5 ms, and an overlap moves both snippets the same way, so such
pairs mostly land in one group (there, 0.49 and 0.65 of the chance count in
the groups, with 93 % pure groups).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable

import numpy as np

from engine.cpu import adapt_threads, in_order, single_thread
from engine.pipeline.amplitude_split import otsu_split
from engine.pipeline.coincidences import group_medians
from engine.pipeline.main_channels import main_channels
from engine.pipeline.params import AMPLITUDE_SPLIT_MIN_FRACTION, MIN_SPLIT_SPIKES, REFRACTORY_SPLIT_MIN_EXPECTED
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.unit_merge import Windows, dip_in_excess, refractory_dip

# The snippet read around each spike time (its extremum), ms before and after.
SNIPPET_MS = (1.0, 1.7)
# The fraction of a unit's snippets, closest to its median snippet, in which the direction is sought.
CLEAN_FRACTION = 0.6
# The blocks, spread over the recording, whose spikes give each unit's direction and threshold (60 s).
FIT_BLOCKS = 30
# The recording is read in blocks of this many samples around a unit's spikes (one band-pass each).
BLOCK_SAMPLES = 60_000
# A unit split in two is split again when a half still holds two neurons, up to this many splits deep
# (SpikeInterface's 384-channel probe, 60 s, sorter seed 0: one unit held a crowd of small events and two
# neurons; the first split took the crowd off, the second a 3.6-SNR neuron from a 2.4-SNR one: 0.65 -> 0.87).
WAVEFORM_SPLIT_ROUNDS = 3
# Otsu's two groups of the clean projections at least this many pooled SDs apart (as the amplitude
# split's bar: one normal distribution gives 2.65).
WAVEFORM_SPLIT_SEPARATION = 5.0
# A unit too sparse for the period to judge is cut in two clusters of its snippets when they are this far apart
# along their discriminant: a 2-means finds two groups in one neuron's too, 3.5-4.9 SDs apart on
# SpikeInterface's drifting 384-channel probe (50 units of one neuron each), where two neurons, or a
# neuron and events of none, were 5.5-18 apart (stop 66, `cluster_offline2.py`).
CLUSTER_SPLIT_SEPARATION = 5.5
# The fraction of a unit's snippets, closest to its median, that are clustered (collisions left out).
CLUSTER_CLEAN_FRACTION = 0.9
# The principal components of those snippets the 2-means runs on.
CLUSTER_COMPONENTS = 3
# A train that keeps the refractory period is tried by two clusters all the same while fewer pairs than
# this are due by chance: a neuron and as many events of none, at chance against it, leave ~3/4 of the
# chance count in the window, and with 8.7 due, 2 were seen.
CLUSTER_TRY_MAX_EXPECTED = 25.0


def split_by_waveform(sorting: Sorting, recording, noise_levels: np.ndarray, channel_mask: np.ndarray,
                      dead_time: int) -> Sorting:
    """`sorting` with each unit that holds two neurons of one shape and size split in two (see the
    module's docstring), and each half tried again, up to WAVEFORM_SPLIT_ROUNDS times. recording:
    what was sorted (preprocessed); noise_levels: (n_channels,) its σ; channel_mask: (n_filters,
    n_channels) bool, the channels of each filter (`sorting.filter_index`)."""
    tried = None  # the first round tries every unit, the next ones the halves of the last one's splits
    for _ in range(WAVEFORM_SPLIT_ROUNDS):
        sorting, tried = _split_once(sorting, recording, noise_levels, channel_mask, dead_time, tried)
        if not tried:
            break
    return sorting


def _split_once(sorting: Sorting, recording, noise_levels: np.ndarray, channel_mask: np.ndarray, dead_time: int,
                units_to_try: set[int] | None) -> tuple[Sorting, set[int]]:
    """(`sorting` with the units among `units_to_try` (None: all) that hold two neurons split in two,
    the units those splits left: each split unit and its new unit)."""
    if sorting.n_units == 0 or sorting.filter_index is None:
        return sorting, set()
    windows = Windows.at(sorting.sampling_rate, dead_time)
    before, after = (max(int(round(ms * 1e-3 * sorting.sampling_rate)), 1) for ms in SNIPPET_MS)
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)  # each unit's spikes, in time order
    times = sorting.spike_times
    readable = (times - before >= 0) & (times + after <= recording.n_samples)
    # Units whose train breaks the refractory period, and those too sparse for the period to judge (too few
    # pairs due by chance), each on its main channels. A train that keeps the period with pairs enough due is
    # one neuron's: not tried (a 32-channel probe's 15-Hz neuron lost 2.5 % of its spikes to two clusters).
    candidates, breaks = {}, {}
    for unit in range(sorting.n_units) if units_to_try is None else sorted(units_to_try):
        members = of_unit[unit][readable[of_unit[unit]]]  # a spike at the recording's very edge stays with its unit
        channels = main_channels(sorting.templates[unit], noise_levels, channel_mask[sorting.filter_index[unit]])
        if len(members) < 2 * MIN_SPLIT_SPIKES or not len(channels):
            continue
        # The train's pairs inside the period, and how many chance would put there (unit_merge.breaks_refractory's
        # test, the count taken once for both questions).
        observed, expected = refractory_dip(times[members], times[members], windows)
        judged = expected >= REFRACTORY_SPLIT_MIN_EXPECTED
        broken = judged and dip_in_excess(observed, expected)
        if broken or expected < CLUSTER_TRY_MAX_EXPECTED:
            # Each group at least this many spikes, as the amplitude split asks.
            smallest = max(MIN_SPLIT_SPIKES, int(AMPLITUDE_SPLIT_MIN_FRACTION * len(of_unit[unit])))
            candidates[unit] = (members, channels, smallest)
            breaks[unit] = broken
    if not candidates:
        return sorting, set()
    # Each unit's direction and threshold from its spikes in a few blocks spread over the recording, the
    # same blocks for all (each read once): not every block of a 2-hour recording.
    fit_blocks = _fit_blocks(np.concatenate([times[members] for members, _, _ in candidates.values()]))
    fitted = _read_snippets({unit: (times[members][np.isin(times[members] // BLOCK_SAMPLES, fit_blocks)], channels)
                             for unit, (members, channels, _) in candidates.items()}, recording, noise_levels,
                            before, after)
    splits, routes = {}, {}
    for unit, (members, _, smallest) in candidates.items():
        fewest = smallest * len(fitted[unit]) / len(members)
        # A broken period: the main direction of its clean spikes. Where that finds no two groups, or the
        # period cannot judge (a pair of few-hertz neurons), two clusters of its snippets.
        found, routes[unit] = (_direction(fitted[unit], fewest) if breaks[unit] else None), "main difference"
        if found is None:
            found, routes[unit] = _cluster_direction(fitted[unit], fewest), "two clusters"
        if found is not None:
            splits[unit] = found
    if not splits:
        return sorting, set()
    # Then every spike of the units to split, all read in one pass, each block's snippets projected as soon
    # as they are read: a unit of 100,000 spikes (a 2-hour recording's) would hold 130 MB of snippets
    # (4 channels × 81 samples, float32) for one number per spike.
    projections = _read_snippets({unit: (times[candidates[unit][0]], candidates[unit][1]) for unit in splits},
                                 recording, noise_levels, before, after,
                                 reduce=lambda unit, _, snippets: (snippets - splits[unit][0]) @ splits[unit][1])
    units = sorting.spike_units.astype(np.int64).copy()
    parents: list[int] = []  # the unit each new unit was split from
    notes = []
    for unit, (centre, direction, threshold, separation) in splits.items():
        members, _, smallest = candidates[unit]
        second = projections[unit] > threshold
        if min(second.sum(), (~second).sum()) < smallest:
            continue
        units[members[second]] = sorting.n_units + len(parents)
        parents.append(unit)
        notes.append(f"{unit} in 2 ({separation:.1f} SD apart along its spikes' {routes[unit]})")
    if not parents:
        return sorting, set()
    halves = set(parents) | set(range(sorting.n_units, sorting.n_units + len(parents)))
    return with_new_units(sorting, units, parents, "split by waveform: unit " + ", ".join(notes)), halves


def _fit_blocks(times: np.ndarray) -> np.ndarray:
    """Up to FIT_BLOCKS of the blocks (BLOCK_SAMPLES each) that hold some of `times`, evenly spread."""
    present = np.unique(times // BLOCK_SAMPLES)
    return present[np.linspace(0, len(present) - 1, min(len(present), FIT_BLOCKS)).astype(np.int64)]


def _direction(snippets: np.ndarray, smallest: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(centre, direction, threshold, separation) of the two groups the clean `snippets` fall into along
    their main direction, or None when they do not (separation under WAVEFORM_SPLIT_SEPARATION) or one
    side of the threshold holds fewer than `smallest` of the snippets."""
    if len(snippets) < 2 * MIN_SPLIT_SPIKES:
        return None
    clean, centre = _clean(snippets, CLEAN_FRACTION)
    direction = np.linalg.svd(clean - centre, full_matrices=False)[2][0]
    return _split_along(direction, snippets, clean, centre, smallest, WAVEFORM_SPLIT_SEPARATION)


def _cluster_direction(snippets: np.ndarray, smallest: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(centre, direction, threshold, separation) of two clusters of `snippets`, or None when they are not
    CLUSTER_SPLIT_SEPARATION pooled SDs apart or one side holds fewer than `smallest` of the snippets.

    The CLUSTER_CLEAN_FRACTION closest to the unit's median snippet (collisions left out), their first
    CLUSTER_COMPONENTS principal components in two by 2-means, started from the 10th and 90th
    percentile along the first (no randomness: a sort is repeatable); the direction is the clusters'
    discriminant (Fisher's: their means' difference over their pooled covariance), and Otsu's
    threshold along it makes the split, as for the main difference."""
    if len(snippets) < 2 * MIN_SPLIT_SPIKES:
        return None
    clean, centre = _clean(snippets, CLUSTER_CLEAN_FRACTION)
    components = np.linalg.svd(clean - centre, full_matrices=False)[2][:CLUSTER_COMPONENTS]
    scores = (clean - centre) @ components.T
    groups = _two_means(scores)
    sizes = np.bincount(groups, minlength=2)
    if sizes.min() < 2:
        return None
    pooled = sum(np.atleast_2d(np.cov(scores[groups == k].T)) * (sizes[k] - 1) for k in range(2)) / (len(scores) - 2)
    difference = scores[groups == 1].mean(axis=0) - scores[groups == 0].mean(axis=0)
    weights = np.linalg.solve(pooled + 1e-9 * np.trace(pooled) * np.eye(len(pooled)), difference)
    direction = components.T @ weights
    direction /= max(np.linalg.norm(direction), 1e-12)
    return _split_along(direction, snippets, clean, centre, smallest, CLUSTER_SPLIT_SEPARATION)


def _clean(snippets: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(the `fraction` of `snippets` closest to their median, float64; their mean)."""
    residual = np.linalg.norm(snippets - np.median(snippets, axis=0), axis=1)
    clean = snippets[residual <= np.quantile(residual, fraction)].astype(np.float64)
    return clean, clean.mean(axis=0)


def _split_along(direction: np.ndarray, snippets: np.ndarray, clean: np.ndarray, centre: np.ndarray,
                 smallest: float, separation_bar: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(centre, direction, threshold, separation): Otsu's split of the clean snippets along `direction`, or
    None when its groups are under `separation_bar` pooled SDs apart or a side of all `snippets` holds
    fewer than `smallest`."""
    threshold, separation = _otsu((clean - centre) @ direction)
    if separation < separation_bar:
        return None
    above = int(np.count_nonzero((snippets - centre) @ direction > threshold))
    if min(above, len(snippets) - above) < smallest:
        return None
    return centre, direction, threshold, separation


def _two_means(points: np.ndarray, iterations: int = 100) -> np.ndarray:
    """(n,) 0/1: Lloyd's 2-means of `points` (n, d), started from the points at the 10th and 90th
    percentile of the first coordinate."""
    order = np.argsort(points[:, 0], kind="stable")
    centres = points[[order[len(points) // 10], order[(9 * len(points)) // 10]]]
    groups = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        groups = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        if groups.min() == groups.max():
            break
        moved = np.stack([points[groups == k].mean(axis=0) for k in range(2)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return groups


def _read_snippets(requests: dict, recording, noise_levels: np.ndarray, before: int, after: int,
                   reduce: Callable[[object, np.ndarray], np.ndarray] | None = None) -> dict:
    """{key: (n, (before + after) · n_channels) float32 snippets in noise σ} for requests {key: (times
    (sorted, each readable), channels)}: each BLOCK_SAMPLES of the recording that holds some of them is
    band-passed once, on the channels all the requests there need (a snippet's own filter margins are
    ~30 times its length). With `reduce(key, times, snippets)`, what it returns for each block's
    snippets (at those of the key's times) instead, kept in their order, so that only that is held. Blocks are read on the cores
    other programs leave free (engine/cpu.py), a few at a time."""
    length = before + after
    pieces = {key: [] for key in requests}
    block_of = {key: times // BLOCK_SAMPLES for key, (times, _) in requests.items()}

    def read(block: int) -> dict:
        here = {key: requests[key][0][block_of[key] == block] for key in requests}
        here = {key: times for key, times in here.items() if len(times)}
        channels = np.unique(np.concatenate([requests[key][1] for key in here]))
        start = min(int(times[0]) for times in here.values()) - before
        stop = max(int(times[-1]) for times in here.values()) + after
        traces = _band_passed(recording, start, stop, channels) / noise_levels[channels]  # (stop - start, n)
        found = {}
        for key, times in here.items():
            columns = np.searchsorted(channels, requests[key][1])
            rows = (times - before - start)[:, None] + np.arange(length)[None, :]
            snippets = traces[rows][:, :, columns].reshape(len(times), -1).astype(np.float32)
            found[key] = snippets if reduce is None else reduce(key, times, snippets)
        return found

    blocks = np.unique(np.concatenate(list(block_of.values()))).tolist()
    workers = min(adapt_threads(), len(blocks))
    with single_thread() if workers > 1 else contextlib.nullcontext():
        for found in in_order(read, blocks, workers):
            for key, part in found.items():
                pieces[key].append(part)
    for key, parts in pieces.items():
        if not parts:  # none of its times (a sparse unit, none in the blocks asked for)
            empty = np.zeros((0, length * len(requests[key][1])), dtype=np.float32)
            parts.append(empty if reduce is None else reduce(key, requests[key][0][:0], empty))
    return {key: np.concatenate(parts) for key, parts in pieces.items()}


def _band_passed(recording, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
    """Samples [start, stop) of `channels` as the unit merge's snippets read them (no common reference)."""
    if hasattr(recording, "band_passed"):
        return recording.band_passed(start, stop, channels)
    return recording.get_traces(start, stop, channels)


def _otsu(values: np.ndarray) -> tuple[float, float]:
    """(threshold, separation): Otsu's two-group split of `values` and its groups' means apart in pooled SDs."""
    values = np.sort(values)
    split = otsu_split(values) if len(values) >= 4 else None
    if split is None:
        return (float(values[-1]) if len(values) else 0.0), 0.0
    low, high = values[:split], values[split:]
    pooled = np.sqrt(0.5 * (low.var() + high.var()))
    return float(0.5 * (low[-1] + high[0])), float((high.mean() - low.mean()) / max(pooled, 1e-12))


def with_new_units(sorting: Sorting, units: np.ndarray, parents: list[int], note: str) -> Sorting:
    """`sorting` with spikes relabelled to `units`; new unit n_units + i was split from `parents[i]`, and
    keeps its filter, with its template scaled to its own spikes' median code amplitude."""
    parents_arr = np.asarray(parents, dtype=np.int64)
    templates = np.concatenate([sorting.templates, sorting.templates[parents_arr]])
    codes = sorting.code_amplitudes
    if codes is not None:
        medians = group_medians(codes, units, sorting.n_units + len(parents))
        before = group_medians(codes, sorting.spike_units, sorting.n_units)
        of = np.concatenate([np.arange(sorting.n_units), parents_arr])  # the unit each template was
        templates = templates * (medians / np.maximum(before[of], 1e-12))[:, None, None]
    provenance = sorting.provenance
    if provenance is not None:
        provenance = replace(provenance, amplitude_splits=f"{provenance.amplitude_splits}; {note}")
    peaks = sorting.template_peak_taps
    return replace(
        sorting,
        spike_units=units.astype(np.int32),
        templates=templates.astype(np.float32),
        template_peak_taps=None if peaks is None else np.concatenate([peaks, peaks[parents_arr]]),
        filter_index=np.concatenate([sorting.filter_index, sorting.filter_index[parents_arr]]),
        provenance=provenance,
    )

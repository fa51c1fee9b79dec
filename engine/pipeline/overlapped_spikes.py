"""Spikes the coincidence rule dropped as a bigger spike's residue that the recording says are real: restored.

Beside a bigger neuron's spike, a small neuron's spike is coded short (the
lasso shares the overlap between the two filters), and the coincidence rule
(coincidences.py) drops an event under COINCIDENT_MIN_FRACTION of its filter's
usual amplitude there: most such events are residue of the bigger spike that a
look-alike filter coded, but not all. Measured on SpikeInterface's 32-channel
probe (recording seed 4): the 6-SNR neuron gt23's recall was 0.966 after
inference and 0.880 after the rule, which dropped 300 of its spikes beside
1,565 residual events of its filters; real and residual events overlapped in
every amplitude the codes give (lost spikes at 0.53-0.85 of the usual
amplitude, residue at 0.39-0.69).

The recording tells them apart. Each dropped event's window, on its unit's
main channels, is fitted with the unit's median snippet beside every event the
sort kept within a snippet's length, each as its own unit's median at a size of
its own (least squares: hollow_events.py's fit, the same medians). Relative to
the unit's typical size (the median of its sampled spikes' sizes as recorded),
the dropped real spikes of seeds 1, 4, 5, 7 fitted at 0.82-1.13 (10th-90th
percentile), the residue at -0.10-0.16. An event is given back to its unit
when it fits at RESTORED_SIZE to 1 / RESTORED_SIZE of the typical size, and
the unit has no spike within the dead time of it. On the tetrodes the residue
fits larger (the tetrode preset: 0.10-0.42; look-alike neurons share every
channel), so the bar stays well above it.

Measured with the sort's stages run once and the dropped events fitted after
them (mean accuracy before -> after, at 0.6): 32 channels, recording seed 4
0.9487 -> 0.9515, seed 1 0.9855 -> 0.9880, seed 5 0.9094 -> 0.9105, seed 7
0.9866 -> 0.9869; SpikeInterface's tetrode seeds 0-4 0.9515 -> 0.9538,
0.9960 -> 0.9961, 0.8627 -> 0.8636, 0.9794 -> 0.9793, 0.8069 (nothing
restored); the tetrode preset 0.9888 -> 0.9886.

Events dropped as under RESIDUAL_FRACTION of the bigger event are asked too:
on seed 1, after the short ones came back, 407 of them had a unit, 185 real
(fitted at 0.85-1.11) and 222 residue (-0.11-0.20), and giving back those at
0.6 took the sort 0.9880 -> 0.9896 (gt5 and gt10 each had lost 65-81 spikes
there). Beside a spike twenty times bigger, though, what its median leaves
is larger than a small neuron: on seed 5, 1,090 such residue events fitted
anywhere from -0.85 to 0.56 and 87 passed the size bar. So the size must
also stand out from what the fit leaves: RESTORED_T standard errors from 0
(from the residual of the fit). Real drops stood at t 13.7-29.2 (seed 1) and
11.1-17.7 (SpikeInterface's tetrode 0), seed 5's residue at -2.7-1.7: at 5 it
restored none of them and all of seed 1's 184.

An event goes to a unit of its filter (a filter split by amplitude or waveform
has several: the one it fits nearest its typical size). A unit merged with
another keeps one filter's index, so the other filter's dropped events find no
unit and stay dropped; units labelled noise take none.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.pipeline.hollow_events import UnitSample, sampled_medians
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import MIN_SPLIT_SPIKES
from engine.pipeline.residual_units import labelled_residual
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.unit_merge import read_snippets
from engine.pipeline.waveform_split import SNIPPET_MS

# A dropped event is its unit's spike when it fits between this fraction of the unit's typical size and its inverse,
RESTORED_SIZE = 0.6
# ... at least this many standard errors of its fit from 0.
RESTORED_T = 5.0
# Dropped events' windows read (band-passed) at a time: each holds its filter's margins too (~1,000 samples a
# channel at 30 kHz), so a 2-hour probe's hundreds of thousands are read in pieces.
WINDOWS_PER_READ = 2_000


def restore_overlapped_spikes(sorting: Sorting, recording, noise_levels: np.ndarray, channel_mask: np.ndarray,
                              dropped: SpikeEvents, dead_time: int) -> Sorting:
    """`sorting` with the `dropped` events (the coincidence rule's, beside a bigger one) whose
    recorded window holds their unit's spike given back to it (see the module's docstring). recording:
    what was sorted (preprocessed); noise_levels (n_channels,) its σ; channel_mask (n_filters, n_channels)
    bool: where each filter lives; dead_time: samples within which a unit cannot fire twice."""
    if (len(dropped) == 0 or sorting.n_units == 0 or sorting.filter_index is None or sorting.n_spikes == 0
            or sorting.features is not None):
        return _noted(sorting, "no spikes restored")
    noise_levels = np.asarray(noise_levels, dtype=np.float64)
    residual = labelled_residual(sorting)
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)
    unit_filters = np.asarray(sorting.filter_index, dtype=np.int64)
    n_filters = max(int(unit_filters.max()), int(dropped.filters.max())) + 1
    of_filter = spikes_of_each_filter(np.asarray(dropped.filters, dtype=np.int64), n_filters)  # dropped events
    takers = [u for u in range(sorting.n_units) if u not in residual and len(of_unit[u]) >= MIN_SPLIT_SPIKES
              and len(of_filter[unit_filters[u]])]
    if not takers:
        return _noted(sorting, "no spikes restored")
    masks = np.asarray(channel_mask, dtype=bool)[unit_filters]
    sample = sampled_medians(sorting, recording, noise_levels, masks, takers, of_unit)
    if sample is None:
        return _noted(sorting, "no spikes restored")
    # Each event's size relative to each unit of its filter that could take it; the nearest to 1 wins.
    best_unit = np.full(len(dropped), -1, dtype=np.int64)
    best_size = np.zeros(len(dropped))
    best_distance = np.full(len(dropped), np.inf)  # |log size|: how far from the unit's typical size
    for unit in (u for u in takers if u in sample.medians):
        candidates = of_filter[unit_filters[unit]]
        sizes, t = relative_sizes(sample, unit, sorting, recording, noise_levels, dropped.times[candidates])
        fits = holds_its_spike(sizes, t)
        distance = np.abs(np.log(np.where(fits, sizes, 1.0)))
        nearer = fits & (distance < best_distance[candidates])
        best_unit[candidates[nearer]] = unit
        best_size[candidates[nearer]] = sizes[nearer]
        best_distance[candidates[nearer]] = distance[nearer]
    chosen = np.flatnonzero(best_unit >= 0)
    chosen = chosen[_apart_from_own_spikes(sorting, of_unit, dropped.times[chosen], best_unit[chosen],
                                           best_size[chosen], dead_time)]
    if len(chosen) == 0:
        return _noted(sorting, "no spikes restored")
    units, sizes = best_unit[chosen], best_size[chosen]
    # A restored spike's amplitude is its fitted size times its unit's usual one: the code read it short.
    usual_amplitude, usual_code = np.zeros(sorting.n_units), np.zeros(sorting.n_units)
    codes = sorting.code_amplitudes
    for unit in np.unique(units):  # each has MIN_SPLIT_SPIKES spikes or more
        usual_amplitude[unit] = np.median(sorting.amplitudes[of_unit[unit]])
        usual_code[unit] = np.median(codes[of_unit[unit]]) if codes is not None else 0.0
    restored = replace(  # Sorting puts the spikes back in time order
        sorting,
        spike_times=np.concatenate([sorting.spike_times, dropped.times[chosen].astype(np.int64)]),
        spike_units=np.concatenate([sorting.spike_units, units.astype(np.int32)]),
        amplitudes=np.concatenate([sorting.amplitudes, (sizes * usual_amplitude[units]).astype(np.float32)]),
        code_amplitudes=None if codes is None else np.concatenate([codes, (sizes * usual_code[units]).astype(np.float32)]),
    )
    counts = np.bincount(units, minlength=sorting.n_units)
    busiest = np.argsort(-counts, kind="stable")[:8]
    note = (f"{len(chosen)} overlapped spikes restored ("
            + ", ".join(f"{int(counts[u])} to {int(u)}" for u in busiest if counts[u])
            + (", ..." if np.count_nonzero(counts) > 8 else "") + ")")
    return _noted(restored, note)


def holds_its_spike(sizes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n,) bool: which windows hold the unit's own spike, by `relative_sizes`' fit: a size of RESTORED_SIZE to
    1 / RESTORED_SIZE of its usual one, RESTORED_T standard errors from 0 (False where NaN)."""
    return (sizes >= RESTORED_SIZE) & (sizes <= 1.0 / RESTORED_SIZE) & (t >= RESTORED_T)


def relative_sizes(sample: UnitSample, unit: int, sorting: Sorting, recording, noise_levels: np.ndarray,
                   times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((n,) sizes, (n,) t): the unit's median's size at each of `times`, fitted beside the sorting's events
    there, relative to the unit's typical size, and that size over its standard error; NaN where the window
    runs off the recording."""
    before, after = (max(int(round(ms * 1e-3 * sorting.sampling_rate)), 1) for ms in SNIPPET_MS)
    judge = sample.judge(unit, sorting)
    typical = float(np.median(judge.recorded(sample.windows(unit))))
    sizes, t = np.full(len(times), np.nan), np.full(len(times), np.nan)
    if typical <= 0:
        return sizes, t
    channels = sample.main[unit]
    readable = np.flatnonzero((times - before >= 0) & (times + after <= recording.n_samples))
    order = readable[np.argsort(times[readable], kind="stable")]  # the fit finds the other events in time order
    for start in range(0, len(order), WINDOWS_PER_READ):
        part = order[start:start + WINDOWS_PER_READ]
        windows = read_snippets(recording, times[part] - before, before + after, channels) / noise_levels[channels]
        fitted, t[part] = judge.fitted_beside_others(times[part], windows)
        sizes[part] = fitted / typical
    return sizes, t


def _apart_from_own_spikes(sorting: Sorting, of_unit: list[np.ndarray], times: np.ndarray, units: np.ndarray,
                           sizes: np.ndarray, dead_time: int) -> np.ndarray:
    """(n,) bool: which events to give back: none within `dead_time` of its unit's spikes, nor of a bigger
    restored event of its unit (a neuron fires once in its dead time)."""
    keep = np.zeros(len(times), dtype=bool)
    for unit in np.unique(units):
        mine = np.flatnonzero(units == unit)
        own = sorting.spike_times[of_unit[unit]]  # in time order
        at = np.searchsorted(own, times[mine])
        before_gap = np.where(at > 0, times[mine] - own[np.maximum(at - 1, 0)], np.inf)
        after_gap = np.where(at < len(own), own[np.minimum(at, len(own) - 1)] - times[mine], np.inf)
        alone = mine[(before_gap > dead_time) & (after_gap > dead_time)]
        alone = alone[np.argsort(times[alone], kind="stable")]
        while len(alone) > 1:  # of two restored events within the dead time, the bigger fit stays
            close = np.diff(times[alone]) <= dead_time
            if not close.any():
                break
            first, second = alone[:-1][close], alone[1:][close]
            alone = alone[~np.isin(alone, np.where(sizes[first] < sizes[second], first, second))]
        keep[alone] = True
    return keep


def _noted(sorting: Sorting, note: str) -> Sorting:
    provenance = sorting.provenance
    return sorting if provenance is None else replace(sorting, provenance=replace(provenance, overlapped_spikes=note))

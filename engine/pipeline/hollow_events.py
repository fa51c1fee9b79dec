"""Events that hold none of their unit's waveform: dropped.

A neuron whose spikes reach beyond its own filter's channels leaves there a
tail its filter does not model, and a neighbour's filter can code it. When
the tail sits at one lag to the neuron's spikes the locked-events stage
finds the copies; when the lag wanders with the spike's size and its
overlaps, no lag holds enough of them. Measured on SpikeInterface's
32-channel probe (recording seed 7, sorter seed 7): the 5-SNR neuron gt6's
unit held 159 events with no neuron's spike within 0.4 ms, each 13-20
samples after a spike of one of six bigger neighbours (15-28 per neighbour:
no lock). At those events the recording, on the unit's main channels, fits
the unit's median snippet at size 0.00 (median; 95 % under 0.56), and at
-0.17 to 0.16 once the other events nearby are taken out, each as its own
unit's median at its size; the unit's own spikes fit at 0.87-1.14.

So each event's window, on its unit's main channels, is fitted with the
unit's median snippet (free size). An event that fits at under HOLLOW_SIZE
of the unit's typical size, and HOLLOW_SDS robust SDs under it, is fitted
again together with every other event within a snippet's length, each as
its unit's median snippet on these channels (the recorded footprint, which
the filters lack) at a size of its own (least squares); one whose size is
still under the bar is not the unit's spike. Only the events that fit small
as recorded are fitted again: a neighbour's event can be the same spike
coded again by a look-alike, and fitted beside it that one takes the spike
(recording seed 7: with every event judged fitted beside its neighbours,
and the neighbours at their coded amplitudes, 690 of the units' own spikes
went). A spike overlapped by a neighbour of the opposite sign fits small as
recorded and whole beside it. Each neighbour at a size of its own, not at
its coded amplitude: a big neighbour's amplitude a few % off left enough of
it to hide a small spike (seed 7, coded amplitudes: 43 of gt16's own spikes
went, now none).

Measured with the sort's stages run once and this one after them (mean
accuracy before -> after; own spikes dropped / other events dropped):
32 channels, recording seed 7 0.9795 -> 0.9810 (gt6 0.899 -> 0.935;
0 / 182), seed 1 0.9446 -> 0.9479 (0 / 409), seed 0 0.9025 -> 0.9034,
seed 4 0.9481 -> 0.9487, seed 3 0.8674 -> 0.8676, seed 6 (sorter seeds
6-9) 0 to +0.0001 (1 / 10); 384 channels (60 s) 0.9164 -> 0.9168 (0 / 38);
both tetrodes: nothing dropped.

An event that fits at or above the bar as recorded can still hold none of its
unit's waveform: a look-alike neighbour's spike under it fits the unit's
median at much of its size. On recording seed 1 the 4-SNR gt10's unit held
219 events with no gt10 spike, each 1-17 samples from another neuron's
spike (median 8): as recorded they fitted at 0.46 of the unit's size
(10th-90th percentile -0.79-3.37), beside the other events at 0.12
(-0.09-0.31, t -0.9-4.6). So every event of a unit read whole is also
fitted beside the other events, and one whose size there is HOLLOW_SURE_SES
standard errors under HOLLOW_SIZE of the unit's usual size goes whatever it
fits as recorded (not under the bar above: a small unit's recorded sizes
spread so wide that the bar fell under 0, and gt10 kept most of them). A
spike a look-alike coded again at the same time is safe: the two medians
are nearly one column, so the size's standard error is large. Sorts before
-> after (one each): 32 channels, recording seeds 0-7 0.9060 -> 0.9072,
0.9898 -> 0.9927 (gt10 0.902 -> 0.931, precision 0.952 -> 0.984), 0.9530
-> 0.9549, 0.8699 -> 0.8700, 0.9517 -> 0.9537, 0.9109 -> 0.9125, 0.9955 ->
0.9962, 0.9895 -> 0.9900; SpikeInterface's tetrodes 0-4 and the tetrode
preset the same (to 3 decimals). Against the bar above instead of HOLLOW_SIZE
(the first try): seeds 0 and 1 0.9064 and 0.9917, the rest the same;
HOLLOW_SURE_SES 1.5 / 2 / 3 there: seed 1 0.9919 / 0.9917 / 0.9914, seed 7
0.9900 / 0.9900 / 0.9899.

Units labelled noise are not tested (their events are residue by label),
and their events are not fitted beside the others': such a unit's median,
read at its events, is the bigger spikes its residue rides on, not a
waveform of its own. On recording seed 0 a filter labelled noise had coded
a copy of the 24-SNR gt19's spikes, a sample off, at 1,757 of them: its
median on gt19's channels was gt19's waveform, and fitted beside it 116 of
gt19's own spikes fitted at nothing and went (until stop 54). Not fitting
them: seed 0 0.9072 -> 0.9083 (gt19 0.943 -> 0.968, precision 1.000),
seeds 1 and 4 -0.0001 (no unit moved by 0.0005), seeds 2, 3, 5-7 the same.

Cost: each unit's median is read from SAMPLE_BLOCKS blocks of 2 s spread
over the recording, on the main channels of every tested unit its filter
reaches, and a unit is read whole only when its events there hold
SAMPLED_HOLLOW or more hollow ones: 1.0-2.3 s at 32 channels (5 min),
3.7 s at 384 channels (60 s: 6 sample blocks; with 10, 5.7-6.1 s, most of
it band-passing them, and 22 events dropped instead of 38), 0.1 s on a
tetrode (2 cores, the stage re-run on captured sorts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from engine.model.pairs import pairs_in_runs
from engine.pipeline.main_channels import main_channels
from engine.pipeline.params import MIN_SPLIT_SPIKES
from engine.pipeline.preprocessing import median_of_columns
from engine.pipeline.residual_units import labelled_residual
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.waveform_split import BLOCK_SAMPLES, SNIPPET_MS, _read_snippets

HOLLOW_SIZE = 0.3
HOLLOW_SDS = 5.0
# An event whose size fitted beside the other events is this many standard errors under HOLLOW_SIZE of the
# unit's usual size is hollow however it fits as recorded (the fit's own error stands for the noise there).
HOLLOW_SURE_SES = 2.0
# Each unit's median, and the sample of its events that says whether it is read whole, come from its events
# (up to SAMPLED_EVENTS) in SAMPLE_BLOCKS blocks of the recording (waveform_split's, 2 s) spread over it.
SAMPLE_BLOCKS = 10
# ... and no more than one block in SAMPLE_SHARE of the recording's (at least SAMPLE_BLOCKS_MIN): on a short
# recording of many channels, band-passing the sample was most of the stage's cost.
SAMPLE_SHARE = 5
SAMPLE_BLOCKS_MIN = 4
SAMPLED_EVENTS = 300
# A unit not tested (labelled noise, or too small) is only a neighbour: its median from this many.
NEIGHBOUR_EVENTS = 100
# Only a unit whose sample holds at least this many hollow events is read whole.
SAMPLED_HOLLOW = 3


def drop_hollow_events(sorting: Sorting, recording, noise_levels: np.ndarray, channel_mask: np.ndarray) -> Sorting:
    """`sorting` without the events whose recorded window holds none of their unit's waveform (see the
    module's docstring). recording: what was sorted (preprocessed); noise_levels (n_channels,) its σ;
    channel_mask (n_filters, n_channels) bool: where each of the dictionary's filters lives."""
    if sorting.n_units < 1 or sorting.filter_index is None or sorting.n_spikes == 0:
        return sorting
    noise_levels = np.asarray(noise_levels, dtype=np.float64)
    rate = sorting.sampling_rate
    before, after = (max(int(round(ms * 1e-3 * rate)), 1) for ms in SNIPPET_MS)
    length = before + after
    residual = labelled_residual(sorting)
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)
    mask = np.asarray(channel_mask, dtype=bool)[np.asarray(sorting.filter_index, dtype=np.int64)]
    tested = [u for u in range(sorting.n_units) if u not in residual and len(of_unit[u]) >= MIN_SPLIT_SPIKES]
    if not tested:
        return _noted(sorting, "no events dropped")
    sample = sampled_medians(sorting, recording, noise_levels, mask, tested, of_unit)
    if sample is None:
        return _noted(sorting, "no events dropped")
    tested = [u for u in tested if u in sample.medians]
    # A residual unit's events are not fitted beside a tested unit's (`UnitSample.judge`'s `besides`).
    judge = {u: sample.judge(u, sorting, besides=lambda v: v not in residual) for u in tested}
    # The sample: each tested unit's events in the fit blocks, cut from the wide read.
    whole = [u for u in tested
             if np.count_nonzero(judge[u].hollow(sample.times[u], sample.windows(u))) >= SAMPLED_HOLLOW]
    if not whole:
        return _noted(sorting, "no events dropped")
    times = sorting.spike_times
    readable = (times - before >= 0) & (times + after <= recording.n_samples)
    members = {u: of_unit[u][readable[of_unit[u]]] for u in whole}
    hollow = _read_snippets(
        {u: (times[members[u]], sample.main[u]) for u in whole}, recording, noise_levels, before, after,
        reduce=lambda u, spike_times, snippets: judge[u].hollow(
            spike_times, snippets.reshape(len(snippets), length, len(sample.main[u]))))
    drop = np.zeros(sorting.n_spikes, dtype=bool)
    counts = {}
    for u, flags in hollow.items():
        drop[members[u][flags]] = True
        if flags.any():
            counts[u] = int(flags.sum())
    if not drop.any():
        return _noted(sorting, "no events dropped")
    keep = ~drop
    note = (f"{int(drop.sum())} events dropped that hold none of their unit's waveform ("
            + ", ".join(f"{n} of {u}" for u, n in sorted(counts.items(), key=lambda kv: -kv[1])[:8])
            + (", ..." if len(counts) > 8 else "") + ")")
    return _noted(sorting.with_spikes(keep), note)


@dataclass
class UnitSample:
    """Units' median snippets read from a sample of their events (`sampled_medians`): what the tests
    that fit a window with its unit's median beside the other events' (here, and overlapped_spikes.py) read."""

    main: dict[int, np.ndarray]  # each tested unit's main channels
    reach: dict[int, np.ndarray]  # the channels each unit's median is read on (the main ones of the units it reaches)
    medians: dict[int, np.ndarray]  # (3 · length, len(reach[v])) median snippet, a snippet's length wider either side
    times: dict[int, np.ndarray]  # the sampled events of each unit
    wide: dict[int, np.ndarray]  # their wide windows, (n, 3 · length · len(reach[v])) in σ
    length: int  # samples in a snippet

    def windows(self, unit: int) -> np.ndarray:
        """(n, length, main channels) the unit's sampled events' windows on its main channels."""
        length, reach = self.length, self.reach[unit]
        wide = self.wide[unit].reshape(len(self.wide[unit]), 3 * length, len(reach))
        return wide[:, length:2 * length][:, :, np.searchsorted(reach, self.main[unit])]

    def judge(self, unit: int, sorting: Sorting, besides: Callable[[int], bool] = lambda v: True) -> "UnitJudge":
        """The unit's test against `sorting`'s other events: those of the units for which `besides` holds."""
        medians = {v: m for v, m in self.medians.items() if v == unit or besides(v)}
        return UnitJudge(unit, self.main[unit], medians, self.reach, sorting.spike_times, sorting.spike_units,
                         self.length)


def sampled_medians(sorting: Sorting, recording, noise_levels: np.ndarray, unit_masks: np.ndarray,
                    tested: list[int], of_unit: list[np.ndarray]) -> UnitSample | None:
    """The `tested` units' main channels and the medians, on them, of every unit whose channels
    (`unit_masks`, (n_units, n_channels) bool) reach them, each read from up to SAMPLED_EVENTS of its events
    (NEIGHBOUR_EVENTS for a unit only reaching) in SAMPLE_BLOCKS blocks spread over the recording; None when
    no unit has MIN_SPLIT_SPIKES events there. `of_unit`: each unit's spike indices."""
    before, after = (max(int(round(ms * 1e-3 * sorting.sampling_rate)), 1) for ms in SNIPPET_MS)
    length = before + after
    main = {u: main_channels(sorting.templates[u], noise_levels, unit_masks[u]) for u in tested}
    # Every unit whose filter reaches a tested unit's main channels has its median read there (the
    # tested unit's own included), a snippet's length wider either side: the part of it that falls in
    # a window of the tested unit's, from any event within a snippet's length.
    reach: dict[int, np.ndarray] = {}
    for u in tested:
        for v in np.flatnonzero(unit_masks[:, main[u]].any(axis=1)).tolist():
            if len(of_unit[v]) >= MIN_SPLIT_SPIKES:
                reach[v] = np.union1d(reach.get(v, main[u]), main[u])
    times = sorting.spike_times
    wide_readable = (times - before - length >= 0) & (times + after + length <= recording.n_samples)
    present = np.unique(times[wide_readable] // BLOCK_SAMPLES)
    n_blocks = min(len(present), SAMPLE_BLOCKS, max(SAMPLE_BLOCKS_MIN, len(present) // SAMPLE_SHARE))
    blocks = present[np.linspace(0, len(present) - 1, n_blocks).astype(np.int64)]
    tested_set = set(tested)
    sampled = {v: _spread(times[of_unit[v]][wide_readable[of_unit[v]] & np.isin(times[of_unit[v]] // BLOCK_SAMPLES, blocks)],
                          SAMPLED_EVENTS if v in tested_set else NEIGHBOUR_EVENTS)
               for v in reach}
    sampled = {v: t for v, t in sampled.items() if len(t) >= MIN_SPLIT_SPIKES}
    if not sampled:
        return None
    wide = _read_snippets({v: (t, reach[v]) for v, t in sampled.items()}, recording, noise_levels,
                          before + length, after + length)
    medians = {v: median_of_columns(w.reshape(len(w), 3 * length, len(reach[v]))) for v, w in wide.items()}
    return UnitSample(main, reach, medians, sampled, wide, length)


class UnitJudge:
    """One tested unit's test: its median on its main channels, the other units' there, and its bar."""

    def __init__(self, unit: int, channels: np.ndarray, medians: dict, reach: dict, times: np.ndarray,
                 units: np.ndarray, length: int) -> None:
        self.length, self.times, self.units = length, times, units
        on = {v: medians[v][:, np.searchsorted(reach[v], channels)] for v in medians
              if np.isin(channels, reach[v]).all()}
        self.template = on[unit][length:2 * length]
        self.energy = max(float((self.template ** 2).sum()), 1e-12)
        self.others = {v: m for v, m in on.items() if v != unit}
        self.bar: float | None = None
        self.sure_bar: float | None = None

    def hollow(self, spike_times: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the unit's events at `spike_times` (windows (n, length, channels) in σ)
        fit its median under the bar, as recorded and also with the other events taken out, or with the
        other events taken out, HOLLOW_SURE_SES standard errors under HOLLOW_SIZE of its usual size."""
        windows = windows.astype(np.float64)
        recorded = self.recorded(windows)
        if self.bar is None:  # from the first events judged: the sample
            centre = float(np.median(recorded))
            spread = 1.4826 * float(np.median(np.abs(recorded - centre)))
            self.bar = min(HOLLOW_SIZE * centre, centre - HOLLOW_SDS * spread)
            # Beside the other events, the fit's standard error is the noise's allowance, not the sample's spread:
            # a small unit's recorded sizes spread so wide that `bar` fell under 0 (recording seed 1's gt10).
            self.sure_bar = HOLLOW_SIZE * centre
        if not self.others:
            return recorded < self.bar
        sizes, errors = self._sizes_and_errors(spike_times, windows, recorded)
        return ((recorded < self.bar) & (sizes < self.bar)) | (sizes + HOLLOW_SURE_SES * errors < self.sure_bar)

    def recorded(self, windows: np.ndarray) -> np.ndarray:
        """(n,) the size at which the unit's median fits each window (n, length, channels) as recorded."""
        return np.einsum("slc,lc->s", np.asarray(windows, dtype=np.float64), self.template) / self.energy

    def fitted_beside_others(self, spike_times: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n,) sizes, (n,) t): the unit's median's size in each window (n, length, channels) with the other
        events within a snippet's length fitted beside it, each as its unit's median at a size of its own
        (least squares), and the size over its standard error (from what the fit leaves: beside a far bigger
        spike that its median does not model down to the noise, a size means little)."""
        sizes, errors = self._sizes_and_errors(spike_times, np.asarray(windows, dtype=np.float64))
        return sizes, sizes / np.maximum(errors, 1e-12)

    def _sizes_and_errors(self, spike_times: np.ndarray, windows: np.ndarray, recorded: np.ndarray | None = None,
                          ) -> tuple[np.ndarray, np.ndarray]:
        """`fitted_beside_others`' sizes and their standard errors; `recorded`: `recorded(windows)` when the
        caller has it already."""
        flat = windows.reshape(len(windows), -1)
        # Where no other event is near, the fit is the median's alone.
        sizes = (self.recorded(windows) if recorded is None else recorded).copy()
        left = (flat ** 2).sum(axis=1) - sizes ** 2 * self.energy
        errors = np.sqrt(np.maximum(left, 0.0) / max(flat.shape[1] - 1, 1) / self.energy)
        for rows, fit, inverse, left in self._fits_beside_others(spike_times, flat):
            spread = left / max(flat.shape[1] - fit.shape[1], 1)
            sizes[rows] = fit[:, 0]
            errors[rows] = np.sqrt(spread * inverse[:, 0, 0])
        return sizes, errors

    def _fits_beside_others(self, spike_times: np.ndarray, flat: np.ndarray):
        """(rows, fits (n, 1 + k), (DᵀD)⁺ (n, 1 + k, 1 + k), ‖y − D fit‖² (n,)) for the windows
        `flat` (one a row) with k other events within a snippet's length, one batch for each k: each window's
        design D has the unit's median and each such event's unit's median where it falls in the window as
        its columns. Solved as a stack (a 2-hour probe's drops are hundreds of thousands of windows): one
        decomposition of DᵀD gives both the fit, the least-squares solution of least norm where two
        neighbours' medians coincide (as lstsq's), and the fit's variance."""
        length = self.length
        rows, events = pairs_in_runs(np.searchsorted(self.times, spike_times - length + 1),
                                     np.searchsorted(self.times, spike_times + length))
        # Other units' events only (the unit's own, the spike itself among them, are not in `others`).
        known = np.isin(self.units[events], list(self.others))
        rows, events = rows[known], events[known]
        if len(rows) == 0:
            return
        # A window starts `length` samples into its median's for an event at the same time.
        starts = spike_times[rows] - self.times[events] + length
        others = sorted(self.others)
        stacked = np.stack([self.others[v] for v in others])  # (units, 3 · length, channels)
        which = np.searchsorted(others, self.units[events])
        pieces = stacked[which[:, None], starts[:, None] + np.arange(length)].reshape(len(rows), -1)
        bounds = np.searchsorted(rows, np.arange(len(spike_times) + 1))  # rows ascending: each window's run
        counts = np.diff(bounds)
        template = self.template.ravel()
        for k in np.unique(counts[counts > 0]).tolist():
            batch = np.flatnonzero(counts == k)
            mine = pieces[bounds[batch][:, None] + np.arange(k)]  # (n, k, length · channels): the others' columns
            window = flat[batch]
            # DᵀD and Dᵀy from the columns' products (no design is built: a 2-hour probe has ~10⁶ windows).
            gram = np.empty((len(batch), k + 1, k + 1))
            gram[:, 0, 0] = template @ template
            gram[:, 0, 1:] = gram[:, 1:, 0] = mine @ template
            gram[:, 1:, 1:] = np.einsum("nip,njp->nij", mine, mine)
            projected = np.concatenate([(window @ template)[:, None], np.einsum("nkp,np->nk", mine, window)], axis=1)
            inverse = np.linalg.pinv(gram)
            fit = np.einsum("nij,nj->ni", inverse, projected)
            # What the fit leaves, ‖y − D fit‖² = ‖y‖² − fit · Dᵀy at the least-squares solution.
            left = np.maximum(np.einsum("np,np->n", window, window) - np.einsum("ni,ni->n", fit, projected), 0.0)
            yield batch, fit, inverse, left


def _spread(times: np.ndarray, most: int) -> np.ndarray:
    """Up to `most` of `times`, evenly spread."""
    if len(times) <= most:
        return times
    return times[np.linspace(0, len(times) - 1, most).astype(np.int64)]


def _noted(sorting: Sorting, note: str) -> Sorting:
    provenance = sorting.provenance
    return sorting if provenance is None else replace(sorting, provenance=replace(provenance, hollow_events=note))

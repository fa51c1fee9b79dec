"""Look-alike units told apart by a discriminant of their recorded waveforms.

The lasso gives a spike to the filter whose shape fits it best; an amplitude split gives a filter's
spikes to its units by the size of their codes, one number a spike; and the reassignment stage
(engine/pipeline/spike_reassignment.py) moves a spike to a look-alike unit only where that unit's
template fits it down to the noise and by a 3-SD margin, one spike and one pair of templates at a
time. Between two neurons of nearly one shape, much is left where it fell. Measured on
SpikeInterface's tetrode (recording seed 0): the 3-SNR gt0 and the 5-SNR gt3, 0.93 alike, scored
0.815 and 0.895; their units held 0.94 and 0.98 of their isolated spikes (no other spike within 3 ms)
and 0.80 and 0.93 of the others, while a linear discriminant of their recorded windows at their true
times told their isolated spikes apart at 0.4 % error.

So each group of look-alike units (sharing a filter, or spike_reassignment's look-alikes; none
labelled residual) is classified again, together, by a linear discriminant (scikit-learn's, with a
shrunk covariance: a window is hundreds of values) of their recorded windows in noise σ, aligned on
their templates, with every other event the sort found taken out of each window (the CRsAE
decoder's model of the neighbours, engine/pipeline/neighbour_spikes.py). It learns from the units'
own spikes, sampled from waveform_split's fit blocks, then from its own classes, a few rounds, as
k-means refines its means. A spike moves between two units only where the discriminant found two
neurons there, not a line drawn through one: on spikes it did not learn from, the two classes'
scores stand SEPARATION_SDS robust SDs apart. A line through one unit's spikes (split at random or
by size, then refined as above) left its halves 2.4-2.6 SDs apart on each unit of that recording;
gt0 and gt3 stood 3.9 apart, most other pairs 6-100.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from engine.pipeline.main_channels import main_channels
from engine.pipeline.neighbour_spikes import NeighbourSpikes
from engine.pipeline.params import MIN_SPLIT_SPIKES
from engine.pipeline.residual_units import labelled_residual
from engine.pipeline.sorting import Sorting, peak_taps, spikes_of_each_filter
from engine.pipeline.coincidences import group_medians
from engine.pipeline.spike_reassignment import best_lag, landing_on_a_spike, look_alikes, moves_in_words, rescaled
from engine.pipeline.waveform_split import SNIPPET_MS, _fit_blocks, _read_snippets, BLOCK_SAMPLES

# Each pair of classes this many robust SDs apart, at least, on the spikes the discriminant did not learn from.
SEPARATION_SDS = 3.5
# The discriminant learns from up to this many of a group's spikes, evenly spread over its fit blocks.
FIT_SPIKES = 6000
# At most this many rounds of learning from its own classes (each round a discriminant learned and applied).
ROUNDS = 5
# Every spike of a group is classified only when its sample (the fit blocks') holds this many moves or more.
SAMPLED_MOVES = 3


def look_alike_groups(sorting: Sorting, noise_levels: np.ndarray, channel_mask: np.ndarray
                      ) -> tuple[list[list[int]], dict[int, np.ndarray]]:
    """(groups of units, each unit's main channels): the connected groups of units that share a filter or
    are look-alikes (spike_reassignment.look_alikes: templates LOOK_ALIKE_SIMILARITY alike on their main
    channels), each unit with MIN_SPLIT_SPIKES spikes or more and none labelled residual (a residual
    unit holds what neighbours leave, not a neuron to be told apart); biggest unit first in each group."""
    residual = labelled_residual(sorting)
    counts = np.bincount(sorting.spike_units, minlength=sorting.n_units)
    filter_of = np.asarray(sorting.filter_index, dtype=np.int64)
    mask = np.asarray(channel_mask, dtype=bool)[filter_of]
    units = [u for u in range(sorting.n_units) if u not in residual and counts[u] >= MIN_SPLIT_SPIKES]
    main = {u: main_channels(sorting.templates[u], noise_levels, mask[u]) for u in units}
    index = {u: row for row, u in enumerate(units)}
    edges = [(a, b) for a, partners in look_alikes(sorting.templates, main, takers=set(units)).items() for b in partners]
    edges += [(a, b) for i, a in enumerate(units) for b in units[i + 1:] if filter_of[a] == filter_of[b]]
    rows = np.array([index[a] for a, _ in edges], dtype=np.int64)
    columns = np.array([index[b] for _, b in edges], dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(edges)), (rows, columns)), shape=(len(units), len(units)))
    labels = connected_components(graph, directed=False)[1]
    groups: dict[int, list[int]] = {}
    for u, label in zip(units, labels.tolist()):
        groups.setdefault(label, []).append(u)
    found = [sorted(g, key=lambda u: -counts[u]) for g in groups.values() if len(g) >= 2]
    return found, main


def reclassify_look_alikes(sorting: Sorting, recording, noise_levels: np.ndarray, filters: np.ndarray,
                           channel_mask: np.ndarray, dead_time: int) -> Sorting:
    """`sorting` with the spikes of each group of look-alike units classified again by their recorded
    waveforms (see the module's docstring). recording: what was sorted (preprocessed); noise_levels:
    (n_channels,) its σ; filters (n_filters, n_taps, n_channels) and channel_mask (n_filters, n_channels)
    bool: the dictionary the units came from."""
    if sorting.n_units < 2 or sorting.filter_index is None or sorting.code_amplitudes is None or sorting.n_spikes == 0:
        return _noted(sorting, "no look-alike units")
    groups, main = look_alike_groups(sorting, noise_levels, channel_mask)
    if not groups:
        return _noted(sorting, "no look-alike units")
    rate = sorting.sampling_rate
    before, after = (max(int(round(ms * 1e-3 * rate)), 1) for ms in SNIPPET_MS)
    length = before + after
    times = sorting.spike_times
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)
    peaks = np.asarray(sorting.template_peak_taps if sorting.template_peak_taps is not None
                       else peak_taps(sorting.templates), dtype=np.int64)
    channels, shift = {}, {}
    for g, units in enumerate(groups):
        channels[g] = np.unique(np.concatenate([main[u] for u in units]))
        reference = sorting.templates[units[0]][:, channels[g]]
        for u in units:
            # u's spike at t is the group's first unit's at t + shift[u] (their templates aligned).
            lag = best_lag(reference, sorting.templates[u][:, channels[g]])[0] if u != units[0] else 0
            shift[u] = int(peaks[units[0]] - peaks[u] - lag)
    members = {}
    for g, units in enumerate(groups):
        for u in units:
            at = times[of_unit[u]] + shift[u]
            members[(g, u)] = of_unit[u][(at - before >= 0) & (at + after <= recording.n_samples)]
    neighbours = NeighbourSpikes(sorting, filters)

    def alone(key: tuple[int, int], at: np.ndarray, snippets: np.ndarray) -> np.ndarray:
        """Windows at `at` (the group's alignment) of unit key[1]'s spikes, every other event taken out."""
        g, unit = key
        windows = snippets.reshape(len(snippets), length, len(channels[g]))
        windows = windows - neighbours.around(at - shift[unit], unit, channels[g], before - shift[unit], length)
        return windows.reshape(len(snippets), -1)

    # The discriminant learns from a group's spikes in the fit blocks, the units' shares kept.
    sample = {}
    for g, units in enumerate(groups):
        spikes = np.sort(np.concatenate([members[(g, u)] for u in units]))
        inside = spikes[np.isin(times[spikes] // BLOCK_SAMPLES, _fit_blocks(times[spikes]))]
        chosen = inside[np.linspace(0, len(inside) - 1, min(len(inside), FIT_SPIKES)).astype(np.int64)
                        ] if len(inside) else inside
        for u in units:
            mine = np.intersect1d(chosen, members[(g, u)])
            sample[(g, u)] = (np.sort(times[mine] + shift[u]), channels[g])
    read = _read_snippets(sample, recording, noise_levels, before, after, reduce=alone)
    models = {}
    for g, units in enumerate(groups):
        # A unit with too few spikes in the sample to learn it from keeps its spikes and takes none.
        known = [u for u in units if len(read[(g, u)]) >= MIN_SPLIT_SPIKES]
        if len(known) < 2:
            continue
        windows = np.concatenate([read[(g, u)] for u in known])
        labels = np.concatenate([np.full(len(read[(g, u)]), u) for u in known])
        found = _discriminant(windows, labels)
        # Only where the sample shows spikes that would move is every spike read (on a probe most
        # look-alike groups trade none, and reading all their spikes was most of this stage's cost).
        if found is not None and np.count_nonzero(found.decide(windows, labels) != labels) >= SAMPLED_MOVES:
            models[g] = found
    if not models:
        return _noted(sorting, "no spikes moved between look-alike units")
    # Every spike of those groups, classified a block at a time (a unit's shift keeps its spikes' order).
    decided = _read_snippets(
        {key: (times[spikes] + shift[key[1]], channels[key[0]]) for key, spikes in members.items()
         if key[0] in models and key[1] in models[key[0]].units}, recording, noise_levels, before, after,
        reduce=lambda key, at, snippets: models[key[0]].decide(alone(key, at, snippets), np.full(len(at), key[1])))
    units = sorting.spike_units.astype(np.int64).copy()
    for (g, u), classes in decided.items():
        units[members[(g, u)]] = classes
    # A moved spike's time, from its old unit's alignment to its new one's.
    shift_of = np.zeros(sorting.n_units, dtype=np.int64)
    shift_of[list(shift)] = list(shift.values())
    new_times = times + shift_of[sorting.spike_units] - shift_of[units]
    moved = units != sorting.spike_units
    landed_on = landing_on_a_spike(new_times, units, moved, dead_time)
    units[landed_on], new_times[landed_on] = sorting.spike_units[landed_on], times[landed_on]
    moved &= ~landed_on
    if not moved.any():
        return _noted(sorting, "no spikes moved between look-alike units")
    note = (f"{int(moved.sum())} spikes moved between look-alike units by their recorded waveforms ("
            + moves_in_words(sorting.spike_units[moved], units[moved]) + "; apart: "
            + ", ".join(models[g].describe() for g in models) + ")")
    # A spike moved to a unit of another filter keeps its size relative to its units' medians; between
    # units of one filter its code, and so its amplitude, means the same in either.
    filter_of = np.asarray(sorting.filter_index, dtype=np.int64)
    across = moved & (filter_of[units] != filter_of[sorting.spike_units])
    amplitudes = _relative_size_kept(sorting.amplitudes, sorting.spike_units, units, across, sorting.n_units)
    codes = _relative_size_kept(sorting.code_amplitudes, sorting.spike_units, units, across, sorting.n_units)
    moved_sorting = replace(sorting, spike_times=new_times, spike_units=units.astype(np.int32), amplitudes=amplitudes,
                            code_amplitudes=codes)
    return _noted(moved_sorting, note)


def _relative_size_kept(values: np.ndarray, before: np.ndarray, after: np.ndarray, moved: np.ndarray,
                        n_units: int) -> np.ndarray:
    """`values` with each moved spike's scaled from its old unit's median to its new unit's."""
    medians = group_medians(values, before, n_units)
    sizes = np.asarray(values, dtype=np.float64) / np.where(medians[before] != 0, medians[before], 1.0)
    return rescaled(values, before, after, moved, sizes, n_units)


class _Discriminant:
    """A linear discriminant of a group of look-alike units' windows, and the pairs of its classes that
    stand apart (moves between any other two are not made)."""

    def __init__(self, model, separations: dict[tuple[int, int], float]) -> None:
        self.model = model
        self.units = {int(u) for u in model.classes_}
        self.separations = separations
        self.apart = {pair for pair, separation in separations.items() if separation >= SEPARATION_SDS}
        # Each pair apart (smaller unit, bigger) as one number, to look a spike's move up among them.
        self._span = max(self.units) + 1
        self._apart_keys = np.array([a * self._span + b for a, b in self.apart], dtype=np.int64)

    def decide(self, windows: np.ndarray, own: np.ndarray) -> np.ndarray:
        """(n,) the unit each window goes to: the discriminant's class, unless it and `own` (n,) do not
        stand apart."""
        found = self.model.predict(windows).astype(np.int64)
        own = np.asarray(own, dtype=np.int64)
        pair = np.minimum(own, found) * self._span + np.maximum(own, found)
        return np.where((own == found) | np.isin(pair, self._apart_keys), found, own)

    def describe(self) -> str:
        """The pairs apart, in words: how many, and the nearest."""
        nearest = min(self.separations[pair] for pair in self.apart)
        return f"{len(self.apart)} of {len(self.separations)} pairs of units {'/'.join(map(str, sorted(self.units)))} (nearest {nearest:.1f} SDs)"


def _discriminant(windows: np.ndarray, labels: np.ndarray) -> _Discriminant | None:
    """A discriminant of the classes `windows` fall into, learned from `labels` and then from its own
    classes, with each pair's separation on held-out spikes; None when no pair stands SEPARATION_SDS
    apart or a class falls under MIN_SPLIT_SPIKES."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    def learned(x: np.ndarray, y: np.ndarray):
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y)

    classes = np.unique(labels)
    x = windows.astype(np.float64)
    for _ in range(ROUNDS):
        model = learned(x, labels)
        relabelled = model.predict(x)
        if any(np.count_nonzero(relabelled == c) < MIN_SPLIT_SPIKES for c in classes):
            return None
        settled = np.count_nonzero(relabelled != labels) <= 0.001 * len(labels)
        labels = relabelled
        if settled:
            break
    # Held out: learned from every other spike, judged on the rest.
    learn, judge = np.arange(0, len(x), 2), np.arange(1, len(x), 2)
    scores = learned(x[learn], labels[learn]).decision_function(x[judge])
    scores = scores[:, None] if scores.ndim == 1 else scores
    judged = labels[judge]
    separations = {}
    for i, a in enumerate(classes):
        for j in range(i + 1, len(classes)):
            # Two classes: one score, the second's side positive; more: the difference of their scores.
            along = scores[:, 0] if len(classes) == 2 else scores[:, j] - scores[:, i]
            separations[(int(a), int(classes[j]))] = _robust_separation(along[judged == a], along[judged == classes[j]])
    found = _Discriminant(model, separations)
    return found if found.apart else None


def _robust_separation(a: np.ndarray, b: np.ndarray) -> float:
    """How many SDs apart the medians of `a` and `b` are, each SD from its median absolute deviation (the
    overlapped spikes' tails do not widen it)."""
    if len(a) < MIN_SPLIT_SPIKES or len(b) < MIN_SPLIT_SPIKES:
        return 0.0
    spread = 1.4826 * np.sqrt(0.5 * (np.median(np.abs(a - np.median(a))) ** 2
                                     + np.median(np.abs(b - np.median(b))) ** 2))
    return float(abs(np.median(b) - np.median(a)) / max(spread, 1e-12))


def _noted(sorting: Sorting, note: str) -> Sorting:
    provenance = sorting.provenance
    return sorting if provenance is None else replace(sorting, provenance=replace(provenance, look_alike_units=note))

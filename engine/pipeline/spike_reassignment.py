"""Spikes a look-alike unit explains better: each such spike moves to the unit whose recorded waveform fits it.

The lasso picks, for each spike, the filter whose shape fits it best, and two
filters of look-alike neurons can both fit a spike nearly as well; which one
wins then depends on how each filter learned, not on the neuron. Measured on
SpikeInterface's 32-channel probe (recording seed 6, sorter seed 8): a
neuron's (gt23) 4,468 spikes were split between its unit (2,890) and a
look-alike neighbour's (1,634 of that unit's 5,837 spikes); the neighbour's
unit was two neurons, but its spike train kept the refractory period (34
pairs where 230 were due, the lasso rarely codes two spikes on one filter
within 1.5 ms), so the waveform split never tried it, and neither unit scored
over 0.72.

What the filters could not tell apart, the recording can: each unit's
template is the median of its recorded spikes (the median follows the
majority, so a unit that holds some of another neuron's spikes keeps its
own neuron's shape), read on the main channels of the unit and of each
look-alike unit sharing them. A unit can hold as many of a look-alike's
neuron's spikes as of anything else (the rest residue of overlaps): its
median lies between and no spike clears the margin below, so each template
is read once more, from the spikes it fits at least as well as every
look-alike's template does. For each spike and each look-alike unit b of
its unit a, the residual left by each template (fitted in size, within
FIT_SIZE_RANGE of it, and in time, within SHIFT_MS of their alignment) is
compared. The spike moves to b when

- b's template explains it down to the noise (residual under the chance
  level of FIT_NOISE_SDS SDs over the snippet's size in σ²), so a spike
  overlapped by another neuron, which no one template explains, stays; and
- b's residual is smaller than a's by REASSIGN_SDS times the SD that noise
  gives that difference (twice the templates' distance): between two
  templates of one neuron, or of two neurons a noise draw apart, no spike
  moves.

Each spike is judged alone: every other event the sort found near it, its
filter at its code (the CRsAE decoder's model of it), is taken out of its
window first (engine/pipeline/neighbour_spikes.py). Before that, a spike
another neuron overlapped was explained by no template and stayed where the
lasso put it: on the probe above (sorter seed 8) 724 of the look-alike's
spikes stayed in the wrong unit, three quarters of them with another
neuron's spike within 1 ms.

A move that would land within the dead time of a spike the new unit already
holds is not made: the coincidence step judged those two events two spikes
(on the tetrode preset the 11 such moves, made by dropping the moved spike,
cost 0.0004 of mean accuracy). Units labelled noise by the sort (residual
units) give spikes but never take them: a neuron's spikes that a residual
filter coded go back to it (recording seed 6, sorter seed 7: +0.0015),
while the residue such units hold, riding on bigger spikes, must not join a
clean unit. Such a unit's template is a blend of residues: its look-alikes
are taken from RESIDUAL_LOOK_ALIKE_SIMILARITY, and its filter coded a
neuron's spikes where its own shape fitted them, up to 0.8 ms from where
the blend places the neuron (recording seed 0: a noise unit held 405
spikes of the 4-SNR neuron gt13, none of them explained at the blend's
alignment). So the taker's template is sought anywhere in the window, and a
move is made only at RESIDUAL_MOVE_SIZES of the taker's size (residue fits
a template smaller): recording seed 0 0.9002 -> 0.9016 (gt13 0.815 ->
0.849), recording seed 6, sorter seeds 6, 8, 9 +0.0010, +0.0009, +0.0014,
sorter seed 7 and recording seed 1 within 0.0001. From 0.8 alike without the
size bar, recording seed 0 lost 0.0006 (40 moves, none of gt13's); a
search at the blend's alignment moved none of gt13's spikes.

Measured on the benchmark's recordings, the sort's stages run once and this
stage after them (mean accuracy before -> after). With templates read again
from their own spikes: 32 channels, recording seed 6, sorter seeds 6, 7, 8:
0.9930 -> 0.9931, 0.9854 -> 0.9911 (the 4-SNR neuron above 0.767 -> 0.864,
was 0.817), 0.9617 -> 0.9881 (was 0.9856); recording seed 0, both
tetrodes and 384 channels as below (384: 0.9162). With the neighbours taken
out: 32 channels, recording seed 6, sorter seeds 6, 7, 8: 0.9930 -> 0.9932,
0.9854 -> 0.9892, 0.9617 -> 0.9856 (the case above: 0.616 -> 0.929 and
0.708 -> 0.940); recording seed 0: 0.9002 -> 0.9002; SpikeInterface's
tetrode 0.9555 -> 0.9555; the tetrode preset 0.9888 -> 0.9888; 384 channels
(60 s) 0.9148 -> 0.9161. Taking out only events more than 0.1, 0.2 or 0.5 ms
from the spike (leaving what may be the spike coded twice) scored 0.0001 to
0.0024 lower on seed 8, 0.0002 to 0.0006 higher on seed 6. Without them
(the stage's first form, 32 channels: 5 min, 24 units):
32 channels, recording seed 6, sorter seeds 6, 7, 8: 0.9930 -> 0.9937,
0.9854 -> 0.9884, 0.9617 -> 0.9775 (the case above: 0.616 -> 0.830 and
0.708 -> 0.855); SpikeInterface's tetrode 0.9555 -> 0.9555; the tetrode
preset 0.9888 -> 0.9887. With the stage's first form (a move onto a held
spike dropped it; noise units gave nothing): recording seed 0 0.9002 ->
0.9003, 384 channels (60 s) 0.9148 -> 0.9156. Look-alikes from 0.7 or 0.8
instead of 0.9: the same within 0.0002 except SpikeInterface's tetrode
(0.9515 -> 0.9507 at 0.7, spikes of its faint neuron moved away), at twice
the cost. Offline, without the noise bar (the margin alone, at 0 SDs), every
unit lost spikes to its neighbours (0.962 -> 0.893); a second pass with
templates re-read moved few spikes more (+0.001) and is not made.

Cost: each unit's template, and a sample of the moves its spikes would
make, come from its spikes in waveform_split's fit blocks (30 blocks of 2 s
spread over the recording); only a unit whose sample holds SAMPLED_MOVES or
more is read whole, each spike held only as its best move. Blocks are
band-passed once for all units, on the cores other programs leave free;
the neighbours' model costs 20-30 µs a spike. On the benchmark (2 cores),
with the neighbours taken out: 32 channels, 5 min, 0.7-2.2 s (1.5-1.7 s
without them; 3.9-4.4 s when every unit with a look-alike was read whole);
384 channels, 60 s, 2.9-3.2 s (2.7-3.0 s); a tetrode, 5 min, 0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.pipeline.coincidences import group_medians
from engine.pipeline.neighbour_spikes import NeighbourSpikes
from engine.pipeline.params import MIN_SPLIT_SPIKES
from engine.pipeline.preprocessing import median_of_columns
from engine.pipeline.main_channels import main_channels
from engine.pipeline.residual_units import labelled_residual
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.waveform_split import BLOCK_SAMPLES, SNIPPET_MS, _fit_blocks, _read_snippets

# Look-alike units: their templates (the sort's, from the filters) at least this alike on their main channels.
LOOK_ALIKE_SIMILARITY = 0.9
# Each unit's recorded template: the median of up to this many of its spikes, from the fit blocks.
TEMPLATE_SPIKES = 1500
# A template is fitted to a spike within this many ms of their alignment, and within this range of its size.
SHIFT_MS = 0.1
FIT_SIZE_RANGE = (0.6, 1.6)
# The other unit must explain the spike to within this many SDs of the noise's residual...
FIT_NOISE_SDS = 3.0
# ... and better than its own unit by this many SDs of the difference noise alone gives.
REASSIGN_SDS = 3.0
# A unit's spikes are all read only when the sample read for its template holds at least this many moves.
SAMPLED_MOVES = 3
# Units the sort labelled residual (noise) give spikes but never take them. Such a unit's template is a blend
# of residues, less alike to anyone's, and its filter coded a neuron's spikes at its own alignment: its spikes
# go to units this alike, their templates sought anywhere in the window, and only at sizes within this range
# of the taker's (residue riding on other spikes fits a template smaller).
RESIDUAL_LOOK_ALIKE_SIMILARITY = 0.8
RESIDUAL_MOVE_SIZES = (0.75, 1.33)


@dataclass(frozen=True)
class _Pair:
    """Unit b as a destination for unit a's spikes: on `columns` (indices into a's read channels),
    b's template there, its alignment `lag` (samples) against a's, and the SD unit of the difference;
    `from_residue` where a is a unit labelled noise."""

    unit: int
    columns: np.ndarray
    template: np.ndarray  # (length, n) in σ
    own: np.ndarray  # a's template on the same columns
    lag: int
    difference_sd: float
    from_residue: bool = False


def reassign_spikes(sorting: Sorting, recording, noise_levels: np.ndarray, filters: np.ndarray,
                    channel_mask: np.ndarray, dead_time: int) -> Sorting:
    """`sorting` with each spike that a look-alike unit's recorded template explains better than its
    own unit's moved to that unit (see the module's docstring). recording: what was sorted
    (preprocessed); noise_levels: (n_channels,) its σ; filters (n_filters, n_taps, n_channels) and
    channel_mask (n_filters, n_channels) bool: the dictionary the units came from."""
    if sorting.n_units < 2 or sorting.filter_index is None or sorting.code_amplitudes is None or sorting.n_spikes == 0:
        return sorting
    rate = sorting.sampling_rate
    before, after = (max(int(round(ms * 1e-3 * rate)), 1) for ms in SNIPPET_MS)
    shift = max(int(round(SHIFT_MS * 1e-3 * rate)), 1)
    residual = labelled_residual(sorting)
    of_unit = spikes_of_each_filter(sorting.spike_units, sorting.n_units)
    mask = np.asarray(channel_mask, dtype=bool)[np.asarray(sorting.filter_index, dtype=np.int64)]
    main = {unit: main_channels(sorting.templates[unit], noise_levels, mask[unit]) for unit in range(sorting.n_units)
            if len(of_unit[unit]) >= MIN_SPLIT_SPIKES}
    partners_of = look_alikes(sorting.templates, main, takers=set(main) - residual, residual=residual)
    if not partners_of:
        return replace(sorting, provenance=_noted(sorting, "no spikes moved"))
    # Each unit is read on its main channels and its look-alikes': where any comparison it is in needs
    # (a taker's template is read where each unit that may give it spikes has its own).
    givers: dict[int, list[int]] = {}
    for a, partners in partners_of.items():
        for b in partners:
            givers.setdefault(b, []).append(a)
    involved = set(partners_of) | set(givers)
    read_channels = {unit: np.unique(np.concatenate([main[unit]] + [main[b] for b in partners_of.get(unit, [])]
                                                    + [main[a] for a in givers.get(unit, [])]))
                     for unit in involved}
    times = sorting.spike_times
    length = before + after
    # Each spike is read this far either side of its unit's template's window: a look-alike's template is
    # placed up to a quarter of the window (its alignment lag) and the search shift away.
    wide = length // 4 + shift
    readable = (times - before - wide >= 0) & (times + after + wide <= recording.n_samples)
    members = {unit: of_unit[unit][readable[of_unit[unit]]] for unit in involved}
    blocks = _fit_blocks(np.concatenate([times[m] for m in members.values()]))
    neighbours = NeighbourSpikes(sorting, filters)

    def alone(unit: int, spike_times: np.ndarray, snippets: np.ndarray) -> np.ndarray:
        """Snippets of unit's spikes at `spike_times`, as windows with every other spike the sort found
        taken out (engine/pipeline/neighbour_spikes.py)."""
        windows = snippets.reshape(len(snippets), length + 2 * wide, len(read_channels[unit]))
        return windows - neighbours.around(spike_times, unit, read_channels[unit], before + wide, length + 2 * wide)

    # Each unit's spikes in the fit blocks, read as wide as the moves' windows: its template, and a sample
    # of the moves it would make.
    sampled = _read_snippets({unit: (_spread(times[m][np.isin(times[m] // BLOCK_SAMPLES, blocks)]), read_channels[unit])
                              for unit, m in members.items()}, recording, noise_levels, before + wide, after + wide,
                             reduce=alone)
    templates = {unit: median_of_columns(windows[:, wide:wide + length]) if len(windows) >= MIN_SPLIT_SPIKES else None
                 for unit, windows in sampled.items()}
    pairs = {a: _pairs(a, partners, templates, read_channels, main, a in residual)
             for a, partners in partners_of.items() if templates[a] is not None}
    # A unit holding nearly as many of a look-alike's neuron's spikes as of its own (and others' residue) has
    # a median between the two, too near the look-alike's for any spike to clear the margin: each template
    # is read again from the spikes it fits at least as well as every look-alike's template does.
    templates = _templates_of_own_spikes(sampled, pairs, templates, wide, length, shift)
    pairs = {a: [_pair(a, pair.unit, pair.lag, templates, read_channels, main, a in residual) for pair in p]
             for a, p in pairs.items()}
    # Only units whose sampled spikes hold some moves are read whole: on a probe most look-alike pairs
    # trade no spike, and reading every spike of theirs was most of this stage's cost.
    pairs = {a: p for a, p in pairs.items()
             if p and np.count_nonzero(_best_moves(sampled[a], p, wide, shift)[:, 0] >= 0) >= SAMPLED_MOVES}
    if not pairs:
        return replace(sorting, provenance=_noted(sorting, "no spikes moved"))
    best = _read_snippets(
        {a: (times[members[a]], read_channels[a]) for a in pairs}, recording, noise_levels, before + wide, after + wide,
        reduce=lambda a, spike_times, snippets: _best_moves(alone(a, spike_times, snippets), pairs[a], wide, shift))
    return _moved(sorting, members, pairs, best, dead_time)


def _spread(times: np.ndarray) -> np.ndarray:
    """Up to TEMPLATE_SPIKES of `times`, evenly spread."""
    if len(times) == 0:
        return times
    return times[np.linspace(0, len(times) - 1, min(len(times), TEMPLATE_SPIKES)).astype(np.int64)]


def look_alikes(templates: np.ndarray, main: dict[int, np.ndarray], takers: set[int],
                 residual: set[int] = frozenset()) -> dict[int, list[int]]:
    """{unit: the units among `takers` whose templates share its main channels and are
    LOOK_ALIKE_SIMILARITY alike on both's main channels at their best lag (RESIDUAL_LOOK_ALIKE_SIMILARITY
    for a unit in `residual`)}, only units that have some."""
    units = np.array(sorted(main), dtype=np.int64)
    found: dict[int, list[int]] = {}
    if len(units) < 2:
        return found
    on_main = np.zeros((len(units), templates.shape[2]), dtype=np.int32)
    for row, unit in enumerate(units):
        on_main[row, main[int(unit)]] = 1
    # Only the pairs that share a main channel are compared (a few per unit on a probe of hundreds).
    for i, j in zip(*np.nonzero(np.triu(on_main @ on_main.T, k=1))):
        a, b = int(units[i]), int(units[j])
        if a not in takers and b not in takers:
            continue
        channels = np.union1d(main[a], main[b])
        similarity = best_lag(templates[a][:, channels], templates[b][:, channels])[1]
        bar = {unit: RESIDUAL_LOOK_ALIKE_SIMILARITY if unit in residual else LOOK_ALIKE_SIMILARITY for unit in (a, b)}
        if b in takers and similarity >= bar[a]:
            found.setdefault(a, []).append(b)
        if a in takers and similarity >= bar[b]:
            found.setdefault(b, []).append(a)
    return found


def best_lag(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(lag, similarity): the lag (samples) at which b, moved by it, is most alike to a (cosine over
    their overlap), up to a quarter of their length either way."""
    n = len(a)
    max_lag = n // 4
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:])
        similarity = float(np.sum(x * y) / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12))
        if similarity > best[1]:
            best = (lag, similarity)
    return best


def _pairs(a: int, partners: list[int], templates: dict, read_channels: dict, main: dict,
           from_residue: bool) -> list[_Pair]:
    """Unit a's look-alikes with recorded templates, each placed against a's on their shared main channels."""
    found = []
    for b in partners:
        if templates.get(b) is None:
            continue
        channels = np.union1d(main[a], main[b])
        own = templates[a][:, np.searchsorted(read_channels[a], channels)]
        other = templates[b][:, np.searchsorted(read_channels[b], channels)]
        # own[lag + i] is most alike to other[i]: b's spike lies `lag` samples after a's.
        lag, _ = best_lag(own, other)
        found.append(_pair(a, b, lag, templates, read_channels, main, from_residue))
    return found


def _pair(a: int, b: int, lag: int, templates: dict, read_channels: dict, main: dict, from_residue: bool) -> _Pair:
    """b as a destination for a's spikes, b's spike `lag` samples after a's, with these templates."""
    channels = np.union1d(main[a], main[b])
    columns = np.searchsorted(read_channels[a], channels)
    own = templates[a][:, columns]
    other = templates[b][:, np.searchsorted(read_channels[b], channels)]
    moved = np.roll(other, lag, axis=0)  # b's template where a's spikes' windows would hold it
    return _Pair(b, columns, other, own, lag, 2.0 * float(np.linalg.norm(own - moved)), from_residue)


def _templates_of_own_spikes(sampled: dict, pairs: dict, templates: dict, wide: int, length: int,
                             shift: int) -> dict:
    """`templates` with each unit's that has look-alikes read again: the median of its sampled spikes
    (`sampled`, windows `wide` wider either side) that its template fits at least as well as each
    look-alike's, where at least MIN_SPLIT_SPIKES are (one step of k-means, from the sort's split).

    Measured on the 32-channel probe (recording seed 6, sorter seed 7): a unit held 637 of a 4-SNR
    neuron's spikes, 228 of others' and 259 residues; its median was 0.947 alike to the neuron's own
    unit's, and of its spikes of the neuron 80 % were fitted better by that unit's template but no
    better than the margin asks. Read from the spikes it fits best (119 of the 228 sampled), its
    template is the residue's, and the neuron's spikes move."""
    refined = dict(templates)
    for a, partners in pairs.items():
        if not partners:
            continue
        prefers_own = np.ones(len(sampled[a]), dtype=bool)
        for pair in partners:
            own, other, _, _ = _fits(sampled[a], pair, wide, shift, anywhere=False)
            prefers_own &= own <= other
        if np.count_nonzero(prefers_own) >= MIN_SPLIT_SPIKES:
            refined[a] = median_of_columns(sampled[a][prefers_own][:, wide:wide + length])
    return refined


def _residuals(windows: np.ndarray, energies: np.ndarray, template: np.ndarray,
               offsets: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(residual, offset, size) of `template` ((length, n)) fitted to each of `windows` ((n_spikes,
    wide_length, n); `energies` their running sums of squares, (n_spikes, wide_length + 1)) at its best
    offset among `offsets` (start samples) and size within FIT_SIZE_RANGE:
    |w - s·t|² = |w|² - 2s<w, t> + s²|t|²."""
    length = len(template)
    energy = max(float(np.sum(template.astype(np.float64) ** 2)), 1e-12)
    starts = np.asarray(offsets, dtype=np.int64)
    pieces = np.lib.stride_tricks.sliding_window_view(windows, length, axis=1)[:, starts]  # (s, o, n, length)
    products = np.einsum("socl,lc->so", pieces, template.astype(np.float32), dtype=np.float64)
    sizes = np.clip(products / energy, *FIT_SIZE_RANGE)
    residuals = energies[:, starts + length] - energies[:, starts] - 2.0 * sizes * products + sizes ** 2 * energy
    best = np.argmin(residuals, axis=1)
    rows = np.arange(len(windows))
    return residuals[rows, best], starts[best], sizes[rows, best]


def _fits(windows: np.ndarray, pair: _Pair, wide: int, shift: int, anywhere: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(own residual, other's residual, other's offset, other's size) for each of a's spike windows
    (its template's window `wide` samples wider either side): a's template and b's (`pair`) each
    fitted in size and, within `shift`, in time; b's `anywhere` in the window if asked."""
    local = np.ascontiguousarray(windows[:, :, pair.columns])
    energies = np.zeros((len(local), local.shape[1] + 1))
    np.cumsum(np.einsum("stc,stc->st", local, local, dtype=np.float64), axis=1, out=energies[:, 1:])
    own, _, _ = _residuals(local, energies, pair.own, range(wide - shift, wide + shift + 1))
    start = wide + pair.lag  # b's template's window in a spike's: b's spike time is a's + offset - wide
    reach = range(0, 2 * wide + 1) if anywhere else range(start - shift, start + shift + 1)
    other, offset, size = _residuals(local, energies, pair.template, reach)
    return own, other, offset, size


def _best_moves(windows: np.ndarray, pairs: list[_Pair], wide: int, shift: int) -> np.ndarray:
    """(n_spikes, 3) float64: for each spike window (its unit's template's window `wide` samples wider
    either side), the index into `pairs` of the unit it moves to (-1: none), the move's time shift
    (samples) and the size the new unit's template fitted it at."""
    result = np.zeros((len(windows), 3))
    result[:, 0] = -1
    best_score = np.full(len(windows), -np.inf)
    for index, pair in enumerate(pairs):
        own, other, offset, size = _fits(windows, pair, wide, shift, anywhere=pair.from_residue)
        n_values = pair.template.size
        explained = other < n_values + FIT_NOISE_SDS * np.sqrt(2.0 * n_values)
        score = (own - other) / max(pair.difference_sd, 1e-12)
        move = explained & (score >= REASSIGN_SDS) & (score > best_score)
        if pair.from_residue:
            move &= (size >= RESIDUAL_MOVE_SIZES[0]) & (size <= RESIDUAL_MOVE_SIZES[1])
        best_score = np.where(move, score, best_score)
        result[move, 0] = index
        result[move, 1] = offset[move] - wide
        result[move, 2] = size[move]
    return result


def _moved(sorting: Sorting, members: dict, pairs: dict, best: dict, dead_time: int) -> Sorting:
    """`sorting` with the chosen moves made: unit, time (shifted to the new unit's alignment) and size
    (the fitted size times the new unit's median). A move onto a spike its new unit already holds is
    not made: the two events were judged two spikes by the coincidence step, and one unit cannot hold both."""
    units = sorting.spike_units.astype(np.int64).copy()
    times = sorting.spike_times.copy()
    moved = np.zeros(sorting.n_spikes, dtype=bool)
    sizes = np.ones(sorting.n_spikes)
    for a, choice in best.items():
        go = choice[:, 0] >= 0
        spikes = members[a][go]
        units[spikes] = np.array([pair.unit for pair in pairs[a]], dtype=np.int64)[choice[go, 0].astype(np.int64)]
        times[spikes] += choice[go, 1].astype(np.int64)
        sizes[spikes] = choice[go, 2]
        moved[spikes] = True
    landed_on = landing_on_a_spike(times, units, moved, dead_time)
    units[landed_on], times[landed_on] = sorting.spike_units[landed_on], sorting.spike_times[landed_on]
    moved[landed_on] = False
    if not moved.any():
        return replace(sorting, provenance=_noted(sorting, "no spikes moved"))
    amplitudes = rescaled(sorting.amplitudes, sorting.spike_units, units, moved, sizes, sorting.n_units)
    codes = sorting.code_amplitudes
    if codes is not None:
        codes = rescaled(codes, sorting.spike_units, units, moved, sizes, sorting.n_units)
    note = (f"{int(moved.sum())} spikes moved to a look-alike unit that explains them better ("
            + moves_in_words(sorting.spike_units[moved], units[moved]) + ")")
    # Moved times are a few samples off their old places: Sorting puts the spikes back in time order.
    return replace(sorting, spike_times=times, spike_units=units.astype(np.int32), amplitudes=amplitudes,
                   code_amplitudes=codes, provenance=_noted(sorting, note))


def moves_in_words(old_units: np.ndarray, new_units: np.ndarray, shown: int = 8) -> str:
    """"N from a to b, ..." for the moved spikes' old and new units, the commonest `shown` moves first (of
    equal counts, the one met first)."""
    pairs, first, counts = np.unique(np.stack([old_units, new_units]).astype(np.int64), axis=1, return_index=True,
                                     return_counts=True)
    order = np.lexsort((first, -counts))
    words = [f"{counts[k]} from {pairs[0, k]} to {pairs[1, k]}" for k in order[:shown]]
    return ", ".join(words) + (", ..." if len(order) > shown else "")


def rescaled(values: np.ndarray, before: np.ndarray, after: np.ndarray, moved: np.ndarray, sizes: np.ndarray,
             n_units: int) -> np.ndarray:
    """`values` with each moved spike's set to its fitted size times its new unit's median (of the spikes
    that unit held before)."""
    out = np.asarray(values, dtype=np.float32).copy()
    medians = group_medians(values, before, n_units)
    out[moved] = (sizes[moved] * medians[after[moved]]).astype(np.float32)
    return out


def landing_on_a_spike(times: np.ndarray, units: np.ndarray, moved: np.ndarray, dead_time: int) -> np.ndarray:
    """(n_spikes,) bool: the moved spikes within `dead_time` of another spike of their new unit (of two
    moved ones, the later)."""
    order = np.lexsort((times, units))
    close = np.flatnonzero((np.diff(units[order]) == 0) & (np.diff(times[order]) < dead_time))
    first, second = order[close], order[close + 1]
    landed = np.zeros(len(times), dtype=bool)
    landed[first[moved[first] & ~moved[second]]] = True
    landed[second[moved[second]]] = True
    return landed


def _noted(sorting: Sorting, note: str):
    provenance = sorting.provenance
    return None if provenance is None else replace(provenance, spike_reassignment=note)

"""A unit's small events: spikes far smaller than the unit's own, put in a unit of their own.

After the merge, some units still hold events a fraction the size of their
neuron's spikes: residuals of a neighbour's spike that the unit's filter coded
beside it, which the coincidence step's per-event bars let through, and which
are too few (under the amplitude split's 5 % of a filter's spikes) or spread
over too many filters of a merged unit for the amplitude split to cut off.
Measured on SpikeInterface's 384-channel probe (60 s, sorter seed 0): in the
units of the 5-10 SNR neurons, the events that were not their neuron's had a
median amplitude 0.18-0.55 of their unit's median.

An event smaller than SMALL_EVENT_FRACTION of the median of its unit's
SMALL_EVENT_NEIGHBOURS spikes nearest in time (a local median follows a unit
whose spikes shrink or grow as the probe drifts) is such an event. A unit with
at least MIN_SPLIT_SPIKES of them gets a unit of small events beside it (so
that a person sees them and can label them noise); fewer stay where they are.
Measured offline on five final sorts (the benchmark's recordings), moving
them: mean accuracy +0.003 at 384 channels (291 events of other neurons moved,
none of a unit's own neuron), +0.000 and +0.001 at 32 channels, +0.002 and
0.000 on SpikeInterface's tetrode; one spike of a unit's own neuron moved in
two of the five. At 0.5 instead of 0.4: +0.004 at 384 channels, 9 of its own.

A unit's events can also fall into two groups of code amplitude whose lower one
sits at the noise's level: a faint neuron's filter codes, besides its spikes,
noise that happens to look like it, at codes just over the lasso's threshold.
Measured on SpikeInterface's drifting generator's static 384-channel probe
(60 s, recording seed 0, stop 67): a 2.4-σ neuron's unit of 380 events held 182
of its spikes and 131 events of no neuron; Otsu's split of its codes (each over
the median of the unit's around it, as above) put the groups 3.0 SDs apart
(under the amplitude split's 5), the lower group's median 7.2 with λ 5.4 and
1.85 times under the upper's, and the lower 144 held 96 of no neuron and 10 of
the neuron. One neuron's codes split that far apart too, but not at the noise's
level: over the sorts of that benchmark's recordings (both 384-channel probes,
five 32-channel ones, three tetrodes) 36 units of one neuron (≥ 80 % of the
lower group its) split 3.0-6.0 SDs apart; none had its lower group under 2 λ,
and one its medians 1.6 times apart or more (1.81, its lower group at 3.1 λ).
So a unit's events under Otsu's threshold are set apart too when the groups are
NOISE_MODE_SEPARATION pooled SDs apart or more, the lower group's median code
under NOISE_MODE_MAX_LAMBDAS λ, and the upper group at least NOISE_MODE_MIN_RATIO
times the lower (medians).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from engine.pipeline.amplitude_split import amplitude_groups
from engine.pipeline.params import AMPLITUDE_SPLIT_MIN_FRACTION, MIN_SPLIT_SPIKES
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.waveform_split import with_new_units

# An event under this fraction of its unit's local median amplitude is a small event.
SMALL_EVENT_FRACTION = 0.4
# The unit's spikes nearest in time whose median is that local size.
SMALL_EVENT_NEIGHBOURS = 201
# A unit's lower mode of code amplitudes at the noise's level (see the module's docstring): Otsu's two groups of
# its log-codes at least this many pooled SDs apart (one normal distribution gives 2.65) ...
NOISE_MODE_SEPARATION = 3.0
# ... the lower group's median code at most this many λ (the lasso's threshold) ...
NOISE_MODE_MAX_LAMBDAS = 2.0
# ... and the upper group's median at least this many times the lower's.
NOISE_MODE_MIN_RATIO = 1.6


def noise_level_mode(codes: np.ndarray, local: np.ndarray, lambda_: float, min_spikes: int) -> np.ndarray | None:
    """(n,) bool: which of a unit's events form its lower mode at the noise's level, each group at least
    `min_spikes`; None when its codes have no such mode. codes: the events' code amplitudes (noise σ), in time
    order; local: the median of the unit's codes around each (so that a neuron whose spikes shrink or grow
    as the probe drifts has one mode, as for the small events). The two groups are the amplitude split's
    (Otsu's on the logs, trimmed spreads), at a lower bar than its own."""
    relative = np.maximum(codes, 1e-30) / np.maximum(local, 1e-30)
    found = amplitude_groups(relative, min_spikes, min_separation=NOISE_MODE_SEPARATION)
    if found is None:
        return None
    lower = relative <= found[0]
    logs = np.log(relative)
    if (np.median(codes[lower]) > NOISE_MODE_MAX_LAMBDAS * lambda_
            or np.median(logs[~lower]) - np.median(logs[lower]) < np.log(NOISE_MODE_MIN_RATIO)):
        return None
    return lower


def separate_small_events(sorting: Sorting) -> Sorting:
    """`sorting` with each unit's small events (see the module's docstring), and its lower mode at the noise's
    level where its codes have one (with the lasso's λ in the sort's provenance), in a unit of their own."""
    if sorting.n_units == 0 or sorting.n_spikes == 0:
        return sorting
    sizes = np.abs(sorting.amplitudes)
    codes, lambda_ = sorting.code_amplitudes, sorting.provenance.lambda_ if sorting.provenance is not None else None
    units = sorting.spike_units.astype(np.int64).copy()
    parents, notes = [], []
    # Each unit's spikes, in time order.
    for unit, members in enumerate(spikes_of_each_filter(sorting.spike_units, sorting.n_units)):
        if len(members) < 2 * MIN_SPLIT_SPIKES:
            continue
        width = min(SMALL_EVENT_NEIGHBOURS, len(members) // 2 * 2 - 1)  # odd, at most the unit's spikes
        local = median_filter(sizes[members], size=width, mode="nearest")
        small = sizes[members] < SMALL_EVENT_FRACTION * local
        if codes is not None and lambda_ is not None:
            noise = noise_level_mode(codes[members], median_filter(codes[members], size=width, mode="nearest"),
                                     lambda_, max(MIN_SPLIT_SPIKES, int(AMPLITUDE_SPLIT_MIN_FRACTION * len(members))))
            if noise is not None:
                small |= noise
        if small.sum() < MIN_SPLIT_SPIKES:
            continue
        units[members[small]] = sorting.n_units + len(parents)
        parents.append(unit)
        notes.append(f"{unit} ({int(small.sum())} of {len(members)})")
    if not parents:
        return sorting
    return with_new_units(sorting, units, parents, f"small events (under {SMALL_EVENT_FRACTION:g} of their unit's "
                                                   "size, or its codes' lower mode at the noise's level) set apart "
                                                   "from unit " + ", ".join(notes))

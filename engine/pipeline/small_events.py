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
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from engine.pipeline.params import MIN_SPLIT_SPIKES
from engine.pipeline.sorting import Sorting, spikes_of_each_filter
from engine.pipeline.waveform_split import with_new_units

# An event under this fraction of its unit's local median amplitude is a small event.
SMALL_EVENT_FRACTION = 0.4
# The unit's spikes nearest in time whose median is that local size.
SMALL_EVENT_NEIGHBOURS = 201


def separate_small_events(sorting: Sorting) -> Sorting:
    """`sorting` with each unit's small events (see the module's docstring) in a unit of their own."""
    if sorting.n_units == 0 or sorting.n_spikes == 0:
        return sorting
    sizes = np.abs(sorting.amplitudes)
    units = sorting.spike_units.astype(np.int64).copy()
    parents, notes = [], []
    # Each unit's spikes, in time order.
    for unit, members in enumerate(spikes_of_each_filter(sorting.spike_units, sorting.n_units)):
        if len(members) < 2 * MIN_SPLIT_SPIKES:
            continue
        width = min(SMALL_EVENT_NEIGHBOURS, len(members) // 2 * 2 - 1)  # odd, at most the unit's spikes
        local = median_filter(sizes[members], size=width, mode="nearest")
        small = sizes[members] < SMALL_EVENT_FRACTION * local
        if small.sum() < MIN_SPLIT_SPIKES:
            continue
        units[members[small]] = sorting.n_units + len(parents)
        parents.append(unit)
        notes.append(f"{unit} ({int(small.sum())} of {len(members)})")
    if not parents:
        return sorting
    return with_new_units(sorting, units, parents, f"small events (under {SMALL_EVENT_FRACTION:g} of their unit's "
                                                   "size) set apart from unit " + ", ".join(notes))

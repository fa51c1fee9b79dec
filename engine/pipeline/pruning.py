"""Deciding how many neurons there are: merge look-alike filters, drop idle ones.

The number of neurons is not known in advance, so the dictionary starts with
more filters than expected (clusters of threshold-crossing snippets). Two
things then go wrong unless pruned:
- duplicates: two clusters of one neuron give two nearly identical filters
  that split its spikes between them;
- idle filters: clusters of overlapping spikes or noise give filters that
  only explain leftovers of other filters' spikes.
Both are measured, not guessed: similarity is the best normalised
cross-correlation over all time shifts (a filter learned one sample later is
the same neuron), and use is the number of spikes a filter wins when the
whole dictionary codes the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.model.similarity import shift_invariant_similarity
from engine.pipeline.amplitude_split import amplitude_groups
from engine.pipeline.coincidences import group_medians
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import (DISTINCT_AMPLITUDE_RATIO, DUPLICATE_SIMILARITY, MIN_AMPLITUDE_SPIKES,
                                    MIN_USE_FRACTION, SHADOW_FRACTION)
from engine.pipeline.sorting import spikes_of_each_filter


@dataclass
class PruneDecision:
    keep: np.ndarray  # (n_kept,) int indices of the filters kept, in their original order
    merged_into: dict  # dropped duplicate -> the filter kept in its place
    idle: list  # filters dropped for winning too few spikes
    counts: np.ndarray  # (n_filters,) spikes won by each filter
    note: str = ""  # what happened before this decision (earlier pruning, splits)
    shadow_of: dict = field(default_factory=dict)  # dropped shadow -> the filter whose spikes it follows
    joined: str = ""  # filters that coded one neuron together and were made one (co_firing.py)

    def without(self, absorbed: dict[int, int], note: str) -> "PruneDecision":
        """This decision with the filters `absorbed` ({filter: the kept filter it joins}) dropped too."""
        keep = np.array([k for k in self.keep if k not in absorbed], dtype=np.int64)
        return PruneDecision(keep, self.merged_into, self.idle, self.counts, self.note, self.shadow_of,
                             joined=note)

    def describe(self) -> str:
        parts = [f"{self.note}kept {len(self.keep)} of {len(self.counts)} filters"]
        if self.merged_into:
            parts.append("merged " + ", ".join(f"{a}→{b}" for a, b in sorted(self.merged_into.items())))
        if self.shadow_of:
            parts.append("dropped shadows " + ", ".join(f"{a} (of {b})" for a, b in sorted(self.shadow_of.items())))
        if self.idle:
            parts.append("dropped idle " + ", ".join(str(i) for i in self.idle))
        if self.joined:
            parts.append(self.joined)
        return "; ".join(parts)


def find_duplicates(filters: np.ndarray, counts: np.ndarray, threshold: float = DUPLICATE_SIMILARITY,
                    amplitudes: list[np.ndarray] | None = None) -> dict:
    """Map each duplicate filter to the busiest filter it duplicates.

    amplitudes: each filter's spike amplitudes, when known. Two filters alike in shape whose spikes
    fall into two size groups well apart (`distinct_sizes`) are two neurons of one shape (at
    different distances from the probe), not duplicates: the lasso's choice between them is
    refined by amplitude (engine/pipeline/refinement.py).
    """
    similarity = shift_invariant_similarity(filters)
    merged_into: dict[int, int] = {}
    for filter_index in np.argsort(-counts, kind="stable"):
        if filter_index in merged_into:
            continue
        for other in range(len(filters)):
            if other != filter_index and other not in merged_into and similarity[filter_index, other] >= threshold:
                if amplitudes is not None and distinct_sizes(amplitudes[filter_index], amplitudes[other]):
                    continue
                if counts[other] <= counts[filter_index]:
                    merged_into[int(other)] = int(filter_index)
    return merged_into


def distinct_sizes(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two filters' spike amplitudes are two neurons' sizes: medians DISTINCT_AMPLITUDE_RATIO
    or more apart, and together two groups as far apart as the amplitude split asks
    (amplitude_split.amplitude_groups), so that a filter of a neuron's small leftovers, smaller
    but not a group of its own, is still merged. On SpikeInterface's tetrode two units 0.98
    alike (SNR 25.6 and 7.8, sizes 108 and 35) are kept apart by this; with the refinement's
    prior of each filter's main neuron, the smaller one sorts at 0.95."""
    if len(first) < MIN_AMPLITUDE_SPIKES or len(second) < MIN_AMPLITUDE_SPIKES:
        return False
    small, large = sorted((float(np.median(first)), float(np.median(second))))
    if large < DISTINCT_AMPLITUDE_RATIO * max(small, 1e-12):
        return False
    return amplitude_groups(np.concatenate([first, second]), min(len(first), len(second))) is not None


def find_shadows(events: SpikeEvents, n_filters: int, window: int,
                 min_fraction: float = SHADOW_FRACTION) -> dict[int, int]:
    """Map each filter that mostly fires with bigger spikes of one other filter to that filter.

    A shadow's host is never itself a shadow: filters are visited from the
    biggest median amplitude down, and a host must be bigger.
    """
    times = [events.times[events.filters == k] for k in range(n_filters)]
    amplitudes = [events.amplitudes[events.filters == k] for k in range(n_filters)]
    medians = group_medians(events.amplitudes, events.filters, n_filters)
    shadow_of: dict[int, int] = {}
    for k in np.argsort(-medians, kind="stable"):
        if times[k].size == 0:
            continue
        for host in np.argsort(-medians, kind="stable"):
            if host == k or host in shadow_of or times[host].size == 0 or medians[host] <= medians[k]:
                continue
            if _coincident_fraction(times[k], amplitudes[k], times[host], amplitudes[host], window) >= min_fraction:
                shadow_of[int(k)] = int(host)
                break
    return shadow_of


def _coincident_fraction(times, amplitudes, host_times, host_amplitudes, window: int) -> float:
    """Fraction of spikes with a bigger host spike within ±window samples (host_times sorted)."""
    after = np.searchsorted(host_times, times, side="left")
    nearest = np.full(times.size, np.inf)
    bigger = np.zeros(times.size, dtype=bool)
    for candidate in (after - 1, after):
        valid = (candidate >= 0) & (candidate < host_times.size)
        index = np.clip(candidate, 0, max(host_times.size - 1, 0))
        distance = np.where(valid, np.abs(host_times[index] - times), np.inf)
        closer = distance < nearest
        nearest = np.where(closer, distance, nearest)
        bigger = np.where(closer, host_amplitudes[index] > amplitudes, bigger)
    return float(np.mean((nearest <= window) & bigger))


def prune(
    filters: np.ndarray,
    events: SpikeEvents,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    min_use_fraction: float = MIN_USE_FRACTION,
    shadow_window: int = 0,
) -> PruneDecision:
    """Merge duplicates, drop shadows (when `shadow_window` > 0 samples), then drop idle filters."""
    counts = np.bincount(events.filters, minlength=len(filters)).astype(np.int64)
    amplitudes = [events.amplitudes[mine] for mine in spikes_of_each_filter(events.filters, len(filters))]
    merged_into = find_duplicates(filters, counts, duplicate_similarity, amplitudes=amplitudes)
    shadow_of = find_shadows(events, len(filters), shadow_window) if shadow_window > 0 else {}
    shadow_of = {k: host for k, host in shadow_of.items() if k not in merged_into and host not in merged_into}
    survivors = [k for k in range(len(filters)) if k not in merged_into and k not in shadow_of]
    busiest = max((counts[k] for k in survivors), default=0)
    idle = [k for k in survivors if counts[k] < min_use_fraction * busiest or counts[k] == 0]
    keep = np.array([k for k in survivors if k not in idle], dtype=np.int64)
    if keep.size == 0 and len(filters):
        keep = np.array([int(np.argmax(counts))])
        idle = [k for k in idle if k != keep[0]]
    return PruneDecision(keep, merged_into, idle, counts, shadow_of=shadow_of)

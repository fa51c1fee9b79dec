"""Which of two units' spikes came when: does the drift decide it?

Motion correction reads each channel where the drift moved it, interpolated from the contacts around
(engine/pipeline/motion.py), but contacts sample the probe every 20 µm or so and a neuron close to the
probe is sharper than that: where the drift leaves it between two rows, no contact holds its peak and
the corrected recording shows it smaller. Measured on SpikeInterface's drifting generator (48 channels
in two columns 20 µm apart, ±20 µm zig-zag, recording seed 1): two neurons' main-channel peaks,
corrected, were 282 and 186 µV where the drift left them on a row (as static: 286, 186) and 187 and
138 µV half a row away; a neuron further off, 157 against 146 µV. A sort that learns one shape per
size makes two units of such a neuron, each holding its spikes at one set of drift positions (there:
823 and 622 spikes, 578 and 572, each unit's share 0.19-0.92 over 10-s stretches as the zig-zag moved
it; the sort 0.888 against 0.930 static). Their spikes seldom come within a few seconds of each
other, so the refractory test has nothing to count (0.2 pairs due by chance) and the waveform test
sees two sizes (0.95-0.96 alike, 1.25-1.41 apart in size).

Two different neurons' spikes do not care where the probe is; one neuron's two parts do, and only
between them: the neuron fires at its rate wherever the drift leaves it, and at each displacement the
two parts share its spikes in their own proportion. So a pair is asked two things of its spikes, binned
by the displacement (at the pair's depth) they came at: does "which unit" depend on the displacement
(chi-square test of independence, Cramér's V its strength), and is the two units' summed rate at each
displacement (spikes over the time the probe spent there) much flatter than either unit's own? The
second keeps apart a neuron and a part of another, split one (same recording: V 0.38-0.39 for those
pairs, 0.81 between the split parts), whose summed rate varies as the part's does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency

from engine.pipeline.params import (
    DRIFT_MERGE_MAX_FLATNESS, DRIFT_MERGE_MAX_P, DRIFT_MERGE_MIN_V, DRIFT_PHASE_BINS, DRIFT_PHASE_MIN_SPAN_UM,
)


@dataclass(frozen=True)
class DriftEvidence:
    """What the drift says of two units (see the module's docstring)."""

    v: float  # Cramér's V of "which unit" against the displacement bin (0: independent)
    p_value: float  # chi-square test of that independence
    flatness: float  # variation of the summed rate over displacement bins / the smaller unit's own (inf: none)

    @property
    def one_neuron(self) -> bool:
        return (self.v >= DRIFT_MERGE_MIN_V and self.p_value <= DRIFT_MERGE_MAX_P
                and self.flatness <= DRIFT_MERGE_MAX_FLATNESS)


NO_EVIDENCE = DriftEvidence(0.0, 1.0, np.inf)


def displacements_at(motion, times_s: np.ndarray, depth_um: float) -> np.ndarray:
    """The estimated displacement (µm) at `times_s` at one depth of the probe (SpikeInterface's Motion)."""
    times_s = np.asarray(times_s, dtype=np.float64)
    return np.asarray(motion.get_displacement_at_time_and_depth(times_s, np.full(len(times_s), float(depth_um)),
                                                                segment_index=0), dtype=np.float64)


def drift_evidence(motion, times_a_s: np.ndarray, times_b_s: np.ndarray, depth_um: float) -> DriftEvidence:
    """The drift's evidence that units a and b (spike times in seconds) are one neuron split by where the
    probe was, at depth `depth_um` (the pair's main channels')."""
    displacement_a = displacements_at(motion, times_a_s, depth_um)
    displacement_b = displacements_at(motion, times_b_s, depth_um)
    # The time the probe spent at each displacement: the motion's own time bins, each its duration.
    bins_s = np.asarray(motion.temporal_bins_s[0], dtype=np.float64)
    edges_s = np.asarray(motion.temporal_bin_edges_s[0], dtype=np.float64)
    return evidence_from(displacement_a, displacement_b, displacements_at(motion, bins_s, depth_um), np.diff(edges_s))


def evidence_from(displacement_a: np.ndarray, displacement_b: np.ndarray, displacement_over_time: np.ndarray,
                  durations_s: np.ndarray) -> DriftEvidence:
    """DriftEvidence from each unit's spikes' displacements and the displacement over time (one value per
    stretch of `durations_s`). No evidence where the displacement spanned less than DRIFT_PHASE_MIN_SPAN_UM
    (5th to 95th percentile of the spikes': nothing drifted to decide anything) or either unit is empty."""
    displacement_a, displacement_b = np.asarray(displacement_a, float), np.asarray(displacement_b, float)
    if len(displacement_a) == 0 or len(displacement_b) == 0:
        return NO_EVIDENCE
    both = np.concatenate([displacement_a, displacement_b])
    low, high = np.percentile(both, [5, 95])
    if high - low < DRIFT_PHASE_MIN_SPAN_UM:
        return NO_EVIDENCE
    edges = np.unique(np.quantile(both, np.linspace(0, 1, DRIFT_PHASE_BINS + 1)[1:-1]))

    def per_bin(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), weights=weights, minlength=len(edges) + 1)

    counts = np.stack([per_bin(displacement_a), per_bin(displacement_b)])
    occupancy = per_bin(np.asarray(displacement_over_time, float), np.asarray(durations_s, float))
    kept = (counts.sum(axis=0) > 0) & (occupancy > 0)
    counts, occupancy = counts[:, kept], occupancy[kept]
    if counts.shape[1] < 2:
        return NO_EVIDENCE
    chi2, p_value, _, _ = chi2_contingency(counts, correction=False)
    rates = counts / occupancy
    variation = [_relative_spread(r) for r in (rates[0], rates[1], rates.sum(axis=0))]
    smaller = min(variation[0], variation[1])
    flatness = variation[2] / smaller if smaller > 0 else np.inf
    return DriftEvidence(float(np.sqrt(chi2 / counts.sum())), float(p_value), float(flatness))


def _relative_spread(rate: np.ndarray) -> float:
    mean = float(rate.mean())
    return float(rate.std() / mean) if mean > 0 else 0.0

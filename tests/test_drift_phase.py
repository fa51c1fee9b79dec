"""One neuron that the drift split by size is told from two neurons by where the probe was at each spike."""

import numpy as np
import pytest

from engine.pipeline.drift_phase import NO_EVIDENCE, drift_evidence, evidence_from
from engine.pipeline.unit_merge import Windows, find_merges

RATE = 30_000.0
DURATION_S = 180.0
PITCH_UM = 20.0


class ZigZag:
    """What drift_phase reads of SpikeInterface's Motion: a ±20 µm zig-zag of period 80 s, in 1-s bins,
    the same at every depth."""

    def __init__(self, amplitude_um: float = 20.0) -> None:
        self.temporal_bin_edges_s = [np.arange(0.0, DURATION_S + 1.0, 1.0)]
        self.temporal_bins_s = [self.temporal_bin_edges_s[0][:-1] + 0.5]
        self.amplitude_um = amplitude_um

    def get_displacement_at_time_and_depth(self, times_s, depths_um, segment_index=0):
        phase = (np.asarray(times_s) / 80.0) % 1.0
        return self.amplitude_um * (4 * np.abs(phase - 0.5) - 1)


def poisson_seconds(rng, rate_hz):
    times = np.cumsum(rng.exponential(1.0 / rate_hz, size=int(2 * rate_hz * DURATION_S)) + 0.002)
    return times[times < DURATION_S]


def split_by_phase(rng, times_s, motion, mistaken=0.1):
    """One neuron's spikes in two units by where the drift left it between rows (within a quarter row of
    one: the bigger unit), a tenth of them the other way."""
    displacement = motion.get_displacement_at_time_and_depth(times_s, np.zeros(len(times_s)))
    off_row = np.abs((displacement + PITCH_UM / 2) % PITCH_UM - PITCH_UM / 2)
    bigger = (off_row < PITCH_UM / 4) ^ (rng.random(len(times_s)) < mistaken)
    return times_s[bigger], times_s[~bigger]


def test_a_neuron_split_by_where_the_drift_left_it_is_one_neuron_and_two_neurons_are_not():
    rng = np.random.default_rng(0)
    motion = ZigZag()
    big, small = split_by_phase(rng, poisson_seconds(rng, 8.0), motion)
    evidence = drift_evidence(motion, big, small, depth_um=100.0)
    assert evidence.v > 0.5 and evidence.p_value < 1e-20 and evidence.flatness < 0.3
    assert evidence.one_neuron
    # Two neurons: which one fired does not depend on where the probe was.
    other = poisson_seconds(rng, 6.0)
    evidence = drift_evidence(motion, poisson_seconds(rng, 8.0), other, depth_um=100.0)
    assert evidence.v < 0.15 and not evidence.one_neuron
    # A neuron against a part of another, split one: the part's share depends on the drift, but the two
    # together fire as unevenly as the part does.
    evidence = drift_evidence(motion, other, big, depth_um=100.0)
    assert evidence.p_value < 1e-6 and evidence.flatness > 1.0
    assert not evidence.one_neuron


def test_without_drift_there_is_no_evidence():
    rng = np.random.default_rng(1)
    motion = ZigZag(amplitude_um=0.5)
    big, small = poisson_seconds(rng, 8.0), poisson_seconds(rng, 8.0)
    assert drift_evidence(motion, big, small, depth_um=0.0) == NO_EVIDENCE
    assert evidence_from(np.array([]), np.array([1.0, 2.0]), np.zeros(3), np.ones(3)) == NO_EVIDENCE


def test_spikeinterfaces_motion_is_read_as_the_stand_in_is():
    motion_module = pytest.importorskip("spikeinterface.core.motion")
    stand_in = ZigZag()
    bins = stand_in.temporal_bins_s[0]
    displacement = stand_in.get_displacement_at_time_and_depth(bins, np.zeros(len(bins)))
    # Rigid: one spatial bin, every depth the same.
    motion = motion_module.Motion([displacement[:, None]], [bins], np.array([100.0]), direction="y")
    rng = np.random.default_rng(2)
    big, small = split_by_phase(rng, poisson_seconds(rng, 8.0), stand_in)
    real, stood_in = drift_evidence(motion, big, small, 100.0), drift_evidence(stand_in, big, small, 100.0)
    assert real.one_neuron and stood_in.one_neuron
    assert abs(real.v - stood_in.v) < 0.05 and abs(real.flatness - stood_in.flatness) < 0.1


def test_a_merge_asks_the_drift_only_for_pairs_the_refractory_test_cannot_judge():
    """The halves of a phase-split neuron hardly ever fire close together (no pairs due by chance in the
    window) and differ in size: merged only when the drift says they are one neuron, and never when they
    fire inside each other's refractory period."""
    rng = np.random.default_rng(3)
    motion = ZigZag()
    big, small = split_by_phase(rng, poisson_seconds(rng, 8.0), motion, mistaken=0.0)
    trains = [np.round(t * RATE).astype(np.int64) for t in (big, small)]
    windows = Windows.at(RATE, 15)
    shape = np.sin(np.linspace(0, 2 * np.pi, 40))[:, None] * np.array([[1.0, 0.5]])
    aside = np.cos(np.linspace(0, 3 * np.pi, 40))[:, None] * np.array([[0.0, 1.0]])
    # The smaller unit: 0.8 of the bigger plus a little of another shape (0.95 alike, 1.28 in size: two
    # neurons by the refractory route's bars, MERGE_SIMILARITY and MAX_SIZE_RATIO).
    means = {0: (shape, np.zeros_like(shape)), 1: (0.8 * shape + 0.3 * aside, np.zeros_like(shape))}
    channels = lambda unit: np.array([0, 1])  # noqa: E731
    snippet = lambda unit, chans: (means[unit][0][:, chans], means[unit][1][:, chans])  # noqa: E731
    assert find_merges(trains, [(0, 1)], snippet, channels, windows, max_shift=1).groups == []
    drift_says = lambda a, b: drift_evidence(motion, trains[a] / RATE, trains[b] / RATE, 0.0).one_neuron  # noqa: E731
    merges = find_merges(trains, [(0, 1)], snippet, channels, windows, max_shift=1, drift_split=drift_says)
    assert merges.groups == [[0, 1]] and merges.by_drift == [(0, 1)]
    assert "0+1 by the drift" in merges.describe()
    # The same pair firing within each other's refractory period now and then: two neurons after all.
    crowded = [trains[0], np.sort(np.concatenate([trains[1], trains[0][::20] + 30]))]
    assert find_merges(crowded, [(0, 1)], snippet, channels, windows, max_shift=1,
                       drift_split=lambda a, b: True).groups == []

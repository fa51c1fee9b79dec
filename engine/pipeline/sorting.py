"""The result of a sort: which unit fired when, and with what shape.

A `Sorting` is a plain container shared by inference, phy export, scoring,
curation and the app. Spike times follow the field's convention: the sample
of the waveform's extremum on the unit's main channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from engine.io.geometry import linear_positions


@dataclass(frozen=True)
class SortProvenance:
    """How a Sparsort sort came about: what `sparsort.json` and the CLI report."""

    lambda_: float  # the lasso's threshold, in noise σ
    noise_levels_uv: np.ndarray  # (n_channels,) float32 noise σ per channel the codes were scaled by
    initial_pruning: str  # what pruning before training decided, in words
    final_pruning: str  # ... and after training
    amplitude_splits: str  # which filters were split into two units by amplitude, in words
    unit_merges: str = "no units merged"  # which units were found to be one neuron and merged, in words
    residual_units: str = "no residual units"  # which units only code neighbours' leftovers (labelled noise)
    spike_reassignment: str = "no spikes moved"  # spikes moved to a look-alike unit that explains them better
    # spikes moved between look-alike units by their recorded waveforms (look_alike_units.py)
    look_alike_units: str = "no look-alike units"
    locked_events: str = "no events dropped"  # copies of another unit's spikes at a fixed lag, dropped
    hollow_events: str = "no events dropped"  # events holding none of their unit's waveform, dropped
    # units found to be one neuron once their events were cleaned, merged at the sort's end (unit_merge.py)
    cleaned_unit_merges: str = "no units merged after cleaning"
    # small neurons' spikes read short beside bigger ones, dropped as residue, given back (overlapped_spikes.py)
    overlapped_spikes: str = "no spikes restored"


@dataclass
class Sorting:
    spike_times: np.ndarray  # (n_spikes,) int64 sample index, sorted ascending
    spike_units: np.ndarray  # (n_spikes,) int32 unit id (index into `templates`)
    amplitudes: np.ndarray  # (n_spikes,) float32 spike amplitude (code value x filter peak), in `amplitude_unit`
    templates: np.ndarray  # (n_units, n_taps, n_channels) float32 unit shapes in µV
    sampling_rate: float  # Hz
    # (n_units,) int: tap of each template's extremum on its main channel, so a
    # spike at time t covers samples [t - template_peak_taps[u], ... + n_taps).
    template_peak_taps: np.ndarray | None = None
    channel_positions: np.ndarray | None = None  # (n_channels, 2) µm
    # Optional per-spike features for the cluster views: (n_spikes, n_features) float32.
    features: np.ndarray | None = None
    # ---- a Sparsort sort: units and the filters they came from
    filter_index: np.ndarray | None = None  # (n_units,) int filter of each unit (two units may share one)
    code_amplitudes: np.ndarray | None = None  # (n_spikes,) float32 code value of each spike, noise σ
    provenance: SortProvenance | None = None
    # ---- a sort read from a phy folder (engine/io/phy.py)
    cluster_ids: np.ndarray | None = None  # (n_units,) int phy cluster id of each unit
    unit_groups: dict[int, str] = field(default_factory=dict)  # unit index -> phy group (good, mua, noise, ...)
    # unit index -> the sort's own label (residual units: noise), never a person's; None: not a Sparsort sort's.
    # A fresh sort's unit_groups start as these; export_phy keeps them in cluster_SparsortLabel.tsv.
    sort_labels: dict[int, str] | None = None
    templates_source: str | None = None  # "templates.npy", "raw data" or "none"
    phy_folder: str | None = None  # the folder it was read from
    # What `amplitudes` are in: "µV" for our sorts; Kilosort's amplitudes.npy holds a unitless "template scaling".
    amplitude_unit: str = "µV"

    def __post_init__(self) -> None:
        self.spike_times = np.asarray(self.spike_times, dtype=np.int64)
        self.spike_units = np.asarray(self.spike_units, dtype=np.int32)
        self.amplitudes = np.asarray(self.amplitudes, dtype=np.float32)
        self.templates = np.asarray(self.templates, dtype=np.float32)
        n = len(self.spike_times)
        if len(self.spike_units) != n or len(self.amplitudes) != n:
            raise ValueError(
                f"spike_times ({n}), spike_units ({len(self.spike_units)}) and "
                f"amplitudes ({len(self.amplitudes)}) must have the same length"
            )
        if n and np.any(np.diff(self.spike_times) < 0):
            order = np.argsort(self.spike_times, kind="stable")
            self.spike_times = self.spike_times[order]
            self.spike_units = self.spike_units[order]
            self.amplitudes = self.amplitudes[order]
            if self.features is not None:
                self.features = self.features[order]
            if self.code_amplitudes is not None:
                self.code_amplitudes = self.code_amplitudes[order]
        if self.template_peak_taps is None:
            self.template_peak_taps = peak_taps(self.templates)
        if self.channel_positions is None:
            self.channel_positions = linear_positions(self.n_channels)

    @property
    def n_spikes(self) -> int:
        return len(self.spike_times)

    @property
    def n_units(self) -> int:
        return self.templates.shape[0]

    @property
    def n_channels(self) -> int:
        return self.templates.shape[2]

    @property
    def unit_ids(self) -> np.ndarray:
        return np.arange(self.n_units, dtype=np.int32)

    def with_spikes(self, keep: np.ndarray) -> "Sorting":
        """This sorting with only the spikes `keep` (bool mask or indices, in time order) selects; the units
        and everything else as they are."""
        return replace(
            self,
            spike_times=self.spike_times[keep],
            spike_units=self.spike_units[keep],
            amplitudes=self.amplitudes[keep],
            features=None if self.features is None else self.features[keep],
            code_amplitudes=None if self.code_amplitudes is None else self.code_amplitudes[keep],
        )

    def spike_counts(self) -> np.ndarray:
        """(n_units,) int64 number of spikes per unit."""
        return np.bincount(self.spike_units, minlength=self.n_units).astype(np.int64)

    def main_channels(self) -> np.ndarray:
        """(n_units,) int channel with the largest peak-to-peak per template."""
        if self.n_units == 0:
            return np.zeros(0, dtype=np.int64)
        return np.ptp(self.templates, axis=1).argmax(axis=1)


def peak_taps(templates: np.ndarray) -> np.ndarray:
    """Tap of the absolute extremum on each template's main channel."""
    if templates.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    main = np.ptp(templates, axis=1).argmax(axis=1)
    on_main = templates[np.arange(templates.shape[0]), :, main]  # (n_units, n_taps)
    return np.abs(on_main).argmax(axis=1).astype(np.int64)


def template_mix(weights: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(n_taps, n_channels) float32 Σ_k weights[k] · templates[k], for templates (k, n_taps, n_channels).

    One matrix product: np.tensordot of a single 384-channel template took 7 ms
    (a slow path for a length-1 sum), 3.5 s for the 500 units of a probe sort.
    """
    k = len(templates)
    flat = np.asarray(templates, dtype=np.float32).reshape(k, -1)
    return (np.asarray(weights, dtype=np.float32) @ flat).reshape(templates.shape[1:])


def spikes_of_each_filter(filters: np.ndarray, n_filters: int) -> list[np.ndarray]:
    """For each filter 0..n_filters-1, the indices of its spikes in time order: one sort of all the
    spikes, not one pass over them per filter (a 2-hour probe sort holds tens of millions). Given the
    spikes' units instead, each unit's (the waveform split, the small events and the unit merge use it so)."""
    order = np.argsort(filters, kind="stable")
    counts = np.bincount(filters, minlength=n_filters)[:n_filters]
    return np.split(order, np.cumsum(counts)[:-1])

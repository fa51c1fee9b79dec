"""Unit quality metrics and correlograms, for the unit table and the curation views.

Spike times are sample indices; rates are in Hz, durations in seconds,
amplitudes and templates in µV. Every metric follows SpikeInterface's
definition of the same name (spikeinterface.metrics.quality), so numbers
read the same in both tools; tests/test_metrics_spikeinterface.py checks
each against SpikeInterface on one sorting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from engine.curation.grouping import group_by_unit
from engine.pipeline.sorting import Sorting, template_mix

if TYPE_CHECKING:
    from engine.curation.model import ChangeRecord, Curation


@dataclass(frozen=True)
class MetricSettings:
    refractory_ms: float = 1.5  # ISIs shorter than this violate the refractory period
    censored_ms: float = 0.0  # ISIs the detector cannot produce (dead time after a spike)
    presence_bin_s: float = 60.0
    min_presence_bins: int = 20  # short recordings use this many bins instead
    # Llobet et al.'s refractory-period contamination counts every pair of
    # spikes closer than this (SpikeInterface's rp_violation defaults).
    rp_refractory_ms: float = 1.0
    rp_censored_ms: float = 0.0
    # Amplitude cutoff (Hill et al.): histogram bins, Gaussian smoothing in
    # bins, and the fewest spikes per bin below which it is not estimated.
    cutoff_bins: int = 100
    cutoff_smoothing_bins: float = 3.0
    cutoff_min_spikes_per_bin: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.censored_ms < self.refractory_ms:
            raise ValueError("need 0 <= censored_ms < refractory_ms")
        if not 0 <= self.rp_censored_ms < self.rp_refractory_ms:
            raise ValueError("need 0 <= rp_censored_ms < rp_refractory_ms")
        if self.presence_bin_s <= 0 or self.min_presence_bins < 1:
            raise ValueError("presence bins must be positive")
        if self.cutoff_bins < 2:
            raise ValueError("the amplitude cutoff needs at least 2 histogram bins")


@dataclass(frozen=True)
class UnitMetrics:
    n_spikes: int
    firing_rate: float  # Hz over the whole recording
    snr: float  # template peak on its main channel / that channel's noise σ; nan if unknown
    isi_violation_ratio: float  # observed / Poisson-expected refractory violations; nan if no spikes
    isi_violation_count: int  # ISIs shorter than the refractory period
    presence_ratio: float  # fraction of time bins holding at least one spike
    amplitude_median: float  # µV; nan without amplitudes
    rp_violations: int = 0  # pairs of spikes closer than rp_refractory_ms (Llobet et al. 2022)
    rp_contamination: float = np.nan  # estimated fraction of contaminating spikes, from rp_violations
    amplitude_cutoff: float = np.nan  # estimated fraction of spikes lost below the detection threshold
    l_ratio: float = np.nan  # isolation in feature space (Schmitzer-Torbert et al. 2005); nan if not computed


def unit_metrics(
    spike_times: np.ndarray,
    sampling_rate: float,
    duration_s: float,
    amplitudes: np.ndarray | None = None,
    template: np.ndarray | None = None,
    noise_levels: np.ndarray | None = None,
    settings: MetricSettings = MetricSettings(),
) -> UnitMetrics:
    """Metrics of one unit from its spikes' times (samples) and amplitudes.

    `template`: (n_taps, n_channels) µV; `noise_levels`: (n_channels,) σ in µV.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    times = np.sort(np.asarray(spike_times, dtype=np.int64))  # (n,) samples
    n_spikes = len(times)
    violation_count, violation_ratio = _isi_violations(times, sampling_rate, duration_s, settings)
    has_amplitudes = amplitudes is not None and n_spikes > 0
    amplitude_median = float(np.median(amplitudes)) if has_amplitudes else np.nan
    rp_count, rp_contamination = _rp_violations(times, sampling_rate, duration_s, settings)
    return UnitMetrics(
        n_spikes=n_spikes,
        firing_rate=n_spikes / duration_s,
        snr=_snr(template, noise_levels),
        isi_violation_ratio=violation_ratio,
        isi_violation_count=violation_count,
        presence_ratio=_presence_ratio(times, sampling_rate, duration_s, settings),
        amplitude_median=amplitude_median,
        rp_violations=rp_count,
        rp_contamination=rp_contamination,
        amplitude_cutoff=amplitude_cutoff(amplitudes, settings) if has_amplitudes else np.nan,
    )


def compute_unit_metrics(
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    unit_ids: np.ndarray,
    sampling_rate: float,
    duration_s: float,
    amplitudes: np.ndarray | None = None,
    templates: Mapping[int, np.ndarray] | np.ndarray | None = None,
    noise_levels: np.ndarray | None = None,
    settings: MetricSettings = MetricSettings(),
) -> dict[int, UnitMetrics]:
    """Metrics of each unit in `unit_ids`.

    `spike_times`, `spike_clusters`, `amplitudes`: (n_spikes,). `templates`:
    unit -> (n_taps, n_channels), or an (n_units, n_taps, n_channels) array
    indexed by unit id; a unit without a template gets snr = nan.
    """
    spike_clusters = np.asarray(spike_clusters)
    # One sort groups every unit's spikes, instead of one full scan per unit (a searchsorted per
    # unit, its ids of another dtype than the spikes', copied all 2 M spikes each time: 1.1 s).
    order, present, bounds = group_by_unit(spike_clusters)  # (n_spikes,) spike indices grouped by unit
    where = dict(zip(present.tolist(), zip(bounds[:-1].tolist(), bounds[1:].tolist())))
    result = {}
    for unit in map(int, unit_ids):
        start, stop = where.get(unit, (0, 0))
        spikes = order[start:stop]
        result[unit] = unit_metrics(
            spike_times[spikes],
            sampling_rate,
            duration_s,
            amplitudes=None if amplitudes is None else amplitudes[spikes],
            template=_template_of(templates, unit),
            noise_levels=noise_levels,
            settings=settings,
        )
    return result


def metrics_to_phy_columns(
    metrics: Mapping[int, UnitMetrics], peak_to_peak_uv: Mapping[int, float]
) -> dict[str, dict[int, float]]:
    """Columns for cluster_info.tsv (`Curation.save_phy(extra_columns=...)`).

    `peak_to_peak_uv`: unit -> µV peak-to-peak of its template on its main channel, the
    amplitude the app's Units table shows. It is written as `ptp_uv`, a name that says
    which amplitude it is: phy's own `amp` means something else, and the median of a
    folder's spike amplitudes is a template scaling, not µV, in Kilosort's folders
    (and negative in some SpikeInterface exports).
    """
    return {
        "fr": {u: m.firing_rate for u, m in metrics.items()},
        "ptp_uv": {u: float(peak_to_peak_uv[u]) for u in metrics if u in peak_to_peak_uv},
        "snr": {u: m.snr for u, m in metrics.items()},
        "isi_viol": {u: m.isi_violation_ratio for u, m in metrics.items()},
        "presence_ratio": {u: m.presence_ratio for u, m in metrics.items()},
        "rp_contamination": {u: m.rp_contamination for u, m in metrics.items()},
        "amplitude_cutoff": {u: m.amplitude_cutoff for u, m in metrics.items()},
        "l_ratio": {u: m.l_ratio for u, m in metrics.items()},
    }


class MetricsCache:
    """Metrics of every current unit of a curation, kept current from change records.

    Unit ids are never reused, so the metrics of an id never change: an update
    computes only the units a record adds, and keeps those of deleted units
    aside, so an undo brings them back without computing anything.

        cache = MetricsCache(curation, sorting, duration_s, noise_levels)
        curation.on_change(cache.update)

    `sorting` must be the one the curation started from (same spike order).
    `feature_sample`: (spike indices (m,), their features (m, d)) to measure
    each unit's L-ratio on; without it l_ratio stays nan. A unit's L-ratio
    depends only on which sampled spikes are its own, so it too never changes.

    `compute=False` makes the cache at once, its units' metrics `pending`: they are
    computed elsewhere (`unit_metrics_of` in a worker, as a curation opens) and
    handed over with `fill`; meanwhile `metrics` gives a pending unit its spike
    count and firing rate, nan for the rest.
    """

    def __init__(
        self,
        curation: Curation,
        sorting: Sorting,
        duration_s: float,
        noise_levels: np.ndarray | None = None,
        settings: MetricSettings = MetricSettings(),
        feature_sample: tuple[np.ndarray, np.ndarray] | None = None,
        compute: bool = True,
    ) -> None:
        if curation.n_spikes != sorting.n_spikes:
            raise ValueError(f"curation has {curation.n_spikes} spikes, sorting {sorting.n_spikes}")
        self._curation = curation
        self._sorting = sorting
        self._duration_s = duration_s
        self._noise_levels = noise_levels
        self._settings = settings
        self._feature_sample = feature_sample
        self._computed: dict[int, UnitMetrics] = {}  # without their L-ratio
        self._l_ratios: dict[int, float] = {}  # unit -> L-ratio on the feature sample
        self._current: set[int] = set(map(int, curation.unit_ids))
        if compute:
            for unit in self._current:
                self._add(unit)

    @property
    def pending(self) -> list[int]:
        """Current units whose metrics are not computed yet, ascending."""
        return sorted(unit for unit in self._current if unit not in self._computed)

    def fill(self, computed: Mapping[int, UnitMetrics]) -> None:
        """Metrics of this curation's units computed elsewhere (`unit_metrics_of`); an id's never change."""
        for unit, metrics in computed.items():
            self._computed.setdefault(int(unit), replace(metrics, l_ratio=np.nan))

    def unit_metrics_of(self, units) -> Callable[..., dict[int, UnitMetrics]]:
        """A function computing the metrics of `units` (current ones) that a worker can call while the
        curation moves on: it holds their spikes, which an id keeps for good. Called with
        `should_stop`, it checks it between units and returns those done when it turns true."""
        spikes = {int(unit): self._curation.spikes_of(int(unit)) for unit in units}
        sorting, duration_s, noise_levels, settings = self._sorting, self._duration_s, self._noise_levels, self._settings

        def measure(should_stop: Callable[[], bool] | None = None) -> dict[int, UnitMetrics]:
            done = {}
            for unit, unit_spikes in spikes.items():
                if should_stop is not None and should_stop():
                    break
                done[unit] = _metrics_of_spikes(sorting, unit_spikes, duration_s, noise_levels, settings)
            return done

        return measure

    def set_feature_sample(
        self, feature_sample: tuple[np.ndarray, np.ndarray], known_l_ratios: dict[int, float] | None = None
    ) -> None:
        """Features read after the cache was made (in the background, so that a curation opens at once):
        the L-ratio of every current unit. Units kept aside for an undo are forgotten and computed
        again if they come back: their spikes now carry other units' labels.

        `known_l_ratios`: unit -> L-ratio already measured on these features (in a worker); a
        unit's L-ratio depends only on its own spikes, so only the units missing from it are measured here.
        """
        self._feature_sample = feature_sample
        sample_spikes, features = feature_sample
        current = sorted(self._current)
        known = known_l_ratios or {}
        missing = [unit for unit in current if unit not in known]
        ratios = dict(known)
        if missing:
            ratios.update(l_ratios(features, self._curation.spike_clusters[sample_spikes], missing))
        self._computed = {unit: metrics for unit, metrics in self._computed.items() if unit in self._current}
        self._l_ratios = {unit: ratios[unit] for unit in current}

    @property
    def metrics(self) -> dict[int, UnitMetrics]:
        """Current unit -> metrics, ascending unit ids (a pending unit's: see the class)."""
        result = {}
        for unit in sorted(self._current):
            metrics = self._computed.get(unit)
            if metrics is None:
                metrics = self._placeholder(unit)
            ratio = self._l_ratios.get(unit)
            result[unit] = metrics if ratio is None else replace(metrics, l_ratio=ratio)
        return result

    def update(self, record: ChangeRecord) -> None:
        self._current.difference_update(record.deleted)
        for unit in record.added:
            if unit not in self._computed:
                self._add(unit)
            self._current.add(unit)

    def _add(self, unit: int) -> None:
        spikes = self._curation.spikes_of(unit)
        self._computed[unit] = _metrics_of_spikes(
            self._sorting, spikes, self._duration_s, self._noise_levels, self._settings
        )
        if self._feature_sample is not None and unit not in self._l_ratios:
            sample_spikes, features = self._feature_sample
            labels = self._curation.spike_clusters[sample_spikes]
            self._l_ratios[unit] = l_ratios(features, labels, [unit])[unit]

    def _placeholder(self, unit: int) -> UnitMetrics:
        n_spikes = len(self._curation.spikes_of(unit))
        return UnitMetrics(
            n_spikes=n_spikes, firing_rate=n_spikes / self._duration_s, snr=np.nan, isi_violation_ratio=np.nan,
            isi_violation_count=0, presence_ratio=np.nan, amplitude_median=np.nan,
        )


def _metrics_of_spikes(
    sorting: Sorting, spikes: np.ndarray, duration_s: float, noise_levels: np.ndarray | None, settings: MetricSettings
) -> UnitMetrics:
    """unit_metrics of the unit made of `spikes` (indices into `sorting`)."""
    return unit_metrics(
        sorting.spike_times[spikes],
        sorting.sampling_rate,
        duration_s,
        amplitudes=sorting.amplitudes[spikes],
        template=_mean_template(sorting.spike_units[spikes], sorting.templates),
        noise_levels=noise_levels,
        settings=settings,
    )


def correlograms(
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    unit_ids: np.ndarray,
    sampling_rate: float,
    bin_ms: float = 1.0,
    window_ms: float = 50.0,
) -> np.ndarray:
    """(n_units, n_units, n_bins) int64 auto- and cross-correlograms.

    `ccg[i, j, b]` counts ordered pairs of distinct spikes (one of
    unit_ids[i] at t, one of unit_ids[j] at t') whose lag t' - t falls in bin
    b. Bins are `bin_ms` wide and centred on whole multiples of it, from
    -window_ms/2 to +window_ms/2, so the middle bin is lag 0, n_bins is odd,
    and `ccg[j, i]` is `ccg[i, j]` reversed.
    """
    spike_times = np.asarray(spike_times)
    unit_ids = np.asarray(unit_ids, dtype=np.int64)
    n_units = len(unit_ids)
    half_bins = int(round(window_ms / 2 / bin_ms))
    n_bins = 2 * half_bins + 1
    bin_samples = bin_ms * sampling_rate / 1000.0
    counts = np.zeros(n_units * n_units * n_bins, dtype=np.int64)  # flat (n_units, n_units, n_bins)

    rows = _row_of_each_spike(np.asarray(spike_clusters), unit_ids)  # (n_spikes,) -1 = not asked for
    chosen = np.flatnonzero(rows >= 0)
    order = np.argsort(spike_times[chosen], kind="stable")
    times = spike_times[chosen][order].astype(np.int64)  # (n_chosen,) samples, ascending
    rows = rows[chosen][order]

    # Pair each spike with the one `shift` places later, for shift = 1, 2, ...
    # Times are sorted, so once a pair is outside the window every later
    # partner of that first spike is too: the work is the number of pairs in
    # the window, not n².
    first = np.arange(len(times) - 1)  # first spikes whose pairs may still be in the window
    shift = 1
    while first.size:
        first = first[first + shift < len(times)]
        lags = times[first + shift] - times[first]  # (n_pairs,) samples, >= 0
        lag_bins = np.floor((lags + bin_samples / 2) / bin_samples).astype(np.int64)  # 0..
        inside = lag_bins <= half_bins
        first, lag_bins = first[inside], lag_bins[inside]
        row_a, row_b = rows[first], rows[first + shift]
        # Each pair counts once as (a, b) at +lag and once as (b, a) at -lag.
        forward = (row_a * n_units + row_b) * n_bins + half_bins + lag_bins
        backward = (row_b * n_units + row_a) * n_bins + half_bins - lag_bins
        counts += np.bincount(forward, minlength=counts.size)
        counts += np.bincount(backward, minlength=counts.size)
        shift += 1
    return counts.reshape(n_units, n_units, n_bins)


def isi_histogram(
    spike_times: np.ndarray, sampling_rate: float, bin_ms: float = 0.5, max_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of inter-spike intervals below `max_ms`.

    Returns counts (n_bins,) int64 and bin edges (n_bins + 1,) in ms; bins
    are half-open, [edge_k, edge_k+1).
    """
    n_bins = int(round(max_ms / bin_ms))
    isis = np.diff(np.sort(np.asarray(spike_times, dtype=np.int64)))  # (n - 1,) samples
    bin_index = np.floor(isis / (bin_ms * sampling_rate / 1000.0)).astype(np.int64)
    counts = np.bincount(bin_index[bin_index < n_bins], minlength=n_bins).astype(np.int64)
    return counts, np.arange(n_bins + 1) * bin_ms


def _isi_violations(
    times: np.ndarray, sampling_rate: float, duration_s: float, settings: MetricSettings
) -> tuple[int, float]:
    """Count of refractory violations, and their ratio to a Poisson unit's (Hill et al. 2011).

    A Poisson unit firing n spikes in T seconds has about 2 n² (t_r - t_c) / T
    ISIs in [t_c, t_r); the ratio is the count observed over that, as in
    SpikeInterface's isi_violations_ratio.
    """
    n_spikes = len(times)
    if n_spikes == 0:
        return 0, np.nan
    refractory_samples = settings.refractory_ms * sampling_rate / 1000.0
    count = int(np.count_nonzero(np.diff(times) < refractory_samples))
    window_s = (settings.refractory_ms - settings.censored_ms) / 1000.0
    return count, count * duration_s / (2.0 * n_spikes**2 * window_s)


def _rp_violations(
    times: np.ndarray, sampling_rate: float, duration_s: float, settings: MetricSettings
) -> tuple[int, float]:
    """Pairs of spikes within the refractory period, and the contamination they imply (Llobet et al. 2022).

    Every pair counts, not only neighbours: three spikes within t_r are
    three violations. The contamination c solves n_v = N² (t_r - t_c) 2c(1 - c/2) / (T - 2 N t_c),
    as in SpikeInterface's rp_contamination.
    """
    n_spikes = len(times)
    refractory = int(round(settings.rp_refractory_ms * sampling_rate / 1000.0))
    censored = int(round(settings.rp_censored_ms * sampling_rate / 1000.0))
    count = 0
    shift = 1
    while shift < n_spikes:
        close = np.count_nonzero(times[shift:] - times[:-shift] <= refractory)
        if close == 0:
            break
        count += close
        shift += 1
    if n_spikes <= 1:
        return count, np.nan
    total_samples = duration_s * sampling_rate
    remaining = 1 - count * (total_samples - 2 * n_spikes * censored) / (n_spikes**2 * (refractory - censored))
    return count, 1.0 if remaining < 0 else 1 - float(np.sqrt(remaining))


def amplitude_cutoff(amplitudes: np.ndarray, settings: MetricSettings = MetricSettings()) -> float:
    """Estimated fraction of a unit's spikes missing below the detection threshold (Hill et al. 2011).

    The amplitude histogram is smoothed; whatever lies above the largest
    amplitude whose density still equals that of the smallest bin is taken
    as the mirror image of what was cut off. Capped at 0.5; nan with fewer
    than `cutoff_min_spikes_per_bin` spikes per bin. Negative amplitudes
    (troughs) are measured as their opposites.
    """
    from scipy.ndimage import gaussian_filter1d

    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if np.median(amplitudes) < 0:
        amplitudes = -amplitudes
    if len(amplitudes) / settings.cutoff_bins < settings.cutoff_min_spikes_per_bin:
        return np.nan
    counts = np.histogram(amplitudes, settings.cutoff_bins)[0]
    density = gaussian_filter1d(counts, settings.cutoff_smoothing_bins, mode="nearest")
    last_as_dense_as_lowest = np.flatnonzero(density >= density[0])[-1]
    missing = float(np.sum(density[last_as_dense_as_lowest + 1 :]))
    return min(missing / (len(amplitudes) + missing), 0.5)


def l_ratios(features: np.ndarray, labels: np.ndarray, unit_ids) -> dict[int, float]:
    """L-ratio of each unit (Schmitzer-Torbert et al. 2005), as SpikeInterface's mahalanobis_metrics.

    `features`: (n, d) spikes in one feature space (e.g. a sample of
    engine.curation.features); `labels`: (n,) their units. For unit u: the
    sum, over other units' spikes, of the χ²(d) tail probability of their
    squared Mahalanobis distance to u's cluster, divided by u's spike count.
    Small means well isolated. nan for a unit with too few spikes for a covariance.
    """
    from scipy.stats import chi2

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    result = {}
    for unit in map(int, unit_ids):
        own = features[labels == unit]
        others = features[labels != unit]
        if min(len(own), len(others)) < 2 or len(own) <= features.shape[1]:
            result[unit] = np.nan
            continue
        try:
            inverse = np.linalg.inv(np.cov(own.T))
        except np.linalg.LinAlgError:
            result[unit] = np.nan
            continue
        offsets = others - own.mean(axis=0)
        # (n_others,) squared distances; two matrix products (a three-operand einsum was 20x slower)
        squared = ((offsets @ inverse) * offsets).sum(axis=1)
        result[unit] = float(np.sum(chi2.sf(squared, features.shape[1])) / len(own))
    return result


def _presence_ratio(
    times: np.ndarray, sampling_rate: float, duration_s: float, settings: MetricSettings
) -> float:
    n_bins = max(settings.min_presence_bins, int(duration_s // settings.presence_bin_s))
    bin_index = np.floor(times / sampling_rate / duration_s * n_bins).astype(np.int64)
    occupied = np.unique(np.clip(bin_index, 0, n_bins - 1))
    return len(occupied) / n_bins


def _snr(template: np.ndarray | None, noise_levels: np.ndarray | None) -> float:
    if template is None or noise_levels is None:
        return np.nan
    # SpikeInterface's "extremum" SNR: the largest |value| of the template, over the noise of its channel.
    magnitude = np.abs(template)
    main_channel = int(magnitude.max(axis=0).argmax())
    return float(magnitude[:, main_channel].max()) / float(noise_levels[main_channel])


def _template_of(templates: Mapping[int, np.ndarray] | np.ndarray | None, unit: int) -> np.ndarray | None:
    if templates is None:
        return None
    if isinstance(templates, Mapping):
        return templates.get(unit)
    return templates[unit] if unit < len(templates) else None


def _mean_template(original_units: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(n_taps, n_channels) spike-weighted mean of the sort's templates of these spikes.

    Without re-reading the recording this is the best shape for a curated
    unit: exact for a merge (the mean of means), the parent's own shape for a
    piece of a split, and simply the template for an untouched unit.
    """
    counts = np.bincount(original_units, minlength=len(templates))
    present = np.flatnonzero(counts)
    return template_mix(counts[present] / counts[present].sum(), templates[present])


def _row_of_each_spike(spike_clusters: np.ndarray, unit_ids: np.ndarray) -> np.ndarray:
    """(n_spikes,) int64 position of each spike's unit in `unit_ids`, -1 if absent."""
    if len(unit_ids) == 0:
        return np.full(len(spike_clusters), -1, dtype=np.int64)
    sorter = np.argsort(unit_ids)
    sorted_ids = unit_ids[sorter]
    positions = np.searchsorted(sorted_ids, spike_clusters)
    found = positions < len(sorted_ids)
    found[found] = sorted_ids[positions[found]] == spike_clusters[found]
    return np.where(found, sorter[np.minimum(positions, len(sorted_ids) - 1)], -1).astype(np.int64)

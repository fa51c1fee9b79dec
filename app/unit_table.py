"""The numbers of the Units table, computed off the GUI thread from a sorting."""

from __future__ import annotations

import numpy as np

from app.state import UnitTable
from engine.curation.unit_positions import positions_from_peak_to_peak
from engine.pipeline.sorting import Sorting


def build_unit_table(sorting: Sorting, recording=None, labels: dict[int, str] | None = None,
                     with_metrics: bool = True) -> UnitTable:
    """recording: the preprocessed recording (for duration and noise levels), or None.

    `with_metrics=False`: spike counts and rates only, nan for the quality metrics (a sort opened for
    curation: the curation's table, which follows at once, computes them in the background).
    """
    from engine.curation.metrics import compute_unit_metrics

    unit_ids = sorting.unit_ids
    if recording is not None:
        duration_s = recording.duration
        noise_levels = getattr(recording, "noise_levels", None)
    else:
        # Without the data, the span of the spikes is the best estimate of the duration.
        last = sorting.spike_times[-1] + 1 if sorting.n_spikes else 1
        duration_s = float(last) / sorting.sampling_rate
        noise_levels = None
    n_spikes = sorting.spike_counts()[unit_ids]
    snr = isi_violation_ratio = np.full(len(unit_ids), np.nan)
    if with_metrics:
        metrics = compute_unit_metrics(
            sorting.spike_times,
            sorting.spike_units,
            unit_ids,
            sorting.sampling_rate,
            duration_s,
            amplitudes=sorting.amplitudes,
            templates=sorting.templates,
            noise_levels=noise_levels,
        )
        snr = np.array([_or_nan(metrics[u].snr) for u in unit_ids], dtype=float)
        isi_violation_ratio = np.array([_or_nan(metrics[u].isi_violation_ratio) for u in unit_ids], dtype=float)
    peak_to_peak = np.ptp(sorting.templates, axis=1)  # (n_units, n_channels) µV, one pass over the templates
    main_channels = peak_to_peak.argmax(axis=1) if sorting.n_units else np.zeros(0, dtype=np.int64)
    # (n_units,) µV peak-to-peak of each template on its main channel
    peak_amplitude = peak_to_peak.max(axis=1) if sorting.n_units else np.zeros(0)
    labels = labels or {}
    return UnitTable(
        unit_ids=unit_ids,
        n_spikes=n_spikes.astype(np.int64),
        firing_rate=n_spikes / duration_s,
        peak_amplitude=peak_amplitude.astype(float),
        snr=snr,
        isi_violation_ratio=isi_violation_ratio,
        labels=[labels.get(int(u), "") for u in unit_ids],
        positions=positions_from_peak_to_peak(peak_to_peak, sorting.channel_positions),
        main_channels=main_channels.astype(np.int64),
    )


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)

"""The numbers of the Units table, computed off the GUI thread from a sorting."""

from __future__ import annotations

import numpy as np

from app.state import UnitTable
from engine.curation.unit_positions import unit_positions
from engine.pipeline.sorting import Sorting


def build_unit_table(sorting: Sorting, recording=None, labels: dict[int, str] | None = None) -> UnitTable:
    """recording: the preprocessed recording (for duration and noise levels), or None."""
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
    main_channels = sorting.main_channels()
    # (n_units,) µV peak-to-peak of each template on its main channel
    peak_amplitude = np.ptp(sorting.templates[np.arange(sorting.n_units), :, main_channels], axis=1)
    labels = labels or {}
    return UnitTable(
        unit_ids=unit_ids,
        n_spikes=np.array([metrics[u].n_spikes for u in unit_ids], dtype=np.int64),
        firing_rate=np.array([metrics[u].firing_rate for u in unit_ids], dtype=float),
        peak_amplitude=peak_amplitude.astype(float),
        snr=np.array([_or_nan(metrics[u].snr) for u in unit_ids], dtype=float),
        isi_violation_ratio=np.array([_or_nan(metrics[u].isi_violation_ratio) for u in unit_ids], dtype=float),
        labels=[labels.get(int(u), "") for u in unit_ids],
        positions=unit_positions(sorting.templates, sorting.channel_positions),
        main_channels=main_channels.astype(np.int64),
    )


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)

"""The last stage: spikes of filters become units with templates, in µV.

A filter whose spikes fall into two amplitude groups becomes two units
(engine/pipeline/amplitude_split.py), as does one whose spike train breaks the
refractory period where its two amplitude groups (nearly) keep it; each unit's
template is its filter at its median code amplitude, back in µV.
"""

from __future__ import annotations

import numpy as np

from engine.pipeline.amplitude_split import OneWaveform, describe_amplitude_splits, split_by_amplitude
from engine.pipeline.coincidences import group_medians
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import AMPLITUDE_SPLIT_MIN_FRACTION, MIN_SPLIT_SPIKES
from engine.pipeline.sorting import Sorting, SortProvenance, peak_taps
from engine.pipeline.unit_merge import Windows


def assemble_sorting(
    events: SpikeEvents,
    filters: np.ndarray,
    noise_levels: np.ndarray,
    sampling_rate: float,
    channel_positions: np.ndarray | None,
    lambda_: float,
    pruning_notes: tuple[str, str],
    shared: np.ndarray | None = None,
    one_waveform: OneWaveform | None = None,
    *,
    dead_time: int,
) -> Sorting:
    """The Sorting of `events` coded with `filters` ((n_filters, n_taps, n_channels), unit norm, noise-σ units).

    pruning_notes: (initial, final) descriptions of the pruning decisions, kept as provenance.
    shared: (n_events,) bool, the events coded beside another filter's, and one_waveform: whether the
    data at two amplitude ranges of a filter's spikes hold one shape of one size (split_by_amplitude says why).
    dead_time: samples within which two spikes are one (the sort's), for the refractory counts.
    """
    n_filters = filters.shape[0]
    # Two neurons of one shape but different sizes share a filter: their code amplitudes tell them apart.
    # ... and so do their spike trains, when the amplitudes alone are too close to tell.
    confirmed: dict[int, str] = {}
    windows = Windows.at(sampling_rate, dead_time)  # as the unit merge counts them
    units, unit_filters, splits = split_by_amplitude(events.amplitudes, events.filters, n_filters,
                                                     MIN_SPLIT_SPIKES, AMPLITUDE_SPLIT_MIN_FRACTION, shared,
                                                     one_waveform, times=events.times, windows=windows,
                                                     confirmed=confirmed, shapes=filters)
    in_uv = filters * noise_levels[None, None, :]
    main = np.ptp(in_uv, axis=1).argmax(axis=1)  # (n_filters,)
    peaks = peak_taps(in_uv)
    peak_value = np.abs(in_uv[np.arange(n_filters), peaks, main])  # µV per unit of code
    median_code = group_medians(events.amplitudes, units, len(unit_filters))
    # (n_units, n_taps, n_channels) µV: a typical spike of each unit, its filter at its median size.
    templates = in_uv[unit_filters] * median_code[:, None, None]
    return Sorting(
        spike_times=events.times,
        spike_units=units,
        amplitudes=events.amplitudes * peak_value[events.filters] if n_filters else events.amplitudes,
        templates=templates,
        sampling_rate=sampling_rate,
        template_peak_taps=peaks[unit_filters],
        channel_positions=channel_positions,
        filter_index=unit_filters,
        code_amplitudes=events.amplitudes,
        provenance=SortProvenance(
            lambda_=float(lambda_),
            noise_levels_uv=np.asarray(noise_levels, dtype=np.float32).copy(),
            initial_pruning=pruning_notes[0],
            final_pruning=pruning_notes[1],
            amplitude_splits=describe_amplitude_splits(splits, confirmed),
        ),
    )

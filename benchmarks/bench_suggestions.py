"""Do merge suggestions find deliberately split units, and how fast are they on a large sort?

    python benchmarks/bench_suggestions.py [--quick]

(a) Split recovery. Ground-truth sorts in which every true unit is cut in
two (even units at random, odd units at half time): on the simulator's
tetrode (8 units, 120 s) and on SpikeInterface-generated recordings
(16 channels, 12 and 30 units, 120 s; skipped without spikeinterface). Templates
are mean waveforms read from the recording (engine.curation.suggestions.
data_template_source), so the two halves of a unit are alike but not
identical. Printed per recording: the fraction of split pieces whose top
suggestion is their other half (target ≥ 0.9), and the fraction of top
suggestions that pair two different true units (target < 0.1), counted two
ways: each piece's top suggestion, and the N best pairs overall (N = number
of split units). The same fraction is also printed for the units whose
mean waveform peaks at 5 noise σ or more, with the SNRs of the units missed.

(b) Scale. 500 synthetic units, 2,000,000 spikes, 384 channels: time to
compute the suggestions and the metrics at first, then after one merge
(target ≤ 30 s, ≤ 200 ms), with the load average and the peak RSS.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine_state import engine_version, load_note  # noqa: E402
from engine.curation.metrics import MetricsCache  # noqa: E402
from engine.curation.model import Curation  # noqa: E402
from engine.curation.suggestions import MergeSuggestions, data_template_source  # noqa: E402
from engine.io.recording import NumpyRecording  # noqa: E402
from engine.pipeline.sorting import Sorting, linear_positions  # noqa: E402

RECOVERY_DURATION_S = 120.0
SCALE_UNITS = 500
SCALE_SPIKES = 2_000_000
SCALE_CHANNELS = 384
SCALE_DURATION_S = 1200.0
SCALE_RATE = 30_000.0


# ---- (a) split recovery -------------------------------------------------------------------------
def split_every_unit(truth_units: np.ndarray, spike_times: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Units where each true unit u became u and n + u; returns them and piece -> true unit."""
    rng = np.random.default_rng(seed)
    n_units = int(truth_units.max()) + 1
    units = truth_units.astype(np.int64).copy()
    for unit in range(n_units):
        spikes = np.flatnonzero(truth_units == unit)
        if unit % 2 == 0:
            moved = spikes[rng.random(len(spikes)) < 0.5]
        else:
            moved = spikes[spike_times[spikes] >= np.median(spike_times[spikes])]
        units[moved] = n_units + unit
    true_unit_of = {piece: piece % n_units for piece in range(2 * n_units)}
    return units, true_unit_of


def true_unit_snrs(recording, template_of, spike_times, truth_units) -> np.ndarray:
    """(n_true_units,) peak of each unit's mean waveform over the noise σ (MAD) of its channel."""
    traces = recording.get_traces(0, min(recording.n_samples, int(10 * recording.sampling_rate)))
    noise = np.median(np.abs(traces - np.median(traces, axis=0)), axis=0) / 0.6745  # (n_channels,) µV
    snrs = []
    for unit in range(int(truth_units.max()) + 1):
        template = np.abs(template_of(unit, np.flatnonzero(truth_units == unit))[0])
        channel = template.max(axis=0).argmax()
        snrs.append(template[:, channel].max() / noise[channel])
    return np.array(snrs)


def recovery(recording, spike_times, truth_units, amplitudes, sampling_rate, positions) -> dict:
    units, true_unit_of = split_every_unit(truth_units, spike_times)
    n_pieces = len(true_unit_of)
    source_sorting = Sorting(spike_times, units, amplitudes, np.zeros((n_pieces, 1, recording.n_channels)),
                             sampling_rate, channel_positions=positions)
    template_of = data_template_source(recording, source_sorting)
    snrs = true_unit_snrs(recording, template_of, spike_times, truth_units)
    templates = np.stack([template_of(u, np.flatnonzero(units == u))[0] for u in range(n_pieces)])
    sorting = Sorting(spike_times, units, amplitudes, templates, sampling_rate, channel_positions=positions)
    curation = Curation(sorting.spike_units)
    suggestions = MergeSuggestions(curation, sorting, recording.duration, template_source=template_of)
    found = np.zeros(n_pieces, dtype=bool)
    mixed = np.zeros(n_pieces, dtype=bool)  # the piece's top suggestion pairs it with another true unit
    for piece in range(n_pieces):
        best = suggestions.for_unit(piece)
        partner = best[0].partner_of(piece) if best else None
        found[piece] = partner is not None and true_unit_of[partner] == true_unit_of[piece]
        mixed[piece] = partner is not None and true_unit_of[partner] != true_unit_of[piece]
    top = suggestions.ranked()[: n_pieces // 2]
    wrong = sum(true_unit_of[e.unit_a] != true_unit_of[e.unit_b] for e in top)
    clear = np.array([snrs[true_unit_of[piece]] >= 5 for piece in range(n_pieces)])
    return {
        "split": n_pieces // 2,
        "found": found.mean(),
        "mixed": mixed.mean(),
        "wrong": wrong / max(len(top), 1),
        "clear": int(clear.sum() // 2),
        "found_clear": found[clear].mean() if clear.any() else np.nan,
        "missed_snr": sorted({round(float(snrs[true_unit_of[p]]), 1) for p in np.flatnonzero(~found)}),
    }


def tetrode_case():
    from engine.evaluation.simulator import TETRODE, simulate
    from engine.pipeline.preprocessing import PreprocessedRecording

    settings = dict(TETRODE, duration_s=RECOVERY_DURATION_S)
    traces, truth = simulate(**settings, seed=1)
    recording = PreprocessedRecording(NumpyRecording(traces, truth.sampling_rate, channel_positions=truth.channel_positions))
    sorting = truth.to_sorting()
    return recording, sorting.spike_times, truth.spike_units, sorting.amplitudes, truth.sampling_rate, truth.channel_positions


def spikeinterface_case(n_units: int, seed: int):
    import warnings

    import spikeinterface.full as si

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crowded probes: "no solution for minimum_distance"
        si_recording, si_sorting = si.generate_ground_truth_recording(
            durations=[RECOVERY_DURATION_S], sampling_frequency=30_000.0, num_channels=16, num_units=n_units,
            seed=seed,
        )
    traces = si_recording.get_traces().astype(np.float32)  # (n_samples, 16) µV
    positions = si_recording.get_channel_locations()
    recording = NumpyRecording(traces, si_recording.sampling_frequency, channel_positions=positions)
    vector = si_sorting.to_spike_vector()
    spike_times, truth_units = vector["sample_index"].astype(np.int64), vector["unit_index"].astype(np.int64)
    # Amplitude: the trace at the spike on the unit's main channel, as SpikeInterface's spike_amplitudes.
    n_units = int(truth_units.max()) + 1
    main = np.zeros(n_units, dtype=np.int64)
    for unit in range(n_units):
        around = spike_times[truth_units == unit][:200]
        main[unit] = np.abs(traces[around]).mean(axis=0).argmax()
    amplitudes = np.abs(traces[spike_times, main[truth_units]])
    return recording, spike_times, truth_units, amplitudes, si_recording.sampling_frequency, positions


# ---- (b) scale ----------------------------------------------------------------------------------
def synthetic_large_sort(rng: np.random.Generator) -> Sorting:
    positions = linear_positions(SCALE_CHANNELS)
    taps = np.arange(61)
    shape = -np.exp(-0.5 * ((taps - 20) / 3.0) ** 2) + 0.4 * np.exp(-0.5 * ((taps - 32) / 6.0) ** 2)  # (61,)
    centres = rng.uniform(0, positions[-1, 1], SCALE_UNITS)  # µm along the probe
    distance = np.abs(positions[None, :, 1] - centres[:, None])  # (units, channels)
    spatial = rng.uniform(50, 200, SCALE_UNITS)[:, None] / (1 + (distance / 30.0) ** 2)
    jitter = rng.normal(0, 0.05, (SCALE_UNITS, 61, 1))
    templates = (shape[None, :, None] + jitter) * spatial[:, None, :]  # (units, 61, channels) µV
    weights = rng.dirichlet(np.full(SCALE_UNITS, 1.0))
    spike_units = rng.choice(SCALE_UNITS, size=SCALE_SPIKES, p=weights)
    spike_times = np.sort(rng.integers(0, int(SCALE_DURATION_S * SCALE_RATE), SCALE_SPIKES))
    return Sorting(
        spike_times=spike_times,
        spike_units=spike_units,
        amplitudes=np.abs(rng.normal(80, 15, SCALE_SPIKES)).astype(np.float32),
        templates=templates.astype(np.float32),
        sampling_rate=SCALE_RATE,
        channel_positions=positions,
        filter_index=np.arange(SCALE_UNITS),  # a CRsAE sort: co-activation is weighed too
    )


def scale_timings() -> dict[str, float]:
    rng = np.random.default_rng(0)
    sorting = synthetic_large_sort(rng)
    curation = Curation(sorting.spike_units)
    noise = np.full(SCALE_CHANNELS, 10.0)
    start = time.perf_counter()
    suggestions = MergeSuggestions(curation, sorting, SCALE_DURATION_S)
    suggestions_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = MetricsCache(curation, sorting, SCALE_DURATION_S, noise)
    metrics_s = time.perf_counter() - start
    top = suggestions.ranked()[0]
    record = curation.merge(top.units)
    start = time.perf_counter()
    suggestions.update(record)
    after_suggestions_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    metrics.update(record)
    after_metrics_ms = (time.perf_counter() - start) * 1000
    return {
        "pairs": len(suggestions.ranked()),
        "suggestions_s": suggestions_s,
        "metrics_s": metrics_s,
        "after_suggestions_ms": after_suggestions_ms,
        "after_metrics_ms": after_metrics_ms,
        "new_unit_pairs": len(suggestions.for_unit(record.added[0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 2 M-spike timing")
    arguments = parser.parse_args()
    print(f"bench_suggestions — {engine_version()}; {load_note()}")
    print()
    print("(a) split recovery: every true unit cut in two (even units at random, odd at half time)")
    print(f"{'recording':<40}{'split':>6}{'top = true half':>17}{'top pairs 2 units':>19}{'global top-N':>14}"
          f"{'SNR>=5 units':>14}{'their top = true half':>23}  SNR of the missed")
    cases = [("simulator tetrode, 8 units, 120 s", tetrode_case)]
    try:
        import spikeinterface.full  # noqa: F401

        cases.append(("SpikeInterface 16 ch, 12 units, 120 s", lambda: spikeinterface_case(12, 4)))
        cases.append(("SpikeInterface 16 ch, 30 units, 120 s", lambda: spikeinterface_case(30, 5)))
    except ImportError:
        print("  (spikeinterface is not installed: its cases are skipped)")
    for name, build in cases:
        r = recovery(*build())
        print(f"{name:<40}{r['split']:>6}{r['found']:>17.2f}{r['mixed']:>19.2f}{r['wrong']:>14.2f}{r['clear']:>14}"
              f"{r['found_clear']:>23.2f}  {r['missed_snr'] or '-'}")
    print("targets: top = true half >= 0.90; top suggestions pairing 2 true units < 0.10 (per piece's top, and")
    print("         among the N best pairs overall, N = split units)")
    if arguments.quick:
        return
    print()
    print(f"(b) {SCALE_UNITS} units, {SCALE_SPIKES:,} spikes, {SCALE_CHANNELS} channels, {SCALE_DURATION_S:.0f} s")
    timings = scale_timings()
    print(f"  suggestions at first: {timings['suggestions_s']:.1f} s ({timings['pairs']} pairs weighed)")
    print(f"  metrics at first:     {timings['metrics_s']:.1f} s")
    print(f"  after one merge:      suggestions {timings['after_suggestions_ms']:.0f} ms "
          f"({timings['new_unit_pairs']} pairs of the new unit), metrics {timings['after_metrics_ms']:.0f} ms")
    print(f"  targets: first <= 30 s, after a merge <= 200 ms; {load_note()}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

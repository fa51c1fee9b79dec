"""A Neuropixels-like recording and three sort folders of it, generated once and cached, for bench_gui.py.

    nice -n 10 python benchmarks/neuropixels_folders.py [--cache DIR] [--duration 600] [--units 500]

The recording is SpikeInterface's ground-truth generator (lazy noise tiled from
a pregenerated block, templates injected at the spike times) on a two-column
probe of 384 channels 20 µm apart, written 1 s at a time as int16
(0.195 µV per bit, as Neuropixels 1.0's AP band): it is never held in memory.
Its true sort is then written as:
- `sparsort/`: the phy folder this app's `sparsort sort` writes (engine.io.phy.export_phy);
- `spikeinterface/`: SpikeInterface's `export_to_phy` of a sparse SortingAnalyzer of it;
- `kilosort4/`: the files Kilosort 4 writes (templates on all channels, whitening
  matrices, amplitudes as template scalings, cluster_KSLabel.tsv), made by hand.
Each step writes a DONE file last; a step already done is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLING_RATE = 30_000.0
N_CHANNELS = 384
GAIN_UV = 0.195  # µV per int16 step
NOISE_UV = 10.0
DEFAULT_CACHE = Path(os.environ.get("SPARSORT_BENCH_CACHE", Path.home() / ".cache" / "sparsort-bench"))


def probe_positions(n_channels: int = N_CHANNELS) -> np.ndarray:
    """(n_channels, 2) µm: two columns 32 µm apart, rows 20 µm apart (a Neuropixels-like shank)."""
    rows = np.arange(n_channels) // 2
    return np.column_stack([(np.arange(n_channels) % 2) * 32.0, rows * 20.0])


def _done(folder: Path) -> bool:
    return (folder / "DONE").exists()


def _mark_done(folder: Path, seconds: float) -> None:
    (folder / "DONE").write_text(f"{seconds:.1f} s\n")


def generate_recording(folder: Path, duration_s: float, n_units: int, rate_hz: float, seed: int = 0) -> Path:
    """recording.bin (int16, time-major) with its JSON sidecar, and the true sort in truth/, chunk by chunk."""
    if _done(folder):
        return folder
    import probeinterface
    from spikeinterface.core import generate_ground_truth_recording

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=probe_positions(), shapes="square", shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(N_CHANNELS))
    recording, sorting = generate_ground_truth_recording(
        durations=[duration_s], sampling_frequency=SAMPLING_RATE, num_channels=N_CHANNELS, num_units=n_units,
        probe=probe, ms_before=1.0, ms_after=3.0,
        generate_sorting_kwargs={"firing_rates": rate_hz, "refractory_period_ms": 2.0},
        noise_kwargs={"noise_levels": NOISE_UV, "strategy": "tile_pregenerated"}, seed=seed,
    )
    chunk = int(SAMPLING_RATE)
    n_samples = recording.get_num_samples()
    with open(folder / "recording.bin", "wb") as out:
        for start in range(0, n_samples, chunk):
            traces = recording.get_traces(start_frame=start, end_frame=min(start + chunk, n_samples))
            np.clip(np.round(traces / GAIN_UV), -32768, 32767).astype(np.int16).tofile(out)
            if start // chunk % 60 == 0:
                print(f"  recording: {start / SAMPLING_RATE:.0f} of {duration_s:.0f} s "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    sidecar = {"sampling_rate": SAMPLING_RATE, "n_channels": N_CHANNELS, "dtype": "int16",
               "gain_to_uv": GAIN_UV, "channel_positions": probe_positions().tolist()}
    (folder / "recording.json").write_text(json.dumps(sidecar))
    truth = folder / "truth"
    truth.mkdir(exist_ok=True)
    spikes = sorting.to_spike_vector()
    np.save(truth / "spike_times.npy", spikes["sample_index"].astype(np.int64))
    np.save(truth / "spike_units.npy", spikes["unit_index"].astype(np.int32))
    templates = recording.templates  # (n_units, n_taps, n_channels) float32 µV, as injected
    np.save(truth / "templates.npy", np.asarray(templates, dtype=np.float32))
    scales = recording._kwargs.get("amplitude_factor")  # (n_spikes,) the generator's per-spike scaling, or None
    scales = np.ones(len(spikes)) if scales is None else np.broadcast_to(scales, (len(spikes),))
    np.save(truth / "amplitude_scales.npy", np.asarray(scales, dtype=np.float32))
    _mark_done(folder, time.perf_counter() - started)
    return folder


def truth_sorting(recording_folder: Path):
    """The true sort as an engine Sorting (amplitudes: µV at each spike's extremum on its main channel)."""
    from engine.pipeline.sorting import Sorting

    truth = recording_folder / "truth"
    templates = np.load(truth / "templates.npy")
    units = np.load(truth / "spike_units.npy")
    main = np.ptp(templates, axis=1).argmax(axis=1)
    peak_taps = np.abs(templates[np.arange(len(templates)), :, main]).argmax(axis=1)
    extremum = np.abs(templates[np.arange(len(templates)), peak_taps, main])
    return Sorting(
        spike_times=np.load(truth / "spike_times.npy"), spike_units=units,
        amplitudes=np.load(truth / "amplitude_scales.npy") * extremum[units], templates=templates,
        sampling_rate=SAMPLING_RATE, template_peak_taps=peak_taps, channel_positions=probe_positions(),
    )


def sparsort_folder(recording_folder: Path, out: Path) -> Path:
    if _done(out):
        return out
    from engine.io.phy import export_phy
    from engine.io.recording import open_recording

    started = time.perf_counter()
    export_phy(truth_sorting(recording_folder), out, recording=open_recording(recording_folder / "recording.bin"))
    _mark_done(out, time.perf_counter() - started)
    return out


def kilosort4_folder(recording_folder: Path, out: Path) -> Path:
    """The files Kilosort 4 writes, with the true sort in them (templates unit-norm-ish, amplitudes as scalings)."""
    if _done(out):
        return out
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sorting = truth_sorting(recording_folder)
    templates = sorting.templates
    # Kilosort's templates are in whitened units with amplitudes as each spike's scaling; here the
    # whitening is the identity scaled to the noise, as after Kilosort's per-channel whitening.
    whitening = np.eye(N_CHANNELS, dtype=np.float32) / NOISE_UV
    scale = np.abs(templates).max(axis=(1, 2))  # (n_units,)
    np.save(out / "templates.npy", (templates / scale[:, None, None]).astype(np.float32))
    np.save(out / "templates_ind.npy", np.tile(np.arange(N_CHANNELS, dtype=np.float64), (len(templates), 1)))
    np.save(out / "spike_times.npy", sorting.spike_times.astype(np.int64))
    np.save(out / "spike_templates.npy", sorting.spike_units.astype(np.int64))
    np.save(out / "spike_clusters.npy", sorting.spike_units.astype(np.int64))
    # A spike's size in noise units (its template's scaling after whitening), as Kilosort's amplitudes run.
    np.save(out / "amplitudes.npy", (sorting.amplitudes / NOISE_UV).astype(np.float64))
    np.save(out / "channel_map.npy", np.arange(N_CHANNELS, dtype=np.int32))
    np.save(out / "channel_positions.npy", probe_positions().astype(np.float32))
    np.save(out / "whitening_mat.npy", whitening)
    np.save(out / "whitening_mat_inv.npy", np.linalg.inv(whitening).astype(np.float32))
    with open(out / "cluster_KSLabel.tsv", "w") as labels:
        labels.write("cluster_id\tKSLabel\n")
        labels.writelines(f"{unit}\t{'good' if unit % 3 else 'mua'}\n" for unit in range(len(templates)))
    (out / "params.py").write_text(
        f"dat_path = {str(recording_folder / 'recording.bin')!r}\nn_channels_dat = {N_CHANNELS}\n"
        f"dtype = 'int16'\noffset = 0\nsample_rate = {SAMPLING_RATE}\nhp_filtered = False\n"
    )
    _mark_done(out, time.perf_counter() - started)
    return out


def spikeinterface_folder(recording_folder: Path, out: Path, n_jobs: int = 1) -> Path:
    """SpikeInterface's export_to_phy of a sparse analyzer (100 spikes per unit for the templates; no PCs)."""
    if _done(out):
        return out
    import spikeinterface.core as si
    from spikeinterface.exporters import export_to_phy

    started = time.perf_counter()
    recording = si.read_binary(recording_folder / "recording.bin", sampling_frequency=SAMPLING_RATE,
                               dtype="int16", num_channels=N_CHANNELS, gain_to_uV=GAIN_UV, offset_to_uV=0.0)
    import probeinterface

    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=probe_positions(), shapes="square", shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(N_CHANNELS))
    recording.set_probe(probe)  # in place
    truth = recording_folder / "truth"
    sorting = si.NumpySorting.from_samples_and_labels(
        [np.load(truth / "spike_times.npy")], [np.load(truth / "spike_units.npy")], SAMPLING_RATE
    )
    analyzer = si.create_sorting_analyzer(sorting, recording, sparse=True, format="memory", return_in_uV=True)
    job = {"n_jobs": n_jobs, "chunk_duration": "1s", "progress_bar": False}
    analyzer.compute("random_spikes", max_spikes_per_unit=100, seed=0)
    analyzer.compute("templates", **job)
    analyzer.compute("noise_levels")
    export_to_phy(analyzer, out, compute_pc_features=False, compute_amplitudes=True, copy_binary=False,
                  remove_if_exists=True, verbose=False, **job)
    _mark_done(out, time.perf_counter() - started)
    return out


def build_all(cache: Path, duration_s: float, n_units: int, rate_hz: float) -> dict[str, Path]:
    name = f"np{N_CHANNELS}_{duration_s:g}s_{n_units}u"
    recording_folder = generate_recording(cache / name, duration_s, n_units, rate_hz)
    return {
        "sparsort": sparsort_folder(recording_folder, cache / name / "sparsort"),
        "kilosort4": kilosort4_folder(recording_folder, cache / name / "kilosort4"),
        "spikeinterface": spikeinterface_folder(recording_folder, cache / name / "spikeinterface"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--rate", type=float, default=7.0, help="Hz per unit (default 7: 500 units, 10 min -> 2.1 M spikes)")
    parser.add_argument("--only-recording", action="store_true")
    arguments = parser.parse_args()
    if arguments.only_recording:
        name = f"np{N_CHANNELS}_{arguments.duration:g}s_{arguments.units}u"
        generate_recording(arguments.cache / name, arguments.duration, arguments.units, arguments.rate)
        return
    for kind, folder in build_all(arguments.cache, arguments.duration, arguments.units, arguments.rate).items():
        print(f"{kind}: {folder} ({(folder / 'DONE').read_text().strip()})")


if __name__ == "__main__":
    main()

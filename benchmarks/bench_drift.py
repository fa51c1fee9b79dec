"""A drifting probe, sorted with and without motion correction, beside the peers on the same traces.

    python benchmarks/bench_drift.py                       # 48 channels, 30 neurons, 3 min, ±20 µm zig-zag
    python benchmarks/bench_drift.py --seeds 2 --no-peers

SpikeInterface's drifting generator (generate_drifting_recording) on a two-column probe (20 µm between
rows, 32 µm between columns: its Neuropixels probes come from a download this machine cannot make), the
same neurons also without drift ("static"). Sparsort runs with --motion off / rigid / nonrigid
(engine/pipeline/motion.py); tridesclous2 and spykingcircus2 with their own motion correction on the
drifting recording (apply_motion_correction True, their default preset) and off on the static one.
Prints accuracy (SpikeInterface's definition), units sorted, well-detected units, wall time, the
motion-correction stage's own time, and the load average, for each sort; the peak resident memory of the
process at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sort import PEERS, Truth, run_peer, score  # noqa: E402
from machine_state import engine_version, load_note  # noqa: E402

from engine.io.recording import NumpyRecording  # noqa: E402
from engine.pipeline.stages import peak_rss_mb  # noqa: E402
from engine.sorter import CRsAESorter  # noqa: E402


def drifting_truths(seed: int, n_units: int, duration_s: float, drift_um: float, period_s: float,
                    n_channels: int = 48) -> list[Truth]:
    """(the drifting recording, the same neurons static) as bench_sort Truths."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.generation import generate_drifting_recording

    probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=n_channels // 2, xpitch=32, ypitch=20,
                                         contact_shapes="square", contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(probe.get_contact_count()))
    displacement = dict(displacement_sampling_frequency=5.0, drift_start_um=[0, drift_um], drift_stop_um=[0, -drift_um],
                        drift_step_um=1, motion_list=[dict(drift_mode="zigzag", non_rigid_gradient=None,
                                                           t_start_drift=20.0, t_end_drift=None, period_s=period_s)])
    static, drifting, sorting = generate_drifting_recording(num_units=n_units, duration=duration_s, seed=seed,
                                                            probe=probe, generate_displacement_vector_kwargs=displacement)
    spikes = sorting.to_spike_vector()
    order = np.argsort(spikes["sample_index"], kind="stable")
    truths = []
    for name, recording in (("drifting", drifting), ("static", static)):
        traces = np.ascontiguousarray(recording.get_traces(segment_index=0, return_in_uV=False), dtype=np.float32)
        truths.append(Truth(f"{name}-rec{seed}", traces, float(recording.sampling_frequency),
                            np.asarray(recording.get_channel_locations(), float)[:, :2],
                            spikes["sample_index"][order].astype(np.int64), spikes["unit_index"][order].astype(np.int64),
                            np.arange(len(sorting.unit_ids))))
    return truths


def sparsort_row(truth: Truth, motion: str, seed: int, stages: bool = False) -> str:
    recording = NumpyRecording(truth.traces, truth.sampling_rate, channel_positions=truth.channel_positions)
    started = time.perf_counter()
    sorter = CRsAESorter(seed=seed, motion=motion)
    sorting = sorter.fit_predict(recording)
    seconds = time.perf_counter() - started
    comparison = score(truth, sorting.spike_times, sorting.spike_units, np.arange(sorting.n_units))
    stage = [cost.seconds for cost in sorter.pipeline_.stage_log.costs if cost.name == "motion correction"]
    line = row(truth.name, f"sparsort --motion {motion}", comparison, sorting.n_units, seconds,
               f"motion stage {stage[0]:.1f} s; {sorter.pipeline_.preprocessed.description}" if stage else "")
    if stages:  # each stage's time, to see what corrected reads cost the stages after the estimate
        line += "\n" + "; ".join(f"{cost.name} {cost.seconds:.1f} s" for cost in sorter.pipeline_.stage_log.costs)
    return line


def row(recording: str, sorter: str, comparison, n_units: int, seconds: float, note: str = "") -> str:
    return (f"{recording:16s} {sorter:36s} {comparison.mean_accuracy:8.3f} {n_units:6d} "
            f"{comparison.n_well_detected:3d}/{len(comparison.gt_unit_ids):<3d} {seconds:8.1f} "
            f"{os.getloadavg()[0]:5.2f}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="recordings (generator seeds 0..N-1)")
    parser.add_argument("--units", type=int, default=30)
    parser.add_argument("--channels", type=int, default=48, help="contacts, in two columns (even)")
    parser.add_argument("--stages", action="store_true", help="print each Sparsort stage's time")
    parser.add_argument("--no-static", action="store_true", help="sort only the drifting recording")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds")
    parser.add_argument("--drift-um", type=float, default=20.0, help="the zig-zag's amplitude either way")
    parser.add_argument("--period", type=float, default=80.0, help="the zig-zag's period, s")
    parser.add_argument("--motions", default="off,rigid,nonrigid", help="Sparsort's --motion values to run")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="n_jobs for the peers")
    args = parser.parse_args(argv)
    print(f"bench_drift: engine {engine_version()}; {load_note()}")
    print(f"{'recording':16s} {'sorter':36s} {'accuracy':>8s} {'units':>6s} {'well':>7s} {'time s':>8s} {'load':>5s}  note")
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            for truth in drifting_truths(seed, args.units, args.duration, args.drift_um, args.period, args.channels):
                drifts = truth.name.startswith("drifting")
                if args.no_static and not drifts:
                    continue
                for motion in args.motions.split(",") if drifts else ["off"]:
                    print(sparsort_row(truth, motion, seed, args.stages), flush=True)
                if args.no_peers:
                    continue
                for peer in PEERS[:2]:
                    result = run_peer(peer, truth, Path(workdir), args.jobs, seed,
                                      extra={"apply_motion_correction": drifts})
                    if result.comparison is None:
                        print(f"{truth.name:16s} {peer:36s} {result.note}", flush=True)
                        continue
                    label = f"{peer} (motion correction {'on' if drifts else 'off'})"
                    print(row(truth.name, label, result.comparison, len(result.sorted_unit_ids), result.seconds,
                              result.note), flush=True)
    print(f"peak resident memory of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of Sparsort's two compute steps: training (s/step) and sorting (samples/s).

    python benchmarks/bench_inference.py            # demo + 60 s of tetrode, 3 repeats
    python benchmarks/bench_inference.py --quick    # 20 s recordings, 2 repeats
    python benchmarks/bench_inference.py --tetrode-duration 300 --repeats 5

For each case (the 1-channel 10 kHz demo and the 4-channel 30 kHz tetrode
preset) it builds a Trainer with the default TrainingConfig (initial filters
from the data, pruned), then times

  training  `Trainer.train_step()` (one Adam step: batch of windows, unrolled
            FISTA forward, backward), a few steps after one warm-up step;
  sorting   `engine.inference.infer_spikes` over the whole (preprocessed)
            recording with the trainer's dictionary, noise levels, dead time
            and threshold: the step `Trainer.sort` spends its time in.

Prints medians (and min/max) in samples/s, × real time, and s/step, plus the
torch thread count. The dictionary used for sorting is the one after the
timed training steps, not a converged one; the sorting cost depends on its
filter count (printed), not on how good the filters are. Timings are
wall-clock on a possibly shared machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.inference import infer_spikes  # noqa: E402
from engine.recording import NumpyRecording, open_recording  # noqa: E402
from engine.simulator import TETRODE, demo_recording_path, simulate  # noqa: E402
from engine.training import Trainer, TrainingConfig  # noqa: E402


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g}, n={len(values)})"


def bench_case(name: str, recording, train_steps: int, repeats: int) -> dict:
    config = TrainingConfig()
    started = time.perf_counter()
    trainer = Trainer(recording, config)
    setup_s = time.perf_counter() - started
    print(f"\n== {name}: {recording.n_channels} channel(s), {recording.sampling_rate / 1000:g} kHz, "
          f"{recording.n_samples / recording.sampling_rate:g} s; Trainer set-up {setup_s:.1f} s "
          f"(preprocess, initial filters, pruning: {trainer.initial_pruning.describe()})")
    print(f"   {trainer.model.n_filters} filters x {trainer.n_taps} taps, T={config.n_iterations}, "
          f"batch {config.batch_size} x {trainer.window} samples; full training = {trainer.n_steps} steps; "
          f"{load_note()}")

    trainer.train_step()  # warm-up: first call allocates
    step_times = [timed(trainer.train_step) for _ in range(train_steps)]
    step_s = statistics.median(step_times)
    print(f"   training: s/step {spread(step_times)}; a full default training would take "
          f"~{step_s * trainer.n_steps:.0f} s")

    target = trainer.recording  # preprocessed, as Trainer.sort uses it
    n_samples = target.n_samples
    duration_s = n_samples / target.sampling_rate

    def infer():
        return infer_spikes(trainer.model, target, trainer.noise_levels, trainer.dead_time, trainer.lambda_)

    events = None
    sort_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        events = infer()
        sort_times.append(time.perf_counter() - started)
    sort_s = statistics.median(sort_times)
    rates = [n_samples / t for t in sort_times]
    print(f"   sorting (infer_spikes, whole recording): s {spread(sort_times)}; "
          f"{len(events)} events")
    print(f"   sorting: samples/s {spread(rates)}; x real time {duration_s / sort_s:.2f}")
    return {
        "case": name,
        "channels": recording.n_channels,
        "fs_khz": recording.sampling_rate / 1000,
        "duration_s": duration_s,
        "filters": trainer.model.n_filters,
        "taps": trainer.n_taps,
        "step_s": step_s,
        "full_train_s": step_s * trainer.n_steps,
        "n_steps": trainer.n_steps,
        "sort_s": sort_s,
        "samples_per_s": n_samples / sort_s,
        "x_realtime": duration_s / sort_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s recordings, 2 repeats, 3 training steps")
    parser.add_argument("--demo-duration", type=float, default=None,
                        help="seconds of the demo to sort (default: all 120 s; quick 20)")
    parser.add_argument("--tetrode-duration", type=float, default=None, help="seconds (default 60; quick 20)")
    parser.add_argument("--repeats", type=int, default=None, help="sorting runs per case (default 3; quick 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 5; quick 3)")
    parser.add_argument("--only", choices=["demo", "tetrode"], action="append")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    train_steps = args.train_steps or (3 if args.quick else 5)
    demo_s = args.demo_duration or (20.0 if args.quick else None)
    tetrode_s = args.tetrode_duration or (20.0 if args.quick else 60.0)
    cases = args.only or ["demo", "tetrode"]

    print(f"bench_inference: torch {torch.__version__}, torch threads {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}), device cpu; {load_note()}")
    rows = []
    if "demo" in cases:
        demo = open_recording(demo_recording_path())
        if demo_s is not None and demo_s * demo.sampling_rate < demo.n_samples:
            traces = np.ascontiguousarray(demo.get_traces(0, int(demo_s * demo.sampling_rate)), dtype=np.float32)
            demo = NumpyRecording(traces, demo.sampling_rate, channel_positions=demo.channel_positions)
        rows.append(bench_case("demo", demo, train_steps, repeats))
    if "tetrode" in cases:
        traces, truth = simulate(**dict(TETRODE, duration_s=tetrode_s))
        tetrode = NumpyRecording(traces, truth.sampling_rate, channel_positions=truth.channel_positions)
        rows.append(bench_case("tetrode", tetrode, train_steps, repeats))

    print(f"\n== Summary (medians; torch threads {torch.get_num_threads()}; {load_note()})")
    header = ["case", "ch", "kHz", "rec s", "filters", "taps", "train s/step", "steps", "train total s",
              "sort s", "samples/s", "x real time"]
    table = [[r["case"], str(r["channels"]), f"{r['fs_khz']:g}", f"{r['duration_s']:g}", str(r["filters"]),
              str(r["taps"]), f"{r['step_s']:.3f}", str(r["n_steps"]), f"{r['full_train_s']:.0f}",
              f"{r['sort_s']:.2f}", f"{r['samples_per_s']:,.0f}", f"{r['x_realtime']:.2f}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(x.rjust(w) for x, w in zip(row, widths)))
    print("train total s = s/step x the steps a default training of that recording takes (estimate).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

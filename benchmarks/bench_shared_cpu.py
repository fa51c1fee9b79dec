"""`sparsort sort --demo` (or a probe's recording) on a quiet CPU and beside busy programs, under each thread policy.

Users sort while other programs run. This prints, side by side in one run, the
wall time of the whole demo sort (median of --repeats) for:

    policy      adaptive  the default: torch gets the cores other programs leave free,
                          idle OpenMP threads wait as the runtime does by default
                          (a brief spin, then sleep; engine/cpu.py)
                passive   adaptive, with idle OpenMP threads asleep at once
                          (OMP_WAIT_POLICY=PASSIVE: the default until 2026-12-04)
                fixed-2   two threads whatever the load, OMP threads spinning
                          (what Sparsort did before the adaptive policy)
                fixed-1   one thread
    neighbours  0 or N single-threaded busy loops running beside the sort

and the slowdown of each policy against its own quiet time, the peak resident
memory of the sort (from the kernel's accounting of that child process) and the
load average. Runs are interleaved across policies so a change in background
load hits them alike.

    python benchmarks/bench_shared_cpu.py [--repeats 3] [--neighbours 0 1]

With --probe-channels N, the sort is of a probe's recording instead of the demo:
SpikeInterface's generator (--probe-units, --probe-duration; written to disk once,
block by block) sorted by `sparsort sort FILE`, e.g.

    python benchmarks/bench_shared_cpu.py --probe-channels 32 --repeats 2 --policies adaptive fixed-2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine_state import command_peak_mb, engine_version, load_note, run_measured  # noqa: E402  (benchmarks/ is the script's folder)

POLICIES = {
    "adaptive": ({}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "fixed-2": ({"OMP_WAIT_POLICY": "ACTIVE"}, ["--threads", "2"]),
    "fixed-1": ({}, ["--threads", "1"]),
}


def busy_loop() -> None:
    while True:
        pass


def run_sort(policy: str, out: Path, target: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `sparsort sort TARGET` (["--demo"] or [a recording's path]; the
    command's own: machine_state.run_measured)."""
    environment, flags = POLICIES[policy]
    env = {**os.environ, **environment}
    command = [sys.executable, "-m", "engine.cli", "sort", *target, "--quiet", "--out", str(out), *flags]
    seconds, code, peak_mb, last_error = run_measured(command, env, cwd=Path(__file__).resolve().parents[1])
    if code != 0:
        raise RuntimeError(f"{policy}: sparsort sort {' '.join(target)} failed with status {code}: {last_error}")
    if target != ["--demo"]:  # the stages' own peaks count too (machine_state.command_peak_mb)
        peak_mb = command_peak_mb(peak_mb, json.loads((out / "sparsort.json").read_text()))
    return seconds, peak_mb


def probe_recording(args, folder: Path) -> list[str]:
    """The sort's target: the demo, or a generated probe recording written into `folder` (bench_duration's writer)."""
    if args.probe_channels is None:
        return ["--demo"]
    from bench_duration import generated, write_generated

    recording, _ = generated(args.probe_duration, args.probe_channels, args.probe_units, args.seed)
    path = write_generated(recording, folder / f"probe-{args.probe_channels}ch.bin")
    print(f"recording: SpikeInterface's generator, {args.probe_channels} channels, {args.probe_units} units, "
          f"{args.probe_duration:g} s, seed {args.seed} ({path.stat().st_size / 1e9:.1f} GB)")
    return [str(path)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--neighbours", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--probe-channels", type=int, default=None,
                        help="sort a generated probe of this many channels instead of the demo")
    parser.add_argument("--probe-units", type=int, default=24)
    parser.add_argument("--probe-duration", type=float, default=300.0, help="seconds")
    parser.add_argument("--seed", type=int, default=0, help="the generated probe's")
    args = parser.parse_args()
    print(f"engine {engine_version()}; {os.cpu_count()} cores; {load_note()}")
    times: dict[tuple[str, int], list[float]] = {}
    memory: dict[tuple[str, int], list[float]] = {}
    loads: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        target = probe_recording(args, Path(folder))
        for neighbours in args.neighbours:
            busy = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(neighbours)]
            for process in busy:
                process.start()
            try:
                for repeat in range(args.repeats):
                    for policy in args.policies:
                        seconds, rss = run_sort(policy, Path(folder) / f"{policy}-{neighbours}-{repeat}", target)
                        times.setdefault((policy, neighbours), []).append(seconds)
                        memory.setdefault((policy, neighbours), []).append(rss)
                        loads.setdefault(neighbours, []).append(os.getloadavg()[0])
                        print(f"  {policy:8s} beside {neighbours} busy: {seconds:6.1f} s, peak RSS {rss:6.0f} MB; "
                              f"{load_note()}", flush=True)
            finally:
                for process in busy:
                    process.terminate()
    print()
    print(f"{'policy':9s} {'busy':>4s} {'median s':>9s} {'runs':>20s} {'x quiet':>8s} {'peak RSS MB':>12s} {'load':>5s}")
    for policy in args.policies:
        quiet = statistics.median(times.get((policy, 0), [float("nan")]))
        for neighbours in args.neighbours:
            runs = times[policy, neighbours]
            median = statistics.median(runs)
            print(f"{policy:9s} {neighbours:4d} {median:9.1f} {', '.join(f'{r:.1f}' for r in runs):>20s} "
                  f"{median / quiet:8.2f} {max(memory[policy, neighbours]):12.0f} "
                  f"{statistics.median(loads[neighbours]):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

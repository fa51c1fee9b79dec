"""How responsive the desktop app is. Prints a table; not a test.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--training-seconds 10] [--repeats 5] [--no-warm-up]
    QT_QPA_PLATFORM=offscreen nice -n 10 python benchmarks/bench_gui.py --neuropixels [--cache DIR]
        [--duration 600 --units 500 --rate 7] [--repeats 20] [--settle 600]

- open to interactive: MainWindow() until the demo's traces are on screen (demo already cached);
- GUI stall while training: a QTimer ticks every 5 ms on the GUI thread while the
  demo trains with the default config; the longest gap between ticks (minus the 5 ms)
  is the longest time the GUI could not respond. Training starts once the app's warm-up
  (app/warm_up.py: what training imports, loaded in the background when a recording
  opens) is done, as a person's first look at the recording lets it; the stall while
  the demo opens, the warm-up included, is its own row;
- Traces redraw, 32 channels × 1 s at 30 kHz: reading and reducing the window (worker
  side) and stacking + setData + painting it (GUI side).

With --neuropixels, instead: the app on a Neuropixels-like recording (384
channels, 10 min at 30 kHz, 500 units, ~2.1 M spikes; benchmarks/neuropixels_folders.py
generates it once, ~14 GB, and caches it with three sort folders of it: this
app's own phy folder, SpikeInterface's export_to_phy, a Kilosort-4-like one).
Each folder is opened in its own process (so its peak memory is its own):
- open to interactive: MainWindow() until the sort is in the Units table, the
  curation is open and the Traces heat map is drawn; then how long the
  background work (metrics, merge suggestions, the t-SNE map) took, up to --settle s;
- selecting a unit (20 different ones, each 50 ms after the previous one's last paint, as a
  person's pause gives the event loop): until every shown view holds its data (the
  Waveforms view its first 20 spikes), until Qt painted what changed, until the
  Waveforms view shows all 100 spikes it samples, until a full repaint of every dock;
  while the background work still runs unless --settle gave it the time to finish
  (the open row says which);
- scrolling the Traces heat map (all 384 channels, 1 s window) by half a window:
  the GUI thread's work per frame (image + markers + paint), and the time until
  the new window is on screen (the worker's read and filtering included);
- the process's peak memory of its own (RssAnon, sampled every 0.1 s), and its
  peak RSS, which also counts the pages of the memory-mapped recording that
  reads all along the file bring in (file pages the system reclaims at will).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PyQt6.QtCore import QElapsedTimer, QSettings, QTimer  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

TICK_MS = 5


def wait_until(app: QApplication, condition, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark step timed out")
        app.processEvents()
        time.sleep(0.001)


def traces_drawn(window) -> bool:
    data = window.views["traces"].traces_curve.xData
    return data is not None and len(data) > 0


def open_to_interactive(app: QApplication, repeats: int) -> list[float]:
    from app.main_window import MainWindow
    from engine.evaluation.simulator import demo_recording_path

    demo_recording_path()  # simulate once, outside the timing
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        window = MainWindow()
        window.show()
        window.open_demo()
        wait_until(app, lambda: traces_drawn(window), 60)
        times.append(time.perf_counter() - started)
        window.close()
        app.processEvents()
    return times


def timer_gaps(app: QApplication, seconds: float, until=None) -> list[float]:
    """Gaps (ms, beyond the tick interval) between ticks of a GUI-thread timer over `seconds`
    (or, given `until`, until it returns true, for at most `seconds`)."""
    gaps, clock = [], QElapsedTimer()
    ticker = QTimer(interval=TICK_MS)
    ticker.timeout.connect(lambda: gaps.append(max(clock.restart() - TICK_MS, 0)))
    clock.start()
    ticker.start()
    deadline = time.perf_counter() + seconds
    wait_until(app, lambda: time.perf_counter() > deadline or (until is not None and until()), seconds + 5)
    ticker.stop()
    return gaps[1:]


def stall_while_training(app: QApplication, seconds: float, warm_up: bool = True) -> dict:
    """Timer gaps while the demo opens, the first recording in this process, until its traces are drawn
    and the app has imported what training will need (app/warm_up.py); then with the demo open and
    idle (the machine's own noise); then while it trains, started once the warm-up is done, as a
    person's look at the recording lets it."""
    from app.main_window import MainWindow
    from app.state import TrainingState
    from app.warm_up import warm_up_finished
    from engine.evaluation.simulator import demo_recording_path

    demo_recording_path()  # simulate once, outside the timing
    if not warm_up:  # as before the warm-up existed: training imports what it needs when it needs it
        import app.main_window as main_window_module

        main_window_module.start_warm_up = lambda: None
    window = MainWindow()
    window.show()
    started = time.perf_counter()
    window.open_demo()
    drawn_at = []

    def opened() -> bool:
        if not drawn_at and traces_drawn(window):
            drawn_at.append(time.perf_counter() - started)
        return bool(drawn_at) and (not warm_up or warm_up_finished())

    opening_gaps = timer_gaps(app, 60.0, until=opened)
    opening_s = time.perf_counter() - started
    idle_gaps = timer_gaps(app, min(seconds, 5.0))
    snapshots = []
    window.session.training_snapshot.connect(snapshots.append)
    window.engine.start_training(window.views["training"].config())
    wait_until(app, lambda: window.session.training_state == TrainingState.TRAINING, 120)
    training_gaps = timer_gaps(app, seconds)
    window.close()
    app.processEvents()
    return {"opening": opening_gaps, "opening_s": opening_s, "drawn_s": drawn_at[0], "idle": idle_gaps,
            "training": training_gaps,
            "snapshots": len(snapshots)}


def traces_redraw(app: QApplication, repeats: int) -> tuple[list[float], list[float]]:
    """(worker read + envelope ms, GUI stack + setData + paint ms) for 32 ch × 1 s at 30 kHz."""
    import numpy as np

    from app.main_window import MainWindow
    from app.plot_data import read_envelope
    from app.state import RecordingSource
    from app.views.traces import MAX_POINTS
    from engine.pipeline.preprocessing import PreprocessedRecording
    from engine.io.recording import NumpyRecording

    rate, n_channels = 30_000.0, 32
    traces = (np.random.default_rng(0).standard_normal((int(10 * rate), n_channels)) * 20).astype(np.float32)
    recording = PreprocessedRecording(NumpyRecording(traces, rate))
    recording.noise_levels
    window = MainWindow()
    window.resize(1600, 1000)
    window.show()
    window.session.set_recording(recording, RecordingSource(path="in memory"))
    view = window.views["traces"]
    app.processEvents()
    read_ms, draw_ms = [], []
    for repeat in range(repeats):
        start = int((1 + repeat % 8) * rate)
        began = time.perf_counter()
        index, reduced = read_envelope(recording, start, start + int(rate), MAX_POINTS)
        read_ms.append(1000 * (time.perf_counter() - began))
        began = time.perf_counter()
        view.draw_window(start, start + int(rate), np.arange(n_channels), index, reduced)
        view.plot_widget.viewport().repaint()
        draw_ms.append(1000 * (time.perf_counter() - began))
    window.close()
    app.processEvents()
    return read_ms, draw_ms


def anonymous_memory_mb() -> float:
    """This process's resident memory that is its own (RssAnon): not the recording's pages, which the
    memory map brings in as spikes all along the file are read, and the system takes back when it needs them."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe_folder_run(app: QApplication, folder: Path, repeats: int, settle_s: float) -> dict:
    """One sort folder, in this process: the numbers of the --neuropixels table."""
    import resource

    from app.main_window import MainWindow
    from bench_probe_views import time_selection

    peak_own = [anonymous_memory_mb()]
    sampler = QTimer(interval=100)  # the kernel keeps no peak of RssAnon: sample it
    sampler.timeout.connect(lambda: peak_own.append(max(peak_own.pop(), anonymous_memory_mb())))
    sampler.start()
    started = time.perf_counter()
    window = MainWindow()
    window_s = time.perf_counter() - started  # the window and its views (importing what they need) before any file
    window.show()
    window.resize(1920, 1200)
    window.open_path(folder)
    traces = window.views["traces"]
    session = window.session
    wait_until(app, lambda: session.curation is not None and session.unit_table is not None
               and traces._cached is not None, 600)
    result = {"open_s": time.perf_counter() - started, "window_s": window_s, "units": len(session.unit_table.unit_ids),
              "spikes": int(session.sorting.n_spikes), "channels": session.recording.n_channels,
              "duration_s": session.recording.duration}
    try:
        wait_until(app, lambda: window.engine.jobs_running == 0, settle_s)
        result["settled_s"] = time.perf_counter() - started
    except TimeoutError:
        result["settled_s"] = None  # still working after settle_s
    window.docks["probe"].raise_()
    window.docks["firing_rate"].raise_()
    for _ in range(20):
        app.processEvents()
    result["selection"] = time_selection(app, window, repeats)

    # Scrolling the heat map: half a 1 s window at a time.
    rate = session.recording.sampling_rate
    first_s = min(60.0, session.recording.duration / 4)
    session.set_time_window(first_s, first_s + 1.0)
    wait_until(app, lambda: abs(traces._cached[1] - first_s * rate) <= 1, 60)
    frame_s, on_screen_s = [], []
    for _ in range(repeats):
        before = traces._cached[1]
        began = time.perf_counter()
        traces.scroll(0.5 if traces._cached[2] < session.recording.n_samples - rate else -0.5)
        wait_until(app, lambda: traces._cached[1] != before, 60)
        app.processEvents()
        on_screen_s.append(time.perf_counter() - began)
        _recording, start, stop, channels, index, reduced = traces._cached
        began = time.perf_counter()
        traces.draw_window(start, stop, channels, index, reduced)
        traces.plot_widget.viewport().repaint()
        frame_s.append(time.perf_counter() - began)
    result["scroll_frame_s"], result["scroll_on_screen_s"] = frame_s, on_screen_s
    result["heatmap_channels"] = int(len(traces._cached[3]))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_own_mb"] = max(peak_own[0], anonymous_memory_mb())
    sampler.stop()
    window.close()
    app.processEvents()
    return result


def neuropixels_table(arguments) -> None:
    import json
    import subprocess

    from neuropixels_folders import build_all

    started = time.perf_counter()
    folders = build_all(arguments.cache, arguments.duration, arguments.units, arguments.rate)
    print(f"folders ready in {time.perf_counter() - started:.0f} s (cached in {arguments.cache})", flush=True)
    rows = []
    for kind, folder in folders.items():
        command = [sys.executable, __file__, "--one-folder", str(folder), "--repeats", str(arguments.repeats),
                   "--settle", str(arguments.settle)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"{kind}: failed ({done.returncode})\n{done.stderr[-3000:]}")
            continue
        rows.append((kind, json.loads(lines[-1])))
    for kind, result in rows:
        selection = result["selection"]
        settled = "not within --settle" if result["settled_s"] is None else f"{result['settled_s']:.0f} s"
        ms = lambda values: f"median {1000 * statistics.median(values):.0f} ms, worst {1000 * max(values):.0f} ms"  # noqa: E731
        print(f"\n{kind}: {result['channels']} channels, {result['duration_s']:.0f} s, {result['units']} units, "
              f"{result['spikes']:,} spikes")
        for name, value, target in (
            ("open to interactive", f"{result['open_s']:.1f} s (window {result['window_s']:.1f} s of it; "
                                    f"background work done at {settled})", "≤ 5 s"),
            ("select a unit: views hold its data", ms(selection["data"]), "≤ 100 ms median, ≤ 300 worst"),
            ("select a unit: painted (what changed)", ms(selection["painted"]), "≤ 100 ms median, ≤ 300 worst"),
            ("select a unit: all 100 waveforms painted", ms(selection["all waveforms"]), "-"),
            ("select a unit: full repaint of every dock", ms(selection["full repaint"]), "-"),
            (f"heat map scroll, {result['heatmap_channels']} ch: GUI per frame", ms(result["scroll_frame_s"]), "≤ 50 ms"),
            ("heat map scroll: new window on screen", ms(result["scroll_on_screen_s"]), "-"),
            ("peak memory: the app's own (RssAnon, sampled)", f"{result['peak_own_mb']:.0f} MB", "≤ 2 GB"),
            ("peak RSS with the recording's mapped pages", f"{result['peak_rss_mb']:.0f} MB", "-"),
        ):
            print(f"  {name:<44} {value:<48} {target}")
    print(f"({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-warm-up", action="store_true",
                        help="without the app's warm-up imports (app/warm_up.py), to compare")
    parser.add_argument("--neuropixels", action="store_true", help="the 384-channel table instead (see above)")
    parser.add_argument("--cache", type=Path, default=None, help="where the generated folders are kept")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--rate", type=float, default=7.0)
    parser.add_argument("--settle", type=float, default=600.0, help="seconds to wait for the background work")
    parser.add_argument("--one-folder", type=Path, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if arguments.neuropixels:
        from neuropixels_folders import DEFAULT_CACHE

        arguments.cache = arguments.cache or DEFAULT_CACHE
        arguments.repeats = max(arguments.repeats, 20)
        neuropixels_table(arguments)
        return
    if arguments.one_folder is not None:
        import json

        scratch = tempfile.mkdtemp(prefix="sparsort_bench_")
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, scratch)
        app = QApplication(sys.argv[:1])
        print(json.dumps(probe_folder_run(app, arguments.one_folder, arguments.repeats, arguments.settle)))
        return

    scratch = tempfile.mkdtemp(prefix="sparsort_bench_")
    # Never touch the person's saved layout; the demo cache is kept where it is.
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, scratch)
    app = QApplication(sys.argv[:1])

    # First: its opening is the process's first, so the warm-up happens there.
    stalls = stall_while_training(app, arguments.training_seconds, warm_up=not arguments.no_warm_up)
    open_times = open_to_interactive(app, arguments.repeats)
    read_ms, draw_ms = traces_redraw(app, max(arguments.repeats, 10))

    gaps = stalls["training"]
    gaps_sorted = sorted(gaps)
    p99 = gaps_sorted[int(0.99 * (len(gaps_sorted) - 1))] if gaps_sorted else float("nan")
    rows = [
        ("open to interactive (demo)", f"{statistics.median(open_times) * 1000:.0f} ms", "median", "-"),
        ("GUI stall while training: longest", f"{max(gaps, default=0):.0f} ms", f"{len(gaps)} ticks", "< 50 ms"),
        ("GUI stall while training: p99", f"{p99:.0f} ms", f"{stalls['snapshots']} snapshots", "-"),
        ("GUI stall while the demo opens, first in the process: longest", f"{max(stalls['opening'], default=0):.0f} ms",
         f"traces in {stalls['drawn_s']:.1f} s" + ("" if arguments.no_warm_up else f", warm-up {stalls['opening_s']:.1f} s"),
         "-"),
        ("GUI stall, demo open but idle: longest", f"{max(stalls['idle'], default=0):.0f} ms", "machine noise", "-"),
        ("Traces 32 ch × 1 s @ 30 kHz: read + envelope (worker)", f"{statistics.median(read_ms):.1f} ms", "median", "-"),
        ("Traces 32 ch × 1 s @ 30 kHz: draw (GUI thread)", f"{statistics.median(draw_ms):.1f} ms", "median", "< 30 ms"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'over':<16}  target")
    for name, value, over, target in rows:
        print(f"{name:<{width}}  {value:>10}  {over:<16}  {target}")
    print(f"({os.cpu_count()} CPU cores; torch threads capped at cores - 1 by the app)")


if __name__ == "__main__":
    main()

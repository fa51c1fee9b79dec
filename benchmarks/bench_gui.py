"""How responsive the desktop app is. Prints a table; not a test.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--training-seconds 10] [--repeats 5]

- open to interactive: MainWindow() until the demo's traces are on screen (demo already cached);
- GUI stall while training: a QTimer ticks every 5 ms on the GUI thread while the
  demo trains with the default config; the longest gap between ticks (minus the 5 ms)
  is the longest time the GUI could not respond;
- Traces redraw, 32 channels × 1 s at 30 kHz: reading and reducing the window (worker
  side) and stacking + setData + painting it (GUI side).
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


def timer_gaps(app: QApplication, seconds: float) -> list[float]:
    """Gaps (ms, beyond the tick interval) between ticks of a GUI-thread timer over `seconds`."""
    gaps, clock = [], QElapsedTimer()
    ticker = QTimer(interval=TICK_MS)
    ticker.timeout.connect(lambda: gaps.append(max(clock.restart() - TICK_MS, 0)))
    clock.start()
    ticker.start()
    deadline = time.perf_counter() + seconds
    wait_until(app, lambda: time.perf_counter() > deadline, seconds + 5)
    ticker.stop()
    return gaps[1:]


def stall_while_training(app: QApplication, seconds: float) -> tuple[list[float], list[float], int]:
    """Timer gaps with the demo open and idle (the machine's own noise), then while it trains."""
    from app.main_window import MainWindow
    from app.state import TrainingState

    window = MainWindow()
    window.show()
    window.open_demo()
    wait_until(app, lambda: traces_drawn(window), 60)
    idle_gaps = timer_gaps(app, min(seconds, 5.0))
    snapshots = []
    window.session.training_snapshot.connect(snapshots.append)
    window.engine.start_training(window.views["training"].config())
    wait_until(app, lambda: window.session.training_state == TrainingState.TRAINING, 120)
    training_gaps = timer_gaps(app, seconds)
    window.close()
    app.processEvents()
    return idle_gaps, training_gaps, len(snapshots)


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
        view.draw_window(start, start + int(rate), index, reduced)
        view.plot_widget.viewport().repaint()
        draw_ms.append(1000 * (time.perf_counter() - began))
    window.close()
    app.processEvents()
    return read_ms, draw_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="sparsort_bench_")
    # Never touch the person's saved layout; the demo cache is kept where it is.
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, scratch)
    app = QApplication(sys.argv[:1])

    open_times = open_to_interactive(app, arguments.repeats)
    idle_gaps, gaps, n_snapshots = stall_while_training(app, arguments.training_seconds)
    read_ms, draw_ms = traces_redraw(app, max(arguments.repeats, 10))

    gaps_sorted = sorted(gaps)
    p99 = gaps_sorted[int(0.99 * (len(gaps_sorted) - 1))] if gaps_sorted else float("nan")
    rows = [
        ("open to interactive (demo)", f"{statistics.median(open_times) * 1000:.0f} ms", "median", "-"),
        ("GUI stall while training: longest", f"{max(gaps, default=0):.0f} ms", f"{len(gaps)} ticks", "< 50 ms"),
        ("GUI stall while training: p99", f"{p99:.0f} ms", f"{n_snapshots} snapshots", "-"),
        ("GUI stall, demo open but idle: longest", f"{max(idle_gaps, default=0):.0f} ms", "machine noise", "-"),
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

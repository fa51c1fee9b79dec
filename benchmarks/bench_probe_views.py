"""The app on a many-channel phy folder: screenshots of the probe-scale views and the time a unit selection takes.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_probe_views.py [--channels 64 384] [--repeats 20] [--shots DIR]

For each channel count, a simulated two-column probe (20 µm rows, ~1 unit per
6 channels, 3 s at 10 kHz) is written as a phy folder with its true sort,
opened for curation, and once its background jobs are done:
- the whole window, then each probe-scale view in a floating dock of a readable
  size, is grabbed into DIR (probe, traces as heat map and as stacked traces,
  units table, filters, waveforms, features, firing rate, amplitudes);
- a unit is selected `repeats` times (a different one each time) and timed from
  `select_units` until every shown view holds the new selection's data
  (the Waveforms view's read of its first 20 spikes in its worker included), until Qt
  has painted what changed, until the Waveforms view shows its whole sample of spikes
  (100 per unit), and until a full repaint of every dock (window.grab(): more
  than a selection costs on screen). Medians and worst are printed; nothing is asserted.
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

import numpy as np  # noqa: E402
from PyQt6.QtCore import QSettings  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from bench_gui import wait_until  # noqa: E402  (the benchmarks' folder is on sys.path when run as a script)


def open_folder(app: QApplication, folder: Path):
    from app.main_window import MainWindow

    window = MainWindow()
    window.show()
    window.resize(1600, 1000)
    window.open_path(folder)
    wait_until(app, lambda: window.session.curation is not None, 120)
    wait_until(app, lambda: window.engine.jobs_running == 0, 300)  # metrics, suggestions, the t-SNE map
    window.docks["probe"].raise_()  # in front of the spike map: the view this issue adds
    for _ in range(20):
        app.processEvents()
    return window


PAUSE_BETWEEN_CLICKS_S = 0.05
SHOT_SIZE = {"traces": (1400, 800), "probe": (500, 900), "units": (700, 700), "filters": (900, 800)}


def settle(app: QApplication, seconds: float = 0.5) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)


def grab_view(app: QApplication, window, name: str, path: Path, ready=lambda: True) -> None:
    """The view in its own floating dock at a readable size (the docked layout squeezes some to a sliver)."""
    dock = window.docks[name]
    dock.setFloating(True)
    dock.show()
    dock.resize(*SHOT_SIZE.get(name, (900, 650)))
    settle(app)
    wait_until(app, ready, 60)
    settle(app)
    window.views[name].grab().save(str(path))
    dock.setFloating(False)
    settle(app, 0.2)


def grab_views(app: QApplication, window, shots: Path, n_channels: int) -> None:
    session, traces = window.session, window.views["traces"]
    table = session.unit_table
    by_size = table.unit_ids[np.argsort(-table.n_spikes)]
    session.select_units([int(by_size[0]), int(by_size[1])])
    session.set_time_window(0.5, 1.0)
    waveforms, features = window.views["waveforms"], window.views["features"]
    wait_until(app, lambda: set(waveforms.means) == set(session.selected_units), 30)
    wait_until(app, lambda: traces._cached is not None and traces._cached[1] >= 0.5 * session.recording.sampling_rate - 1, 30)
    settle(app)
    window.grab().save(str(shots / f"window_{n_channels}.png"))
    for name, ready in (
        ("probe", lambda: True), ("traces", lambda: True), ("units", lambda: True), ("filters", lambda: True),
        ("waveforms", lambda: set(waveforms.means) == set(session.selected_units)),
        ("features", lambda: set(features.drawn) == set(session.selected_units)),
        ("firing_rate", lambda: True), ("amplitudes", lambda: True),
    ):
        grab_view(app, window, name, shots / f"{name}_{n_channels}.png", ready)
    traces.heatmap_box.setChecked(not traces.is_heatmap())
    wait_until(app, lambda: len(traces._cached[3]) == len(traces.visible_channels()), 30)
    grab_view(app, window, "traces", shots / f"traces_{'heatmap' if traces.is_heatmap() else 'stacked'}_{n_channels}.png")
    traces.heatmap_box.setChecked(not traces.is_heatmap())


def time_selection(app: QApplication, window, repeats: int) -> dict[str, list[float]]:
    """Seconds from select_units to: every shown view holding the new unit's data (the Waveforms
    view its first FIRST_WAVEFORMS spikes); the window painted as Qt paints it (the regions that
    changed); the Waveforms view holding its whole sample of spikes, painted; and a full repaint of every dock."""
    session, waveforms = window.session, window.views["waveforms"]
    units = [int(u) for u in session.unit_table.unit_ids]
    timings = {"data": [], "painted": [], "all waveforms": [], "full repaint": []}
    for repeat in range(repeats):
        unit = units[(repeat * 7 + 1) % len(units)]
        if session.selected_units == (unit,):
            unit = units[(repeat * 7 + 2) % len(units)]
        # The previous click's last paints first, as the event loop does them in a person's pause between
        # clicks: window.grab() below renders without clearing what is waiting to be painted, and the next
        # click's timing then included repainting the previous unit's 100 spikes (20-40 ms).
        settle(app, PAUSE_BETWEEN_CLICKS_S)
        started = time.perf_counter()
        session.select_units([unit])
        wait_until(app, lambda: set(waveforms.means) == {unit} and not waveforms._redraw_pending, 30)
        app.processEvents()  # the other views' posted redraws
        timings["data"].append(time.perf_counter() - started)
        app.processEvents()  # the update requests those redraws posted: the paint
        app.processEvents()
        timings["painted"].append(time.perf_counter() - started)
        wait_until(app, lambda: waveforms.complete, 30)
        app.processEvents()
        app.processEvents()
        timings["all waveforms"].append(time.perf_counter() - started)
        window.grab()
        timings["full repaint"].append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[64])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shots", type=Path, default=None, help="folder for the screenshots (default: a temporary one)")
    arguments = parser.parse_args()
    from tests.test_app_probe_scale import write_probe_folder

    app = QApplication.instance() or QApplication(sys.argv)
    with tempfile.TemporaryDirectory() as scratch:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, scratch)  # leave the user's layout alone
        shots = arguments.shots or Path(scratch) / "shots"
        shots.mkdir(parents=True, exist_ok=True)
        print(f"load average {os.getloadavg()[0]:.2f}; screenshots in {shots}")
        for n_channels in arguments.channels:
            started = time.perf_counter()
            folder = write_probe_folder(Path(scratch) / f"probe{n_channels}", n_channels=n_channels,
                                        n_units=max(n_channels // 6, 4))
            made = time.perf_counter() - started
            window = open_folder(app, folder)
            grab_views(app, window, shots, n_channels)
            timings = time_selection(app, window, arguments.repeats)
            summary = "; ".join(
                f"{what}: median {1000 * statistics.median(values):.0f} ms, worst {1000 * max(values):.0f} ms"
                for what, values in timings.items()
            )
            print(f"{n_channels} channels, {len(window.session.unit_table.unit_ids)} units "
                  f"(folder made in {made:.1f} s), select a unit -> {summary} (n={arguments.repeats})")
            window.close()
            app.processEvents()


if __name__ == "__main__":
    main()

"""Firing rate: each selected unit's spikes per second over the recording, in its colour.

A unit that fades out (a neuron lost, or drifting off the probe) falls to
zero here, one that drifts in rises from it, and a unit made of two neurons
that take turns shows steps; a dashed line marks each unit's mean rate.
Counted with one bincount per unit (1 M spikes: a few ms), so no worker is
needed; bins of BIN_S seconds, or wider so that a long recording keeps at
most MAX_BINS of them.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.palette import unit_color
from app.unit_views import UnitView, fit_range

MAX_UNITS = 8
BIN_S = 1.0
MAX_BINS = 600


def rate_bins(duration_s: float) -> float:
    """Seconds per bin: BIN_S, or wider so that `duration_s` makes at most MAX_BINS bins."""
    return max(BIN_S, duration_s / MAX_BINS)


def firing_rate(spike_times: np.ndarray, sampling_rate: float, duration_s: float, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(edges (n + 1,) s, rates (n,) Hz) of spikes at `spike_times` (samples) in bins of `bin_s` over [0, duration_s]."""
    n_bins = max(int(np.ceil(duration_s / bin_s)), 1)
    counts = np.bincount(np.minimum((spike_times / sampling_rate / bin_s).astype(np.int64), n_bins - 1), minlength=n_bins)
    edges = np.arange(n_bins + 1) * bin_s
    widths = np.diff(np.minimum(edges, max(duration_s, bin_s)))  # the last bin may be cut by the end
    return edges, counts / np.maximum(widths, 1e-9)


class FiringRateView(UnitView):
    name = "firing_rate"
    title = "Firing rate"
    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    split_from = ("amplitudes", Qt.Orientation.Vertical)

    def build(self) -> None:
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setLabel("left", "rate (Hz)")
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.curves: dict[int, pg.PlotCurveItem] = {}  # unit -> its rate, as steps
        self.means: dict[int, pg.InfiniteLine] = {}  # unit -> its mean rate
        self.bin_s = BIN_S
        self.set_content(self.plot_widget)

    def redraw(self) -> None:
        message = self.missing_content_message()
        if message is not None:
            self.show_message(message)
            return
        self.show_content()
        sorting = self.session.sorting
        recording = self.session.recording
        last_spike_s = float(sorting.spike_times[-1]) / sorting.sampling_rate if sorting.n_spikes else 1.0
        duration = recording.duration if recording is not None else last_spike_s
        self.bin_s = rate_bins(duration)
        shown = self.selected_unit_spikes(MAX_UNITS)
        for unit in set(self.curves) - {unit for unit, _ in shown}:
            self.plot.removeItem(self.curves.pop(unit))
            self.plot.removeItem(self.means.pop(unit))
        highest = 0.0
        for z, (unit, spikes) in enumerate(shown):
            curve, mean = self._items_of(unit)
            edges, rates = firing_rate(sorting.spike_times[spikes], sorting.sampling_rate, duration, self.bin_s)
            curve.setData(edges, rates, stepMode="center")
            highest = max(highest, float(rates.max()) if len(rates) else 0.0)
            mean.setValue(len(spikes) / max(duration, 1e-9))
            curve.setZValue(len(shown) - z)  # the first selected unit in front
        self.plot.setTitle(f"spikes per second, {self.bin_s:.3g} s bins", size="9pt")
        fit_range(self.plot, (0.0, duration), (0.0, highest))

    def _items_of(self, unit: int) -> tuple[pg.PlotCurveItem, pg.InfiniteLine]:
        if unit not in self.curves:
            colour = unit_color(unit)
            self.curves[unit] = pg.PlotCurveItem(pen=pg.mkPen(colour, width=1.5), fillLevel=None)
            self.means[unit] = pg.InfiniteLine(angle=0, pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DashLine))
            self.plot.addItem(self.curves[unit])
            self.plot.addItem(self.means[unit], ignoreBounds=True)
        return self.curves[unit], self.means[unit]

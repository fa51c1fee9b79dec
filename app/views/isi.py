"""ISI: the inter-spike interval histogram of each selected unit.

A clean unit has (almost) no interval shorter than its refractory period,
marked by the dashed line; a dip that does not reach zero there means the
unit mixes neurons or takes noise. Histograms cost one pass over the unit's
spike times, cheap enough to compute on the GUI thread.
"""

from __future__ import annotations

import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.palette import unit_color
from app.unit_views import UnitView, fit_range
from engine.curation.metrics import MetricSettings, isi_histogram

MAX_UNITS = 8
BIN_MS = 0.5
MAX_ISI_MS = 50.0
REFRACTORY_PEN = pg.mkPen((230, 230, 230, 160), width=1, style=Qt.PenStyle.DashLine)


class IsiView(UnitView):
    name = "isi"
    title = "ISI"
    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    split_from = ("correlograms", Qt.Orientation.Horizontal)

    def build(self) -> None:
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "inter-spike interval (ms)")
        self.plot.setLabel("left", "spikes")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setXRange(0, MAX_ISI_MS, padding=0)
        self.plot.setMouseEnabled(x=True, y=False)
        refractory_ms = MetricSettings().refractory_ms
        self.plot.addItem(pg.InfiniteLine(refractory_ms, angle=90, pen=REFRACTORY_PEN))
        self.histograms: dict[int, pg.PlotDataItem] = {}  # unit -> its step curve
        self.set_content(self.plot_widget)

    def redraw(self) -> None:
        message = self.missing_content_message()
        if message is not None:
            self.show_message(message)
            return
        self.show_content()
        sorting = self.session.sorting
        shown = self.selected_unit_spikes(MAX_UNITS)
        for unit in set(self.histograms) - {unit for unit, _ in shown}:
            self.plot.removeItem(self.histograms.pop(unit))
        highest = 0
        for unit, spikes in shown:
            counts, edges = isi_histogram(sorting.spike_times[spikes], sorting.sampling_rate, BIN_MS, MAX_ISI_MS)
            highest = max(highest, int(counts.max()) if len(counts) else 0)
            curve = self.histograms.get(unit)
            if curve is None:
                colour = unit_color(unit)
                fill = unit_color(unit, alpha=60 if len(shown) > 1 else 120)
                curve = pg.PlotDataItem(stepMode="center", fillLevel=0, pen=pg.mkPen(colour, width=1.5), brush=fill)
                self.histograms[unit] = curve
                self.plot.addItem(curve)
            curve.setData(edges, counts)
        fit_range(self.plot, y_range=(0, highest))

"""Correlograms: auto-correlograms of the selected units and the cross-correlograms between them.

A grid, as in phy: unit i's auto-correlogram on the diagonal in its colour,
the cross-correlogram of units i and j at row i, column j. A refractory gap
at lag 0 in a cross-correlogram says two units are one neuron (merge them);
its absence in an auto-correlogram says a unit mixes several.

Counting pairs grows with the units' spike counts, so it runs in a worker
that only answers the latest selection.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.palette import NEUTRAL, unit_color
from app.unit_views import UnitView, apply_range_now
from engine.curation.metrics import correlograms

MAX_UNITS = 6
BIN_MS = 1.0
WINDOW_MS = 50.0
LEFT_AXIS_WIDTH_PX = 48


def _count(request):
    """Worker: (request, (n, n, n_bins) counts) for the request's units."""
    _curation, sorting, unit_spikes = request
    spikes = np.concatenate([spikes for _, spikes in unit_spikes])
    units = np.repeat([unit for unit, _ in unit_spikes], [len(spikes) for _, spikes in unit_spikes])
    counts = correlograms(
        sorting.spike_times[spikes], units, np.array([u for u, _ in unit_spikes]), sorting.sampling_rate,
        BIN_MS, WINDOW_MS,
    )
    return request, counts


class CorrelogramsView(UnitView):
    name = "correlograms"
    title = "Correlograms"
    default_area = Qt.DockWidgetArea.BottomDockWidgetArea

    def build(self) -> None:
        self.graphics = pg.GraphicsLayoutWidget()
        self.cells: list[list[pg.PlotItem]] = []  # [row][column]
        self.bars: list[list[pg.PlotDataItem]] = []
        self.shown_units: list[int] = []  # units of the rows and columns, once drawn
        self.set_content(self.graphics)
        self._counter = self.engine.start_latest_worker("Counting correlograms", _count)
        self._counter.answered.connect(self._on_counted)

    def redraw(self) -> None:
        message = self.missing_content_message()
        if message is not None:
            self.show_message(message)
            return
        unit_spikes = self.selected_unit_spikes(MAX_UNITS)
        self._counter.request((self.session.curation, self.session.sorting, unit_spikes))

    def _on_counted(self, _request_id: int, result) -> None:
        (curation, sorting, unit_spikes), counts = result
        if curation is not self.session.curation or sorting is not self.session.sorting:
            return  # counted for a sort or curation that has since been replaced
        self.show_content()
        units = [unit for unit, _ in unit_spikes]
        self._ensure_grid(len(units))
        half = counts.shape[2] // 2
        edges = (np.arange(counts.shape[2] + 1) - half - 0.5) * BIN_MS  # ms, bin b centred on (b - half) × BIN_MS
        for i, row_unit in enumerate(units):
            for j, column_unit in enumerate(units):
                colour = unit_color(row_unit) if i == j else NEUTRAL
                bars = self.bars[i][j]
                bars.setData(edges, counts[i, j])
                bars.setPen(pg.mkPen(colour, width=1))
                bars.setBrush(pg.mkBrush(colour.red(), colour.green(), colour.blue(), 150))
                title = f"{row_unit}" if i == j else f"{row_unit} × {column_unit}"
                self.cells[i][j].setTitle(title, color=colour.name(), size="8pt")
            row = self.cells[i]
            row[0].setYRange(0, max(float(counts[i].max()), 1.0), padding=0.05)
        for row in self.cells:
            for cell in row:
                apply_range_now(cell)
        self.shown_units = units

    def _ensure_grid(self, n: int) -> None:
        """Rebuild the grid of plots only when the number of units changes."""
        if len(self.cells) == n:
            return
        self.graphics.clear()
        self.cells, self.bars = [], []
        for i in range(n):
            row_cells, row_bars = [], []
            for j in range(n):
                plot = self.graphics.addPlot(row=i, col=j)
                plot.setMenuEnabled(False)
                plot.hideButtons()
                plot.setMouseEnabled(x=False, y=False)
                # Counts are compared along a row (the same reference spikes): one y scale per row,
                # shown once, at its start; lags once, under the last row.
                plot.showAxis("left", j == 0)
                plot.showAxis("bottom", i == n - 1)
                if j == 0:
                    plot.setLabel("left", f"pairs / {BIN_MS:g} ms")
                    plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH_PX)
                else:
                    plot.setYLink(row_cells[0])
                if i == n - 1:
                    plot.setLabel("bottom", "lag (ms)")
                plot.setXRange(-WINDOW_MS / 2, WINDOW_MS / 2, padding=0)
                bars = pg.PlotDataItem(stepMode="center", fillLevel=0)
                plot.addItem(bars)
                row_cells.append(plot)
                row_bars.append(bars)
            self.cells.append(row_cells)
            self.bars.append(row_bars)

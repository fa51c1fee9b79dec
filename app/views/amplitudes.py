"""Amplitudes: each selected unit's spike amplitudes over the recording.

Drift shows as a slow slope, a unit cut by the detection threshold as a
flat floor, two neurons sharing a unit as two bands; the histogram at the
right shows the same as a distribution (a cut-off side means missing spikes).
Drag a lasso around spikes (left button) and press K to split them off.
The lasso always takes every spike of the selected units inside it, even
when a very large unit is drawn thinned.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDockWidget

from app.lasso import LassoViewBox, SpikeSelection, points_inside
from app.palette import unit_color
from app.point_cloud import PointCloudItem
from app.unit_views import UnitView, apply_range_now, fit_range

MAX_UNITS = 8
MAX_POINTS_PER_UNIT = 50_000  # drawn; beyond this a unit's spikes are thinned evenly in time
HISTOGRAM_BINS = 60
HISTOGRAM_WIDTH = 0.18  # of the view's width


class AmplitudesView(UnitView):
    name = "amplitudes"
    title = "Amplitudes"
    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    split_from = ("codes", Qt.Orientation.Horizontal)

    def build(self) -> None:
        self.graphics = pg.GraphicsLayoutWidget()
        self.lasso = LassoViewBox()
        self.lasso.lasso_drawn.connect(self._on_lasso)
        self.plot = self.graphics.addPlot(row=0, col=0, viewBox=self.lasso)
        self.plot.setLabel("bottom", "time", units="s")
        # No label up the y axis: the dock's title says what y is in (_show_amplitude_unit).
        self.plot.hideButtons()
        self.histogram = self.graphics.addPlot(row=0, col=1)
        self.histogram.setYLink(self.plot)
        self.histogram.hideAxis("left")
        self.histogram.hideAxis("bottom")
        self.histogram.setMenuEnabled(False)
        self.histogram.setMouseEnabled(x=False, y=False)
        self.histogram.hideButtons()
        layout = self.graphics.ci.layout
        layout.setColumnStretchFactor(0, round((1 - HISTOGRAM_WIDTH) * 100))
        layout.setColumnStretchFactor(1, round(HISTOGRAM_WIDTH * 100))
        self.scatters: dict[int, PointCloudItem] = {}  # unit -> its spikes
        self.distributions: dict[int, pg.BarGraphItem] = {}  # unit -> its amplitude histogram, bars lying sideways
        self.set_content(self.graphics)
        # Whether or not the view is shown: a tab behind another shows the dock's title too.
        self.session.recording_changed.connect(self._show_amplitude_unit)
        self.session.sorting_changed.connect(self._show_amplitude_unit)

    def redraw(self) -> None:
        message = self.missing_content_message()
        if message is not None:
            self.lasso.clear_lasso()
            self.show_message(message)
            return
        self.show_content()
        sorting = self.session.sorting
        shown = self.selected_unit_spikes(MAX_UNITS)
        for unit in set(self.scatters) - {unit for unit, _ in shown}:
            self.plot.removeItem(self.scatters.pop(unit))
            self.histogram.removeItem(self.distributions.pop(unit))
        amplitudes = [sorting.amplitudes[spikes] for _, spikes in shown]
        edges = np.histogram_bin_edges(np.concatenate(amplitudes), HISTOGRAM_BINS)
        for z, ((unit, spikes), unit_amplitudes) in enumerate(zip(shown, amplitudes)):
            scatter, distribution = self._items_of(unit)
            drawn = np.arange(len(spikes))
            if len(spikes) > MAX_POINTS_PER_UNIT:
                drawn = np.linspace(0, len(spikes) - 1, MAX_POINTS_PER_UNIT).astype(np.int64)
            scatter.setData(sorting.spike_times[spikes[drawn]] / sorting.sampling_rate, unit_amplitudes[drawn])
            # The first selected unit on top: it is the one being looked at.
            scatter.setZValue(len(shown) - z)
            counts, _ = np.histogram(unit_amplitudes, edges)
            distribution.setOpts(x0=0, y=(edges[:-1] + edges[1:]) / 2, height=np.diff(edges), width=counts)
        times = [sorting.spike_times[spikes[[0, -1]]] / sorting.sampling_rate for _, spikes in shown if len(spikes)]
        if times:
            fit_range(self.plot, (min(t[0] for t in times), max(t[-1] for t in times)), (edges[0], edges[-1]))
            apply_range_now(self.histogram)  # its y follows the scatter's, its x auto-ranges on the counts
        self.on_spikes_selected(self.session.selected_spikes)  # a lasso drawn elsewhere goes

    def _show_amplitude_unit(self) -> None:
        """Name what the amplitudes are in, in the dock's title: "Amplitudes (µV)".

        Our sorts' amplitudes are µV; a Kilosort folder's amplitudes.npy holds unitless
        template scalings. Not up the y axis: in the default layout the plot is ~60 px tall,
        and "amplitude (µV)" written there was cut to "amplitude ("; a title row above the
        plot left the spikes 5 px.
        """
        sorting = self.session.sorting
        title = self.title if sorting is None else f"{self.title} ({sorting.amplitude_unit})"
        dock = self.parentWidget()
        if isinstance(dock, QDockWidget) and dock.windowTitle() != title:
            dock.setWindowTitle(title)

    def _items_of(self, unit: int) -> tuple[PointCloudItem, pg.BarGraphItem]:
        if unit not in self.scatters:
            scatter = PointCloudItem(size=3, colour=unit_color(unit, alpha=170))
            distribution = pg.BarGraphItem(
                x0=0, y=[], height=[], width=[], pen=pg.mkPen(None), brush=unit_color(unit, alpha=110)
            )
            self.plot.addItem(scatter)
            self.histogram.addItem(distribution)
            self.scatters[unit], self.distributions[unit] = scatter, distribution
        return self.scatters[unit], self.distributions[unit]

    # ---- lasso ---------------------------------------------------------------------------------
    def _on_lasso(self, polygon: np.ndarray) -> None:
        sorting = self.session.sorting
        shown = self.selected_unit_spikes(MAX_UNITS)
        if sorting is None or not shown:
            self.lasso.clear_lasso()
            return
        spikes = np.concatenate([spikes for _, spikes in shown])
        points = np.column_stack([sorting.spike_times[spikes] / sorting.sampling_rate, sorting.amplitudes[spikes]])
        chosen = np.sort(spikes[points_inside(polygon, points)])
        self.session.select_spikes(SpikeSelection(chosen, tuple(unit for unit, _ in shown), self.name))

    def on_spikes_selected(self, selection) -> None:
        if selection is None or selection.source != self.name:
            self.lasso.clear_lasso()

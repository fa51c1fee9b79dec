"""Probe: the channel map, each unit at its estimated position, the selected units' channels lit.

Positions are in µm, as the recording or sort gives them (x across the shank,
y along it). A unit sits at the centre of mass of its template near its main
channel (engine.curation.unit_positions), in its palette colour. Clicking a
unit selects it, clicking a channel selects the units whose main channel it
is (Ctrl-click adds or removes). The channels of each selected unit's
neighbourhood (the ones the Waveforms view draws) take that unit's colour.

Scatter items made once: channels and units, and above them the selection's
own two (its units, larger and outlined, and its lit channels). A selection
sets the data of those two only, a few points: restyling the 384 channels and
500 units in place cost 60-130 ms a click.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QLabel, QVBoxLayout

from app.palette import unit_brushes
from app.views.base import View
from engine.curation.unit_positions import neighbourhood

CHANNEL_COLOUR = (70, 72, 80, 255)
CHANNEL_SIZE_PX = 7.0
HIGHLIGHT_ALPHA = 170
UNIT_SIZE_PX, SELECTED_UNIT_SIZE_PX = 9.0, 15.0
NO_CHANNELS_MESSAGE = "Open a recording or a sort: its channel map is drawn here."


class ProbeView(View):
    name = "probe"
    title = "Probe"
    default_area = Qt.DockWidgetArea.LeftDockWidgetArea
    tabify_with = "embedding"  # both are maps of the units; the probe's is the one to steer by on a long probe

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.message = QLabel(NO_CHANNELS_MESSAGE, wordWrap=True, alignment=Qt.AlignmentFlag.AlignCenter)
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        # Not aspect-locked: a probe is a few tens of µm wide and millimetres long, and a
        # true-to-scale drawing would be a thin line in any dock.
        self.plot.setLabel("bottom", "x (µm)")
        self.plot.setLabel("left", "y along the probe (µm)")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.enableAutoRange(x=False, y=False)
        self.channel_spots = pg.ScatterPlotItem(pxMode=True, symbol="s", pen=None)
        self.unit_spots = pg.ScatterPlotItem(
            pxMode=True, symbol="o", hoverable=True, tip=lambda x, y, data: f"unit {data}\n({x:.0f}, {y:.0f}) µm"
        )
        self.unit_spots.setZValue(10)
        self.lit_channels = pg.ScatterPlotItem(pxMode=True, symbol="s", pen=None)
        self.lit_channels.setZValue(5)
        self.selected_unit_spots = pg.ScatterPlotItem(pxMode=True, symbol="o", pen=pg.mkPen("w", width=2))
        self.selected_unit_spots.setZValue(20)
        self.channel_spots.sigClicked.connect(self._on_channel_clicked)
        self.lit_channels.sigClicked.connect(self._on_channel_clicked)
        self.unit_spots.sigClicked.connect(self._on_unit_clicked)
        self.selected_unit_spots.sigClicked.connect(self._on_unit_clicked)
        for item in (self.channel_spots, self.lit_channels, self.unit_spots, self.selected_unit_spots):
            self.plot.addItem(item)
        layout.addWidget(self.message)
        layout.addWidget(self.plot_widget, 1)
        self.channel_positions = np.zeros((0, 2))  # (n_channels, 2) µm drawn
        self.unit_ids = np.zeros(0, dtype=np.int64)  # (n_units,) drawn, in the order of `unit_spots`
        self.main_channels = np.zeros(0, dtype=np.int64)  # (n_units,)
        self.positions = np.zeros((0, 2))  # (n_units, 2) µm, in the order of `unit_ids`
        self.highlighted = np.zeros(0, dtype=np.int64)  # channels lit for the selection

    # ---- what to draw ---------------------------------------------------------------------------
    def _positions_source(self) -> np.ndarray | None:
        sorting, recording = self.session.sorting, self.session.recording
        if sorting is not None:
            return np.asarray(sorting.channel_positions, dtype=float)
        if recording is not None and recording.channel_positions is not None:
            return np.asarray(recording.channel_positions, dtype=float)
        return None

    def refresh(self) -> None:
        positions = self._positions_source()
        self.message.setVisible(positions is None)
        self.plot_widget.setVisible(positions is not None)
        if positions is None:
            self.channel_positions = np.zeros((0, 2))
            for item in (self.channel_spots, self.lit_channels, self.unit_spots, self.selected_unit_spots):
                item.setData([], [])
            return
        changed = positions.shape != self.channel_positions.shape or not np.array_equal(positions, self.channel_positions)
        self.channel_positions = positions
        self.channel_spots.setData(pos=positions, size=CHANNEL_SIZE_PX, brush=pg.mkBrush(*CHANNEL_COLOUR),
                                   data=np.arange(len(positions)))
        self._draw_units()
        if changed:
            self._fit_probe()

    def _fit_probe(self) -> None:
        # From the positions, not autoRange: with pixel-sized spots that depends on the widget's size,
        # which is nothing yet while the dock is hidden.
        low, high = self.channel_positions.min(axis=0), self.channel_positions.max(axis=0)
        margin = np.maximum(0.08 * (high - low), 20.0)  # µm; room for units just beyond the last channels
        self.plot.setXRange(low[0] - margin[0], high[0] + margin[0], padding=0)
        self.plot.setYRange(low[1] - margin[1], high[1] + margin[1], padding=0)

    def _draw_units(self) -> None:
        table = self.session.unit_table
        if table is None or table.positions is None or len(self.channel_positions) == 0:
            self.unit_ids, self.main_channels = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            self.positions = np.zeros((0, 2))
            self.unit_spots.setData([], [])
        else:
            self.unit_ids = table.unit_ids.astype(np.int64)
            self.main_channels = table.main_channels.astype(np.int64)
            self.positions = np.asarray(table.positions, dtype=float)
            self.unit_spots.setData(pos=self.positions, size=np.full(len(self.unit_ids), UNIT_SIZE_PX),
                                    brush=unit_brushes(self.unit_ids, alpha=230),
                                    data=self.unit_ids)
        self._draw_selection()

    def _draw_selection(self) -> None:
        """The selected units, larger and outlined, over the others; each one's neighbourhood of channels
        lit in its colour (the first selected unit wins a shared channel)."""
        rows = [np.flatnonzero(self.unit_ids == unit) for unit in self.session.selected_units]
        rows = np.array([found[0] for found in rows if len(found)], dtype=np.int64)
        units = self.unit_ids[rows]
        self.selected_unit_spots.setData(
            pos=self.positions[rows] if len(rows) else np.zeros((0, 2)), size=np.full(len(rows), SELECTED_UNIT_SIZE_PX),
            brush=unit_brushes(units, alpha=230), data=units,
        )
        lit: dict[int, int] = {}  # channel -> the selected unit it is lit for
        for unit, main in zip(units.tolist(), self.main_channels[rows].tolist()):
            for channel in neighbourhood(self.channel_positions, int(main)).tolist():
                lit.setdefault(channel, unit)
        self.highlighted = np.array(sorted(lit), dtype=np.int64)
        self.lit_channels.setData(
            pos=self.channel_positions[self.highlighted] if len(self.highlighted) else np.zeros((0, 2)),
            size=CHANNEL_SIZE_PX, brush=unit_brushes([lit[channel] for channel in self.highlighted.tolist()], HIGHLIGHT_ALPHA),
            data=self.highlighted,
        )

    # ---- clicks -----------------------------------------------------------------------------------
    def _select(self, units: list[int], event) -> None:
        if event is not None and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            current = list(self.session.selected_units)
            for unit in units:
                if unit in current:
                    current.remove(unit)
                else:
                    current.append(unit)
            units = current
        self.session.select_units(units)

    def _on_unit_clicked(self, _item, points, event) -> None:
        if len(points):
            event.accept()
            self._select([int(points[0].data())], event)

    def _on_channel_clicked(self, _item, points, event) -> None:
        if not len(points) or len(self.unit_ids) == 0:
            return
        channel = int(points[0].data())
        units = self.unit_ids[self.main_channels == channel].tolist()
        if units:
            self._select(units, event)

    # ---- session events ---------------------------------------------------------------------------
    def on_recording_changed(self) -> None:
        self.refresh()

    def on_sorting_changed(self) -> None:
        self.refresh()

    def on_selection_changed(self, _unit_ids) -> None:
        if len(self.unit_ids) != len(self.unit_spots.data):
            self._draw_units()
            return
        # The units' and channels' spots stay as they are: only the selection's own items change.
        self._draw_selection()

"""Codes: the sparse code of each filter over the visible window, one row per filter.

A spike of filter k is a bump in row k; each row is labelled with the unit
that filter's spikes belong to now (see app/views/filters.py), so the labels
follow curation. The time axis follows the Traces view
through the session's time window, both ways: panning here pans Traces too.
The codes come from the model (the training worker or, when idle, a
reconstruction worker), for the window the person is looking at.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QVBoxLayout

from app.palette import NEUTRAL, unit_color
from app.plot_data import minmax_envelope
from app.views.base import View
from app.views.filters import filter_units_now

MAX_POINTS = 3000  # per row
ROW_HEIGHT_USED = 0.9  # the largest code fills this fraction of a row
RANGE_DEBOUNCE_MS = 30
HINT = "Codes appear once a model exists: press Start in Training"
HINT_MARGIN = 16  # px between the wrapped hint and the plot's edges


class CodesView(View):
    name = "codes"
    title = "Codes"
    default_area = Qt.DockWidgetArea.BottomDockWidgetArea

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setMouseEnabled(x=True, y=False)
        # The time range is the session's, never the data's extent.
        self.plot.enableAutoRange(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.hint = pg.TextItem(color=NEUTRAL, anchor=(0.5, 0.5))
        # Centred lines: the hint wraps to the plot's width (see _place_hint).
        self.hint.setHtml(f'<p align="center">{HINT}</p>')
        self.hint.setParentItem(self.plot.getViewBox())
        layout.addWidget(self.plot_widget)
        self.rows: list[pg.PlotCurveItem] = []
        self._range_timer = QTimer(self, singleShot=True, interval=RANGE_DEBOUNCE_MS)
        self._range_timer.timeout.connect(self._on_range_settled)
        self.plot.sigXRangeChanged.connect(lambda *_: self._range_timer.start())
        self.plot.getViewBox().sigResized.connect(self._place_hint)

    def _place_hint(self, *_args) -> None:
        rect = self.plot.getViewBox().boundingRect()
        # The dock shares its row with others: on one line the hint would run past the plot.
        self.hint.setTextWidth(max(rect.width() - 2 * HINT_MARGIN, 1.0))
        self.hint.setPos(rect.center())

    def _ensure_rows(self, n_filters: int) -> None:
        while len(self.rows) < n_filters:
            curve = pg.PlotCurveItem()
            self.plot.addItem(curve)
            self.rows.append(curve)
        while len(self.rows) > n_filters:
            self.plot.removeItem(self.rows.pop())
        if n_filters:
            self.plot.setYRange(-(n_filters - 1) - 0.2, 1.0, padding=0)

    def _label_rows(self, units: np.ndarray) -> None:
        for curve, unit in zip(self.rows, units):
            curve.setPen(pg.mkPen(unit_color(unit) if unit >= 0 else NEUTRAL, width=1.5))
        ticks = [(-k + 0.4, f"unit {unit}" if unit >= 0 else f"f{k}") for k, unit in enumerate(units)]
        self.plot.getAxis("left").setTicks([ticks, []])

    def refresh(self) -> None:
        recording = self.session.recording
        if recording is not None:
            self.plot.setLimits(xMin=0.0, xMax=recording.duration, minXRange=20 / recording.sampling_rate)
            self._apply_time_window(*self.session.time_window)
        self._draw_codes(self.session.window_codes)

    def _draw_codes(self, window) -> None:
        self.hint.setVisible(window is None)
        if window is None or self.session.recording is None:
            # No rows and no row labels: those were the old model's units (another file, or a run since replaced).
            self._ensure_rows(0)
            self.plot.getAxis("left").setTicks([[], []])
            return
        n_filters = window.codes.shape[0]
        if len(self.rows) != n_filters:
            self._ensure_rows(n_filters)
        self._label_rows(filter_units_now(self.session, n_filters)[0])
        peak = float(window.codes.max()) or 1.0
        index, reduced = minmax_envelope(window.codes.T, MAX_POINTS)  # (m,), (m, n_filters)
        times = (window.start + index) / self.session.recording.sampling_rate
        for k, curve in enumerate(self.rows):
            curve.setData(times, reduced[:, k] * (ROW_HEIGHT_USED / peak) - k, skipFiniteCheck=True)

    # ---- time axis shared with Traces ---------------------------------------------------------
    def _apply_time_window(self, start_s: float, stop_s: float) -> None:
        (current_start, current_stop), _ = self.plot.viewRange()
        if abs(current_start - start_s) > 1e-9 or abs(current_stop - stop_s) > 1e-9:
            self.plot.setXRange(start_s, stop_s, padding=0)

    def _on_range_settled(self) -> None:
        if self.session.recording is not None and self.is_shown():
            self.session.set_time_window(*self.plot.viewRange()[0])

    # ---- session events ------------------------------------------------------------------------
    def on_recording_changed(self) -> None:
        self.refresh()

    def on_time_window_changed(self, start_s: float, stop_s: float) -> None:
        self._apply_time_window(start_s, stop_s)

    def on_window_codes_changed(self, window) -> None:
        self._draw_codes(window)

    def on_sorting_changed(self) -> None:
        self._draw_codes(self.session.window_codes)

    def on_curation_changed(self, _record) -> None:
        if self.rows:
            self._label_rows(filter_units_now(self.session, len(self.rows))[0])

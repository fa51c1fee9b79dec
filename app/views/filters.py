"""Filters: the learned spike shape of every unit, on all its channels, live during training.

One grid cell per filter, channels stacked; the filter it started from is
drawn faintly behind it, so the person sees what training changed. Without a
trained model (a sort opened from a phy folder) the units' templates are shown.

Filters are the model's, so curation does not add or remove any; each is
labelled with the unit its spikes belong to now (merged: the new unit; split:
the part holding most of them, marked "(split)"). Click a filter to select that
unit (Ctrl-click adds to the selection).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PyQt6 import sip
from PyQt6.QtCore import QRectF, Qt, QTimer
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsRectItem, QLabel, QVBoxLayout

from app.palette import NEUTRAL, unit_color
from app.plot_data import minmax_envelope, stack_channels
from app.views.base import View
from engine.curation.unit_positions import MAX_NEIGHBOURS, main_channel, neighbourhood

CHANNEL_SPACING = 2.2  # in units of the filter's peak |value|
TITLE_SPACE = 1.4  # above each filter, same units
# A title is shown when its cell is at least this many pixels wide. Narrower, the titles of a
# large grid ran into each other unread, and each one, a Python item, cost the grid's every
# repaint (two per selection, 24 ms each at 500 cells) its boundingRect and layout calls.
TITLE_MIN_PX = 56
CELL_GAP = 0.15  # between columns, as a fraction of the filter length
SELECTED_BACKGROUND = (255, 255, 255, 28)
# Above this many cells each is a few tens of pixels wide: a channel's curve is drawn as the
# min/max envelope of CELL_POINTS points (peaks kept), not every tap. At 500 templates of 120
# taps × 16 channels, drawing every tap was 1 M line segments, 0.5 s a full paint.
ENVELOPE_ABOVE_CELLS = 64
CELL_POINTS = 32
# Cells are graphics items, made on the GUI thread (about 4 ms each with their curve and title):
# a grid up to this size is made at once, a larger one in slices of at most SLICE_S of the GUI
# thread each (500 cells took 1.9 s in one go while a 384-channel folder opened).
CELLS_AT_ONCE = 64
SLICE_S = 0.03
INITIAL_FILTER_PEN = pg.mkPen((200, 200, 210, 70), width=1)


def filter_units_now(session, n_filters: int) -> tuple[np.ndarray, np.ndarray]:
    """The unit each of the model's filters belongs to now, and whether its spikes are split.

    Returns (n_filters,) int64 unit ids (-1: the filter found no spikes) and
    (n_filters,) bool, True where the filter's spikes now lie in several units.
    A filter became one of the sort's units (`session.filter_unit_ids`); curation
    then moves that unit's spikes into new units, so the filter goes with the
    unit that holds most of them.
    """
    sort_units = session.filter_unit_ids(n_filters)  # (n_filters,) the sort's unit index, -1: none
    units = np.full(n_filters, -1, dtype=np.int64)
    split = np.zeros(n_filters, dtype=bool)
    sorting, curation = session.sorting, session.curation
    if sorting is None:
        return sort_units.astype(np.int64), split  # training: filter k is provisionally unit k
    if sorting.n_spikes == 0:
        return units, split
    if curation is None:
        # The curation is still opening: each sort unit is one unit, under the id the curation will give it.
        cluster_ids = sorting.cluster_ids
        ids = np.arange(sorting.n_units) if cluster_ids is None else np.asarray(cluster_ids, dtype=np.int64)
        has_spikes = np.bincount(sorting.spike_units, minlength=sorting.n_units) > 0
        unit_of_sort_unit = np.where(has_spikes, ids, -1)
        split_of_sort_unit = np.zeros(sorting.n_units, dtype=bool)
    else:
        unit_ids = curation.unit_ids
        # counts[i, j]: spikes of sort unit i now in unit_ids[j]. Counted from each unit's own
        # spike list: one pass over the spikes, however many units there are.
        counts = np.zeros((sorting.n_units, len(unit_ids)), dtype=np.int64)
        for column, unit in enumerate(unit_ids.tolist()):
            counts[:, column] = np.bincount(sorting.spike_units[curation.spikes_of(unit)], minlength=sorting.n_units)
        unit_of_sort_unit = np.where(counts.any(axis=1), unit_ids[counts.argmax(axis=1)], -1)
        split_of_sort_unit = (counts > 0).sum(axis=1) > 1
    # Without `filter_index`, filter k is taken for sort unit k, which a larger dictionary may not have.
    known = (sort_units >= 0) & (sort_units < sorting.n_units)
    units[known] = unit_of_sort_unit[sort_units[known]]
    split[known] = split_of_sort_unit[sort_units[known]]
    return units, split


class _Cell:
    """One filter's place in the grid: its starting shape, current shape, title and highlight."""

    def __init__(self, viewbox: pg.ViewBox, rect: QRectF) -> None:
        self.rect = rect  # in view coordinates: x in taps, y in peak units
        self.highlight = QGraphicsRectItem(rect)
        self.highlight.setPen(pg.mkPen(None))
        self.highlight.setBrush(pg.mkBrush(SELECTED_BACKGROUND))
        self.highlight.setZValue(-1)
        self.highlight.setVisible(False)
        self.viewbox = viewbox
        self.initial: pg.PlotCurveItem | None = None  # made when there is a starting shape to draw
        self.current = pg.PlotCurveItem()
        self.title = pg.TextItem(anchor=(0.5, 0.0))
        self.style = None  # (unit, split, selected) it was last drawn with
        self.title.setPos(rect.center().x(), rect.top() + rect.height())
        for item in (self.highlight, self.current, self.title):
            viewbox.addItem(item)
        # Each item painted once into a pixmap that later paints copy: a repaint of 500 cells
        # drew every curve again (0.6 s), and a cell is painted anew only when it changes.
        for item in (self.current, self.title):
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.unit = -1  # the unit its spikes belong to now (most of them), -1: none
        self.split = False  # its spikes now lie in several units
        self.channels: np.ndarray | None = None  # (k,) channels drawn, on a long probe; None: all of them

    def initial_curve(self) -> pg.PlotCurveItem:
        """The curve of the shape the filter started from, made on first use (a sort opened from a
        folder has none: 500 empty curves cost building and painting all the same)."""
        if self.initial is None:
            self.initial = pg.PlotCurveItem(pen=INITIAL_FILTER_PEN)
            self.initial.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            self.viewbox.addItem(self.initial)
        return self.initial

    def remove_from(self, viewbox: pg.ViewBox) -> None:
        for item in (self.highlight, self.initial, self.current, self.title):
            if item is not None:
                viewbox.removeItem(item)


class FiltersView(View):
    name = "filters"
    title = "Filters"
    default_area = Qt.DockWidgetArea.RightDockWidgetArea

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        # One ViewBox holds every filter as a grid of curves: a ViewBox (with its
        # axes and menu) per filter costs tens of milliseconds each to build and paint.
        self.graphics = pg.GraphicsLayoutWidget()
        self.viewbox = self.graphics.addViewBox()
        self.viewbox.setMouseEnabled(x=False, y=False)
        self.viewbox.setMenuEnabled(False)
        self.viewbox.enableAutoRange(x=False, y=False)
        self.viewbox.sigTransformChanged.connect(self._fit_titles)  # resized, or the grid re-laid out
        self.graphics.scene().sigMouseClicked.connect(self._on_click)
        layout.addWidget(self.graphics)
        # The grid has no axes (one per filter would cost more than the filters): this line
        # gives the scales instead.
        self.scale_note = QLabel(objectName="filters_scale_note", wordWrap=True)
        layout.addWidget(self.scale_note)
        self.cells: list[_Cell] = []  # made so far, in filter order (a large grid fills in slices)
        self._rects: list[QRectF] = []  # every cell's place in the grid
        self._grid_shape = None  # (n_filters, n_taps, n_channels) the grid was laid out for
        self._grid_generation = 0  # slices of an older grid stop
        self._drawn_from = (None, None)  # (filters, initial filters) the cells' curves were drawn from
        self._cell_units = None  # filter_units_now of the whole grid, for the cells made later
        self._titles_shown: bool | None = None  # whether cells are wide enough for their titles (None: not decided)

    def _ensure_cells(self, shape: tuple[int, ...]) -> None:
        """Lay the grid out again only when the filters' shape changes (not per update)."""
        if self._grid_shape == shape:
            return
        for cell in self.cells:
            cell.remove_from(self.viewbox)
        self.cells, self._rects = [], []
        self._grid_shape = shape
        self._grid_generation += 1
        if not shape or shape[0] == 0:
            return
        n_filters, n_taps, n_channels = shape
        columns = max(math.ceil(math.sqrt(n_filters)), 1)
        width = n_taps * (1 + CELL_GAP)
        height = min(n_channels, MAX_NEIGHBOURS) * CHANNEL_SPACING + TITLE_SPACE
        for k in range(n_filters):
            row, column = divmod(k, columns)
            left, bottom = column * width, -(row + 1) * height
            self._rects.append(QRectF(left, bottom, n_taps, height))
        # The grid's own bounds: auto-range would also count the titles, whose size is in pixels.
        n_rows = math.ceil(n_filters / columns)
        self.viewbox.setRange(QRectF(0, -n_rows * height, columns * width - CELL_GAP * n_taps, n_rows * height), padding=0.02)
        self._titles_shown = None  # decided for the new cells by _fit_titles
        if n_filters <= CELLS_AT_ONCE:
            self.cells = [_Cell(self.viewbox, rect) for rect in self._rects]
        else:
            QTimer.singleShot(0, lambda generation=self._grid_generation: self._add_slice(generation))

    def _fit_titles(self, *_args) -> None:
        """Show the cells' titles only where a cell is wide enough on screen for one (TITLE_MIN_PX)."""
        if not self._rects:
            return
        pixel_width = self.viewbox.viewPixelSize()[0]  # view units per pixel along x
        shown = pixel_width > 0 and self._rects[0].width() / pixel_width >= TITLE_MIN_PX
        if shown != self._titles_shown:
            self._titles_shown = shown
            for cell in self.cells:
                cell.title.setVisible(shown)

    def _add_slice(self, generation: int) -> None:
        """Make and draw the next cells of a large grid, for at most SLICE_S; then let the GUI do the rest of its work."""
        if sip.isdeleted(self) or generation != self._grid_generation or len(self.cells) >= len(self._rects):
            return  # the window closed meanwhile, or the grid was laid out anew, or it is complete
        first, started = len(self.cells), time.perf_counter()
        while len(self.cells) < len(self._rects) and time.perf_counter() - started < SLICE_S:
            self.cells.append(_Cell(self.viewbox, self._rects[len(self.cells)]))
        self._draw_cells(first, len(self.cells), relabel=False)
        if len(self.cells) < len(self._rects):
            QTimer.singleShot(0, lambda: self._add_slice(generation))

    # ---- what to draw ---------------------------------------------------------------------
    def refresh(self) -> None:
        session = self.session
        # Without a trained model (a sort opened from a phy folder), the units' templates.
        filters = session.filters if session.filters is not None else getattr(session.sorting, "templates", None)
        if filters is None:
            self._ensure_cells(())
            self.scale_note.setText("")
            return
        self._drawn_from = (filters, session.initial_filters)
        self._ensure_cells(filters.shape)
        self.scale_note.setText(self._describe_scales(filters.shape, is_model=session.filters is not None))
        self._draw_cells(0, len(self.cells), relabel=True)

    def _draw_cells(self, first: int, stop: int, relabel: bool) -> None:
        """Draw cells first..stop-1 from `_drawn_from`; `relabel`: find which unit each filter belongs to now."""
        filters, initial_filters = self._drawn_from
        if filters is None:
            return
        initial = initial_filters if self.session.filters is not None else None
        if self._titles_shown is None:
            self._fit_titles()
        for cell in self.cells[first:stop]:
            cell.title.setVisible(bool(self._titles_shown))
        self._draw_current(filters, first, stop)
        for k in range(first, stop):
            cell = self.cells[k]
            if initial is not None and initial.shape == filters.shape:
                self._set_shape(cell, cell.initial_curve(), initial[k])
            elif cell.initial is not None:
                cell.initial.setData([], [])
        self._label_cells(first, stop, relabel)

    def _describe_scales(self, shape: tuple[int, ...], is_model: bool) -> str:
        _n, n_taps, n_channels = shape
        source = self.session.recording or self.session.sorting
        rate = getattr(source, "sampling_rate", None)
        width = f"{1000.0 * n_taps / rate:.2g} ms ({n_taps} samples)" if rate else f"{n_taps} samples"
        if n_channels > MAX_NEIGHBOURS:
            channels = f"the {MAX_NEIGHBOURS} channels nearest its largest one, in channel order top to bottom"
        else:
            channels = f"channels 0–{n_channels - 1} top to bottom" if n_channels > 1 else "one channel"
        what = "the model's filters (unit norm)" if is_model else "the units' templates"
        return f"Each cell: {width} wide, {channels}; {what}, each scaled to its own peak."

    def _draw_current(self, filters: np.ndarray, first: int = 0, stop: int | None = None) -> None:
        positions = self._channel_positions(filters.shape[2])
        stop = len(self.cells) if stop is None else stop
        for cell, shape in zip(self.cells[first:stop], filters[first:stop]):
            if filters.shape[2] > MAX_NEIGHBOURS:
                # A cell of 384 stacked channels is 384 flat lines and costs a second to paint; the
                # shape lives on the channels near its largest one (DESIGN.md, at probe scale).
                cell.channels = np.sort(neighbourhood(positions, main_channel(shape)))
            else:
                cell.channels = None
            self._set_shape(cell, cell.current, shape)

    def _channel_positions(self, n_channels: int) -> np.ndarray:
        """(n_channels, 2) µm of the recording's (or sort's) channels; a straight line when unknown."""
        for source in (self.session.recording, self.session.sorting):
            positions = getattr(source, "channel_positions", None)
            if positions is not None and len(positions) == n_channels:
                return np.asarray(positions, dtype=np.float64)
        return np.column_stack([np.zeros(n_channels), np.arange(n_channels, dtype=np.float64)])

    def _set_shape(self, cell: _Cell, curve, shape: np.ndarray) -> None:
        """shape: (n_taps, n_channels), scaled to its own peak, the cell's channels (channel order) top to bottom."""
        if cell.channels is not None:
            shape = shape[:, cell.channels]
        peak = float(np.abs(shape).max()) or 1.0
        top_baseline = cell.rect.top() + cell.rect.height() - TITLE_SPACE - CHANNEL_SPACING / 2
        offsets = top_baseline - np.arange(shape.shape[1]) * CHANNEL_SPACING
        taps, values = np.arange(shape.shape[0], dtype=float), shape / peak
        if len(self._rects) > ENVELOPE_ABOVE_CELLS:
            taps, values = minmax_envelope(values, CELL_POINTS)
        xs, ys, connect = stack_channels(cell.rect.left() + taps, values, offsets)
        curve.setData(xs, ys, connect=connect, skipFiniteCheck=True)

    def _label_cells(self, first: int = 0, stop: int | None = None, relabel: bool = True) -> None:
        if relabel or self._cell_units is None:
            self._cell_units = filter_units_now(self.session, len(self._rects))
        units, split = self._cell_units
        stop = len(self.cells) if stop is None else stop
        for cell, unit, is_split in zip(self.cells[first:stop], units[first:stop].tolist(), split[first:stop].tolist()):
            cell.unit, cell.split = unit, is_split
        self._style_cells(first, stop)

    def _style_cells(self, first: int = 0, stop: int | None = None) -> None:
        selected = set(self.session.selected_units)
        stop = len(self.cells) if stop is None else stop
        for k, cell in enumerate(self.cells[first:stop], start=first):
            is_selected = cell.unit in selected
            style = (cell.unit, cell.split, is_selected)
            if cell.style == style:
                # Unchanged: restyling would repaint its curve, and at 384 channels × hundreds of
                # filters repainting every cell was most of a selection's time.
                continue
            renamed = cell.style is None or cell.style[:2] != style[:2]
            cell.style = style
            colour = unit_color(cell.unit) if cell.unit >= 0 else NEUTRAL
            cell.current.setPen(pg.mkPen(colour, width=3 if is_selected else 1.5))
            if renamed:
                # The title says which unit, not whether it is selected (the background and the
                # bold curve do): a title set anew lays itself out and the grid painted twice a click.
                if cell.unit < 0:
                    name = f"filter {k} (unused)"
                else:
                    name = f"unit {cell.unit} (split)" if cell.split else f"unit {cell.unit}"
                cell.title.setHtml(f'<span style="color:{colour.name()}">{name}</span>')
            cell.highlight.setVisible(is_selected)

    # ---- selection by click -------------------------------------------------------------------
    def _on_click(self, event) -> None:
        position = self.viewbox.mapSceneToView(event.scenePos())
        for cell in self.cells:
            if cell.unit >= 0 and cell.rect.contains(position):
                self._select(cell.unit, add=bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier))
                return

    def _select(self, unit: int, add: bool) -> None:
        selection = list(self.session.selected_units)
        if add:
            selection = [u for u in selection if u != unit] if unit in selection else selection + [unit]
        else:
            selection = [unit]
        self.session.select_units(selection)

    # ---- session events -----------------------------------------------------------------------
    def on_recording_changed(self) -> None:
        self.refresh()

    def on_trainer_changed(self) -> None:
        self.refresh()

    def on_training_snapshot(self, snapshot) -> None:
        if snapshot.filters.shape != self._grid_shape:
            self.refresh()
            return
        self._drawn_from = (snapshot.filters, self._drawn_from[1])  # what cells still to be made draw
        self._draw_current(snapshot.filters)

    def on_sorting_changed(self) -> None:
        session = self.session
        filters = session.filters if session.filters is not None else getattr(session.sorting, "templates", None)
        drawn, drawn_initial = self._drawn_from
        if filters is not None and drawn is filters and drawn_initial is session.initial_filters and self.cells:
            # The same shapes under a new Units table (metrics arriving): only the labels may change.
            # Drawing 500 cells again took 0.2-1.5 s of the GUI thread.
            self._label_cells()
            return
        self.refresh()

    def on_curation_changed(self, _record) -> None:
        self._label_cells()

    def on_selection_changed(self, _unit_ids) -> None:
        self._style_cells()

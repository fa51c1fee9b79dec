"""Units: a sortable, filterable, multi-select table of the sorted units and their quality numbers.

A QAbstractTableModel over the session's UnitTable, behind a
QSortFilterProxyModel that sorts on the raw numbers (not the formatted text)
and keeps the rows the filter box's text allows (app.unit_filter). Space and
Shift+Space step through the rows in this order, filtered ones left out.
Selection by keyboard reaches the rest of the app after a short debounce, as in
phy, so holding an arrow key does not redraw every view for every row passed; a
mouse click is published at once (rows then passed in a drag are debounced).
"""

from __future__ import annotations

import math

import numpy as np
from PyQt6.QtCore import QAbstractTableModel, QItemSelection, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QLineEdit, QStyle, QTableView, QVBoxLayout

from app.palette import unit_color
from app.state import UnitTable
from app.unit_filter import UnitFilterError, unit_filter_mask
from app.views.base import View

SELECTION_DEBOUNCE_MS = 80
FILTER_DEBOUNCE_MS = 150  # typing a filter re-filters once the keys pause
FILTER_HINT = "Filter: good, snr > 5, depth < 500, a unit id, a word of a label…"
# Units on a second header line: the columns are then as narrow as their numbers, and the
# whole table fits the dock without scrolling sideways.
PEAK_TO_PEAK_HEADER = "Ptp\n(µV)"
# The header's unit, shortened, for a sort whose templates are not in µV (app.state.SignalUnits.templates).
SHORT_UNITS = {"µV": "µV", "raw units": "raw", "template units": "tmpl."}
SORT_ROLE = Qt.ItemDataRole.UserRole
# Shown on demand (right-click the header): with them all, the table no longer fits its dock.
HIDDEN_AT_FIRST = ("presence_ratio", "rp_contamination", "amplitude_cutoff", "l_ratio")

# (header, UnitTable attribute, format of the shown text, header tooltip). Label comes right after
# Unit: it is what curation is about, and stays in view however many number columns follow.
COLUMNS = (
    ("Unit", "unit_ids", "{:d}", "Cluster id (never reused: a merge or split makes new ids)"),
    ("Label", "labels", "{}", "good / mua / noise (Alt+G, Alt+M, Alt+N); empty: unsorted"),
    ("Sugg.", "suggested_labels", "{}", "The label the rules suggest (Curation > Suggested Label Rules); "
                                        "Alt+A accepts it; the cell's tooltip names the rules a unit breaks"),
    ("Spikes", "n_spikes", "{:d}", "Number of spikes"),
    ("Rate\n(Hz)", "firing_rate", "{:.2f}", "Spikes per second over the recording"),
    (
        PEAK_TO_PEAK_HEADER,
        "peak_amplitude",
        "{:.0f}",
        "Peak-to-peak of the unit's template on its main channel, in µV "
        "(the ptp_uv column of cluster_info.tsv)",
    ),
    ("SNR", "snr", "{:.1f}", "Template peak on its main channel / that channel's noise σ"),
    ("Depth\n(µm)", "depth", "{:.0f}", "Position of the unit along the probe (y, µm): the centre of its "
                                       "template's peak-to-peak over the channels near its main one"),
    ("ISI\nviol.", "isi_violation_ratio", "{:.2f}", "Refractory-period violations, as a ratio (Hill et al.)"),
    ("Pres.", "presence_ratio", "{:.2f}", "Presence ratio: fraction of the recording's bins in which the unit fires"),
    ("RP\ncont.", "rp_contamination", "{:.2f}", "Refractory-period contamination (SpikeInterface's rp_contamination)"),
    ("Amp.\ncutoff", "amplitude_cutoff", "{:.2f}", "Estimated fraction of spikes missed below the detection threshold"),
    ("L-ratio", "l_ratio", "{:.3f}", "Isolation in feature space (Schmitzer-Torbert et al.); lower is better"),
)


RESIZE_PRECISION_ROWS = 100  # rows a column's width is measured on (Qt's default: 1000)
MIN_ROWS_IN_VIEW = 4  # the table never shrinks below this many rows in view


_ROLES_ANSWERED = frozenset({
    Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.DecorationRole,
    Qt.ItemDataRole.TextAlignmentRole, SORT_ROLE,
})


class UnitTableModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table: UnitTable | None = None
        self.template_unit = "µV"  # what the peak-to-peak column is in

    def set_table(self, table: UnitTable | None, template_unit: str = "µV") -> None:
        self.beginResetModel()
        self.table = table
        self.template_unit = template_unit
        self.endResetModel()

    def unit_at(self, row: int) -> int:
        return int(self.table.unit_ids[row])

    def row_of(self, unit: int) -> int | None:
        rows = np.flatnonzero(self.table.unit_ids == unit) if self.table is not None else []
        return int(rows[0]) if len(rows) else None

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() or self.table is None else len(self.table.unit_ids)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        header, attribute, _format, tooltip = COLUMNS[section]
        if attribute == "peak_amplitude" and self.template_unit != "µV":
            # Another tool's templates: named as what they are, not as µV they are not.
            header = f"Ptp\n({SHORT_UNITS.get(self.template_unit, self.template_unit)})"
            tooltip = (f"Peak-to-peak of the unit's template on its main channel, in the folder's {self.template_unit} "
                       "(its params.py gives no gain to µV; Kilosort's templates are scaled per spike by its amplitudes)")
        if role == Qt.ItemDataRole.DisplayRole:
            return header
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        # The view asks each shown cell for a dozen roles on every repaint (a selection repaints the
        # table): the ones this model has nothing for are answered before looking anything up.
        if role not in _ROLES_ANSWERED or not index.isValid() or self.table is None:
            return None
        _header, attribute, text_format, _tooltip = COLUMNS[index.column()]
        column = getattr(self.table, attribute)
        if column is None:  # a number this table was built without
            return "–" if role == Qt.ItemDataRole.DisplayRole else None
        value = column[index.row()]
        if role == Qt.ItemDataRole.ToolTipRole and attribute == "suggested_labels" and self.table.suggested_reasons:
            return self.table.suggested_reasons[index.row()] or "passes every rule"
        if role == SORT_ROLE:
            return value if isinstance(value, str) else float(value)
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, str):
                return value
            if isinstance(value, (float, np.floating)) and math.isnan(value):
                return "–"
            return text_format.format(int(value) if "d" in text_format else float(value))
        if role == Qt.ItemDataRole.DecorationRole and attribute == "unit_ids":
            return unit_color(int(value))
        if role == Qt.ItemDataRole.TextAlignmentRole and not isinstance(value, str):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class FilteredUnits(QSortFilterProxyModel):
    """The proxy that sorts the table, keeping only the rows of `mask` (None: all)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.mask: np.ndarray | None = None  # (n_units,) bool over the source rows

    def set_mask(self, mask: np.ndarray | None) -> None:
        self.mask = mask
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, _source_parent) -> bool:
        return self.mask is None or source_row >= len(self.mask) or bool(self.mask[source_row])


class UnitsView(View):
    name = "units"
    title = "Units"
    default_area = Qt.DockWidgetArea.RightDockWidgetArea

    def _choose_columns(self, position) -> None:
        """The header's menu: every column, ticked when shown; a click shows or hides it."""
        from PyQt6.QtWidgets import QMenu

        menu = QMenu(self)
        for column, (title, _attribute, _format, tooltip) in enumerate(COLUMNS):
            action = menu.addAction(title.replace("\n", " "))
            action.setCheckable(True)
            action.setChecked(not self.table_view.isColumnHidden(column))
            action.setToolTip(tooltip)
            action.toggled.connect(lambda shown, column=column: self.table_view.setColumnHidden(column, not shown))
        menu.exec(self.table_view.horizontalHeader().mapToGlobal(position))

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.model = UnitTableModel(self)
        self.proxy = FilteredUnits(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table_view = QTableView()
        self.table_view.setModel(self.proxy)
        self.table_view.setSortingEnabled(True)
        self.table_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table_view.verticalHeader().hide()
        # Compact rows, as phy's table has them: more units in view.
        self.table_view.verticalHeader().setDefaultSectionSize(self.table_view.fontMetrics().height() + 6)
        self.table_view.setAlternatingRowColors(True)
        # Room for the header, MIN_ROWS_IN_VIEW rows and the sideways scroll bar the metric
        # columns bring, whatever the docks around it ask for.
        row = self.table_view.verticalHeader().defaultSectionSize()
        scroll_bar = self.table_view.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.table_view.setMinimumHeight(int(row * (MIN_ROWS_IN_VIEW + 1.5) + scroll_bar + 4))
        self.table_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Columns sized to the rows in view and a sample of the others, not to every row: with 500
        # units each layout of the window asked the model for every cell (1-2 s while a folder opened).
        self.table_view.horizontalHeader().setResizeContentsPrecision(RESIZE_PRECISION_ROWS)
        self.table_view.horizontalHeader().setStretchLastSection(True)
        header = self.table_view.horizontalHeader()
        header.setMinimumSectionSize(24)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._choose_columns)
        for column, (_header, attribute, _format, _tooltip) in enumerate(COLUMNS):
            self.table_view.setColumnHidden(column, attribute in HIDDEN_AT_FIRST)
        self.table_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table_view.selectionModel().selectionChanged.connect(lambda *_: self._selection_timer.start())
        # (A signal, not an event filter on the viewport: a filter's Python object crashed the
        # garbage collector's teardown of a window, test_app_dock_visibility.)
        self.table_view.pressed.connect(self._on_row_pressed)
        self.empty_label = QLabel("Units appear here when training ends and the recording is sorted.", wordWrap=True)
        self.filter_box = QLineEdit(placeholderText=FILTER_HINT, clearButtonEnabled=True)
        self.filter_box.setObjectName("unit_filter")
        self.filter_box.setToolTip(
            "Rows must pass every term: COLUMN OP NUMBER (snr, depth, rate, spikes, ptp, isi, presence, rp, "
            "cutoff, lratio, unit; < <= > >= = !=), a label (good, mua, noise, unsorted), a unit id, "
            "or a word found in the label or suggested label"
        )
        self.filter_message = QLabel(wordWrap=True)
        self.filter_message.setObjectName("unit_filter_message")
        self.filter_message.hide()
        self._filter_timer = QTimer(self, singleShot=True, interval=FILTER_DEBOUNCE_MS)
        self._filter_timer.timeout.connect(self.apply_filter)
        self.filter_box.textChanged.connect(lambda _text: self._filter_timer.start())
        layout.addWidget(self.empty_label)
        layout.addWidget(self.filter_box)
        layout.addWidget(self.filter_message)
        layout.addWidget(self.table_view, 1)
        self._selection_timer = QTimer(self, singleShot=True, interval=SELECTION_DEBOUNCE_MS)
        self._selection_timer.timeout.connect(self._publish_selection)

    def _on_row_pressed(self, _index) -> None:
        # Emitted once the press has changed the selection: a click is one selection, not a stream
        # of them, so waiting out the debounce would only delay every view.
        if self._selection_timer.isActive():
            self._selection_timer.stop()
            self._publish_selection()

    def selected_units_in_table(self) -> list[int]:
        rows = self.table_view.selectionModel().selectedRows()
        return [self.model.unit_at(self.proxy.mapToSource(index).row()) for index in rows]

    def _publish_selection(self) -> None:
        self.session.select_units(self.selected_units_in_table())

    def _show_selection(self, unit_ids) -> None:
        """Select the rows of `unit_ids` without echoing that back to the session."""
        selection = QItemSelection()
        for unit in unit_ids:
            row = self.model.row_of(unit)
            if row is not None:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                selection.select(index, index)
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self.table_view.selectionModel().select(selection, flags)
        # The selection came from the session: do not send it back.
        self._selection_timer.stop()
        if unit_ids:
            first = self.model.row_of(unit_ids[0])
            if first is not None:
                self.table_view.scrollTo(self.proxy.mapFromSource(self.model.index(first, 0)))

    def apply_filter(self) -> None:
        """Keep the rows the filter box's text allows; an unreadable text keeps them all and says why."""
        self._filter_timer.stop()
        table, text = self.model.table, self.filter_box.text()
        mask, problem = None, ""
        if table is not None and text.strip():
            try:
                mask = unit_filter_mask(table, text)
            except UnitFilterError as error:
                problem = str(error)[:1].upper() + str(error)[1:]
        self.proxy.set_mask(mask)
        if problem:
            self.filter_message.setText(problem)
        elif mask is not None:
            self.filter_message.setText(f"{int(mask.sum())} of {len(mask)} units shown")
        self.filter_message.setVisible(bool(problem) or mask is not None)
        self.filter_box.setStyleSheet("QLineEdit { border: 1px solid #d05050; }" if problem else "")

    def refresh(self) -> None:
        # A click not yet published (the selection is debounced) must survive a table that
        # refreshes under it, e.g. when background metrics arrive: else the click is lost.
        pending = self.selected_units_in_table() if self._selection_timer.isActive() else None
        self.model.set_table(self.session.unit_table, self.session.signal_units.templates)
        self.empty_label.setVisible(self.session.unit_table is None)
        self.apply_filter()
        if pending is None:
            self._show_selection(self.session.selected_units)
        else:
            self._show_selection(pending)
            self._publish_selection()

    def on_sorting_changed(self) -> None:
        self.refresh()

    def on_recording_changed(self) -> None:
        self.refresh()

    def on_selection_changed(self, unit_ids) -> None:
        if set(self.selected_units_in_table()) != set(unit_ids):
            self._show_selection(unit_ids)

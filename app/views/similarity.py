"""Similarity: the units most likely to be the same neuron as the selected one, with the score and why.

Reads the session's merge suggestions (engine.curation.suggestions, computed
in a worker by app.curation_aids and kept current after every action).
Suggestions the person rejected (journaled in the curation) are not shown.
Clicking a row selects the unit with that partner, as phy's similarity
view does, so G merges them; Shift+G merges the selected unit with its top
suggestion and Shift+X rejects that suggestion, without leaving the unit.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QAbstractItemView, QHeaderView, QLabel, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout,
)

from app.palette import unit_color
from app.views.base import View

MAX_ROWS = 20
HEADERS = ("Unit", "Score", "Templates", "Why")
KEYS_HINT = "Shift+G merges with the top row, Shift+X rejects it; click a row, then G, to merge that one."


class SimilarityView(View):
    name = "similarity"
    title = "Similarity"
    default_area = Qt.DockWidgetArea.RightDockWidgetArea
    split_from = ("units", Qt.Orientation.Vertical)

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.header = QLabel(wordWrap=True)
        # Its text changes as suggestions arrive: it must not resize the dock (the layout jumped).
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)  # one line per partner; the full reason is in the tooltip
        header = self.table.horizontalHeader()
        for column in range(len(HEADERS) - 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.cellClicked.connect(self._select_pair)
        self.hint = QLabel(KEYS_HINT, wordWrap=True)
        self.hint.setStyleSheet("color: gray")
        layout.addWidget(self.header)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.hint)
        self.anchor: int | None = None  # the unit whose partners are listed
        self.rows: list = []  # engine.curation.suggestions.PairEvidence shown, best first

    def refresh(self) -> None:
        session = self.session
        suggestions, curation = session.merge_suggestions, session.curation
        units = session.selected_units
        # The anchor stays while the person picks one of its partners (the selection then holds both).
        if self.anchor not in units:
            self.anchor = units[0] if units else None
        self.rows = []
        if curation is None:
            self.header.setText("Similar units are listed here once a sort is open for curation.")
        elif suggestions is None:
            self.header.setText("Computing merge suggestions… (progress in the status bar)")
        elif self.anchor is None:
            best = suggestions.ranked(curation.rejected_pairs)[:1]
            top = f" The best pair now: {best[0].unit_a} and {best[0].unit_b} ({best[0].score:.2f})." if best else ""
            self.header.setText("Select a unit to see the units most like it." + top)
        else:
            self.rows = suggestions.for_unit(self.anchor, curation.rejected_pairs)[:MAX_ROWS]
            count = f"{len(self.rows)} candidates" if self.rows else "no candidate left"
            self.header.setText(f"Unit {self.anchor}: {count}, most likely the same neuron first")
        self._fill()

    def _fill(self) -> None:
        self.table.setRowCount(len(self.rows))
        for row, evidence in enumerate(self.rows):
            partner = evidence.partner_of(self.anchor)
            unit_item = QTableWidgetItem(str(partner))
            unit_item.setData(Qt.ItemDataRole.DecorationRole, unit_color(partner))
            cells = (unit_item, QTableWidgetItem(f"{evidence.score:.2f}"),
                     QTableWidgetItem(f"{evidence.template_similarity:.2f}"), QTableWidgetItem(evidence.reason))
            cells[-1].setToolTip(evidence.reason)
            for column, item in enumerate(cells):
                self.table.setItem(row, column, item)

    def _select_pair(self, row: int, _column: int) -> None:
        if self.anchor is not None and 0 <= row < len(self.rows):
            self.session.select_units((self.anchor, self.rows[row].partner_of(self.anchor)))

    def on_selection_changed(self, _unit_ids) -> None:
        self.refresh()

    def on_suggestions_changed(self) -> None:
        self.refresh()

    def on_curation_changed(self, _record) -> None:
        self.refresh()

    def on_recording_changed(self) -> None:
        self.refresh()

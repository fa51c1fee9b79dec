"""What the curation views (embedding, waveforms, correlograms, ISI, amplitudes) share.

Each draws the session's curation: its current units, the selected ones. A
single action emits several session signals in a row (curation, sorting,
selection changed); `UnitView` redraws once for the whole burst, on the next
turn of the event loop. When a view has nothing to draw, or lacks the data
it needs, it says why in a message centred where the plot would be.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QLabel, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget

from app.views.base import View

NO_SORTING_MESSAGE = "Nothing sorted yet: train and sort the recording, or open a sort (a phy folder)."
NO_SELECTION_MESSAGE = "Select one or more units (Units table, or Space for the next one)."
NO_RAW_DATA_MESSAGE = (
    "No raw data: this sort was opened without the recording it came from "
    "(params.py's dat_path does not lead to it), so {consequence}."
)


class UnitView(View):
    """A View with a content widget that a centred message can replace, and coalesced redraws."""

    def set_content(self, content: QWidget) -> None:
        """Call once from build(): `content` fills the view whenever no message is shown."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.message = QLabel(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self.message.setObjectName("view_message")
        self.message.setMargin(16)
        self._pages = QStackedWidget()
        # What a view shows (new data, a message) never pushes the docks around: the
        # layout, not the content, sizes a view (the docks jumped when data arrived).
        self._pages.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._pages.addWidget(content)
        self._pages.addWidget(self.message)
        layout.addWidget(self._pages)
        self._redraw_pending = False

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self._pages.setCurrentWidget(self.message)

    def show_content(self) -> None:
        self._pages.setCurrentIndex(0)

    def refresh(self) -> None:
        self._redraw_pending = False
        self.redraw()

    def redraw(self) -> None:
        """Draw from the session's current state."""
        raise NotImplementedError

    def schedule_redraw(self) -> None:
        # A posted call, not a zero-interval QTimer object: measured on a 384-channel folder,
        # such a timer stayed due (remaining 0 ms) for seconds without firing, and the views
        # kept saying "Nothing sorted yet" beside a sorted, curated folder.
        if not self._redraw_pending:
            self._redraw_pending = True
            QTimer.singleShot(0, self._redraw_if_pending)

    def _redraw_if_pending(self) -> None:
        if self._redraw_pending:
            self._redraw_pending = False
            self._redraw_if_shown()

    def _redraw_if_shown(self) -> None:
        if self.is_shown():
            self.redraw()
        else:
            self._stale = True

    def on_recording_changed(self) -> None:
        self.schedule_redraw()

    def on_sorting_changed(self) -> None:
        self.schedule_redraw()

    def on_curation_changed(self, _record) -> None:
        self.schedule_redraw()

    def on_selection_changed(self, _unit_ids) -> None:
        # A selection alone redraws now, so that Qt paints the window once with every view's new
        # unit (posted, the window was painted before these redraws and again after: 30-60 ms of a
        # click at 384 channels). Within a burst (a curation action: curation, sorting, then
        # selection changed) the redraw already posted does it once for all.
        if self._redraw_pending:
            return
        self._redraw_if_shown()

    # ---- what to draw ----------------------------------------------------------------------
    def selected_unit_spikes(self, limit: int) -> list[tuple[int, np.ndarray]]:
        """(unit, its spike indices) for the first `limit` selected units that exist now."""
        curation = self.session.curation
        if curation is None:
            return []
        alive = set(curation.unit_ids.tolist())
        units = [u for u in self.session.selected_units if u in alive][:limit]
        return [(unit, curation.spikes_of(unit)) for unit in units]

    def missing_content_message(self, without_raw_data: str | None = None) -> str | None:
        """Why there is nothing to draw (no sort, no curation yet, no raw data, no unit selected), or None.

        `without_raw_data`: for a view that needs the raw data, what its absence
        means ("there are no waveforms to show").
        """
        if self.session.sorting is None:
            return NO_SORTING_MESSAGE
        if self.session.curation is None:
            return "Opening the curation…"
        if without_raw_data is not None and self.session.recording is None:
            return NO_RAW_DATA_MESSAGE.format(consequence=without_raw_data)
        alive = set(self.session.curation.unit_ids.tolist())
        if not any(unit in alive for unit in self.session.selected_units):
            return NO_SELECTION_MESSAGE
        return None


def fit_range(plot, x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None) -> None:
    """Show the data's bounds now (with pyqtgraph's usual padding) on the axes given.

    enableAutoRange() fits them on the next paint, which moves the axes and so paints the whole
    plot a second time: each selection painted Amplitudes, Firing rate and ISI twice.
    """

    def widened(bounds):
        low, high = float(bounds[0]), float(bounds[1])
        return (low - 0.5, high + 0.5) if not high > low else (low, high)

    plot.setRange(xRange=None if x_range is None else widened(x_range),
                  yRange=None if y_range is None else widened(y_range))
    apply_range_now(plot)


def apply_range_now(plot) -> None:
    """Move the plot's items to its new range now rather than as Qt paints it.

    pyqtgraph moves them (the view's transform, the axes, text items) at the start of a paint,
    and what that moves asks for another paint: each view whose range changed was painted twice
    per selection (2-10 ms each on shared cores).
    """
    plot.getViewBox().prepareForPaint()

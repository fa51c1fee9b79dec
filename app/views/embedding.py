"""Embedding: a t-SNE map of up to ~30,000 spikes, coloured by unit, to see which units separate.

The map is computed in a worker (engine.curation.embedding) when a new sort appears
and this view is on screen: the PCA of the spikes' features is drawn at once,
then the t-SNE layout as it settles (at most 10 updates a second). Curation
only recolours the points: the map belongs to the sort, not to its units.
Selected units are drawn on top, the others dimmed. Drag a lasso around
points (left button) to select spikes, then press K to split them off; the
lasso takes the selected units' spikes (every unit's, with none selected).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.lasso import LassoViewBox, SpikeSelection, points_inside
from app.palette import unit_color
from app.unit_views import NO_RAW_DATA_MESSAGE, NO_SORTING_MESSAGE, UnitView
from engine.curation.display_snippets import for_views
from engine.curation.embedding import MAX_EMBEDDED_SPIKES, embed_spikes, extend_selection
from engine.curation.features import Cancelled

MIN_UPDATE_INTERVAL_S = 0.1  # layouts sent to the GUI: at most 10 a second
POINT_SIZE = 3
SELECTED_POINT_SIZE = 5
DIMMED_ALPHA = 70  # unselected units while others are selected
PLAIN_ALPHA = 170  # every unit when none is selected
CAPTION_LINES = 2


class _LayoutRelay(QObject):
    """Carries layouts from the worker to the GUI thread (a queued signal of a GUI-thread object)."""

    layout_ready = pyqtSignal(object, object)  # the sorting it is of, engine.curation.embedding.SpikeEmbedding


class EmbeddingView(UnitView):
    name = "embedding"
    title = "Embedding (t-SNE)"
    default_area = Qt.DockWidgetArea.LeftDockWidgetArea

    def build(self) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel(wordWrap=True)
        self.caption.setObjectName("embedding_caption")
        # The caption grows from "PCA of …" to a sentence of advice when the t-SNE ends. Wrapped
        # into a fixed two lines and never asking for width, it cannot make the docks jump.
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.caption.setFixedHeight(CAPTION_LINES * self.caption.fontMetrics().lineSpacing() + 4)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.lasso = LassoViewBox()
        self.lasso.lasso_drawn.connect(self._on_lasso)
        self.plot_widget = pg.PlotWidget(viewBox=self.lasso)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.hideButtons()
        layout.addWidget(self.caption)
        layout.addWidget(self.plot_widget, 1)
        self.set_content(content)

        self.embedding = None  # engine.curation.embedding.SpikeEmbedding of `embedded_sorting`, latest layout
        self.embedded_sorting = None  # the sorting the map (being) computed is of
        self.unit_rows: dict[int, np.ndarray] = {}  # unit -> rows of the embedding that are its spikes
        self.scatters: dict[int, pg.ScatterPlotItem] = {}  # unit -> its points
        self._styled_selection: set[int] | None = None  # the selection the points were last styled for
        # (curation, its unit ids) when `unit_rows` was made: ids are never reused, so
        # the same ids mean the same spike sets and the grouping still holds.
        self._grouped_for = (None, np.zeros(0, dtype=np.int64))
        self._job = None  # app.jobs.Job computing the map
        self._failure: str | None = None  # why the map of `embedded_sorting` could not be computed
        self._relay = _LayoutRelay(self)
        self._relay.layout_ready.connect(self._on_layout)

    # ---- computing the map -------------------------------------------------------------------
    def redraw(self) -> None:
        session = self.session
        if session.sorting is None:
            self._forget_map()
            self.show_message(NO_SORTING_MESSAGE)
            return
        if session.recording is None:
            self._forget_map()
            self.show_message(NO_RAW_DATA_MESSAGE.format(consequence="the spikes' features cannot be read to map them"))
            return
        if self.embedded_sorting is not session.sorting:
            if session.curation is None:
                # The map waits for the curation: started with the sort, it took the cores the opening needed.
                self._forget_map()
                self.show_message("Opening the curation…")
                return
            self._start(session.sorting, for_views(session.recording))
        if self.embedding is None and self._failure is not None:
            self.show_message(self._failure)
            return
        if self.embedding is None or session.curation is None:
            waiting = "Reading the spikes' waveforms for the map…" if session.curation else "Opening the curation…"
            self.show_message(waiting)
            return
        self.show_content()
        self._draw_units()
        selection = session.selected_spikes
        if selection is None or selection.source != self.name:
            self.lasso.clear_lasso()  # it was drawn before an action (or while this view was hidden)

    def _start(self, sorting, recording) -> None:
        self._forget_map()
        self.embedded_sorting = sorting
        relay = self._relay
        n_jobs = max((os.cpu_count() or 2) - 1, 1)  # one core stays with the GUI

        def work(context):
            last_sent = -np.inf

            def send(embedding) -> None:
                nonlocal last_sent
                now = time.monotonic()
                if now - last_sent >= MIN_UPDATE_INTERVAL_S:
                    last_sent = now
                    relay.layout_ready.emit(sorting, embedding)

            try:
                return sorting, embed_spikes(
                    recording, sorting, max_spikes=MAX_EMBEDDED_SPIKES, n_jobs=n_jobs, progress=context.progress,
                    on_layout=send, should_stop=context.should_stop,
                )
            except Cancelled:
                return None

        self._job = self.engine.run_job(
            "Spike map (t-SNE)", work, self._on_finished, lambda error: self._on_failed(sorting, error),
            background=True,
        )

    def _forget_map(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.embedding = None
        self.embedded_sorting = None
        self._failure = None
        self.unit_rows = {}
        self.lasso.clear_lasso()

    def _on_finished(self, result) -> None:
        if result is not None:
            self._on_layout(*result)

    def _on_failed(self, sorting, error) -> None:
        if sorting is not self.embedded_sorting:
            return
        self._job = None
        self._failure = f"No map: {error.message}"
        self.schedule_redraw()

    def _on_layout(self, sorting, embedding) -> None:
        if sorting is not self.embedded_sorting:
            return  # a map of a sort that has since been replaced
        first = self.embedding is None
        self.embedding = embedding
        if embedding.tsne_fraction >= 1.0:
            self._job = None
        self.caption.setText(self._caption())
        if not self.is_shown():
            self._stale = True
        elif first or not self._grouping_is_current():
            self.redraw()
        else:
            self._move_points()

    def _caption(self) -> str:
        embedding = self.embedding
        n, total = len(embedding.spike_indices), self.embedded_sorting.n_spikes
        sample = f"{n:,} spikes" + (f" (a sample of {total:,})" if n < total else "")
        if embedding.tsne_fraction <= 0:
            return f"PCA of {sample}; t-SNE is on its way"
        if embedding.tsne_fraction < 1:
            return f"t-SNE of {sample}: {embedding.tsne_fraction:.0%}"
        return f"t-SNE of {sample}. Drag around points to select them, K to split them off."

    # ---- drawing --------------------------------------------------------------------------------
    def _grouping_is_current(self) -> bool:
        curation, unit_ids = self._grouped_for
        current = self.session.curation
        return bool(self.unit_rows) and curation is current and np.array_equal(unit_ids, current.unit_ids)

    def _draw_units(self) -> None:
        """Group the map's points by the curation's current units, then draw them."""
        curation = self.session.curation
        if not self._grouping_is_current():
            units_of_rows = curation.spike_clusters[self.embedding.spike_indices]  # (m,) unit of each point
            order = np.argsort(units_of_rows, kind="stable")
            units, starts = np.unique(units_of_rows[order], return_index=True)
            self.unit_rows = {int(u): rows for u, rows in zip(units, np.split(order, starts[1:]))}
            self._grouped_for = (curation, np.array(curation.unit_ids))
        for unit in set(self.scatters) - set(self.unit_rows):
            self.plot.removeItem(self.scatters.pop(unit))
        for unit in self.unit_rows:
            if unit not in self.scatters:
                self.scatters[unit] = pg.ScatterPlotItem(pen=None)
                self.plot.addItem(self.scatters[unit])
        self._style_points()
        self._move_points()

    def _style_points(self, only_changed: bool = False) -> None:
        """Each unit's points by whether it is selected. `only_changed`: restyle only the units whose
        state changed since the last time (one setBrush per unit of 500 was most of a click here)."""
        selected = set(self.session.selected_units)
        previous, self._styled_selection = self._styled_selection, selected
        units = self.scatters
        if only_changed and previous is not None and bool(previous) == bool(selected):
            # While something stays selected (or nothing), the others' alpha is unchanged.
            units = {unit: self.scatters[unit] for unit in previous ^ selected if unit in self.scatters}
        for unit, scatter in units.items():
            is_selected = unit in selected
            alpha = 255 if is_selected else (DIMMED_ALPHA if selected else PLAIN_ALPHA)
            scatter.setBrush(pg.mkBrush(unit_color(unit, alpha=alpha)))
            scatter.setSize(SELECTED_POINT_SIZE if is_selected else POINT_SIZE)
            scatter.setZValue(10 if is_selected else 0)

    def _move_points(self) -> None:
        layout = self.embedding.layout
        for unit, rows in self.unit_rows.items():
            self.scatters[unit].setData(pos=layout[rows])

    # ---- lasso ----------------------------------------------------------------------------------
    def _on_lasso(self, polygon: np.ndarray) -> None:
        embedding, curation = self.embedding, self.session.curation
        if embedding is None or curation is None or not self._grouping_is_current():
            self.lasso.clear_lasso()
            return
        selected = [u for u in self.session.selected_units if u in self.unit_rows]
        units = selected or list(self.unit_rows)
        rows = np.concatenate([self.unit_rows[u] for u in units])
        inside = np.zeros(len(embedding.spike_indices), dtype=bool)
        inside[rows[points_inside(polygon, embedding.layout[rows])]] = True
        units = [u for u in units if inside[self.unit_rows[u]].any()]
        spikes = embedding.spike_indices[inside]
        unit_spikes = {u: curation.spikes_of(u) for u in units}
        complete = None
        if sum(len(s) for s in unit_spikes.values()) > sum(len(self.unit_rows[u]) for u in units):
            recording, sorting = for_views(self.session.recording), self.session.sorting  # as the map was read

            def complete(progress, should_stop):
                return extend_selection(embedding, inside, unit_spikes, recording, sorting, progress, should_stop)

        self.session.select_spikes(SpikeSelection(spikes, tuple(units), self.name, complete))

    def on_spikes_selected(self, selection) -> None:
        if selection is None or selection.source != self.name:
            self.lasso.clear_lasso()

    def on_selection_changed(self, _unit_ids) -> None:
        if self.embedding is not None and self._grouping_is_current():
            self._style_points(only_changed=True)
        else:
            self.schedule_redraw()

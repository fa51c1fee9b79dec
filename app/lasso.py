"""Selecting spikes by drawing around them, in any scatter view.

`LassoViewBox` is a pyqtgraph ViewBox where a left-drag draws a closed
freehand polygon (the wheel still zooms, a middle-drag still pans). The view
that owns it turns the polygon into a `SpikeSelection` for the session; the
curation controller splits those spikes off when the person presses K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal

LASSO_PEN = pg.mkPen((255, 255, 255, 220), width=1.5, style=Qt.PenStyle.DashLine)
MAX_VERTICES = 400  # a long drag is thinned to this many corners: enough for any hand-drawn shape


@dataclass(frozen=True)
class SpikeSelection:
    spikes: np.ndarray  # (n,) int64 ascending indices of the spikes inside the lasso (of those the view showed)
    units: tuple[int, ...]  # the units whose spikes the lasso could take
    source: str  # name of the view it was drawn in
    # When the view showed only a sample of those units' spikes: the work, run
    # in a worker as complete(progress, should_stop), that returns every spike
    # of `units` the lasso selects. None when `spikes` is already all of them.
    complete: Callable[[Callable[[float], None], Callable[[], bool]], np.ndarray] | None = None


class LassoViewBox(pg.ViewBox):
    lasso_drawn = pyqtSignal(object)  # (n, 2) float64 polygon corners in data coordinates

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setMenuEnabled(False)
        self.polygon: np.ndarray | None = None  # the current lasso, closed implicitly
        self._outline = pg.PlotCurveItem(pen=LASSO_PEN)
        self._outline.setZValue(1e6)
        self.addItem(self._outline, ignoreBounds=True)
        self._stroke: list[tuple[float, float]] = []

    def mouseDragEvent(self, event, axis=None) -> None:
        if event.button() != Qt.MouseButton.LeftButton or axis is not None:
            super().mouseDragEvent(event, axis)
            return
        event.accept()
        if event.isStart():
            start = self.mapSceneToView(event.buttonDownScenePos())
            self._stroke = [(start.x(), start.y())]
        point = self.mapSceneToView(event.scenePos())
        self._stroke.append((point.x(), point.y()))
        if event.isFinish():
            self.set_polygon(np.array(self._stroke))
        else:
            self._draw(np.array(self._stroke), closed=False)

    def set_polygon(self, corners) -> None:
        """Make `corners` ((n, 2) data coordinates) the lasso, as if drawn; fewer than 3 clears it."""
        corners = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
        if len(corners) > MAX_VERTICES:
            corners = corners[np.linspace(0, len(corners) - 1, MAX_VERTICES).astype(np.int64)]
        if len(corners) < 3:
            self.clear_lasso()
            return
        self.polygon = corners
        self._draw(corners, closed=True)
        self.lasso_drawn.emit(corners)

    def clear_lasso(self) -> None:
        self.polygon = None
        self._stroke = []
        self._outline.setData([], [])

    def _draw(self, corners: np.ndarray, closed: bool) -> None:
        if closed:
            corners = np.vstack([corners, corners[:1]])
        self._outline.setData(corners[:, 0], corners[:, 1])


def points_inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n,) bool: which of `points` (n, 2) lie inside `polygon` (k, 2), by the even-odd rule."""
    points = np.asarray(points, dtype=np.float64)
    inside = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or polygon is None or len(polygon) < 3:
        return inside
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    candidates = np.flatnonzero(np.all((points >= low) & (points <= high), axis=1))
    x, y = points[candidates, 0], points[candidates, 1]
    crossings = np.zeros(len(candidates), dtype=bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        # A ray from each point towards +x crosses this edge when the edge spans the
        # point's y and meets that y to the right of the point.
        spans = (y1 > y) != (y2 > y)
        if not spans.any():
            continue
        x_at = x1 + (y[spans] - y1) * (x2 - x1) / (y2 - y1)
        crossings[np.flatnonzero(spans)[x[spans] < x_at]] ^= True
    inside[candidates] = crossings
    return inside

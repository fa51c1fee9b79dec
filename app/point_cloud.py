"""Many points of one colour, drawn in one QPainter call: the Amplitudes view's spikes.

pyqtgraph's ScatterPlotItem looks up each point's symbol in its atlas in Python
(a list of one tuple per point), 8-16 ms of the GUI thread for a unit of 4,000
spikes, every time a unit is selected. Here the points are copied into a
QPolygonF with numpy and painted by one-pixel QPainter.drawPoints calls, a square
`size` pixels wide for each point, whatever the zoom.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from PyQt6.QtCore import QRectF
from PyQt6.QtGui import QColor, QPainter, QPen


class PointCloudItem(pg.GraphicsObject):
    def __init__(self, size: float, colour: QColor) -> None:
        super().__init__()
        self._pixel_pen = QPen(colour, 1.0)
        self._pixel_pen.setCosmetic(True)
        self._size = float(max(round(size), 1))  # pixels a side
        self._x = self._y = np.zeros(0)
        self._polygon = fn.create_qpolygonf(0)
        self._bounds = QRectF()

    def setData(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        self._x, self._y = x, y
        polygon = fn.create_qpolygonf(int(finite.sum()))
        points = fn.ndarray_from_qpolygonf(polygon)  # (n, 2) float64 view of the polygon's memory
        points[:, 0], points[:, 1] = x[finite], y[finite]
        self.prepareGeometryChange()
        self._polygon = polygon
        if len(points):
            low, high = points.min(axis=0), points.max(axis=0)
            self._bounds = QRectF(low[0], low[1], high[0] - low[0], high[1] - low[1])
        else:
            self._bounds = QRectF()
        self.informViewBoundsChanged()
        self.update()

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x, self._y

    # ---- what the ViewBox and the scene ask ------------------------------------------------------
    def dataBounds(self, axis: int, frac: float = 1.0, orthoRange=None):
        if self._bounds.isNull():
            return None, None
        if axis == 0:
            return self._bounds.left(), self._bounds.right()
        return self._bounds.top(), self._bounds.bottom()

    def pixelPadding(self) -> float:
        return self._size / 2

    def boundingRect(self) -> QRectF:
        if self._bounds.isNull():
            return QRectF()
        # The points stick out of their data bounds by half their size, in pixels.
        pixel_x, pixel_y = self.pixelVectors()
        pad_x = 0.0 if pixel_x is None else pixel_x.length() * self._size
        pad_y = 0.0 if pixel_y is None else pixel_y.length() * self._size
        return self._bounds.adjusted(-pad_x, -pad_y, pad_x, pad_y)

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()

    def paint(self, painter: QPainter, *_args) -> None:
        # A wide pen strokes every point as a shape (16 ms for 4,000 points); one-pixel points are
        # blitted. So the points go to pixels once, and each is drawn as a square of one-pixel points.
        on_screen = painter.transform().map(self._polygon)
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(self._pixel_pen)
        low = -(int(self._size) // 2)
        for dx in range(low, low + int(self._size)):
            for dy in range(low, low + int(self._size)):
                painter.drawPoints(on_screen.translated(dx, dy))
        painter.restore()

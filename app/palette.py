"""One colour per unit id, the same in every view.

Keyed by id, not by row or position, so a unit keeps its colour when the table
is re-sorted or other units are merged away. Colours are chosen to stay
distinct from each other and readable on the dark plot background.
"""

from __future__ import annotations

import functools

import numpy as np
from PyQt6.QtGui import QBrush, QColor

# 20 hues picked for mutual contrast on a near-black background (after Glasbey/Tableau).
_PALETTE_RGB = np.array(
    [
        (31, 168, 255), (255, 127, 14), (44, 212, 84), (240, 60, 70), (178, 120, 255),
        (255, 214, 0), (0, 214, 200), (255, 105, 200), (170, 220, 40), (255, 160, 122),
        (100, 140, 255), (220, 170, 60), (70, 240, 160), (200, 80, 160), (150, 200, 255),
        (255, 90, 30), (120, 200, 120), (230, 130, 255), (0, 160, 130), (250, 250, 160),
    ],
    dtype=np.uint8,
)  # (20, 3) RGB

NEUTRAL = QColor(160, 160, 170)  # things that belong to no unit (raw traces)


def unit_rgb(unit_id: int) -> tuple[int, int, int]:
    r, g, b = _PALETTE_RGB[int(unit_id) % len(_PALETTE_RGB)]
    return int(r), int(g), int(b)


def unit_color(unit_id: int, alpha: int = 255) -> QColor:
    return QColor(*unit_rgb(unit_id), alpha)


def unit_rgba_array(unit_ids: np.ndarray, alpha: int = 255) -> np.ndarray:
    """(n, 4) uint8 RGBA for many ids at once, e.g. scatter brushes."""
    rgb = _PALETTE_RGB[np.asarray(unit_ids, dtype=np.int64) % len(_PALETTE_RGB)]
    return np.concatenate([rgb, np.full((len(rgb), 1), alpha, dtype=np.uint8)], axis=1)


def unit_brushes(unit_ids: np.ndarray, alpha: int = 255) -> list[QBrush]:
    """One brush per id, shared by every id (and every call) of the same colour and alpha.

    pyqtgraph's scatter items cache each symbol under its brush object: a new brush per
    draw rendered every symbol again, and kept each one (3,500 heat-map markers a scroll).
    """
    indices = np.asarray(unit_ids, dtype=np.int64) % len(_PALETTE_RGB)
    return [_palette_brush(index, int(alpha)) for index in indices.tolist()]


@functools.lru_cache(maxsize=None)
def _palette_brush(index: int, alpha: int) -> QBrush:
    return QBrush(QColor(*(int(v) for v in _PALETTE_RGB[index]), alpha))

"""The look: a dark Fusion palette, our style sheet, and matching pyqtgraph defaults.

Dark because the plots are: spikes and unit colours read best on black, and a
light frame around dark plots glares.
"""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PyQt6.QtGui import QColor, QPalette
from PyQt6.QtWidgets import QApplication

import resources

STYLE_SHEET = Path(resources.__file__).parent / "style.qss"
PLOT_BACKGROUND = "#15171c"
PLOT_FOREGROUND = "#c8ccd4"


def configure_plots() -> None:
    # Antialiasing costs more than it shows on thin, dense traces.
    pg.setConfigOptions(antialias=False, background=PLOT_BACKGROUND, foreground=PLOT_FOREGROUND)


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#23262d",
        QPalette.ColorRole.WindowText: "#dfe2e8",
        QPalette.ColorRole.Base: "#1b1d22",
        QPalette.ColorRole.AlternateBase: "#262930",
        QPalette.ColorRole.Text: "#dfe2e8",
        QPalette.ColorRole.Button: "#2f333b",
        QPalette.ColorRole.ButtonText: "#dfe2e8",
        QPalette.ColorRole.Highlight: "#3d6fb6",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: "#2f333b",
        QPalette.ColorRole.ToolTipText: "#dfe2e8",
        QPalette.ColorRole.PlaceholderText: "#7d828c",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7079"))
    app.setPalette(palette)
    app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))

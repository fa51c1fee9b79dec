"""Sparsort's desktop app (PyQt6 + pyqtgraph): a view on engine objects."""

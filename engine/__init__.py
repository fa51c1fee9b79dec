"""Sparsort's engine: spike sorting by convolutional dictionary learning.

Qt-free. Everything the desktop app does, a script can do from here.
"""

__version__ = "0.1.0"

"""Sparsort's engine: spike sorting by convolutional dictionary learning.

Qt-free. Everything the desktop app does, a script can do from here.
"""

from engine.cpu import prefer_sleeping_threads as _prefer_sleeping_threads

# Idle OpenMP threads sleep rather than spin (engine/cpu.py says why): set on import of
# the engine, which the CLI, the app and scripts all do before they import torch.
_prefer_sleeping_threads()

__version__ = "0.1.0"

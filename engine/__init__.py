"""Sparsort's engine: spike sorting by convolutional dictionary learning.

Qt-free. Everything the desktop app does, a script can do from here.
"""

import os as _os

# Idle OpenMP threads sleep rather than spin (engine/cpu.py says why); this only
# takes effect when the engine is imported before torch, as the CLI and app do.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
